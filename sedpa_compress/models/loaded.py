"""What every stage receives (`LoadedModel`) and the helpers both loaders share (tokenizer, "is this
an artifact?"). It imports neither `models.loader` nor the artifact reader/writer/card (only the
dependency-free `artifact.safeio`), so both sides can import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sedpa_compress.artifact.safeio import CONFIG_MAX
from sedpa_compress.errors import SedpaError
from sedpa_compress.models.families import AttentionGeometry, Family

PATTERN_FILE = "sedpa_pattern.json"  # the same name inside artifacts and beside the embedded model
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")  # a model folder's weights, as transformers loads them
INT8_FILE = "model.int8.safetensors"  # a model folder's weights stored as row-wise int8 (models.int8), in their place


def stored_as_int8(path: Path) -> bool:
    """Whether a model folder's weights are `models.int8`'s file: it is there and no transformers weights are, which
    take precedence (a folder holding both is read as transformers reads it)."""
    path = Path(path)
    return (path / INT8_FILE).is_file() and not any((path / f).is_file() for f in HF_WEIGHT_FILES)


@dataclass
class LoadedModel:
    """A model ready for any stage, with what the stages need to know about where it came from."""

    model: nn.Module
    tokenizer: Any | None  # a transformers tokenizer, or None for random-weight presets
    name: str  # what identifies the base model in files we write (Hub id, dir name, preset)
    source: str  # "hub" | "local" | "embedded" | "preset" | "artifact"
    family: Family
    geometry: AttentionGeometry
    path: Path | None = None
    revision: str | None = None
    artifact: dict[str, Any] | None = field(default=None)  # the config's `sedpa` block for artifacts
    # the fast CUDA runtime's model of these weights for one spec (runtime.generate.fast_model owns
    # it): at most one at a time, so the weights exist at most twice, and once when it consumed them
    fast: Any | None = field(default=None, repr=False, compare=False)
    consumed: bool = field(default=False, repr=False, compare=False)  # the transformers layers were freed
    # the fast runtime's KV caches for this model: "bf16" (the compute dtype) or "fp8" (`--kv-dtype`; an
    # artifact may record its default)
    kv_dtype: str = field(default="bf16", repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> list[int]:
        """Token ids for text; random-weight presets without a tokenizer use UTF-8 bytes."""
        if self.tokenizer is None:
            vocab = self.model.config.vocab_size
            return [b % vocab for b in text.encode("utf-8")]
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        if self.tokenizer is None:
            return bytes(i % 256 for i in ids).decode("utf-8", errors="replace")
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def count_parameters(model: nn.Module) -> int:
    """Parameters a module stores (a tensor shared by two names, e.g. tied embeddings, once; an artifact's factored
    projections count their factors)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def shape_mismatches(state: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """"name (shape) vs (model's shape)" for each tensor of `state` the model has in another shape (what
    load_state_dict would raise on, in many lines)."""
    own = model.state_dict()
    return [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
            if k in own and v.shape != own[k].shape]


def load_tokenizer(path: Path):
    """The tokenizer a model directory carries, or None when it has no tokenizer files.

    For an artifact, call this only after `verify_manifest`: transformers reads whichever tokenizer
    files (and chat template) it finds in the directory.
    """
    from transformers import AutoTokenizer

    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        return None
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise SedpaError(f"cannot load the tokenizer in {path} ({exc}): check its tokenizer files") from None


def is_artifact_dir(path: Path) -> bool:
    """An artifact is a model directory whose config.json carries a `sedpa` block.

    Only classifies: a config.json that is missing, oversized or unparsable is "not an artifact", and
    the loaders that follow say what is wrong with it.
    """
    import json

    cfg = Path(path) / "config.json"
    try:
        if not cfg.is_file() or cfg.stat().st_size > CONFIG_MAX:
            return False
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError, RecursionError):
        return False
    return isinstance(data, dict) and "sedpa" in data
