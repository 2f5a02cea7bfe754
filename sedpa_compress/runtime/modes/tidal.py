"""`tidal`: TidalDecode, position-persistent sparse attention while decoding.

Prefill is full attention. While decoding, the first `dense_layers` layers run full attention; a
token-selection layer runs full attention too and keeps, for every KV head, the `top_k` positions
with the highest attention probability (summed over the query heads of that KV head's GQA group:
the group reads one K/V set, so it shares one selection; with MHA it is one head's own top-k, as in
the paper's reference code); every following layer attends, head by head, only to the positions its
KV head was given, until a re-selection layer (TidalDecode's "correction" layer) selects again.

Defaults follow the paper's Llama-3-8B setting (32 layers: dense layers 0-1, selection at layer 2,
re-selection at layer 13): selection at the first layer after the dense layers with a strong retrieval head,
and re-selection at the first later layer whose KV heads carry about as much retrieval gate as any in the
model's head pattern (`pattern_selection_layers`: DuoAttention's identification says where the heads that
read the whole context are; the paper chose its layer 13 by a sweep, and the rule gives 13 on DuoAttention's
Llama-3-8B patterns) or, without a pattern or where that layer falls in the last quarter, at round(13/32 of
the depth). Layers before the first selection run full attention. The selection layers decide what every
later layer can read: on sedpa-tiny (8 layers; strong retrieval heads first in layer 3, the copying heads in
layer 5) selecting at 3 and 5 equals full on NIAH at 1K-32K, 2 and 5 loses cells at 26K-32K, and 2 and 3
scored 45% at 6K-8K against full's 80% (bench/results/tidal_selection_sets_sedpa-tiny.json,
tidal_layers_sedpa-tiny-cpu.json). This is the reference definition; the CUDA runtime
(`runtime/model.py`) computes the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from sedpa_compress.runtime.modes.table import DEFAULTS
from sedpa_compress.runtime.reference import causal_mask, masked_attention


def tidal_selection_layers(num_layers: int, dense_layers: int = DEFAULTS.dense_layers,
                           selection_layers: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The token-selection layers: the given ones, or right after the dense layers and again at
    round(13/32 of the depth) (the paper's re-selection layer for Llama-3-8B)."""
    if selection_layers is not None:
        return tuple(sorted(set(int(s) for s in selection_layers)))
    first = min(dense_layers, num_layers - 1)
    again = round(13 * num_layers / 32)
    return tuple(sorted({first, again} if first < again < num_layers else {first}))


def parse_selection_layers(text: str | None) -> tuple[int, ...] | None:
    """`--selection-layers 2,5` -> (2, 5); None stays None (the defaults)."""
    from sedpa_compress.errors import SedpaError

    if text is None:
        return None
    try:
        layers = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        layers = ()
    if not layers or min(layers) < 0:
        raise SedpaError(f"--selection-layers {text!r}: pass layer indices separated by commas, e.g. 2,5")
    return layers


