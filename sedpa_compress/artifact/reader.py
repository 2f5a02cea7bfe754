"""Load an artifact with the artifact alone: verify the manifest, rebuild the model empty, load tensors.

Nothing here unpickles: tensors come from safetensors, metadata from JSON, and every shape, dtype
and index is checked against the config before it is used, so a stranger's artifact can only fail
with a one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sedpa_compress.artifact.manifest import MANIFEST, artifact_file, check_name, verify_manifest
from sedpa_compress.artifact.safeio import CONFIG_MAX, INDEX_MAX, read_json
from sedpa_compress.artifact.writer import ARTIFACT_FORMAT, PATTERN_FILE
from sedpa_compress.errors import SedpaError
from sedpa_compress.models.families import family_for
from sedpa_compress.models.loaded import LoadedModel, load_tokenizer
from sedpa_compress.svd.factored import DualPathLinear

_FLOAT_DTYPES = {torch.float32, torch.float16, torch.bfloat16}


def read_sedpa_block(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg_path = path / "config.json"
    config = read_json(cfg_path, limit=CONFIG_MAX, what="artifact config", fix="re-create the artifact")
    block = config.get("sedpa") if isinstance(config, dict) else None
    if not isinstance(block, dict):
        raise SedpaError(f"{cfg_path} has no `sedpa` block: not a sedpa artifact")
    if block.get("format_version") != ARTIFACT_FORMAT:
        raise SedpaError(f"artifact format {block.get('format_version')!r} is not {ARTIFACT_FORMAT}: "
                         "upgrade sedpa-compress or re-create the artifact")
    projections = block.get("projections")
    if not isinstance(projections, dict):
        raise SedpaError(f"{cfg_path}: `sedpa.projections` must be an object; re-create the artifact")
    for name, p in projections.items():
        try:
            ok = (p["split"] in ("rows", "cols") and all(isinstance(p[k], int) and not isinstance(p[k], bool)
                                                          and 0 <= p[k] < 2**31  # sizes torch can allocate
                  for k in ("rank", "in_features", "out_features", "dense", "lowrank")) and isinstance(p.get("bias", False), bool)
                  and p["dense"] + p["lowrank"] == (p["out_features"] if p["split"] == "rows" else p["in_features"]))
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise SedpaError(f"{cfg_path}: projection {name!r} is malformed; re-create the artifact")
    # The scalars the runtime and the model card read (the rest of the block is only displayed).
    for key in ("sink", "recent", "window"):
        value = block.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31):
            raise SedpaError(f"{cfg_path}: `sedpa.{key}` must be a token count, not {str(value)[:40]!r}; re-create the artifact")
    for key in ("base_model", "base_revision"):
        if block.get(key) is not None and not isinstance(block[key], str):
            raise SedpaError(f"{cfg_path}: `sedpa.{key}` must be a string; re-create the artifact")
    return config, block


INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"


def _shard_names(path: Path) -> tuple[list[str], dict[str, str] | None]:
    """The weights files to read and the index's tensor -> file map: model.safetensors alone, or the
    shards the index names (each a plain file name inside the artifact). Both at once is ambiguous."""
    index = path / INDEX_FILE
    if not index.is_file():
        return [WEIGHTS_FILE], None
    if (path / WEIGHTS_FILE).is_file():
        raise SedpaError(f"{path} holds both {WEIGHTS_FILE} and {INDEX_FILE}: it is unclear which weights to load; "
                         "re-create the artifact")
    fix = "re-create the artifact"
    data = read_json(index, limit=INDEX_MAX, what="weights index", fix=fix)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise SedpaError(f"{index} is malformed (`weight_map` must map tensor names to file names); {fix}")
    shards = sorted(set(weight_map.values()))
    for name in shards:
        why = check_name(name)
        if why is not None or name in (INDEX_FILE, MANIFEST):
            raise SedpaError(f"{index} names a weights file that {why or 'is not a weights file'} ({name[:80]!r}); {fix}")
    return shards, weight_map


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the artifact, each from exactly one listed weights file.

    A shard holding a tensor its index does not assign to it (a tensor in two shards is one) is
    refused: otherwise whichever file is read last would silently win.
    """
    from safetensors.torch import load_file

    shards, weight_map = _shard_names(path)
    state: dict[str, torch.Tensor] = {}
    for name in shards:
        f = artifact_file(path, name)
        if f is None or not f.is_file():
            raise SedpaError(f"weights file {name} is missing from {path}; re-create the artifact")
        try:
            tensors = load_file(str(f))
        except Exception as exc:  # SafetensorError for truncated/oversized headers, bad offsets
            raise SedpaError(f"{f.name} is not a valid safetensors file ({str(exc).splitlines()[0][:100]}); "
                             "re-download or re-create the artifact") from None
        if weight_map is not None:  # each tensor has one file in the map, so no tensor is read twice
            foreign = sorted(k for k in tensors if weight_map.get(k) != name)
            if foreign:
                raise SedpaError(f"{name} holds tensor {foreign[0]!r}, which {INDEX_FILE} assigns elsewhere (or not at "
                                 "all); re-create the artifact")
        state.update(tensors)
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:100]}" if text else type(exc).__name__


