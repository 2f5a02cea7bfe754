"""Per-family adapters: the few places where Llama, Mistral and Qwen2 differ for sedpa."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sedpa_compress.errors import SedpaError


@dataclass(frozen=True)
class AttentionGeometry:
    """Shape facts every stage needs: how many layers and heads, and how query heads group."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    max_position_embeddings: int

    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 for MHA)."""
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class Family:
    """What sedpa needs to know about one architecture family."""

    name: str
    model_types: tuple[str, ...]
    qkv_bias: bool  # Qwen2 has biases on q/k/v; they stay dense and follow the rows they belong to

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.model.layers

    def attention(self, model: nn.Module, layer_idx: int) -> nn.Module:
        return self.layers(model)[layer_idx].self_attn

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [layer.self_attn for layer in self.layers(model)]

    def geometry(self, config) -> AttentionGeometry:
        num_heads = config.num_attention_heads
        num_kv = getattr(config, "num_key_value_heads", None) or num_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // num_heads
        return AttentionGeometry(
            num_layers=config.num_hidden_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv,
            head_dim=head_dim,
            hidden_size=config.hidden_size,
            max_position_embeddings=getattr(config, "max_position_embeddings", 0) or 0,
        )


LLAMA = Family("llama", ("llama",), qkv_bias=False)
MISTRAL = Family("mistral", ("mistral",), qkv_bias=False)
QWEN2 = Family("qwen2", ("qwen2",), qkv_bias=True)
FAMILIES: tuple[Family, ...] = (LLAMA, MISTRAL, QWEN2)


def family_for(config) -> Family:
    """The adapter for a transformers config; unsupported architectures are refused by name."""
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = ", ".join(t for f in FAMILIES for t in f.model_types)
    archs = ",".join(getattr(config, "architectures", None) or []) or model_type
    raise SedpaError(
        f"unsupported architecture {archs!r} (model_type {model_type!r}): sedpa supports {supported}; "
        "pass a model of one of these families"
    )
