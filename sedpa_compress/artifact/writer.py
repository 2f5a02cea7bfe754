"""Write an artifact directory atomically: config with a `sedpa` block, safetensors, pattern,
tokenizer, generation config, model card and a sha256 manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sedpa_compress import __version__
from sedpa_compress.atomic import atomic_directory, atomic_write_json, atomic_write_text, check_out
from sedpa_compress.errors import SedpaError
from sedpa_compress.artifact.card import base_license, render_card
from sedpa_compress.artifact.heatmap import write_pattern_heatmap
from sedpa_compress.artifact.manifest import write_manifest
from sedpa_compress.artifact.remote_code import AUTO_MAP, copy_remote_code
from sedpa_compress.artifact.safeio import CONFIG_MAX, read_json
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models.loaded import PATTERN_FILE, LoadedModel, is_artifact_dir

ARTIFACT_FORMAT = 1


def replaceable_artifact(out: Path) -> bool:
    """What `--overwrite` may replace: a sedpa artifact (config.json with a `sedpa` block) or an empty
    folder; never a file, a symlink or a folder of something else."""
    out = Path(out)
    if out.is_symlink() or not out.is_dir():
        return False
    return not any(out.iterdir()) or is_artifact_dir(out)


def check_artifact_out(out: Path, *, overwrite: bool) -> None:
    """Refuse a bad --out before any work: inside a file, existing without --overwrite, not an artifact."""
    check_out(out, overwrite=overwrite, replace_if=replaceable_artifact, replaceable="a sedpa artifact")


def sedpa_block(loaded: LoadedModel, *, pattern: HeadPattern | None, projections: dict[str, dict],
                settings: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """What the config's `sedpa` block records: enough to rebuild the model and to explain it."""
    block: dict[str, Any] = {
        "format_version": ARTIFACT_FORMAT,
        "sedpa_version": __version__,
        "base_model": loaded.name,
        "base_revision": loaded.revision,
        "projections": projections,
        **settings,
        "metrics": metrics,
    }
    if pattern is not None:
        block["pattern"] = {
            "file": PATTERN_FILE,
            "retrieval_ratio": round(pattern.actual_retrieval_ratio, 6),
            "retrieval_heads": sum(map(sum, pattern.mask)),
            "streaming_heads": pattern.num_layers * pattern.num_kv_heads - sum(map(sum, pattern.mask)),
        }
        block.setdefault("sink", pattern.sink)
        block.setdefault("recent", pattern.recent)
    return block


def storage_dtype(loaded: LoadedModel) -> torch.dtype:
    """The dtype the artifact stores its weights in: the base model's own (its config.json's `dtype` or
    `torch_dtype`), not the one it was loaded in for compression (fp32 on a CPU), so a bf16 base gives
    a bf16 artifact. A base without a recorded floating dtype keeps the loaded one."""
    loaded_dtype = next(loaded.model.parameters()).dtype
    path = Path(loaded.path) / "config.json" if loaded.path is not None else None
    if path is None or not path.is_file():
        return loaded_dtype
    cfg = read_json(path, limit=CONFIG_MAX, what=f"{path}", fix="check the base model's config.json")
    name = (cfg.get("dtype") or cfg.get("torch_dtype")) if isinstance(cfg, dict) else None
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else loaded_dtype


def stored_state_dict(model: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The weights as saved: floating tensors in `dtype`, integer ones (factor indices) as they are.
    Tensors that share storage (tied embeddings) stay shared after the cast, so they are saved once."""
    out: dict[str, torch.Tensor] = {}
    cast: dict[tuple[int, torch.Size], torch.Tensor] = {}
    for name, v in model.state_dict().items():
        v = v.detach()
        if v.is_floating_point():
            key = (v.data_ptr(), v.shape)
            if key not in cast:
                cast[key] = v.to(device="cpu", dtype=dtype).contiguous()
            out[name] = cast[key]
        else:
            out[name] = v.contiguous().cpu()
    return out


def write_artifact(out: Path, loaded: LoadedModel, block: dict[str, Any], *, pattern: HeadPattern | None,
                   overwrite: bool = False, extra_files: dict[str, str] | None = None) -> Path:
    """Everything is written into a temporary sibling directory, then renamed to `out`."""
    from huggingface_hub import save_torch_state_dict

    model = loaded.model
    if "license" not in block and (license_ := base_license(loaded.path)):
        block = {**block, "license": license_}  # the base model's licence carries over to the card
    with atomic_directory(Path(out), overwrite=overwrite, replace_if=replaceable_artifact,
                          replaceable="a sedpa artifact") as tmp:
        config = model.config.to_dict()
        config.pop("_attn_implementation_autoset", None)
        dtype = storage_dtype(loaded)
        config["dtype"] = str(dtype).removeprefix("torch.")
        config.pop("torch_dtype", None)
        config["sedpa"] = block
        # transformers users: AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True) runs the
        # copied modeling_sedpa.py; sedpa's own loader ignores auto_map (the base family has local code).
        config["auto_map"] = dict(AUTO_MAP)
        atomic_write_json(tmp / "config.json", config)
        state = stored_state_dict(model, dtype)
        try:
            save_torch_state_dict(state, tmp, max_shard_size="5GB", metadata={"format": "pt", "sedpa": str(ARTIFACT_FORMAT)})
        except Exception as exc:  # a full disk surfaces as safetensors' own error type, not OSError
            if type(exc).__name__ != "SafetensorError":
                raise
            raise SedpaError(f"cannot write {out}: {str(exc).splitlines()[0]}; free disk space or choose another path") from None
        if pattern is not None:
            pattern.save(tmp / PATTERN_FILE)
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            atomic_write_text(tmp / name, text)
        copy_remote_code(tmp)
        heatmap = write_pattern_heatmap(pattern, tmp) if pattern is not None else None
        atomic_write_text(tmp / "README.md", render_card(config, block, pattern,
                                                         heatmap=heatmap.name if heatmap is not None else None))
        write_manifest(tmp)
    return Path(out)


def read_config(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / "config.json").read_text())
