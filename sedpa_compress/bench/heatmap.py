"""Needle-in-a-haystack heatmaps in the seeds' style: x = context length, y = needle depth, the
red -> yellow -> green scale of the NIAH / DuoAttention plots, score 0..1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sedpa_compress.atomic import atomic_write_figure

NIAH_COLORS = ("#F0496E", "#EBB839", "#0CD79F")  # the NIAH papers' scale: 0 red, 0.5 yellow, 1 green


def niah_cmap():
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("niah", list(NIAH_COLORS))


def niah_matrix(rows: Sequence[dict[str, Any]], mode: str, metric: str = "accuracy"
                ) -> tuple[np.ndarray, list[int], list[float]]:
    """[depths x lengths] mean `metric` of one mode's rows (NaN where a cell has no row)."""
    mine = [r for r in rows if r["mode"] == mode]
    lengths = sorted({int(r["context"]) for r in mine})
    depths = sorted({float(r["depth"]) for r in mine})
    grid = np.full((len(depths), len(lengths)), np.nan)
    for i, d in enumerate(depths):
        for j, n in enumerate(lengths):
            vals = [float(r[metric]) for r in mine if float(r["depth"]) == d and int(r["context"]) == n]
            if vals:
                grid[i, j] = float(np.mean(vals))
    return grid, lengths, depths


def fmt_length(n: int) -> str:
    """4096 -> 4K, 3218 -> 3.1K, 512 -> 512."""
    return f"{n / 1024:.1f}K".replace(".0K", "K") if n >= 1024 else str(n)


def _draw(ax, grid: np.ndarray, lengths: list[int], depths: list[float], title: str):
    im = ax.imshow(grid, aspect="auto", cmap=niah_cmap(), vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(len(lengths)))
    ax.set_xticklabels([fmt_length(n) for n in lengths], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(depths)))
    ax.set_yticklabels([f"{d * 100:.0f}%" for d in depths], fontsize=8)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title, fontsize=10)
    # grey dashed cell borders, as in the seeds' seaborn heatmaps
    ax.set_xticks(np.arange(-0.5, len(lengths), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(depths), 1), minor=True)
    ax.grid(which="minor", color="grey", linestyle="--", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    return im


def _save(fig, path: Path) -> Path:
    return atomic_write_figure(Path(path), fig, dpi=110)


def plot_niah_heatmap(rows: Sequence[dict[str, Any]], mode: str, path: Path, *, metric: str = "accuracy",
                      title: str | None = None) -> Path:
    """One mode's heatmap PNG; the title carries its average score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid, lengths, depths = niah_matrix(rows, mode, metric)
    fig, ax = plt.subplots(figsize=(2.0 + 0.6 * max(len(lengths), 4), 1.5 + 0.35 * max(len(depths), 4)),
                           layout="constrained")
    avg = float(np.nanmean(grid)) if grid.size else float("nan")
    im = _draw(ax, grid, lengths, depths, title or f"{mode}: average {metric} {avg:.1%}")
    fig.colorbar(im, ax=ax, label=metric)
    return _save(fig, path)


def plot_niah_grid(rows: Sequence[dict[str, Any]], modes: Sequence[str], path: Path, *, metric: str = "accuracy",
                   title: str | None = None) -> Path:
    """Every mode's heatmap side by side in one PNG (the papers' comparison figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(modes)
    cols = min(n, 3)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5.0 * cols, 4.2 * nrows), squeeze=False, layout="constrained")
    im = None
    for k, mode in enumerate(modes):
        grid, lengths, depths = niah_matrix(rows, mode, metric)
        avg = float(np.nanmean(grid)) if grid.size else float("nan")
        im = _draw(axes[k // cols][k % cols], grid, lengths, depths, f"{mode}: {avg:.1%}")
    for k in range(n, nrows * cols):
        axes[k // cols][k % cols].axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), label=metric, shrink=0.8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
