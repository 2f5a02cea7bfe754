"""`IdentifyConfig`: everything head identification needs, read from a recipe YAML and overridden by flags.

A recipe is plain data (`recipes/identify-<model>.yaml`): a flat mapping of the fields below, plus
optional `description` / `model` notes. Unknown fields are refused by name, so a typo never silently
falls back to a default.

Streaming heads have two shapes, as in DuoAttention: `sink`/`recent` are what the gates are trained
with, `deploy_sink`/`deploy_recent` what the pattern file records for the `duo`/`sedpa-*` modes (empty:
the training values). DuoAttention's published 7-8B runs train at 128/256 and deploy at 64/256; that is
what `published_defaults()` (identify-heads without a recipe) and the 7-8B recipes say.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sedpa_compress.errors import SedpaError

OPTIMIZERS = ("adamw", "adam", "sgd")
BACKENDS = ("auto", "reference", "banded", "flex")
FULL_SOURCES = ("gated", "original")


@dataclass
class IdentifyConfig:
    """Gate training for `sedpa identify-heads`. Field defaults are DuoAttention's published 7-8B training
    settings; `published_defaults()` adds its deployment shape (sink 64 / recent 256)."""

    # Attention shape of a streaming head while the gates train (DuoAttention: 128 / 256) ...
    sink: int = 128
    recent: int = 256
    # ... and the one the pattern file records for the runtime (None: the training value).
    deploy_sink: int | None = None
    deploy_recent: int | None = None
    # Optimisation (DuoAttention: AdamW lr 0.02, no weight decay, L1 weight 0.05, 2000 steps,
    # linear warm-up over the first 20% of steps and decay over the last 20% down to 10%).
    steps: int = 2000
    # Samples per optimizer step, their distillation losses averaged (the L1 term counted once). Under
    # torchrun each of N processes takes samples r, r+N, ... of every step (so batch_size >= N); one
    # process accumulates them, with the same result. A step's samples share one context length.
    batch_size: int = 1
    lr: float = 0.02
    reg_weight: float = 0.05  # lambda of the L1 term on the gates
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    warmup_fraction: float = 0.2
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.1
    init_gate: float = 1.0  # every head starts as a retrieval head
    # Where the full-attention half of a gated head's mix comes from: `original`, the original model's
    # attention output at that layer (DuoAttention's reference code), or `gated`, full attention over
    # the gated model's own (already perturbed) states. `original` measured better on sedpa-tiny (duo
    # NIAH 0.65 vs 0.50, duo perplexity +0.37% vs +0.77% over full; probe equal:
    # bench/results/identify_full_source_sedpa-tiny-cpu.json); it skips the gated pass's full attention
    # and keeps every layer's original attention output for the step (layers x tokens x hidden values).
    full_attention_source: str = "original"
    # Synthetic multi-passkey data.
    context_min: int = 1000
    context_max: int = 32000
    context_intervals: int = 50  # context lengths come from this many evenly spaced values in [min, max]
    num_passkeys: int = 10
    depth_min: float = 0.05
    depth_max: float = 0.95
    haystack: str | None = None  # a UTF-8 text file; None: the bundled text (train split)
    seed: int = 0
    # Turning gates into the mask (exactly one of them; ratio by default).
    retrieval_ratio: float | None = 0.5
    threshold: float | None = None
    # Machinery.
    checkpoint_every: int = 50
    gradient_checkpointing: str = "auto"  # auto (on for CUDA) | on | off
    attention_backend: str = "auto"  # auto (flex on CUDA, banded elsewhere) | reference | banded | flex
    dtype: str = "auto"
    # Notes that travel into the pattern file; not used by training.
    description: str = ""
    model: str = ""

    def validate(self) -> IdentifyConfig:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise SedpaError(msg)

        need(self.sink >= 0 and self.recent >= 1, f"sink {self.sink} / recent {self.recent}: need sink >= 0 and recent >= 1")
        need(self.pattern_sink >= 0 and self.pattern_recent >= 1,
             f"deploy_sink {self.deploy_sink} / deploy_recent {self.deploy_recent}: need sink >= 0 and recent >= 1")
        need(self.full_attention_source in FULL_SOURCES,
             f"full_attention_source {self.full_attention_source!r}: choose one of {', '.join(FULL_SOURCES)}")
        need(self.steps >= 1, f"steps {self.steps}: need at least 1 training step")
        need(self.batch_size >= 1, f"batch_size {self.batch_size}: need at least 1 sample per step")
        need(self.lr > 0, f"lr {self.lr}: the learning rate must be positive")
        need(self.reg_weight >= 0, f"reg_weight {self.reg_weight}: the L1 weight must be >= 0")
        need(self.optimizer in OPTIMIZERS, f"optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        need(0 <= self.warmup_fraction <= 1 and 0 <= self.decay_fraction <= 1 and 0 < self.min_lr_ratio <= 1,
             "warmup_fraction/decay_fraction must be in [0, 1] and min_lr_ratio in (0, 1]")
        need(0.0 <= self.init_gate <= 1.0, f"init_gate {self.init_gate}: gates live in [0, 1]")
        need(1 <= self.context_min <= self.context_max,
             f"context range {self.context_min}..{self.context_max}: need 1 <= context_min <= context_max")
        need(self.context_intervals >= 1, "context_intervals must be >= 1")
        need(self.num_passkeys >= 1, f"num_passkeys {self.num_passkeys}: need at least one passkey")
        need(0.0 <= self.depth_min <= self.depth_max <= 1.0,
             f"depths {self.depth_min}..{self.depth_max}: need 0 <= depth_min <= depth_max <= 1")
        need((self.retrieval_ratio is None) != (self.threshold is None),
             "give exactly one of retrieval_ratio or threshold to turn gates into the mask")
        if self.retrieval_ratio is not None:
            need(0.0 <= self.retrieval_ratio <= 1.0, f"retrieval_ratio {self.retrieval_ratio} is outside [0, 1]")
        need(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        need(self.gradient_checkpointing in ("auto", "on", "off"),
             f"gradient_checkpointing {self.gradient_checkpointing!r}: choose auto, on or off")
        need(self.attention_backend in BACKENDS,
             f"attention_backend {self.attention_backend!r}: choose one of {', '.join(BACKENDS)}")
        return self

    @property
    def pattern_sink(self) -> int:
        """The sink the pattern file records (deployment)."""
        return self.sink if self.deploy_sink is None else self.deploy_sink

    @property
    def pattern_recent(self) -> int:
        return self.recent if self.deploy_recent is None else self.deploy_recent

    def with_overrides(self, **overrides: Any) -> IdentifyConfig:
        """Flags win over the recipe; `None` means the flag was not given."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - {f.name for f in fields(self)})
        if unknown:
            raise SedpaError(f"unknown identify-heads setting(s) {', '.join(unknown)}")
        if "threshold" in given and "retrieval_ratio" not in given:
            given["retrieval_ratio"] = None  # --threshold replaces the recipe's ratio
        if "retrieval_ratio" in given and "threshold" not in given:
            given["threshold"] = None
        return dataclasses.replace(self, **given).validate()

    def fingerprint_fields(self) -> dict[str, Any]:
        """Everything that changes the trained gates (not notes, not how often we checkpoint, not the mask rule)."""
        skip = {"description", "model", "checkpoint_every", "retrieval_ratio", "threshold", "deploy_sink",
                "deploy_recent"}
        if self.batch_size == 1:  # one sample per step, as before the field existed: old checkpoints still resume
            skip.add("batch_size")
        return {k: v for k, v in asdict(self).items() if k not in skip}


RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"  # the shipped recipes of a source checkout


def shipped_recipe_for(model: str, recipes_dir: Path = RECIPES_DIR) -> Path | None:
    """The shipped `identify-*.yaml` whose `model:` names this model (Hub id, or a local dir of that name).

    So `sedpa identify-heads` on the embedded sedpa-tiny uses its tiny recipe, not the 8B defaults.
    Of several matches the shortest file name wins (the published settings, not the `-fast` variant).
    """
    import yaml

    name = Path(model.rstrip("/")).name.lower()
    for path in sorted(recipes_dir.glob("identify-*.yaml"), key=lambda p: (len(p.name), p.name)):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        target = str(data.get("model", "")) if isinstance(data, dict) else ""
        if target and (target == model or target.split("/")[-1].lower() == name):
            return path
    return None


def published_defaults() -> IdentifyConfig:
    """DuoAttention's published 7-8B run: train at sink 128 / recent 256, deploy at 64 / 256."""
    return IdentifyConfig(deploy_sink=64, deploy_recent=256).validate()


def load_recipe(path: Path | str | None) -> IdentifyConfig:
    """An `IdentifyConfig` from a recipe YAML file (None: `published_defaults()`)."""
    if path is None:
        return published_defaults()
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SedpaError(f"recipe {path} does not exist: pass a YAML file such as recipes/identify-sedpa-tiny.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: a huge integer
        first = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
        raise SedpaError(f"recipe {path} does not parse as YAML ({first}): fix the file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SedpaError(f"recipe {path} must be a mapping of settings (name: value), got {type(data).__name__}")
    return config_from_dict(data, source=str(path))


def config_from_dict(data: dict[str, Any], source: str = "recipe") -> IdentifyConfig:
    known = {f.name: f for f in fields(IdentifyConfig)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise SedpaError(f"{source}: unknown field(s) {', '.join(unknown)}; known fields are {', '.join(known)}")
    defaults = IdentifyConfig()
    values: dict[str, Any] = {}
    for key, value in data.items():
        values[key] = _coerce(key, value, getattr(defaults, key), source)
    if "threshold" in values and values["threshold"] is not None and "retrieval_ratio" not in values:
        values["retrieval_ratio"] = None
    try:
        return IdentifyConfig(**values).validate()
    except SedpaError as exc:
        raise SedpaError(f"{source}: {exc}") from None


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """YAML gives ints for floats and the like; refuse values of the wrong kind by field name."""
    if value is None:
        if key in ("haystack", "retrieval_ratio", "threshold", "deploy_sink", "deploy_recent"):
            return None
        raise SedpaError(f"{source}: field `{key}` is empty; give a value or remove the line")
    kind = type(default) if default is not None else (
        float if key in ("retrieval_ratio", "threshold") else int if key in ("deploy_sink", "deploy_recent") else str)
    if key == "haystack":
        kind = str
    if kind is bool or isinstance(value, bool):
        if not isinstance(value, bool) or kind is not bool:
            raise SedpaError(f"{source}: field `{key}` must be {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and (isinstance(value, float) or abs(value) < 2**1000):
            return float(value)  # (an integer beyond float's range is refused below, not an OverflowError)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise SedpaError(f"{source}: field `{key}` must be {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r}")


def fingerprint(model_id: dict[str, Any], cfg: IdentifyConfig) -> str:
    """A short hash naming the model and the training settings a checkpoint belongs to."""
    blob = json.dumps({"model": model_id, "recipe": cfg.fingerprint_fields()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
