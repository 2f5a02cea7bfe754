"""`duo`: DuoAttention. Retrieval heads (pattern mask 1) see everything, streaming heads sink + recent."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.runtime.reference import dual_path_attention


@dataclass
class DuoAttention:
    pattern: HeadPattern
    sink: int
    recent: int
    window: int | None = None  # SEDPA-W's window on the retrieval path; None for duo and sedpa-s
    name: str = "duo"
    _gates: dict[tuple[int, torch.device], torch.Tensor] = field(default_factory=dict, repr=False)

    def gates(self, layer_idx: int, device: torch.device) -> torch.Tensor:
        key = (layer_idx, device)
        if key not in self._gates:
            self._gates[key] = torch.tensor(self.pattern.mask[layer_idx], dtype=torch.float32, device=device)
        return self._gates[key]

    def attend(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               padding_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
        return dual_path_attention(query, key, value, self.gates(layer_idx, query.device), sink=self.sink,
                                   recent=self.recent, scaling=scaling, window=self.window,
                                   padding_mask=padding_mask)
