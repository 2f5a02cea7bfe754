"""Static, preallocated KV caches: a full-length cache for full-path heads, a `sink + band` ring for
ring-path heads (streaming heads: band = recent; SEDPA-W retrieval heads: band = window).

A ring slot holds the token at position p in slot p (p < sink) or sink + (p - sink) % band. With
RoPE applied before caching, attention does not care about slot order, so after writing token p
the ring holds exactly the sink and the last `band` tokens, which is the streaming mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HeadGroup:
    """A contiguous run of (reordered) KV heads of one layer that share a cache kind."""

    kind: str  # "full" | "ring"
    heads: tuple[int, ...]  # original KV head ids, in their reordered order
    band: int = 0  # ring only: how many recent tokens besides the sink

    @property
    def size(self) -> int:
        return len(self.heads)


def ring_slot(pos: torch.Tensor | int, sink: int, band: int):
    """The slot that holds the token at `pos` (works on ints and tensors)."""
    if isinstance(pos, int):
        return pos if pos < sink else sink + (pos - sink) % band
    return torch.where(pos < sink, pos, sink + torch.remainder(pos - sink, band))


def ring_positions(written: int, sink: int, band: int) -> torch.Tensor:
    """Position held by each ring slot after `written` tokens (-1: empty), on the CPU."""
    slots = torch.full((sink + band,), -1, dtype=torch.long)
    n_sink = min(written, sink)
    slots[:n_sink] = torch.arange(n_sink)
    if written > sink:
        lo = max(sink, written - band)
        pos = torch.arange(lo, written)
        slots[sink + (pos - sink) % band] = pos
    return slots


def ring_write_plan(start: int, end: int, sink: int, band: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For a chunk of positions [start, end): (offsets into the chunk, ring slots) of the tokens
    that survive in the ring once the chunk is written (unique slots)."""
    pos = torch.arange(start, end)
    keep = (pos < sink) | (pos >= max(end - band, sink))
    pos = pos[keep]
    return pos - start, ring_slot(pos, sink, band)


KV_DTYPES = ("bf16", "fp8")  # bf16: the runtime's compute dtype; fp8: e4m3 with a scale per token and head
FP8_MAX = 448.0  # the largest finite float8_e4m3fn
SCALE_DTYPE = torch.bfloat16  # one scale per (token, head): 2 bytes beside head_dim bytes of fp8


def check_kv_dtype(kv_dtype: str) -> None:
    """Refuse a KV dtype the runtime does not have (every mode reads fp8 caches)."""
    from sedpa_compress.errors import SedpaError

    if kv_dtype not in KV_DTYPES:
        raise SedpaError(f"--kv-dtype {kv_dtype!r}: choose one of {', '.join(KV_DTYPES)}")


