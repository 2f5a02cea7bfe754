"""Activation-aware truncated SVD (SVD-LLM): factor W·L where L Lᵀ = E[x xᵀ], then undo L.

Truncating the SVD of W·L minimises E‖(W − W_r) x‖² over calibration activations x, so the
singular values dropped are exactly the output error (per token) they cost.
"""

from __future__ import annotations

import torch

from sedpa_compress.errors import SedpaError


def cholesky_factor(second_moment: torch.Tensor, *, damp: float = 1e-6, max_tries: int = 10) -> torch.Tensor:
    """Lower-triangular L with L Lᵀ = C + λ·mean(diag C)·I, λ raised x10 until C is positive definite
    (C is singular when a direction never activates, e.g. fewer calibration tokens than dimensions)."""
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
    raise SedpaError("the calibration second moment is not positive definite even after damping: "
                     "calibrate on more (and more varied) text with `sedpa calibrate --tokens N`")


def whitened_svd(weight: torch.Tensor, chol: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U, S, Vh of W·L (plain SVD of W when `chol` is None); S² are the per-token output errors."""
    w = weight.float()
    a = w if chol is None else w @ chol
    return torch.linalg.svd(a, full_matrices=False)


def whitened_singular_values(weight: torch.Tensor, chol: torch.Tensor | None) -> torch.Tensor:
    w = weight.float()
    return torch.linalg.svdvals(w if chol is None else w @ chol)


def truncate(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, chol: torch.Tensor | None,
             rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(up [out, r], down [r, in]) with up @ down ≈ W; √S split evenly so both factors are well scaled
    in bf16."""
    root = s[:rank].sqrt()
    up = u[:, :rank] * root
    vh_r = vh[:rank] * root[:, None]
    if chol is None:
        return up, vh_r
    # down = Vh_r · L⁻¹  ⇔  Lᵀ · downᵀ = Vh_rᵀ (triangular solve, no explicit inverse)
    down = torch.linalg.solve_triangular(chol.T, vh_r.T, upper=True).T
    return up, down
