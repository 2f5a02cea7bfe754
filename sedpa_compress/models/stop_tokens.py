"""The token ids that end a generation: the tokenizer's eos plus every eos id of `generation_config`.

Chat checkpoints often end a turn with a token that is not the tokenizer's eos: Llama-3-Instruct's
tokenizer says `<|end_of_text|>` (128001) while its turns end with `<|eot_id|>` (128009), which only
`generation_config.json` lists (`"eos_token_id": [128001, 128009]`). Hugging Face's `generate` stops
at that list, and so do LongBench's and DuoAttention's prediction scripts; stopping at the tokenizer's
eos alone lets such a model run on past its answer.
"""

from __future__ import annotations

from typing import Any


def _ids(value: Any) -> list[int]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple, set)):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def stop_token_ids(tokenizer: Any | None, generation_config: Any | None = None) -> list[int]:
    """Tokenizer eos first, then `generation_config`'s eos id or list, without repeats.

    `generation_config` is a transformers GenerationConfig, a dict (generation_config.json), or None.
    """
    eos = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
    if isinstance(generation_config, dict):
        listed = generation_config.get("eos_token_id")
    else:
        listed = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    return list(dict.fromkeys(_ids(eos) + _ids(listed)))


def model_stop_token_ids(loaded: Any) -> list[int]:
    """`stop_token_ids` of a LoadedModel: its tokenizer and the model's generation_config (which
    transformers reads from generation_config.json, or derives from config.json without one)."""
    return stop_token_ids(getattr(loaded, "tokenizer", None),
                          getattr(getattr(loaded, "model", None), "generation_config", None))