def quantize_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., d] -> (fp8 e4m3 bits as uint8 [..., d], scale [...]): each vector scaled so its largest
    magnitude is FP8_MAX. Stored as uint8 so index_copy_ and slicing work on every device."""
    amax = x.abs().amax(-1).float()
    scale = (amax / FP8_MAX).clamp_min(1e-12).to(SCALE_DTYPE)
    q = (x.float() / scale.float()[..., None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q.view(torch.uint8), scale


def append_kv(k_store: torch.Tensor, v_store: torch.Tensor, k_scale: torch.Tensor | None,
              v_scale: torch.Tensor | None, index: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """k/v [b, heads, n, d] into slots `index` [n] of one group's caches; fp8 caches (scales given) get
    the quantized bits and their scales. Plain tensor ops, so the decode step can compile it."""
    if k_scale is None:
        k_store.index_copy_(2, index, k)
        v_store.index_copy_(2, index, v)
        return
    for x, store, scales in ((k, k_store, k_scale), (v, v_store, v_scale)):
        bits, scale = quantize_fp8(x)
        store.index_copy_(2, index, bits)
        scales.index_copy_(2, index, scale)


def dequantize_fp8(bits: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (bits.view(torch.float8_e4m3fn).float() * scale.float()[..., None]).to(dtype)


class LayerCache:
    """The caches of one layer: per head group, K and V of shape [batch, heads, slots, head_dim]; with
    kv_dtype fp8 they hold e4m3 bits (uint8) and `k_scale`/`v_scale` [batch, heads, slots] one scale
    per token and head. Writes quantize, `read` / `read_span` dequantize (the prefill's attention
    inputs, a block of the past at a time); the decode kernel reads the fp8 bits and scales itself."""

    def __init__(self, groups: list[HeadGroup], *, batch: int, max_len: int, sink: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str, kv_dtype: str = "bf16") -> None:
        self.groups = groups
        self.sink = sink
        self.dtype = dtype  # what reads return
        self.quantized = kv_dtype == "fp8"
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.k_scale: list[torch.Tensor | None] = []
        self.v_scale: list[torch.Tensor | None] = []
        store = torch.uint8 if self.quantized else dtype
        for g in groups:
            slots = max_len if g.kind == "full" else min(sink + g.band, max_len)
            shape = (batch, g.size, slots, head_dim)
            self.k.append(torch.zeros(shape, dtype=store, device=device))
            self.v.append(torch.zeros(shape, dtype=store, device=device))
            for scales in (self.k_scale, self.v_scale):
                scales.append(torch.zeros(shape[:3], dtype=SCALE_DTYPE, device=device) if self.quantized else None)

    def nbytes(self) -> int:
        ts = self.k + self.v + [t for t in self.k_scale + self.v_scale if t is not None]
        return sum(t.numel() * t.element_size() for t in ts)

    def write(self, gi: int, index: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """k/v [b, heads, n, d] into slots `index` [n] (positions or ring slots) of group `gi`."""
        append_kv(self.k[gi], self.v[gi], self.k_scale[gi], self.v_scale[gi], index, k, v)

    def write_span(self, gi: int, start: int, end: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """k/v [b, heads, end - start, d] into slots [start, end) of group `gi` (full-length caches)."""
        if not self.quantized:
            self.k[gi][:, :, start:end] = k
            self.v[gi][:, :, start:end] = v
            return
        for x, store, scales in ((k, self.k[gi], self.k_scale[gi]), (v, self.v[gi], self.v_scale[gi])):
            bits, scale = quantize_fp8(x)
            store[:, :, start:end] = bits
            scales[:, :, start:end] = scale

    def read(self, gi: int, end: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots [0, end) of group `gi` as K, V in the compute dtype (a view, or dequantized for fp8)."""
        return self.read_span(gi, 0, self.k[gi].shape[2] if end is None else end)

    def read_span(self, gi: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots [start, end) of group `gi` as K, V in the compute dtype (dequantized for fp8)."""
        k, v = self.k[gi][:, :, start:end], self.v[gi][:, :, start:end]
        if not self.quantized:
            return k, v
        return (dequantize_fp8(k, self.k_scale[gi][:, :, start:end], self.dtype),
                dequantize_fp8(v, self.v_scale[gi][:, :, start:end], self.dtype))

    def scales(self, gi: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.k_scale[gi], self.v_scale[gi]


def kv_bytes_per_value(kv_dtype: str, head_dim: int, dtype_bytes: int = 2) -> float:
    """Bytes one cached K or V vector element costs, its scale included."""
    return 1 + SCALE_DTYPE.itemsize / head_dim if kv_dtype == "fp8" else dtype_bytes


def cache_bytes_per_layer(groups: list[HeadGroup], *, batch: int, max_len: int, sink: int, head_dim: int,
                          dtype_bytes: int = 2, kv_dtype: str = "bf16") -> int:
    """What LayerCache would allocate, without allocating it."""
    slots = sum(g.size * (max_len if g.kind == "full" else min(sink + g.band, max_len)) for g in groups)
    return int(2 * batch * slots * head_dim * kv_bytes_per_value(kv_dtype, head_dim, dtype_bytes))
