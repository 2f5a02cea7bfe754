"""The compression stage: choose which slices of which projections to factor, search ranks, factor.

Dual path (`scope="streaming"`): only streaming heads' q/k/v rows and their o_proj columns become
low-rank; retrieval heads keep their exact weights. `scope="all"` factors every head.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from rich.progress import Progress

from sedpa_compress.calibration.stats import CalibrationStats
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models.loader import LoadedModel
from sedpa_compress.svd.factored import DualPathLinear
from sedpa_compress.svd.rank_search import (
    DEFAULT_MIN_RANK,
    DEFAULT_SEARCH,
    DENSE,
    Spectrum,
    check_min_rank,
    check_ratio,
    search_ranks,
)
from sedpa_compress.svd.whitening import candidate_factors, cholesky_factor, factors_at_rank

SCOPES = ("streaming", "all")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class CompressConfig:
    rank_ratio: float = 0.85
    scope: str = "streaming"
    rank_search: str = DEFAULT_SEARCH
    whiten: bool = True  # False: plain SVD of the weight (the baseline the tests compare against)
    damp: float = 1e-6
    min_rank: int = DEFAULT_MIN_RANK  # 0 lets rank search prune a slice away (reported as `pruned`)


@dataclass
class ProjectionSlice:
    """The part of one projection that becomes low-rank."""

    layer: int
    proj: str  # q_proj | k_proj | v_proj | o_proj
    split: str  # rows (q/k/v outputs) | cols (o_proj inputs)
    lowrank_index: torch.Tensor
    dense_index: torch.Tensor

    @property
    def name(self) -> str:
        return f"model.layers.{self.layer}.self_attn.{self.proj}"


@dataclass
class ProjectionResult:
    name: str
    layer: int
    proj: str
    split: str
    out_features: int  # of the low-rank slice
    in_features: int
    rank: int | None  # None: the slice stayed dense (factoring it would not have saved parameters)
    max_rank: int
    kept_energy: float  # fraction of whitened energy kept
    relative_error: float  # sqrt(dropped / total whitened energy)
    whitened_error: float  # dropped whitened energy: E‖(W − W_r)x‖² per token (what rank search minimises)
    dense_params: int
    lowrank_params: int


@dataclass
class CompressionReport:
    rank_ratio: float
    scope: str
    rank_search: str
    projections: list[ProjectionResult] = field(default_factory=list)
    model_params_before: int = 0
    model_params_after: int = 0
    wall_s: float = 0.0

    @property
    def slice_params_before(self) -> int:
        return sum(p.dense_params for p in self.projections)

    @property
    def slice_params_after(self) -> int:
        return sum(p.lowrank_params for p in self.projections)

    @property
    def reduction(self) -> float:
        return 1 - self.model_params_after / self.model_params_before if self.model_params_before else 0.0

    @property
    def total_error(self) -> float:
        return sum(p.whitened_error for p in self.projections)

    @property
    def dense_slices(self) -> list[str]:
        return [p.name for p in self.projections if p.rank is None]

    @property
    def pruned_slices(self) -> list[str]:
        """Slices factored to rank 0 (only with min_rank 0): that head part's contribution is gone."""
        return [p.name for p in self.projections if p.rank == 0]


def head_rows(heads: list[int], head_dim: int) -> torch.Tensor:
    if not heads:
        return torch.empty(0, dtype=torch.long)
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


def plan_slices(loaded: LoadedModel, pattern: HeadPattern | None, scope: str) -> list[ProjectionSlice]:
    """Which rows/cols of which projections to factor, from the head pattern and the scope."""
    if scope not in SCOPES:
        raise SedpaError(f"unknown --scope {scope!r}: choose streaming or all")
    g = loaded.geometry
    if scope == "streaming":
        if pattern is None:
            raise SedpaError("--scope streaming needs a head pattern: pass --pattern P.pattern.json (make one with "
                             "`sedpa identify-heads --model ...`) or use --scope all")
        pattern.validate_for(g)
    slices: list[ProjectionSlice] = []
    q_all = torch.arange(g.num_heads * g.head_dim)
    kv_all = torch.arange(g.num_kv_heads * g.head_dim)
    for layer in range(g.num_layers):
        kv_heads = list(range(g.num_kv_heads)) if scope == "all" else pattern.streaming_heads(layer)
        if not kv_heads:
            continue  # every head of this layer is a retrieval head: nothing to factor
        q_heads = [h * g.group_size + j for h in kv_heads for j in range(g.group_size)]
        q_low, kv_low = head_rows(q_heads, g.head_dim), head_rows(kv_heads, g.head_dim)
        q_dense = q_all[~torch.isin(q_all, q_low)]
        kv_dense = kv_all[~torch.isin(kv_all, kv_low)]
        slices += [
            ProjectionSlice(layer, "q_proj", "rows", q_low, q_dense),
            ProjectionSlice(layer, "k_proj", "rows", kv_low, kv_dense),
            ProjectionSlice(layer, "v_proj", "rows", kv_low, kv_dense),
            ProjectionSlice(layer, "o_proj", "cols", q_low, q_dense),
        ]
    return slices


def _slice_weight(weight: torch.Tensor, s: ProjectionSlice) -> torch.Tensor:
    idx = s.lowrank_index.to(weight.device)
    return weight[idx] if s.split == "rows" else weight[:, idx]


