"""`DualPathLinear`: a projection whose streaming-head slice is two low-rank factors.

q/k/v (`split="rows"`): the output rows of streaming heads are `up @ (down @ x)`, the rows of
retrieval heads stay a dense matrix. o_proj (`split="cols"`): the input columns that come from
streaming heads go through the factors, the rest through the dense matrix. With `--scope all` the
dense part is empty. The artifact stores exactly these tensors (`dense_weight`, `down`, `up`,
`dense_index`, `lowrank_index`, optional `bias`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SPLITS = ("rows", "cols")


class DualPathLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, *, split: str, dense_index: torch.Tensor,
                 lowrank_index: torch.Tensor, rank: int, bias: bool = False,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")
        self.in_features, self.out_features, self.split, self.rank = in_features, out_features, split, rank
        kw = dict(dtype=dtype, device=device)
        n_dense, n_low = dense_index.numel(), lowrank_index.numel()
        self.register_buffer("dense_index", dense_index.to(device=device, dtype=torch.long).clone())
        self.register_buffer("lowrank_index", lowrank_index.to(device=device, dtype=torch.long).clone())
        if split == "rows":
            self.dense_weight = nn.Parameter(torch.empty(n_dense, in_features, **kw))
            self.down = nn.Parameter(torch.empty(rank, in_features, **kw))
            self.up = nn.Parameter(torch.empty(n_low, rank, **kw))
            # output order: [dense rows, low-rank rows] -> original row order (rebuilt after loading)
            self.register_buffer("_inverse", torch.empty(0, dtype=torch.long, device=device), persistent=False)
            self.refresh_order()
        else:
            self.dense_weight = nn.Parameter(torch.empty(out_features, n_dense, **kw))
            self.down = nn.Parameter(torch.empty(rank, n_low, **kw))
            self.up = nn.Parameter(torch.empty(out_features, rank, **kw))
        self.bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None

    @classmethod
    def from_factors(cls, *, split: str, dense_weight: torch.Tensor, down: torch.Tensor, up: torch.Tensor,
                     dense_index: torch.Tensor, lowrank_index: torch.Tensor, in_features: int,
                     out_features: int, bias: torch.Tensor | None = None) -> DualPathLinear:
        layer = cls(in_features, out_features, split=split, dense_index=dense_index, lowrank_index=lowrank_index,
                    rank=down.shape[0], bias=bias is not None, dtype=dense_weight.dtype, device=dense_weight.device)
        with torch.no_grad():
            layer.dense_weight.copy_(dense_weight)
            layer.down.copy_(down)
            layer.up.copy_(up)
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    def refresh_order(self) -> None:
        """Recompute the row permutation from the (possibly just loaded) indices."""
        if self.split == "rows" and self.dense_index.device.type != "meta":
            self._inverse = torch.argsort(torch.cat([self.dense_index, self.lowrank_index]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split == "rows":
            y = torch.cat([F.linear(x, self.dense_weight), F.linear(F.linear(x, self.down), self.up)], dim=-1)
            y = y.index_select(-1, self._inverse)
        else:
            y = F.linear(x.index_select(-1, self.dense_index), self.dense_weight)
            y = y + F.linear(F.linear(x.index_select(-1, self.lowrank_index), self.down), self.up)
        return y if self.bias is None else y + self.bias

    def num_parameters(self) -> int:
        return self.dense_weight.numel() + self.down.numel() + self.up.numel() + (
            self.bias.numel() if self.bias is not None else 0)

    def dense_equivalent(self) -> torch.Tensor:
        """The [out, in] matrix this layer applies (for tests and transformers export)."""
        w = torch.zeros(self.out_features, self.in_features, dtype=self.down.dtype, device=self.down.device)
        low = self.up @ self.down
        if self.split == "rows":
            w[self.dense_index] = self.dense_weight
            w[self.lowrank_index] = low
        else:
            w[:, self.dense_index] = self.dense_weight
            w[:, self.lowrank_index] = low
        return w

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, split={self.split}, rank={self.rank}, "
                f"dense={self.dense_index.numel()}, lowrank={self.lowrank_index.numel()}")
