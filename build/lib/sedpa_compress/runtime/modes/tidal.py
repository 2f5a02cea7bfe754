"""`tidal`: TidalDecode, position-persistent sparse attention while decoding.

The first layers run full attention. A token-selection layer runs full attention too and keeps the
`top_k` positions with the highest attention probability (summed over every query head, each
against its own GQA KV head); the layers after it attend only to those positions, until a
re-selection layer picks again. Prefill is full attention. Defaults follow the paper's Llama-3-8B
setting: 2 dense layers, selection at layer 2, re-selection at layer 13 of 32 (scaled to depth).
This is the reference definition; the CUDA runtime (`runtime/model.py`) computes the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sedpa_compress.runtime.reference import causal_mask, expand_kv, masked_attention

DEFAULT_TOP_K = 2048
DEFAULT_DENSE_LAYERS = 2


def selection_scores(query: torch.Tensor, key: torch.Tensor, valid: torch.Tensor, scaling: float) -> torch.Tensor:
    """Attention probability of the last query summed over heads: [b, tk] (invalid keys -1)."""
    group = query.shape[1] // key.shape[1]
    logits = torch.einsum("bhd,bhtd->bht", query[:, :, -1].float(), expand_kv(key, group).float()) * scaling
    logits = logits.masked_fill(~valid[:, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1).sum(1).masked_fill(~valid, -1.0)


@dataclass
class TidalAttention:
    top_k: int = DEFAULT_TOP_K
    dense_layers: int = DEFAULT_DENSE_LAYERS
    selection_layers: tuple[int, ...] | None = None  # None: (dense_layers, round(13/32 * num_layers))
    num_layers: int = 32
    name: str = "tidal"
    _index: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from sedpa_compress.errors import SedpaError

        if self.top_k < 1:
            raise SedpaError(f"--top-k {self.top_k}: pass at least 1")
        if self.selection_layers is not None:
            self.selection_layers = tuple(int(s) for s in self.selection_layers)

    def selections(self) -> tuple[int, ...]:
        from sedpa_compress.runtime.model import tidal_selection_layers

        return tidal_selection_layers(self.num_layers, self.dense_layers, self.selection_layers)

    def attend(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               padding_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
        tq, tk = query.shape[2], key.shape[2]
        mask = causal_mask(tq, tk, query.device)
        if padding_mask is not None:
            mask = mask & padding_mask
        selections = self.selections()
        if tq > 1 or layer_idx < min(selections):  # prefill and the dense layers: full attention
            return masked_attention(query, key, value, mask, scaling)
        if layer_idx in selections:
            valid = mask[..., -1, :].reshape(-1, tk).expand(query.shape[0], tk)
            scores = selection_scores(query, key, valid, scaling)
            n = min(self.top_k, int(valid.sum(-1).min()))
            self._index = torch.topk(scores, n, dim=-1).indices
            return masked_attention(query, key, value, mask, scaling)
        idx = self._index[:, None, :, None]
        k = torch.gather(key, 2, idx.expand(-1, key.shape[1], -1, key.shape[3]))
        v = torch.gather(value, 2, idx.expand(-1, value.shape[1], -1, value.shape[3]))
        return masked_attention(query, k, v, torch.ones(1, k.shape[2], dtype=torch.bool, device=query.device), scaling)
