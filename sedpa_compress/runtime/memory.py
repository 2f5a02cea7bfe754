"""Memory planning: estimate what a run allocates before allocating it, and the longest context
that fits, so a too-long request is refused with a number instead of an out-of-memory crash."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sedpa_compress.runtime.cache import cache_bytes_per_layer

GIB = 1 << 30
MARGIN = 1 * GIB  # allocator fragmentation, cuBLAS/Triton workspaces, CUDA graph pool


@dataclass
class MemoryPlan:
    cache_bytes: int  # the static KV caches
    workspace_bytes: int  # prefill activations of one chunk + decode scratch
    free_bytes: int | None  # what the device has free now (None: CPU, not checked)

    @property
    def needed(self) -> int:
        return self.cache_bytes + self.workspace_bytes + MARGIN

    @property
    def fits(self) -> bool:
        return self.free_bytes is None or self.needed <= self.free_bytes


def cache_bytes(model, *, batch: int, max_len: int) -> int:
    return sum(cache_bytes_per_layer(layer.groups, batch=batch, max_len=max_len, sink=model.spec.sink,
                                     head_dim=model.d, dtype_bytes=model.dtype.itemsize, kv_dtype=model.spec.kv_dtype)
               for layer in model.layers)


def workspace_bytes(model, *, batch: int, chunk: int, max_len: int) -> int:
    """A generous bound on one prefill chunk's temporaries (the decode step needs far less)."""
    e = model.dtype.itemsize
    width = model.hidden * 4 + (model.hq + 2 * model.hkv) * model.d * 4 + model.layers[0].gate_up.shape[0] * 3
    act = batch * chunk * width * e
    bands = [g.band for layer in model.layers for g in layer.groups if g.kind == "ring"]
    band = max(bands, default=0) + model.spec.sink
    band_keys = band + chunk
    attn = batch * (chunk * band_keys * 3 + 2 * band_keys * model.hq * model.d * e + chunk * model.hq * model.d * 16)
    from sedpa_compress.runtime.kernels import EXPAND_LIMIT, PAST_BLOCK

    full = any(g.kind == "full" for layer in model.layers for g in layer.groups)
    expand = min(EXPAND_LIMIT, 2 * batch * max_len * model.hq * model.d * e) if full else 0
    # tidal: the selection scores (fp32); with fp8 caches its keys converted a block at a time fit in `dequant`
    tidal = batch * model.hq * max_len * 4 * 3 if model.spec.mode == "tidal" else 0
    logits = batch * model.vocab * 4 * 2
    # fp8 caches: the prefill's attention reads the full heads' past dequantized one block at a time
    # (kernels.causal_chunk_attention_read) and merges the blocks in fp32, plus the chunk's quantization
    # temporaries (fp32)
    full_heads = max((g.size for layer in model.layers for g in layer.groups if g.kind == "full"), default=0)
    block = min(max_len, PAST_BLOCK + chunk)
    dequant = (2 * batch * full_heads * block * model.d * e + 2 * batch * full_heads * model.group * chunk * model.d * 4
               + 2 * batch * model.hkv * chunk * model.d * 4 if model.spec.kv_dtype == "fp8" else 0)
    return act + attn + expand + tidal + logits + dequant


def free_device_bytes(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free


def plan(model, *, batch: int, max_len: int, chunk: int, free_bytes: int | None = None) -> MemoryPlan:
    """What a runner of this size allocates, against `free_bytes` (default: what the GPU has free
    now; on the CPU nothing is checked)."""
    free = free_bytes if free_bytes is not None else free_device_bytes(model.device)
    return MemoryPlan(cache_bytes(model, batch=batch, max_len=max_len),
                      workspace_bytes(model, batch=batch, chunk=chunk, max_len=max_len), free)


def position_limit(model) -> int | None:
    """The longest context the decode kernels index when some head keeps a full-length cache: a head's slots x
    head_dim elements stay under 2^31, as the kernels compute a slot's offset in int32 (a head's base offset is
    int64): 16.7M tokens at head dim 128. None when every cache is a ring (its slots do not grow)."""
    full = any(g.kind == "full" for layer in model.layers for g in layer.groups)
    return (2**31 - 1) // model.d if full else None


def max_context(model, *, batch: int = 1, chunk: int = 8192, free_bytes: int | None = None) -> int:
    """The longest cache length (prompt + new tokens) whose plan fits in `free_bytes` (default: now free).
    Binary search: the plan grows monotonically with the length."""
    free = free_bytes if free_bytes is not None else free_device_bytes(model.device)
    if free is None:
        raise ValueError("max_context needs a CUDA device or free_bytes")

    def fits(n: int) -> bool:
        need = (cache_bytes(model, batch=batch, max_len=n) + workspace_bytes(model, batch=batch, chunk=min(chunk, n),
                                                                              max_len=n) + MARGIN)
        return need <= free

    limit = position_limit(model) or 1 << 31
    if fits(limit):
        return limit
    lo, hi = 0, 1 << 12
    while hi < limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit)
    while hi - lo > 256:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def describe(nbytes: int) -> str:
    return f"{nbytes / GIB:.1f} GiB"
