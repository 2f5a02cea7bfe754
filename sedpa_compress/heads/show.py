"""`sedpa heads show`: a pattern file as a coloured layer x KV-head table and a heatmap PNG."""

from __future__ import annotations

from pathlib import Path

from sedpa_compress.atomic import atomic_write_figure
from sedpa_compress.heads.pattern import HeadPattern


def _cell_style(gate: float, retrieval: bool) -> str:
    # Retrieval heads in green, streaming heads in blue; brighter = larger gate.
    level = "bold " if gate >= 0.66 else "" if gate >= 0.33 else "dim "
    return level + ("green" if retrieval else "blue")


def pattern_table(pattern: HeadPattern, title: str | None = None):
    """A rich Table: one row per layer, one column per KV head, each cell the gate (R marks retrieval)."""
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    table.add_column("layer", justify="right")
    for h in range(pattern.num_kv_heads):
        table.add_column(f"kv{h}", justify="center")
    table.add_column("retrieval", justify="right")
    for li, (gates, mask) in enumerate(zip(pattern.gates, pattern.mask)):
        cells = [f"[{_cell_style(g, bool(m))}]{g:.2f}{'R' if m else ' '}[/]" for g, m in zip(gates, mask)]
        table.add_row(str(li), *cells, f"{sum(mask)}/{len(mask)}")
    return table


def pattern_summary(pattern: HeadPattern) -> list[str]:
    total = pattern.num_layers * pattern.num_kv_heads
    kept = sum(map(sum, pattern.mask))
    rule = (f"retrieval ratio {pattern.retrieval_ratio}" if pattern.retrieval_ratio is not None
            else f"threshold {pattern.threshold}")
    lines = [
        f"model {pattern.model or '?'}" + (f"@{pattern.revision}" if pattern.revision else ""),
        f"{pattern.num_layers} layers x {pattern.num_kv_heads} KV heads; sink {pattern.sink}, recent {pattern.recent}",
        f"{kept}/{total} retrieval heads ({kept / total:.0%}) by {rule}",
    ]
    from sedpa_compress.runtime.modes.tidal import pattern_selection_layers

    layers = pattern_selection_layers(pattern.gates)
    why = (" (selection at the first layer with a strong retrieval head, re-selection at the first with about"
           " the most gate)")
    lines.append("tidal's token-selection layers from these gates: "
                 + (", ".join(map(str, layers)) + (why if len(layers) > 1 else "")
                    if layers else "none (the most retrieval gate is in the last quarter: the depth's default)"))
    losses = pattern.training.get("final_losses") if pattern.training else None
    if losses:
        lines.append(f"final loss {losses.get('loss', float('nan')):.4g} (distill {losses.get('distill', float('nan')):.4g}, "
                     f"mean gate {losses.get('reg', float('nan')):.3f}) after {pattern.training.get('steps_done')} steps")
    return lines


def plot_heatmap(pattern: HeadPattern, path: Path, title: str | None = None) -> Path:
    """Gates as an image (layers down, KV heads across); retrieval heads outlined. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    layers, heads = pattern.num_layers, pattern.num_kv_heads
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * heads + 2.0), max(2.5, 0.25 * layers + 1.5)))
    im = ax.imshow(pattern.gates, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest")
    for li, row in enumerate(pattern.mask):
        for h, m in enumerate(row):
            if m:
                ax.add_patch(Rectangle((h - 0.5, li - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
    ax.set_xlabel("KV head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(heads) if heads <= 32 else range(0, heads, max(1, heads // 16)))
    ax.set_yticks(range(layers) if layers <= 40 else range(0, layers, max(1, layers // 20)))
    kept = sum(map(sum, pattern.mask))
    name = Path(pattern.model).name if pattern.model else "pattern"  # a local path would not fit the title
    ax.set_title(title or f"{name}: gates\n(red = retrieval, {kept}/{layers * heads})", fontsize=9)
    fig.colorbar(im, ax=ax, label="gate alpha")
    fig.tight_layout()
    return atomic_write_figure(Path(path), fig, dpi=120)


def default_png_path(pattern_path: Path) -> Path:
    p = Path(pattern_path)
    return p.with_name(p.name[: -len(".json")] + ".png" if p.name.endswith(".json") else p.name + ".png")
