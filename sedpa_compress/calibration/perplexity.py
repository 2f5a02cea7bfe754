"""Perplexity of a model on token windows (the compress report's before/after check)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.inference_mode()
def perplexity(model: torch.nn.Module, windows: list[list[int]], device: torch.device | str,
               mode=None) -> float:
    """exp(mean next-token NLL) over non-overlapping windows; with `mode` (an attention mode, e.g.
    `GatedAttention.from_mask(pattern.mask, ...)` for duo) installed on the reference path."""
    import contextlib

    from sedpa_compress.runtime.reference import using_mode

    total, count = 0.0, 0
    with (using_mode(model, mode) if mode is not None else contextlib.nullcontext()):
        for ids in windows:
            x = torch.tensor([ids], device=device)
            logits = model(input_ids=x, use_cache=False).logits[0, :-1].float()
            total += F.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            count += x.shape[1] - 1
    return math.exp(total / count) if count else float("nan")


def heldout_windows(encode, text: str, *, seq_len: int, count: int) -> list[list[int]]:
    ids = encode(text)
    return [ids[i:i + seq_len] for i in range(0, min(len(ids) - 1, seq_len * count), seq_len) if len(ids[i:i + seq_len]) > 1]