def pattern_selection_layers(gates: list[list[float]], dense_layers: int = DEFAULTS.dense_layers,
                             tolerance: float = 0.05, strong: float = 0.5) -> tuple[int, ...] | None:
    """Token selection at the first layer after the dense layers with a retrieval head, one whose gate is at least
    `strong` times the model's strongest (before it, every head attends locally, and a top-k picked from local
    attention is what the layers after it would read); re-selection at the earliest later layer whose KV heads'
    gates sum to within `tolerance` of the largest such sum: the first layer that needs the whole context about
    as much as any picks the positions the layers after it read. None where either falls in the model's last
    quarter (a re-selection there would leave almost every sparse layer on the first selection, what the
    re-selection layer exists to correct): the depth's default then.

    Measured on sedpa-tiny (layer 2's strongest gate 0.28, layer 3's 0.81, layer 5 both heads ~1.0): (3, 5) equals
    full on NIAH at 1K-32K; (2, 5) equals it to 16K and loses 2 of 20 cells at 26K and 32K
    (bench/results/tidal_selection_sets_sedpa-tiny.json), and 13/32 of the depth (layer 3 alone) scored 45% at
    6K-8K against full's 80% (bench/results/tidal_layers_sedpa-tiny-cpu.json). DuoAttention's published patterns
    (Llama-2-7B-32K, Llama-3-8B-Gradient-1048k/-4194k, Llama-3.1-8B, Mistral v0.2/v0.3) all have a head of gate
    ~1 in layer 2, so selection stays at 2, the paper's choice, and the -1048k and -4194k patterns re-select at
    13, the layer the TidalDecode paper chose for that model by a sweep (`sedpa heads import` their
    full_attention_heads.tsv, `sedpa heads show`)."""
    num_layers = len(gates)
    last_quarter = math.ceil(0.75 * num_layers)
    dense = min(dense_layers, num_layers - 1)
    strongest = max(max(row) for row in gates)
    first = next((li for li in range(dense, num_layers) if max(gates[li]) >= strong * strongest), dense)
    if first >= last_quarter and first > dense:
        return None
    later = range(first + 1, num_layers)
    if not later:
        return (first,)
    sums = [sum(row) for row in gates]
    top = max(sums[li] for li in later)
    again = min(li for li in later if sums[li] >= (1 - tolerance) * top)
    if again >= last_quarter:
        return None
    return (first, again)


def group_selection_scores(query: torch.Tensor, key: torch.Tensor, valid: torch.Tensor, scaling: float) -> torch.Tensor:
    """Attention probability of the last query position summed over each KV head's query heads.
    query [b, hq, tq, d], key [b, hkv, tk, d], valid [b, tk] -> [b, hkv, tk] (invalid keys -1)."""
    b, hq = query.shape[:2]
    hkv = key.shape[1]
    q = query[:, :, -1].float().view(b, hkv, hq // hkv, -1)
    logits = torch.einsum("bhgd,bhtd->bhgt", q, key.float()) * scaling
    logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1).sum(2).masked_fill(~valid[:, None, :], -1.0)


@dataclass
class TidalAttention:
    top_k: int = DEFAULTS.top_k
    dense_layers: int = DEFAULTS.dense_layers
    selection_layers: tuple[int, ...] | None = None  # None: tidal_selection_layers' defaults
    num_layers: int = 32
    selection_source: str | None = None  # where the selection layers came from (reported by the benchmarks)
    name: str = "tidal"
    _index: torch.Tensor | None = field(default=None, repr=False)  # [b, hkv, k] the selected positions

    def __post_init__(self) -> None:
        from sedpa_compress.errors import SedpaError

        if self.top_k < 1:
            raise SedpaError(f"--top-k {self.top_k}: pass at least 1")
        if self.selection_layers is not None:
            self.selection_layers = tuple(int(s) for s in self.selection_layers)
        if self.selection_layers is not None and not all(0 <= s < self.num_layers for s in self.selection_layers):
            raise SedpaError(f"--selection-layers {','.join(map(str, self.selection_layers))}: the model has "
                             f"{self.num_layers} layers (0-{self.num_layers - 1})")
        if self.selection_source is None:
            self.selection_source = "given" if self.selection_layers is not None else "model depth (13/32)"

    def selections(self) -> tuple[int, ...]:
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
            scores = group_selection_scores(query, key, valid, scaling)
            n = min(self.top_k, int(valid.sum(-1).min()))
            self._index = torch.topk(scores, n, dim=-1).indices
            return masked_attention(query, key, value, mask, scaling)
        idx = self._index[..., None]  # [b, hkv, n, 1]: each KV head reads its own positions
        k = torch.gather(key, 2, idx.expand(-1, -1, -1, key.shape[3]))
        v = torch.gather(value, 2, idx.expand(-1, -1, -1, value.shape[3]))
        return masked_attention(query, k, v, torch.ones(1, k.shape[2], dtype=torch.bool, device=query.device), scaling)
