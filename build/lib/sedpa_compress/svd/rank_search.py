"""Rank search: give each projection a rank so the kept parameters meet the budget.

Pure functions over singular-value spectra, so tests can call them directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sedpa_compress.errors import SedpaError

SEARCHES = ("greedy", "uniform")


@dataclass
class Spectrum:
    """One projection slice: its shape and whitened singular values (descending)."""

    name: str
    out_features: int
    in_features: int
    singular_values: torch.Tensor

    @property
    def dense_params(self) -> int:
        return self.out_features * self.in_features

    @property
    def params_per_rank(self) -> int:
        return self.out_features + self.in_features

    @property
    def max_rank(self) -> int:
        """The break-even rank: beyond it two factors cost more than the dense matrix."""
        return min(self.dense_params // self.params_per_rank, self.singular_values.numel())

    def error(self, rank: int) -> float:
        """Whitened truncation error: the energy of the dropped singular values."""
        return float((self.singular_values[rank:].double() ** 2).sum())

    def energy(self) -> float:
        return float((self.singular_values.double() ** 2).sum())


def check_ratio(rank_ratio: float) -> None:
    if not (0.0 < rank_ratio <= 1.0):
        raise SedpaError(f"--rank-ratio {rank_ratio} is outside (0, 1]: pass the fraction of parameters to keep, e.g. 0.85")


def budget(spectra: list[Spectrum], rank_ratio: float) -> int:
    check_ratio(rank_ratio)
    return int(rank_ratio * sum(s.dense_params for s in spectra))


def uniform_ranks(spectra: list[Spectrum], rank_ratio: float) -> list[int]:
    """Every projection keeps the same fraction of its own parameters (the baseline)."""
    check_ratio(rank_ratio)
    return [min(s.max_rank, int(rank_ratio * s.dense_params) // s.params_per_rank) for s in spectra]


def greedy_ranks(spectra: list[Spectrum], rank_ratio: float) -> list[int]:
    """Minimise the summed whitened error subject to the parameter budget.

    Start every projection at its break-even rank and drop singular values in increasing order of
    error added per parameter saved (σ² / (out + in)) until the budget is met. Within a projection σ
    descends, so this global order drops each projection's tail first; the result overshoots the
    budget by less than one rank of one projection.
    """
    limit = budget(spectra, rank_ratio)
    ranks = [s.max_rank for s in spectra]
    excess = sum(r * s.params_per_rank for r, s in zip(ranks, spectra)) - limit
    if excess <= 0:
        return ranks
    values, owner = [], []
    for i, s in enumerate(spectra):
        sv = s.singular_values[: ranks[i]].double()
        values.append(sv**2 / s.params_per_rank)
        owner.append(torch.full((sv.numel(),), i, dtype=torch.long))
    order = torch.argsort(torch.cat(values), stable=True)
    owners = torch.cat(owner)[order]
    costs = torch.tensor([s.params_per_rank for s in spectra], dtype=torch.long)[owners]
    # the shortest prefix of removals whose saved parameters cover the excess
    n_remove = int(torch.searchsorted(torch.cumsum(costs, 0), torch.tensor(excess), right=False)) + 1
    removed = torch.bincount(owners[:n_remove], minlength=len(spectra))
    return [r - int(k) for r, k in zip(ranks, removed)]


def search_ranks(spectra: list[Spectrum], rank_ratio: float, method: str = "greedy") -> list[int]:
    if method not in SEARCHES:
        raise SedpaError(f"unknown --rank-search {method!r}: choose greedy or uniform")
    return greedy_ranks(spectra, rank_ratio) if method == "greedy" else uniform_ranks(spectra, rank_ratio)


def total_error(spectra: list[Spectrum], ranks: list[int]) -> float:
    return sum(s.error(r) for s, r in zip(spectra, ranks))
