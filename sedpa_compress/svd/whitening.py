"""Activation-aware truncated SVD (SVD-LLM): factor W·L where L Lᵀ = E[x xᵀ], then undo L.

Truncating the SVD of W·L minimises E‖(W − W_r) x‖² over calibration activations x, so the
singular values dropped are exactly the output error (per token) they cost.
"""

from __future__ import annotations

import torch

from sedpa_compress.errors import SedpaError


def cholesky_factor(second_moment: torch.Tensor, *, damp: float = 1e-6, max_tries: int = 10,
                    name: str = "the calibration second moment") -> torch.Tensor:
    """Lower-triangular L with L Lᵀ = C + λ·mean(diag C)·I, λ raised x10 until C is positive definite
    (C is singular when a direction never activates, e.g. fewer calibration tokens than dimensions)."""
    if not torch.isfinite(second_moment).all():  # no damping makes NaN/inf positive definite
        bad = int((~torch.isfinite(second_moment)).sum())
        raise SedpaError(f"{name} holds {bad} non-finite values (NaN/inf: activations overflowed during calibration): "
                         "calibrate again in float32 (`sedpa calibrate --dtype float32`) or on other text")
    c = second_moment.double()
    c = (c + c.T) / 2
    scale = c.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    lam = 0.0
    for attempt in range(max_tries):
        chol, info = torch.linalg.cholesky_ex(c + lam * scale * eye)
        if int(info) == 0 and torch.isfinite(chol).all():
            return chol.float()
        lam = damp if attempt == 0 else lam * 10
    raise SedpaError(f"{name} is not positive definite even after damping: "
                     "calibrate on more (and more varied) text with `sedpa calibrate --tokens N`")


def whitened_svd(weight: torch.Tensor, chol: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U, S, Vh of W·L (plain SVD of W when `chol` is None); S² are the per-token output errors."""
    w = weight.float()
    a = w if chol is None else w @ chol
    return torch.linalg.svd(a, full_matrices=False)


def candidate_factors(weight: torch.Tensor, chol: torch.Tensor | None,
                      max_rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SVD per slice, kept up to `max_rank`: (U_m, S, D_m = Vh_m·L⁻¹). Any rank r ≤ max_rank is
    then a slice (`factors_at_rank`), so rank search needs no second SVD."""
    u, s, vh = whitened_svd(weight, chol)
    vh_m = vh[:max_rank]
    d = vh_m if chol is None else torch.linalg.solve_triangular(chol.T, vh_m.T, upper=True).T
    return u[:, :max_rank].contiguous(), s, d.contiguous()


def factors_at_rank(u_m: torch.Tensor, s: torch.Tensor, d_m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) at `rank`, √S split evenly between them."""
    root = s[:rank].sqrt()
    return u_m[:, :rank] * root, d_m[:rank] * root[:, None]