def _check_layer_count(num_layers: Any, state: dict[str, torch.Tensor], path: Path) -> None:
    """The config's layer count against the layers the weights hold, before building anything: a config
    claiming a billion layers would otherwise spend hours building an empty model."""
    import re

    held = {int(m.group(1)) for key in state if (m := re.match(r"model\.layers\.(\d+)\.", key))}
    if not isinstance(num_layers, int) or num_layers != len(held):
        raise SedpaError(f"{path}/config.json says {num_layers!r} layers but the weights hold {len(held)}; "
                         "re-create the artifact")


def _check_indices(name: str, module: DualPathLinear) -> None:
    size = module.out_features if module.split == "rows" else module.in_features
    both = torch.cat([module.dense_index, module.lowrank_index])
    if both.numel() != size or not torch.equal(torch.sort(both).values, torch.arange(size)):
        raise SedpaError(f"artifact projection {name}: its indices are not a permutation of 0..{size - 1}; "
                         "the artifact is corrupt — re-create it")


def load_artifact(path: Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32, verify: bool = True) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    if verify:
        verify_manifest(path)
    raw, block = read_sedpa_block(path)
    try:
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=False)  # never run an artifact's .py
    except Exception as exc:  # noqa: BLE001 - transformers' validators raise a zoo of types for a bad config
        raise SedpaError(f"{path}/config.json is not a valid transformers config ({_first_line(exc)}); "
                         "re-create the artifact") from None
    family = family_for(hf_config)
    state = _load_state(path)
    _check_layer_count(getattr(hf_config, "num_hidden_layers", None), state, path)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation="sdpa",
                                                      trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - a config that parses can still describe an unbuildable model
        raise SedpaError(f"{path}/config.json describes a model transformers cannot build ({_first_line(exc)}); "
                         "re-create the artifact") from None
    modules = dict(model.named_modules())
    for name, p in block["projections"].items():
        parent_name, _, attr = name.rpartition(".")
        old = modules.get(name)
        if old is None or not isinstance(old, torch.nn.Linear) or attr not in ("q_proj", "k_proj", "v_proj", "o_proj"):
            raise SedpaError(f"artifact lists projection {name!r}, which this architecture does not have; re-create the artifact")
        if (old.in_features, old.out_features) != (p["in_features"], p["out_features"]):
            raise SedpaError(f"artifact projection {name} is {p['out_features']}x{p['in_features']} but the config implies "
                             f"{old.out_features}x{old.in_features}; re-create the artifact")
        new = DualPathLinear(p["in_features"], p["out_features"], split=p["split"],
                             dense_index=torch.empty(p["dense"], dtype=torch.long, device="meta"),
                             lowrank_index=torch.empty(p["lowrank"], dtype=torch.long, device="meta"),
                             rank=p["rank"], bias=p.get("bias", False), dtype=dtype, device="meta")
        setattr(modules[parent_name], attr, new)
    expected = model.state_dict()
    tied = bool(getattr(hf_config, "tie_word_embeddings", False))
    if tied:  # a tied pair is stored once, under either name (sedpa-tiny's artifacts hold lm_head.weight)
        emb = next(n for n, m in model.named_modules() if m is model.get_input_embeddings()) + ".weight"
        if emb not in state and "lm_head.weight" in state:
            state[emb] = state.pop("lm_head.weight")
    missing = [k for k in expected if k not in state and not (tied and k == "lm_head.weight")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise SedpaError(f"artifact weights do not match its config ({what}, {len(missing)} missing, "
                         f"{len(unexpected)} unexpected); re-create the artifact")
    for key, tensor in state.items():
        want = expected[key]
        if tuple(tensor.shape) != tuple(want.shape):
            raise SedpaError(f"artifact tensor {key} has shape {tuple(tensor.shape)}, expected {tuple(want.shape)}; "
                             "re-create the artifact")
        if want.dtype == torch.long:
            if tensor.dtype not in (torch.int64, torch.int32):
                raise SedpaError(f"artifact tensor {key} has dtype {tensor.dtype}, expected integer indices")
            state[key] = tensor.long()
        else:
            if tensor.dtype not in _FLOAT_DTYPES:
                raise SedpaError(f"artifact tensor {key} has dtype {tensor.dtype}, expected a float type")
            if not torch.isfinite(tensor).all():
                raise SedpaError(f"artifact tensor {key} holds NaN or inf; re-create the artifact")
            state[key] = tensor.to(dtype)
    model.load_state_dict(state, strict=False, assign=True)
    if tied:  # assign=True replaced the embedding: point lm_head at it before anything moves off the meta device
        model.tie_weights()
    # Non-persistent buffers (rotary inv_freq) were built on the meta device: rebuild them for real.
    for mod_name, module in list(model.named_modules()):
        if mod_name.endswith("rotary_emb"):
            parent, _, attr = mod_name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            with torch.device(device):  # the constructor's signature differs across transformers 5.x
                setattr(owner, attr, type(module)(config=hf_config))
    for name, module in model.named_modules():
        if isinstance(module, DualPathLinear):
            _check_indices(name, module)
            module.refresh_order()
    model.to(device)
    if tied:
        model.tie_weights()
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]
    if leftovers:
        raise SedpaError(f"artifact left {leftovers[0]} uninitialised; re-create the artifact")
    model.eval()
    pattern_path = path / PATTERN_FILE
    return LoadedModel(
        model=model, tokenizer=load_tokenizer(path), name=str(block.get("base_model") or path), source="artifact",
        family=family, geometry=family.geometry(hf_config), path=path, revision=block.get("base_revision"),
        artifact={**block, "pattern_path": str(pattern_path) if pattern_path.is_file() else None},
        kv_dtype=block.get("kv_dtype") or "bf16",
    )
