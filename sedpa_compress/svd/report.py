"""The compress report as a rich table (per layer and projection) and totals."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from sedpa_compress.svd.compress import CompressionReport


def print_report(report: CompressionReport, metrics: dict[str, Any], console: Console | None = None,
                 max_rows: int = 64) -> None:
    console = console or Console()
    if report.projections:
        table = Table(title=f"sedpa compress — rank ratio {report.rank_ratio}, scope {report.scope}, {report.rank_search} ranks")
        for col in ("layer", "projection", "slice", "rank / max", "kept energy", "rel. error"):
            table.add_column(col, justify="right" if col not in ("projection",) else "left")
        rows = report.projections
        shown = rows if len(rows) <= max_rows else rows[: max_rows // 2] + rows[-max_rows // 2:]
        for i, p in enumerate(shown):
            if len(rows) > max_rows and i == max_rows // 2:
                table.add_row("…", f"{len(rows) - max_rows} more", "", "", "", "")
            rank = "dense" if p.rank is None else ("[red]0 (pruned)[/]" if p.rank == 0 else str(p.rank))
            table.add_row(str(p.layer), p.proj, f"{p.out_features}x{p.in_features}", f"{rank} / {p.max_rank}",
                          f"{p.kept_energy:.4f}", f"{p.relative_error:.4f}")
        console.print(table)
    totals = Table(title="totals", show_header=False)
    totals.add_column("what")
    totals.add_column("value", justify="right")
    totals.add_row("compressed projections: params before → after",
                   f"{report.slice_params_before:,} → {report.slice_params_after:,}")
    totals.add_row("whole model: params before → after",
                   f"{report.model_params_before:,} → {report.model_params_after:,}")
    totals.add_row("whole-model reduction", f"{report.reduction:.2%}")
    if report.projections:
        totals.add_row("slices factored / left dense (break-even)",
                       f"{len(report.projections) - len(report.dense_slices)} / {len(report.dense_slices)}")
    if report.pruned_slices:
        totals.add_row("[red]slices pruned to rank 0 (--min-rank 0)[/]",
                       f"{len(report.pruned_slices)}: {', '.join(report.pruned_slices[:4])}"
                       + (" …" if len(report.pruned_slices) > 4 else ""))
    if metrics.get("calibration_ppl_before") is not None:
        totals.add_row("calibration perplexity before → after",
                       f"{metrics['calibration_ppl_before']:.3f} → {metrics['calibration_ppl_after']:.3f}")
    totals.add_row("wall time (factoring)", f"{report.wall_s:.1f} s")
    console.print(totals)
