"""Rank search: give each projection slice a rank, or leave it dense, so the kept parameters meet the budget.

Pure functions over singular-value spectra, so tests can call them directly.

A slice of m x n costs r·(m + n) parameters at rank r: factoring only saves parameters below the
break-even rank, r·(m + n) < m·n (`Spectrum.max_rank`). A slice is therefore either dense (`DENSE`,
exact, m·n parameters) or factored at a rank in [min_rank, max_rank]; going from dense to factored drops
every singular value beyond the rank at once, so the searches treat "dense -> max_rank" as one step.

Searches (`--rank-search`):
- `uniform`: every slice keeps the same fraction of its own parameters (the baseline).
- `greedy`: minimise the summed whitened error Σ E‖(W − W_r)x‖² over all slices (SVD-LLM's
  truncation loss), which compares absolute errors across projections whose outputs live in
  different spaces and scales (q/k go through RoPE and softmax, v through o_proj, o straight into
  the residual stream).
- `relative`: minimise Σ (dropped / total whitened energy) per slice: every slice's error on its
  own scale.
- `type`: every projection type (q/k/v/o) keeps the ratio on its own, and within a type the
  summed absolute error is minimised (SVD-LLM v2 allocates within groups of one type).
- `balanced`: every slice is truncated to the same relative error (the smallest such error the
  budget allows: minimise the largest relative error), so no slice is cut deep while others stay
  whole; slices whose spectra fall fast get lower ranks than uniform would give them.
Which one a user should want is measured (bench/scripts/rank_search_compare.py ->
bench/results/rank_search_sedpa-tiny-cpu.json: perplexity and NIAH of sedpa-tiny at rank ratios
0.85 / 0.7 / 0.5, scope streaming and all). `relative` is the default: the only search no worse than
uniform on perplexity, needle answer NLL and NIAH exact at every ratio and scope, with the lowest mean
perplexity of those (at 0.85 / streaming, statistics under the pattern's attention, it adds +0.12%
perplexity on top of duo; uniform +1.47%, the greedy of before issue 16 +0.73%). `greedy` reaches
about the same perplexity but concentrates the cuts on a few early-layer slices and lost NIAH at
0.5 / all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sedpa_compress.errors import SedpaError

SEARCHES = ("greedy", "uniform", "relative", "type", "balanced")
DEFAULT_SEARCH = "relative"
DENSE = None  # the "rank" of a slice that stays dense
DEFAULT_MIN_RANK = 1  # rank 0 would silently prune a head's projection: allowed only when asked for


@dataclass
class Spectrum:
    """One projection slice: its shape, whitened singular values (descending) and projection type."""

    name: str
    out_features: int
    in_features: int
    singular_values: torch.Tensor
    kind: str = ""  # q_proj | k_proj | v_proj | o_proj (the `type` search groups by it)

    @property
    def dense_params(self) -> int:
        return self.out_features * self.in_features

    @property
    def params_per_rank(self) -> int:
        return self.out_features + self.in_features

    @property
    def max_rank(self) -> int:
        """The largest rank that saves parameters: r·(m + n) < m·n. At or beyond break-even a slice stays dense."""
        return min((self.dense_params - 1) // self.params_per_rank, self.singular_values.numel())

    def params(self, rank: int | None) -> int:
        return self.dense_params if rank is DENSE else rank * self.params_per_rank

    def error(self, rank: int | None) -> float:
        """Whitened truncation error: the energy of the dropped singular values (0 for a dense slice)."""
        if rank is DENSE:
            return 0.0
        return float((self.singular_values[rank:].double() ** 2).sum())

    def energy(self) -> float:
        return float((self.singular_values.double() ** 2).sum())


def check_ratio(rank_ratio: float) -> None:
    if not (0.0 < rank_ratio <= 1.0):
        raise SedpaError(f"--rank-ratio {rank_ratio} is outside (0, 1]: pass the fraction of parameters to keep, e.g. 0.85")


def check_min_rank(min_rank: int) -> None:
    if min_rank < 0:
        raise SedpaError(f"--min-rank {min_rank}: pass 0 (allow pruning a slice away) or more")


def budget(spectra: list[Spectrum], rank_ratio: float) -> int:
    check_ratio(rank_ratio)
    return int(rank_ratio * sum(s.dense_params for s in spectra))


def kept_params(spectra: list[Spectrum], ranks: list[int | None]) -> int:
    return sum(s.params(r) for s, r in zip(spectra, ranks))


def _floor_rank(s: Spectrum, min_rank: int) -> int:
    return min(max(min_rank, 0), s.max_rank)


def uniform_ranks(spectra: list[Spectrum], rank_ratio: float, *, min_rank: int = DEFAULT_MIN_RANK) -> list[int | None]:
    """Every slice keeps the same fraction of its own parameters (the baseline); at 1.0 everything stays dense."""
    check_ratio(rank_ratio)
    check_min_rank(min_rank)
    out: list[int | None] = []
    for s in spectra:
        r = int(rank_ratio * s.dense_params) // s.params_per_rank
        out.append(DENSE if r > s.max_rank else max(r, _floor_rank(s, min_rank)))
    return out


def _hull(s: Spectrum, weight: float, min_rank: int) -> list[tuple[float, int, int | None, int | None]]:
    """The lower convex hull of (parameters saved, weighted error added) over dense, max_rank … min_rank,
    as segments (slope, parameters saved, from rank, to rank); slopes increase along a slice."""
    lo = _floor_rank(s, min_rank)
    if s.max_rank < lo or s.max_rank < 0:
        return []
    sv2 = s.singular_values.double() ** 2
    n = sv2.numel()
    tail = torch.zeros(n + 1, dtype=torch.float64)
    tail[:n] = torch.flip(torch.cumsum(torch.flip(sv2, [0]), 0), [0])  # tail[r] = Σ σ²[r:]
    ranks = list(range(s.max_rank, lo - 1, -1))
    points = [(0.0, 0.0, DENSE)] + [(float(s.dense_params - r * s.params_per_rank), weight * float(tail[r]), r)
                                     for r in ranks]
    hull: list[tuple[float, float, int | None]] = []
    for p in points:  # saved parameters increase along `points`: Andrew's monotone chain, lower part
        while len(hull) >= 2:
            (x1, y1, _), (x2, y2, _) = hull[-2], hull[-1]
            if (y2 - y1) * (p[0] - x1) >= (p[1] - y1) * (x2 - x1):  # hull[-1] on or above the chord
                hull.pop()
            else:
                break
        hull.append(p)
    return [((b[1] - a[1]) / (b[0] - a[0]), int(b[0] - a[0]), a[2], b[2]) for a, b in zip(hull, hull[1:])]


def _greedy(spectra: list[Spectrum], limit: int, weights: list[float], min_rank: int) -> list[int | None]:
    """Minimise Σ weight_i · error_i subject to Σ params ≤ limit, over dense or ranks in [min_rank, max_rank].

    Each slice's error against parameters saved is made convex (its lower hull); hull segments of all
    slices are taken in increasing order of weighted error per parameter saved until the budget is
    met, the last one only as far as needed, so the result is within one rank of one slice of the
    budget. Without a budget to meet, every slice stays dense.
    """
    ranks: list[int | None] = [DENSE] * len(spectra)
    excess = kept_params(spectra, ranks) - limit
    if excess <= 0:
        return ranks
    segments = []
    for i, (s, w) in enumerate(zip(spectra, weights)):
        segments += [(slope, i, saved, a, b) for slope, saved, a, b in _hull(s, w, min_rank)]
    segments.sort(key=lambda t: (t[0], t[1]))  # within a slice slopes increase, so its order is kept
    for slope, i, saved, a, b in segments:
        s = spectra[i]
        if saved <= excess:
            ranks[i] = b
            excess -= saved
            if excess <= 0:
                break
            continue
        # the last segment: the largest rank between b and a that covers what is left
        start = s.params(a)
        r = (start - excess) // s.params_per_rank
        ranks[i] = max(b, min(r, s.max_rank if a is DENSE else a))
        excess = 0
        break
    return ranks


def greedy_ranks(spectra: list[Spectrum], rank_ratio: float, *, min_rank: int = DEFAULT_MIN_RANK) -> list[int | None]:
    """Minimise the summed whitened (absolute) error subject to the parameter budget."""
    check_min_rank(min_rank)
    return _greedy(spectra, budget(spectra, rank_ratio), [1.0] * len(spectra), min_rank)


def relative_ranks(spectra: list[Spectrum], rank_ratio: float, *, min_rank: int = DEFAULT_MIN_RANK) -> list[int | None]:
    """Minimise the summed relative error (dropped / total whitened energy of each slice)."""
    check_min_rank(min_rank)
    weights = [1.0 / max(s.energy(), 1e-30) for s in spectra]
    return _greedy(spectra, budget(spectra, rank_ratio), weights, min_rank)


def type_ranks(spectra: list[Spectrum], rank_ratio: float, *, min_rank: int = DEFAULT_MIN_RANK) -> list[int | None]:
    """Each projection type keeps `rank_ratio` of its own parameters; within a type, greedy on absolute error."""
    check_min_rank(min_rank)
    check_ratio(rank_ratio)
    ranks: list[int | None] = [DENSE] * len(spectra)
    for kind in dict.fromkeys(s.kind for s in spectra):
        idx = [i for i, s in enumerate(spectra) if s.kind == kind]
        group = [spectra[i] for i in idx]
        for i, r in zip(idx, _greedy(group, budget(group, rank_ratio), [1.0] * len(group), min_rank)):
            ranks[i] = r
    return ranks


def balanced_ranks(spectra: list[Spectrum], rank_ratio: float, *, min_rank: int = DEFAULT_MIN_RANK) -> list[int | None]:
    """Minimise the largest relative error (dropped / total energy) over the slices within the budget;
    what is left of the budget then goes, singular value by singular value, to the slices with the
    largest relative error."""
    check_min_rank(min_rank)
    limit = budget(spectra, rank_ratio)
    if kept_params(spectra, [DENSE] * len(spectra)) <= limit:
        return [DENSE] * len(spectra)
    curves = []  # per slice: relative error at ranks 0..max_rank (non-increasing)
    for s in spectra:
        sv2 = s.singular_values.double() ** 2
        tail = torch.flip(torch.cumsum(torch.flip(sv2, [0]), 0), [0])
        tail = torch.cat([tail, tail.new_zeros(1)])[: s.max_rank + 1]
        curves.append(tail / max(float(sv2.sum()), 1e-30))

    def ranks_at(tau: float) -> list[int | None]:
        out: list[int | None] = []
        for s, c in zip(spectra, curves):
            lo = _floor_rank(s, min_rank)
            if s.max_rank < lo or float(c[s.max_rank]) > tau:
                out.append(DENSE)  # even break-even leaves more error than tau
                continue
            r = int(torch.searchsorted(-c, torch.tensor(-tau, dtype=c.dtype), right=True))  # first rank with c <= tau
            out.append(max(lo, min(r, s.max_rank)))
        return out

    levels = sorted({float(v) for c in curves for v in c.tolist()})
    lo, hi = 0, len(levels) - 1  # the smallest tau whose ranks fit the budget
    if kept_params(spectra, ranks_at(levels[hi])) > limit:
        return ranks_at(levels[hi])  # min_rank everywhere still exceeds the budget
    while lo < hi:
        mid = (lo + hi) // 2
        if kept_params(spectra, ranks_at(levels[mid])) <= limit:
            hi = mid
        else:
            lo = mid + 1
    ranks = ranks_at(levels[lo])
    left = limit - kept_params(spectra, ranks)
    while True:  # top up: one more singular value where the relative error is largest and it still fits
        best, best_err = None, -1.0
        for i, (s, r, c) in enumerate(zip(spectra, ranks, curves)):
            if r is not DENSE and r < s.max_rank and s.params_per_rank <= left and float(c[r]) > best_err:
                best, best_err = i, float(c[r])
        if best is None:
            return ranks
        ranks[best] += 1
        left -= spectra[best].params_per_rank


def search_ranks(spectra: list[Spectrum], rank_ratio: float, method: str = DEFAULT_SEARCH, *,
                 min_rank: int = DEFAULT_MIN_RANK) -> list[int | None]:
    if method not in SEARCHES:
        raise SedpaError(f"unknown --rank-search {method!r}: choose {', '.join(SEARCHES)}")
    fn = {"greedy": greedy_ranks, "uniform": uniform_ranks, "relative": relative_ranks, "type": type_ranks,
          "balanced": balanced_ranks}[method]
    return fn(spectra, rank_ratio, min_rank=min_rank)


def total_error(spectra: list[Spectrum], ranks: list[int | None]) -> float:
    return sum(s.error(r) for s, r in zip(spectra, ranks))


def relative_errors(spectra: list[Spectrum], ranks: list[int | None]) -> list[float]:
    """sqrt(dropped / total) per slice (0 for a dense slice)."""
    return [math.sqrt(s.error(r) / e) if (e := s.energy()) else 0.0 for s, r in zip(spectra, ranks)]
