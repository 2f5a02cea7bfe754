"""The reference attention path: any mode, on any device, inside a plain transformers model.

A mode is installed by registering one attention function with transformers' AttentionInterface
(no monkey-patching of model classes) and attaching the mode to each attention module. The math is
plain masked SDPA, so every mode has an exact, readable definition that the fast CUDA runtime is
tested against. Streaming heads are *masked* to sink + recent tokens rather than evicted: with RoPE
applied before caching the two are the same function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

ATTN_IMPLEMENTATION = "sedpa_reference"


class AttentionMode(Protocol):
    """One `--attention` mode. `attend` gets post-RoPE q [b, hq, tq, d] and the whole cache
    k/v [b, hkv, tk, d] and returns [b, hq, tq, d]."""

    name: str

    def attend(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               padding_mask: torch.Tensor | None, scaling: float) -> torch.Tensor: ...


def positions(tq: int, tk: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute query and key positions: the queries are the last `tq` of `tk` cached tokens."""
    k_pos = torch.arange(tk, device=device)
    return k_pos[tk - tq:], k_pos


def causal_mask(tq: int, tk: int, device: torch.device) -> torch.Tensor:
    q_pos, k_pos = positions(tq, tk, device)
    return q_pos[:, None] >= k_pos[None, :]


def streaming_mask(tq: int, tk: int, sink: int, recent: int, device: torch.device,
                   start: torch.Tensor | None = None) -> torch.Tensor:
    """Causal, and only the first `sink` tokens plus the last `recent` (the query itself included): [tq, tk].
    `start` ([B]): each row's first real token of a left-padded batch; the padding before it is never attended to
    and the sink counts from it: [B, tq, tk]."""
    q_pos, k_pos = positions(tq, tk, device)
    dist = q_pos[:, None] - k_pos[None, :]
    if start is None:
        return (dist >= 0) & ((k_pos[None, :] < sink) | (dist < recent))
    key = k_pos[None, :] - start[:, None]  # [B, tk]: positions in each row's own text
    return (dist >= 0)[None] & (key >= 0)[:, None, :] & ((key < sink)[:, None, :] | (dist < recent)[None])


def window_mask(tq: int, tk: int, sink: int, window: int | None, device: torch.device) -> torch.Tensor:
    """Full causal attention, or with `window` the sink plus the last `window` tokens (SEDPA-W)."""
    if window is None:
        return causal_mask(tq, tk, device)
    return streaming_mask(tq, tk, sink, window, device)


def expand_kv(x: torch.Tensor, group: int) -> torch.Tensor:
    """[b, hkv, t, d] -> [b, hkv*group, t, d]: query heads of a GQA group follow their KV head."""
    return x if group == 1 else x.repeat_interleave(group, dim=1)


def masked_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                     scaling: float) -> torch.Tensor:
    group = query.shape[1] // key.shape[1]
    return F.scaled_dot_product_attention(query, expand_kv(key, group), expand_kv(value, group),
                                          attn_mask=mask, scale=scaling)


def _combine(mask: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    return mask if padding_mask is None else mask & padding_mask


def dual_path_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    gates: torch.Tensor | None,
    *,
    sink: int,
    recent: int,
    scaling: float,
    window: int | None = None,
    padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """alpha * full + (1 - alpha) * streaming per KV head; `gates` [hkv] (None: every head full).

    Binary gates compute each head on its own path only; fractional gates (head identification)
    compute both paths for every head and mix them.
    """
    tq, tk, device = query.shape[2], key.shape[2], query.device
    full = _combine(window_mask(tq, tk, sink, window, device), padding_mask)
    if gates is None:
        return masked_attention(query, key, value, full, scaling)
    stream = _combine(streaming_mask(tq, tk, sink, recent, device), padding_mask)
    hkv = key.shape[1]
    group = query.shape[1] // hkv
    binary = bool(((gates == 0) | (gates == 1)).all())
    if not binary:
        g = gates.to(query.dtype).repeat_interleave(group).view(1, -1, 1, 1)
        return g * masked_attention(query, key, value, full, scaling) + (1 - g) * masked_attention(
            query, key, value, stream, scaling)
    out = torch.empty_like(query)
    for heads, mask in ((gates == 1, full), (gates == 0, stream)):
        kv_idx = heads.nonzero().flatten()
        if kv_idx.numel() == 0:
            continue
        q_idx = (kv_idx[:, None] * group + torch.arange(group, device=kv_idx.device)).flatten()
        out[:, q_idx] = masked_attention(query[:, q_idx], key[:, kv_idx], value[:, kv_idx], mask, scaling)
    return out


def _padding_mask(attention_mask: torch.Tensor | None, tq: int, tk: int) -> torch.Tensor | None:
    """transformers hands a 4D bool (True = attend) or additive float mask, or None."""
    if attention_mask is None:
        return None
    m = attention_mask[..., :tq, :tk]
    if m.dtype != torch.bool:
        m = m == 0
    return m


def _sedpa_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float | None = None,
                             dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, None]:
    mode: AttentionMode | None = getattr(module, "sedpa_mode", None)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    tq, tk = query.shape[2], key.shape[2]
    pad = _padding_mask(attention_mask, tq, tk)
    if mode is None:
        out = masked_attention(query, key, value, _combine(causal_mask(tq, tk, query.device), pad), scale)
    else:
        out = mode.attend(module.layer_idx, query, key, value, pad, scale)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, _sedpa_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, sdpa_mask)


_register()


def install_mode(model: nn.Module, mode: AttentionMode | None) -> None:
    """Route every attention layer of `model` through `mode` (None: plain causal attention)."""
    for module in model.modules():
        if hasattr(module, "layer_idx") and hasattr(module, "o_proj"):
            module.sedpa_mode = mode
    model.set_attn_implementation(ATTN_IMPLEMENTATION)


def remove_mode(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, "sedpa_mode"):
            del module.sedpa_mode
    model.set_attn_implementation("sdpa")


@contextlib.contextmanager
def using_mode(model: nn.Module, mode: AttentionMode | None) -> Iterator[nn.Module]:
    """`with using_mode(model, build_mode("duo", pattern=p)): model(ids)`."""
    install_mode(model, mode)
    try:
        yield model
    finally:
        remove_mode(model)
