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


class LayerCache:
    """The caches of one layer: per head group, K and V of shape [batch, heads, slots, head_dim]."""

    def __init__(self, groups: list[HeadGroup], *, batch: int, max_len: int, sink: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        self.groups = groups
        self.sink = sink
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        for g in groups:
            slots = max_len if g.kind == "full" else min(sink + g.band, max_len)
            shape = (batch, g.size, slots, head_dim)
            self.k.append(torch.zeros(shape, dtype=dtype, device=device))
            self.v.append(torch.zeros(shape, dtype=dtype, device=device))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


def cache_bytes_per_layer(groups: list[HeadGroup], *, batch: int, max_len: int, sink: int, head_dim: int,
                          dtype_bytes: int = 2) -> int:
    """What LayerCache would allocate, without allocating it."""
    slots = sum(g.size * (max_len if g.kind == "full" else min(sink + g.band, max_len)) for g in groups)
    return 2 * batch * slots * head_dim * dtype_bytes
