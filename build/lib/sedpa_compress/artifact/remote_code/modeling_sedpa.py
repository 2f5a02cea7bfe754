"""Load a sedpa artifact with plain transformers: `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`.

This file is copied into every artifact by `sedpa compress` and must stay self-contained (torch and
transformers only): whoever loads the artifact may not have `sedpa-compress` installed. The package
keeps it in sync with `sedpa_compress.svd.factored.DualPathLinear` through a test.

What it gives: the base architecture (llama, mistral or qwen2, picked from `config.model_type`)
with the compressed projections rebuilt as two low-rank factors plus a dense rest, loaded from the
same tensors `sedpa_compress.load` reads. Attention is transformers' own (every head keeps its full
KV cache); the retrieval/streaming head pattern and its memory savings need the sedpa runtime
(`sedpa generate --attention sedpa-s` or `sedpa_compress.load`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, GenerationMixin, PreTrainedModel

SUPPORTED_FAMILIES = ("llama", "mistral", "qwen2")
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


class SedpaLowRankLinear(nn.Module):
    """The math of `sedpa_compress.svd.factored.DualPathLinear`, with the same tensor names.

    split="rows" (q/k/v): output rows `lowrank_index` are up @ down @ x, rows `dense_index` are
    dense_weight @ x. split="cols" (o_proj): input columns `lowrank_index` go through the factors,
    the columns `dense_index` through dense_weight.
    """

    def __init__(self, in_features: int, out_features: int, *, split: str, rank: int, dense: int, lowrank: int,
                 bias: bool = False) -> None:
        super().__init__()
        if split not in ("rows", "cols"):
            raise ValueError(f"split must be 'rows' or 'cols', not {split!r}")
        self.in_features, self.out_features, self.split, self.rank = in_features, out_features, split, rank
        self.register_buffer("dense_index", torch.zeros(dense, dtype=torch.long))
        self.register_buffer("lowrank_index", torch.zeros(lowrank, dtype=torch.long))
        if split == "rows":
            self.dense_weight = nn.Parameter(torch.empty(dense, in_features))
            self.down = nn.Parameter(torch.empty(rank, in_features))
            self.up = nn.Parameter(torch.empty(lowrank, rank))
        else:
            self.dense_weight = nn.Parameter(torch.empty(out_features, dense))
            self.down = nn.Parameter(torch.empty(rank, lowrank))
            self.up = nn.Parameter(torch.empty(out_features, rank))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self._inverse: torch.Tensor | None = None  # row order, computed from the loaded indices on first use

    def _row_order(self) -> torch.Tensor:
        inverse = self._inverse
        if inverse is None or inverse.device != self.dense_index.device:
            # Indices arrive with the checkpoint (after __init__), so the permutation is built lazily.
            inverse = torch.argsort(torch.cat([self.dense_index, self.lowrank_index]))
            self._inverse = inverse
        return inverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split == "rows":
            y = torch.cat([F.linear(x, self.dense_weight), F.linear(F.linear(x, self.down), self.up)], dim=-1)
            y = y.index_select(-1, self._row_order())
        else:
            y = F.linear(x.index_select(-1, self.dense_index), self.dense_weight)
            y = y + F.linear(F.linear(x.index_select(-1, self.lowrank_index), self.down), self.up)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, split={self.split}, rank={self.rank}, "
                f"dense={self.dense_index.numel()}, lowrank={self.lowrank_index.numel()}")


def install_lowrank(model: nn.Module, projections: dict) -> None:
    """Replace each projection named in `config.sedpa["projections"]` by its low-rank module."""
    for name, spec in projections.items():
        parent_name, _, attr = name.rpartition(".")
        if attr not in _PROJECTIONS:
            raise ValueError(f"sedpa artifact lists {name!r}, which is not a q/k/v/o projection")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, attr, None)
        if not isinstance(old, nn.Linear) or (old.in_features, old.out_features) != (spec["in_features"], spec["out_features"]):
            raise ValueError(f"sedpa artifact projection {name} does not match this architecture")
        new = SedpaLowRankLinear(spec["in_features"], spec["out_features"], split=spec["split"], rank=spec["rank"],
                                 dense=spec["dense"], lowrank=spec["lowrank"], bias=bool(spec.get("bias", False)))
        setattr(parent, attr, new.to(dtype=old.weight.dtype, device=old.weight.device))


def _base_class(config) -> type:
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_FAMILIES:
        raise ValueError(f"sedpa remote code supports {', '.join(SUPPORTED_FAMILIES)} bases, not {model_type!r}")
    return getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])


_CLASSES: dict[type, type] = {}


def sedpa_class_for(config) -> type:
    """`<Base>ForCausalLM` whose constructor swaps in the low-rank projections before weights load."""
    base = _base_class(config)
    if base not in _CLASSES:
        def __init__(self, config, *args, **kwargs):
            base.__init__(self, config, *args, **kwargs)
            block = getattr(config, "sedpa", None)
            if not isinstance(block, dict) or not isinstance(block.get("projections"), dict):
                raise ValueError("config.json has no `sedpa.projections`: not a sedpa artifact")
            install_lowrank(self, block["projections"])

        _CLASSES[base] = type(f"Sedpa{base.__name__}", (base,), {"__init__": __init__, "__module__": __name__})
    return _CLASSES[base]


class SedpaForCausalLM(PreTrainedModel, GenerationMixin):
    """Entry point named in the artifact's `auto_map`: dispatches to the base family's class.

    Instances are `Sedpa<Base>ForCausalLM` (a subclass of e.g. `LlamaForCausalLM`), so generation,
    caches and attention backends are the base model's.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        if config is None:
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path,
                                                revision=kwargs.get("revision"), token=kwargs.get("token"))
        return sedpa_class_for(config).from_pretrained(pretrained_model_name_or_path, *model_args, config=config,
                                                       **kwargs)

    @classmethod
    def _from_config(cls, config, **kwargs):
        return sedpa_class_for(config)._from_config(config, **kwargs)

    @classmethod
    def from_config(cls, config, **kwargs):
        return sedpa_class_for(config)._from_config(config, **kwargs)
