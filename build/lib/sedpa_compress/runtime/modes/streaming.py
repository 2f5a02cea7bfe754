"""`streaming`: StreamingLLM, every head keeps only `sink` first + `recent` last tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sedpa_compress.runtime.reference import masked_attention, streaming_mask


@dataclass
class StreamingAttention:
    sink: int = 64
    recent: int = 256
    name: str = "streaming"

    def attend(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               padding_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
        mask = streaming_mask(query.shape[2], key.shape[2], self.sink, self.recent, query.device)
        if padding_mask is not None:
            mask = mask & padding_mask
        return masked_attention(query, key, value, mask, scaling)
