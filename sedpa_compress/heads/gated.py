"""Gated attention for head identification: each KV head outputs alpha*full + (1-alpha)*streaming.

`GatedAttention` is an attention mode (installed with `runtime.reference.using_mode`) that owns the
only trainable tensor: `gates` [layers, kv_heads]. Query heads of a GQA group share their KV head's
gate. Three backends compute the same function:

- `reference`: masked SDPA with explicit boolean masks (the definition; materialises [t, t] masks).
- `banded` (CPU default): the full path is causal SDPA (no mask tensor), the streaming path attends
  blocks of queries to the only keys they can see (`streaming_attention_banded`), O(t * (sink + 2*recent))
  instead of O(t^2): ~3x faster than `reference` on the CPU at 2K tokens.
- `flex` (CUDA): the full path is causal SDPA (flash kernel), the streaming path is FlexAttention with
  a sink+recent block mask, so no attention matrix is ever materialised, also not for 32K tokens.

Unlike `reference.dual_path_attention`, the mix is computed for every gate value, 0 and 1 included:
training starts at alpha = 1 everywhere and must still get a gradient.

Where "full" comes from (`full_source`): `gated` computes it from the gated model's own queries, keys
and values (already perturbed by the streaming heads below); `original` takes the original model's
attention output at that layer, recorded during the target pass (`record=True`), as DuoAttention's
reference training does (it runs original and gated copies as one batch of two and mixes the gated
copy's streaming output with the original copy's full output).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sedpa_compress.errors import SedpaError
from sedpa_compress.runtime.reference import causal_mask, expand_kv, masked_attention, streaming_mask


def mix_gates(gate_row: torch.Tensor, group: int, dtype: torch.dtype) -> torch.Tensor:
    """[hkv] gates -> [1, hkv*group, 1, 1] weights on the full path (query heads follow their KV head)."""
    return gate_row.to(dtype).repeat_interleave(group).view(1, -1, 1, 1)


def gated_attention_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, gate_row: torch.Tensor,
                              *, sink: int, recent: int, scaling: float,
                              padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """alpha*full + (1-alpha)*streaming with explicit masks: the definition the fast path is tested against."""
    tq, tk, device = query.shape[2], key.shape[2], query.device
    full, stream = causal_mask(tq, tk, device), streaming_mask(tq, tk, sink, recent, device)
    if padding_mask is not None:
        full, stream = full & padding_mask, stream & padding_mask
    g = mix_gates(gate_row, query.shape[1] // key.shape[1], query.dtype)
    return g * masked_attention(query, key, value, full, scaling) + (1 - g) * masked_attention(
        query, key, value, stream, scaling)


def streaming_attention_banded(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, sink: int,
                               recent: int, scaling: float) -> torch.Tensor:
    """Sink + recent attention without a [t, t] matrix: equal to the masked version, for tq == tk (no cache).

    Queries go in blocks of `recent`; a query in block i can only see keys of blocks i-1 and i plus the
    sink, so each block attends to [sink | block i-1 | block i] in one batched SDPA call. Cost and
    memory are O(t * (sink + 2 * recent)).
    """
    b, hq, t, d = query.shape
    group = hq // key.shape[1]
    c, s = recent, min(sink, t)
    n = -(-t // c)
    k, v = expand_kv(key, group), expand_kv(value, group)
    pad = n * c - t
    if pad:  # padded keys sit after every real query (causally invisible); padded queries are dropped
        query, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (query, k, v))

    def windows(x: torch.Tensor) -> torch.Tensor:
        blocks = x.view(b, hq, n, c, d)
        prev = torch.cat([blocks.new_zeros(b, hq, 1, c, d), blocks[:, :, :-1]], dim=2)
        return torch.cat([x[:, :, :s].unsqueeze(2).expand(b, hq, n, s, d), prev, blocks], dim=3)

    dev = query.device
    i = torch.arange(n, device=dev)[:, None, None]
    q_pos = i * c + torch.arange(c, device=dev)[None, :, None]
    j = torch.arange(s + 2 * c, device=dev)[None, None, :]
    in_sink = j < s
    k_pos = torch.where(in_sink, j, (i - 1) * c + (j - s))
    dist = q_pos - k_pos
    # Sink tokens come from the sink slots only, so a key near the start is never counted twice.
    mask = (dist >= 0) & torch.where(in_sink, k_pos < sink, (k_pos >= sink) & (dist < recent))
    out = F.scaled_dot_product_attention(query.view(b, hq, n, c, d), windows(k), windows(v), attn_mask=mask,
                                         scale=scaling)
    return out.reshape(b, hq, n * c, d)[:, :, :t]


def plain_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           padding_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
    """The original model's attention; `is_causal` (flash on CUDA) when there is no cache and no padding."""
    group = query.shape[1] // key.shape[1]
    if padding_mask is None and query.shape[2] == key.shape[2]:
        return F.scaled_dot_product_attention(query, expand_kv(key, group), expand_kv(value, group),
                                              is_causal=True, scale=scaling)
    mask = causal_mask(query.shape[2], key.shape[2], query.device)
    return masked_attention(query, key, value, mask if padding_mask is None else mask & padding_mask, scaling)


