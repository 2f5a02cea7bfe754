"""`sedpa compress` end to end: load, calibrate (unless given), factor, measure, write the artifact."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sedpa_compress.artifact.writer import sedpa_block, write_artifact
from sedpa_compress.calibration.perplexity import heldout_windows, perplexity
from sedpa_compress.calibration.stats import CalibrateConfig, calibrate, load_stats
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models.loader import LoadedModel
from sedpa_compress.svd.compress import CompressConfig, CompressionReport, compress_model, projection_config
from sedpa_compress.svd.rank_search import check_ratio


@dataclass
class CompressJob:
    """Everything `sedpa compress` needs besides the loaded model."""

    out: Path
    compress: CompressConfig = field(default_factory=CompressConfig)
    pattern: Path | None = None
    calibration: Path | None = None
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    overwrite: bool = False
    retrieval_ratio: float | None = None  # re-binarize the pattern's gates
    window: int | None = None  # SEDPA-W's default window recorded in the artifact
    ppl_windows: int = 4
    ppl_seq_len: int = 1024
    measure_ppl: bool = True


@dataclass
class CompressOutcome:
    report: CompressionReport
    out: Path
    metrics: dict[str, Any]


def resolve_pattern(job: CompressJob, loaded: LoadedModel) -> HeadPattern | None:
    if job.pattern is None:
        return None
    pattern = HeadPattern.load(job.pattern, loaded.geometry)
    if job.retrieval_ratio is not None:
        pattern = pattern.with_ratio(retrieval_ratio=job.retrieval_ratio)
    return pattern


def run_compress(loaded: LoadedModel, job: CompressJob, *, show_progress: bool = True) -> CompressOutcome:
    # Check everything cheap before anything slow, so bad input fails in a second.
    check_ratio(job.compress.rank_ratio)
    if job.out.exists() and not job.overwrite:
        raise SedpaError(f"--out {job.out} already exists: choose another path or pass --overwrite")
    if loaded.source == "artifact":
        raise SedpaError(f"--model {loaded.path} is already a sedpa artifact: compress its base model instead")
    pattern = resolve_pattern(job, loaded)
    if job.compress.scope == "streaming" and pattern is None:
        raise SedpaError("--scope streaming needs a head pattern: pass --pattern P.pattern.json (make one with "
                         "`sedpa identify-heads --model ...`) or use --scope all")
    if job.window is not None and pattern is not None and job.window < pattern.recent:
        raise SedpaError(f"--window {job.window} is smaller than the pattern's recent {pattern.recent}: pick a larger window")
    stats = None
    needs_stats = job.compress.whiten and job.compress.rank_ratio < 1.0
    if needs_stats:
        if job.calibration is not None:
            stats = load_stats(job.calibration, device=loaded.device)
            stats.check_model(loaded, source=str(job.calibration))
        else:
            stats = calibrate(loaded, job.calibrate, show_progress=show_progress)
    windows: list[list[int]] = []
    ppl_before = ppl_after = None
    if job.measure_ppl:
        from sedpa_compress.data.text import load_bundled_text

        seq = min(job.ppl_seq_len, loaded.geometry.max_position_embeddings or job.ppl_seq_len)
        windows = heldout_windows(loaded.encode, load_bundled_text("heldout"), seq_len=seq, count=job.ppl_windows)
        ppl_before = perplexity(loaded.model, windows, loaded.device)
    report = compress_model(loaded, stats, pattern, job.compress, show_progress=show_progress)
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
    }
    settings = {
        "scope": job.compress.scope,
        "rank_ratio": job.compress.rank_ratio,
        "rank_search": job.compress.rank_search,
        "whiten": job.compress.whiten,
        "window": job.window,
        "calibration": dict(stats.metadata) if stats is not None else None,
    }
    block = sedpa_block(loaded, pattern=pattern, projections=projection_config(loaded.model), settings=settings,
                        metrics=metrics)
    out = write_artifact(job.out, loaded, block, pattern=pattern, overwrite=job.overwrite)
    return CompressOutcome(report=report, out=out, metrics=metrics)
