"""Geometry presets for speed work with random weights (`--config NAME --random-weights`)."""

from __future__ import annotations

from typing import Any

from sedpa_compress.errors import SedpaError

# Shapes of the public checkpoints the seeds evaluate; values from their config.json files.
PRESETS: dict[str, dict[str, Any]] = {
    "llama-3-8b": dict(
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
        max_position_embeddings=1048576, rms_norm_eps=1e-5, tie_word_embeddings=False,
    ),
    "llama-2-7b": dict(
        model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, rope_theta=10000.0,
        max_position_embeddings=32768, rms_norm_eps=1e-5, tie_word_embeddings=False,
    ),
    "mistral-7b": dict(
        model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, rope_theta=1000000.0,
        max_position_embeddings=32768, rms_norm_eps=1e-5, sliding_window=None, tie_word_embeddings=False,
    ),
    "qwen2-7b": dict(
        model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, rope_theta=1000000.0,
        max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
    ),
    # ~1.2B: the CPU-sized model for timing compression on a developer machine.
    "llama-3.2-1b": dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
        max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True, head_dim=64,
    ),
}


def preset_config(name: str):
    """A transformers config for a named geometry."""
    from transformers import AutoConfig

    if name not in PRESETS:
        raise SedpaError(f"unknown --config {name!r}: choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    model_type = values.pop("model_type")
    return AutoConfig.for_model(model_type, **values)
