"""`sedpa_pattern.png`: the head pattern as a picture for the model card (matplotlib is optional)."""

from __future__ import annotations

from pathlib import Path

from sedpa_compress.atomic import atomic_write_bytes
from sedpa_compress.figures import figure_png
from sedpa_compress.heads.pattern import HeadPattern

HEATMAP_FILE = "sedpa_pattern.png"


def pattern_heatmap_png(pattern: HeadPattern) -> bytes | None:
    """PNG bytes of the gates (layers down, KV heads across, retrieval heads marked); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError:  # the [bench] extra is not installed: the card simply has no picture
        return None
    layers, heads = pattern.num_layers, pattern.num_kv_heads
    fig, ax = plt.subplots(figsize=(min(12.0, max(3.2, 0.3 * heads + 2.2)), min(14.0, max(2.6, 0.22 * layers + 1.6))))
    try:
        im = ax.imshow(pattern.gates, vmin=0.0, vmax=1.0, cmap="magma", aspect="auto", interpolation="nearest")
        for li, row in enumerate(pattern.mask):
            for h, m in enumerate(row):
                if m:  # retrieval heads outlined
                    ax.add_patch(Rectangle((h - 0.5, li - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=1.2))
        ax.set_xticks(range(0, heads, max(1, heads // 16)))
        ax.set_yticks(range(0, layers, max(1, layers // 20)))
        ax.set_xlabel("KV head")
        ax.set_ylabel("layer")
        kept = sum(map(sum, pattern.mask))
        ax.set_title(f"{kept}/{layers * heads} retrieval heads (cyan)\nstreaming: sink {pattern.sink} + recent {pattern.recent}",
                     fontsize=8)
        fig.colorbar(im, ax=ax, label="gate")
        fig.tight_layout()
        # figure_png writes no timestamp: the same pattern gives the same bytes (and the same manifest sha256)
        return figure_png(fig, dpi=110)
    finally:
        plt.close(fig)  # a figure that failed to draw; figure_png has closed a drawn one


def write_pattern_heatmap(pattern: HeadPattern, directory: Path) -> Path | None:
    """Write `sedpa_pattern.png` into `directory`; None (and nothing written) without matplotlib."""
    data = pattern_heatmap_png(pattern)
    if data is None:
        return None
    path = Path(directory) / HEATMAP_FILE
    atomic_write_bytes(path, data)
    return path
