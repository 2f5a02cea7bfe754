"""`sedpa compress` end to end: load, calibrate (unless given), factor, measure, write the artifact."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sedpa_compress.artifact.writer import check_artifact_out, sedpa_block, write_artifact
from sedpa_compress.calibration.perplexity import heldout_windows, perplexity
from sedpa_compress.calibration.stats import CalibrateConfig, calibrate, load_stats
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models.loader import LoadedModel, default_out_dir, shipped_pattern_path
from sedpa_compress.svd.compress import CompressConfig, CompressionReport, compress_model, projection_config
from sedpa_compress.svd.rank_search import check_ratio


@dataclass
class CompressJob:
    """Everything `sedpa compress` needs besides the loaded model."""

    out: Path | None = None  # None: out/<model>-sedpa
    compress: CompressConfig = field(default_factory=CompressConfig)
    pattern: Path | None = None
    calibration: Path | None = None
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    overwrite: bool = False
    force: bool = False  # accept --calibration recorded for another model name/revision or pattern
    retrieval_ratio: float | None = None  # re-binarize the pattern's gates
    window: int | None = None  # SEDPA-W's default window recorded in the artifact
    kv_dtype: str | None = None  # the KV cache dtype the runtime defaults to for the artifact (None: bf16)
    ppl_windows: int = 4
    ppl_seq_len: int = 1024
    measure_ppl: bool = True


@dataclass
class CompressOutcome:
    report: CompressionReport
    out: Path
    metrics: dict[str, Any]


def resolve_pattern(job: CompressJob, loaded: LoadedModel) -> HeadPattern | None:
    """--pattern (a sedpa *.pattern.json, or a DuoAttention run folder / TSV), else the pattern the
    model carries (the embedded sedpa-tiny ships one)."""
    from sedpa_compress.heads.interop import load_any_pattern

    path = job.pattern or shipped_pattern_path(loaded)
    if path is None:
        return None
    return load_any_pattern(path, loaded.geometry, retrieval_ratio=job.retrieval_ratio)


def run_compress(loaded: LoadedModel, job: CompressJob, *, show_progress: bool = True) -> CompressOutcome:
    # Check everything cheap before anything slow, so bad input fails in a second.
    check_ratio(job.compress.rank_ratio)
    if job.out is None:
        job.out = default_out_dir(loaded)
    check_artifact_out(job.out, overwrite=job.overwrite)  # --out inside a file, or --overwrite of a non-artifact
    if loaded.source == "artifact":
        raise SedpaError(f"--model {loaded.path} is already a sedpa artifact: compress its base model instead")
    pattern = resolve_pattern(job, loaded)
    if job.compress.scope == "streaming" and pattern is None:
        raise SedpaError("--scope streaming needs a head pattern: pass --pattern P.pattern.json (make one with "
                         "`sedpa identify-heads --model ...`) or use --scope all")
    if job.window is not None and pattern is not None and job.window < pattern.recent:
        raise SedpaError(f"--window {job.window} is smaller than the pattern's recent {pattern.recent}: pick a larger window")
    phases: dict[str, float] = {}
    t = time.perf_counter()
    stats = None
    needs_stats = job.compress.whiten and job.compress.rank_ratio < 1.0
    if needs_stats:
        if job.calibration is not None:
            stats = load_stats(job.calibration, device=loaded.device)
            stats.check_model(loaded, source=str(job.calibration), force=job.force)
            stats.check_pattern(pattern, source=str(job.calibration), force=job.force)
        else:
            stats = calibrate(loaded, job.calibrate, show_progress=show_progress, pattern=pattern)
    phases["calibrate_s"] = time.perf_counter() - t
    windows: list[list[int]] = []
    ppl_before = ppl_after = None
    if job.measure_ppl:
        from sedpa_compress.data.text import load_bundled_text

        seq = min(job.ppl_seq_len, loaded.geometry.max_position_embeddings or job.ppl_seq_len)
        windows = heldout_windows(loaded.encode, load_bundled_text("heldout"), seq_len=seq, count=job.ppl_windows)
        ppl_before = perplexity(loaded.model, windows, loaded.device)
    t = time.perf_counter()
    report = compress_model(loaded, stats, pattern, job.compress, show_progress=show_progress,
                            force_calibration=job.force)
    phases["factor_s"] = time.perf_counter() - t
    if job.measure_ppl:
        ppl_after = perplexity(loaded.model, windows, loaded.device)
    metrics = {
        "params_before": report.model_params_before,
        "params_after": report.model_params_after,
        "reduction": report.reduction,
        "compressed_slice_params_before": report.slice_params_before,
        "compressed_slice_params_after": report.slice_params_after,
        "calibration_ppl_before": ppl_before,
        "calibration_ppl_after": ppl_after,
        "ppl_note": "full attention, bundled held-out text, weights effect only",
        "compress_wall_s": round(report.wall_s, 3),
        "dense_slices": len(report.dense_slices),
        "pruned_slices": report.pruned_slices,
    }
    settings = {
        "scope": job.compress.scope,
        "rank_ratio": job.compress.rank_ratio,
        "rank_search": job.compress.rank_search,
        "min_rank": job.compress.min_rank,
        "whiten": job.compress.whiten,
        "window": job.window,
        **({"kv_dtype": job.kv_dtype} if job.kv_dtype else {}),
        "calibration": dict(stats.metadata) if stats is not None else None,
    }
    block = sedpa_block(loaded, pattern=pattern, projections=projection_config(loaded.model), settings=settings,
                        metrics=metrics)
    t = time.perf_counter()
    out = write_artifact(job.out, loaded, block, pattern=pattern, overwrite=job.overwrite)
    phases["write_s"] = time.perf_counter() - t
    metrics.update({k: round(v, 3) for k, v in phases.items()})
    return CompressOutcome(report=report, out=out, metrics=metrics)


def peak_memory_bytes(device: torch.device | str) -> int:
    """Peak GPU memory allocated on CUDA; peak resident set size of this process on the CPU."""
    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def compress_result(loaded: LoadedModel, job: CompressJob, outcome: CompressOutcome, wall_s: float) -> dict[str, Any]:
    """The `compress` benchmark JSON (ARCHITECTURE.md shape): one row per factored projection."""
    from dataclasses import asdict

    from sedpa_compress.bench.results import make_result

    summary = {"compress": {"wall_s": round(wall_s, 3), "peak_bytes": peak_memory_bytes(loaded.device),
                            **{k: v for k, v in outcome.metrics.items() if k != "ppl_note"}}}
    settings = {"rank_ratio": job.compress.rank_ratio, "scope": job.compress.scope,
                "rank_search": job.compress.rank_search, "calibration_tokens": job.calibrate.tokens,
                "seq_len": job.calibrate.seq_len, "source": loaded.source, "dtype": str(next(loaded.model.parameters()).dtype)}
    rows = [{"mode": "compress", **asdict(p)} for p in outcome.report.projections]
    return make_result("compress", model=loaded.name, settings=settings, rows=rows, summary=summary,
                       device=torch.cuda.get_device_name(loaded.device) if loaded.device.type == "cuda" else "cpu")