class _FlexStreaming:
    """Sink+recent attention through FlexAttention; block masks cached per (tq, tk)."""

    def __init__(self, sink: int, recent: int) -> None:
        from torch.nn.attention.flex_attention import flex_attention

        self.sink, self.recent = sink, recent
        self._masks: dict[tuple[int, int, str], Any] = {}
        # Context lengths vary every step: let dynamo mark the lengths dynamic after the first recompile,
        # and allow enough recompiles that it never falls back to eager flex (which materialises scores).
        import torch._dynamo

        dyn = torch._dynamo.config
        limit = "recompile_limit" if hasattr(dyn, "recompile_limit") else "cache_size_limit"
        setattr(dyn, limit, max(getattr(dyn, limit), 64))
        self._flex = torch.compile(flex_attention, dynamic=None)

    def block_mask(self, tq: int, tk: int, device: torch.device):
        from torch.nn.attention.flex_attention import create_block_mask

        key = (tq, tk, str(device))
        if key not in self._masks:
            sink, recent, offset = self.sink, self.recent, tk - tq

            def mask_mod(b, h, q_idx, kv_idx):
                q = q_idx + offset
                return (q >= kv_idx) & ((kv_idx < sink) | (q - kv_idx < recent))

            # compiled, so the mask is built block by block and never as a dense [tq, tk] tensor (torch's advice
            # in place of the deprecated _compile=True, which did the same)
            self._masks[key] = torch.compile(create_block_mask)(mask_mod, B=None, H=None, Q_LEN=tq, KV_LEN=tk,
                                                                device=device)
        return self._masks[key]

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float) -> torch.Tensor:
        mask = self.block_mask(query.shape[2], key.shape[2], query.device)
        return self._flex(query, key, value, block_mask=mask, scale=scaling,
                          enable_gqa=query.shape[1] != key.shape[1])


class GatedAttention:
    """The identification mode. `gates` is an nn.Parameter [layers, kv_heads], kept in [0, 1] by `clamp_()`.

    Deliberately not an nn.Module: `install_mode` sets the mode as an attribute of every attention
    module, and a Module there would register the gates as parameters of each layer.
    """

    name = "gated"

    def __init__(self, num_layers: int, num_kv_heads: int, *, sink: int, recent: int, init: float = 1.0,
                 backend: str = "reference", device: torch.device | str = "cpu", full_source: str = "gated") -> None:
        if backend not in ("reference", "banded", "flex"):
            raise SedpaError(f"attention backend {backend!r}: choose reference, banded or flex")
        if full_source not in ("gated", "original"):
            raise SedpaError(f"full attention source {full_source!r}: choose gated or original")
        self.sink, self.recent, self.backend, self.full_source = sink, recent, backend, full_source
        self.gates = nn.Parameter(torch.full((num_layers, num_kv_heads), float(init), device=device))
        self._flex = _FlexStreaming(sink, recent) if backend == "flex" else None
        # False: plain causal attention, i.e. the original model (the distillation target), without
        # switching the model's attention implementation back and forth every step.
        self.active = True
        # full_source "original": the target pass records each layer's attention output (record=True)
        # for the gated pass to mix; `forget()` drops them after the step's backward.
        self.record = False
        self._recorded: dict[int, torch.Tensor] = {}

    def forget(self) -> None:
        self._recorded.clear()

    def _original_full(self, layer_idx: int, query: torch.Tensor) -> torch.Tensor:
        full = self._recorded.get(layer_idx)
        if full is None or full.shape != query.shape:
            raise SedpaError(f"layer {layer_idx}: no recorded original attention output for this input; run the "
                             "original model with `record = True` first (full_source 'original')")
        return full

    @classmethod
    def from_mask(cls, mask: list[list[int]], *, sink: int, recent: int, device: torch.device | str = "cpu",
                  backend: str = "auto") -> GatedAttention:
        """0/1 gates from a pattern's mask: the `duo` mode's function (tested equal) on the fast
        backends (banded on the CPU, flex on CUDA), for no-cache forwards such as calibration and
        perplexity. `backend="auto"` picks flex on CUDA, banded elsewhere."""
        if backend == "auto":
            backend = "flex" if torch.device(device).type == "cuda" else "banded"
        g = cls(len(mask), len(mask[0]), sink=sink, recent=recent, backend=backend, device=device)
        with torch.no_grad():
            g.gates.copy_(torch.tensor(mask, dtype=torch.float32, device=g.gates.device))
        g.gates.requires_grad_(False)
        return g

    @torch.no_grad()
    def clamp_(self) -> None:
        self.gates.clamp_(0.0, 1.0)

    def attend(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               padding_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
        if not self.active:
            out = plain_causal_attention(query, key, value, padding_mask, scaling)
            if self.record:
                self._recorded[layer_idx] = out.detach()
            return out
        gate_row = self.gates[layer_idx].to(query.device)
        fast = self.backend == "banded" or (self._flex is not None and query.is_cuda)
        if self.full_source == "original":
            full = self._original_full(layer_idx, query)
            group = query.shape[1] // key.shape[1]
            if fast and padding_mask is None and query.shape[2] == key.shape[2]:
                stream = self._fast_streaming(query, key, value, scaling)
            else:
                mask = streaming_mask(query.shape[2], key.shape[2], self.sink, self.recent, query.device)
                stream = masked_attention(query, key, value, mask if padding_mask is None else mask & padding_mask,
                                          scaling)
            g = mix_gates(gate_row, group, query.dtype)
            return g * full + (1 - g) * stream
        if not fast or padding_mask is not None or query.shape[2] != key.shape[2]:
            return gated_attention_reference(query, key, value, gate_row, sink=self.sink, recent=self.recent,
                                             scaling=scaling, padding_mask=padding_mask)
        group = query.shape[1] // key.shape[1]
        full = plain_causal_attention(query, key, value, None, scaling)
        stream = self._fast_streaming(query, key, value, scaling)
        g = mix_gates(gate_row, group, query.dtype)
        return g * full + (1 - g) * stream

    def _fast_streaming(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        scaling: float) -> torch.Tensor:
        if self._flex is not None and query.is_cuda:
            return self._flex(query, key, value, scaling)
        return streaming_attention_banded(query, key, value, sink=self.sink, recent=self.recent, scaling=scaling)
