"""`full`: every head attends to the whole context (the baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sedpa_compress.runtime.reference import dual_path_attention


@dataclass
class FullAttention:
    name: str = "full"

    def attend(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               padding_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
        return dual_path_attention(query, key, value, None, sink=0, recent=1, scaling=scaling,
                                   padding_mask=padding_mask)