def _slice_chol(stats: CalibrationStats, s: ProjectionSlice, cache: dict, device, damp: float) -> torch.Tensor:
    key = (s.layer, "attn" if s.split == "rows" else "o")
    if key not in cache:
        if s.split == "rows":
            c = stats.attn_input[s.layer]
        else:
            idx = s.lowrank_index.to(stats.o_input[s.layer].device)
            c = stats.o_input[s.layer][idx][:, idx]
        cache.clear()  # one layer at a time keeps memory flat on 8B models
        what = "q/k/v input" if s.split == "rows" else "o_proj input"
        cache[key] = cholesky_factor(c.to(device), damp=damp, name=f"the second moment of layer {s.layer}'s {what}")
    return cache[key]


def count_params(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:  # tied embeddings count once
            seen.add(p.data_ptr())
            total += p.numel()
    return total


def compress_model(loaded: LoadedModel, stats: CalibrationStats | None, pattern: HeadPattern | None,
                   cfg: CompressConfig, *, show_progress: bool = True, force_calibration: bool = False) -> CompressionReport:
    """Replace the planned projection slices by truncated-SVD factors, in place."""
    check_ratio(cfg.rank_ratio)
    check_min_rank(cfg.min_rank)
    t0 = time.perf_counter()
    model, family = loaded.model, loaded.family
    report = CompressionReport(cfg.rank_ratio, cfg.scope, cfg.rank_search, model_params_before=count_params(model))
    slices = plan_slices(loaded, pattern, cfg.scope)
    if cfg.rank_ratio >= 1.0 or not slices:
        report.model_params_after = report.model_params_before
        report.wall_s = time.perf_counter() - t0
        return report  # nothing to drop: the model is untouched, logits identical
    if cfg.whiten:
        if stats is None:
            raise SedpaError("activation-aware SVD needs calibration statistics: pass --calibration C or let "
                             "compress calibrate (omit --calibration)")
        stats.check_model(loaded, force=force_calibration)
        stats.check_pattern(pattern, force=force_calibration)
    attns = family.attention_modules(model)
    device = loaded.device
    chol_cache: dict = {}

    def weight_of(s: ProjectionSlice) -> torch.Tensor:
        return getattr(attns[s.layer], s.proj).weight.detach()

    def chol_of(s: ProjectionSlice):
        return _slice_chol(stats, s, chol_cache, device, cfg.damp) if cfg.whiten else None

    # One SVD per slice, kept up to the largest rank that saves parameters; rank search then only slices.
    spectra: list[Spectrum] = []
    candidates = []
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("whitened SVD", total=len(slices))
        for s in slices:
            w = _slice_weight(weight_of(s), s)
            max_rank = min((w.shape[0] * w.shape[1] - 1) // (w.shape[0] + w.shape[1]), min(w.shape))
            u_m, sv, d_m = candidate_factors(w, chol_of(s), max_rank)
            candidates.append((u_m, sv, d_m))
            spectra.append(Spectrum(s.name, w.shape[0], w.shape[1], sv.cpu(), kind=s.proj))
            progress.advance(task)
    chol_cache.clear()
    ranks = search_ranks(spectra, cfg.rank_ratio, cfg.rank_search, min_rank=cfg.min_rank)
    for s, spec, rank, cand in zip(slices, spectra, ranks, candidates):
        if rank is DENSE:  # at or beyond break-even: the projection keeps its exact weights
            report.projections.append(ProjectionResult(
                name=s.name, layer=s.layer, proj=s.proj, split=s.split, out_features=spec.out_features,
                in_features=spec.in_features, rank=None, max_rank=spec.max_rank, kept_energy=1.0,
                relative_error=0.0, whitened_error=0.0, dense_params=spec.dense_params,
                lowrank_params=spec.dense_params))
            continue
        attn = attns[s.layer]
        linear = getattr(attn, s.proj)
        w_full = linear.weight.detach()
        up, down = factors_at_rank(*cand, rank)
        dense_idx = s.dense_index.to(w_full.device)
        dense = w_full[dense_idx] if s.split == "rows" else w_full[:, dense_idx]
        new = DualPathLinear.from_factors(
            split=s.split, dense_weight=dense, down=down.to(w_full.dtype), up=up.to(w_full.dtype),
            dense_index=s.dense_index, lowrank_index=s.lowrank_index, in_features=linear.in_features,
            out_features=linear.out_features, bias=None if linear.bias is None else linear.bias.detach())
        setattr(attn, s.proj, new)
        energy, dropped = spec.energy(), spec.error(rank)
        report.projections.append(ProjectionResult(
            name=s.name, layer=s.layer, proj=s.proj, split=s.split, out_features=spec.out_features,
            in_features=spec.in_features, rank=rank, max_rank=spec.max_rank,
            kept_energy=1 - dropped / energy if energy else 1.0,
            relative_error=math.sqrt(dropped / energy) if energy else 0.0, whitened_error=dropped,
            dense_params=spec.dense_params, lowrank_params=rank * spec.params_per_rank))
    del candidates
    report.model_params_after = count_params(model)
    report.wall_s = time.perf_counter() - t0
    return report


def projection_config(model: torch.nn.Module) -> dict[str, dict]:
    """The artifact's record of every factored projection (enough to rebuild the modules empty)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, DualPathLinear):
            out[name] = {"split": module.split, "rank": module.rank, "in_features": module.in_features,
                         "out_features": module.out_features, "dense": module.dense_index.numel(),
                         "lowrank": module.lowrank_index.numel(), "bias": module.bias is not None}
    return out
