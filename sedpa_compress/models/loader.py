"""Load a causal LM from a Hub id, a local directory, the embedded default, or a geometry preset."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from sedpa_compress.artifact.safeio import CONFIG_MAX
from sedpa_compress.errors import SedpaError
from sedpa_compress.models.families import family_for
# LoadedModel, the tokenizer loader and is_artifact_dir live in models/loaded.py (shared with artifact/,
# which must not import this module); re-exported here for the code that imports them from the loader.
from sedpa_compress.models.loaded import (INT8_FILE, PATTERN_FILE, LoadedModel, is_artifact_dir,
                                          load_tokenizer, shape_mismatches, stored_as_int8)
from sedpa_compress.models.presets import preset_config

_load_tokenizer = load_tokenizer  # the former private name
__all__ = ["DEFAULT_MODEL", "LoadedModel", "PATTERN_FILE", "is_artifact_dir", "load_model",
           "load_pretrained_dir", "load_tokenizer", "resolve_model_path", "shipped_pattern_path"]

DEFAULT_MODEL = "sedpa-tiny"
EMBEDDED_DIR = Path(__file__).parent / "embedded"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def shipped_pattern_path(loaded: LoadedModel) -> Path | None:
    """The head pattern a model directory carries (artifacts, the embedded sedpa-tiny), if any.

    For an artifact, the one its loader found listed in the verified manifest, never whatever file
    of that name is there now."""
    if loaded.artifact is not None:
        carried = loaded.artifact.get("pattern_path")
        return Path(carried) if carried else None
    if loaded.path is not None and (Path(loaded.path) / PATTERN_FILE).is_file():
        return Path(loaded.path) / PATTERN_FILE
    return None


def default_out_dir(loaded: LoadedModel) -> Path:
    """`sedpa compress` without --out: out/<model>-sedpa."""
    base = Path(str(loaded.name)).name if loaded.source == "local" else str(loaded.name).split("/")[-1]
    return Path("out") / f"{base.replace(':', '-')}-sedpa"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """fp32 on the CPU (bf16 matmuls there are slow and noisy), bf16 on accelerators."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def parse_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise SedpaError(f"unknown --dtype {dtype!r}: choose one of {', '.join(names)}")
    return names[dtype]


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    path = EMBEDDED_DIR / name
    if not (path / "config.json").is_file():
        raise SedpaError(
            f"the embedded model {name!r} is missing from this install ({path}): reinstall sedpa-compress "
            "or pass --model with a local directory"
        )
    return path


def resolve_model_path(spec: str, revision: str | None = None) -> tuple[Path, str, str | None]:
    """Turn a --model value into (local directory, source, revision); downloads Hub ids when online."""
    if spec == DEFAULT_MODEL or (spec.startswith("sedpa-") and (EMBEDDED_DIR / spec).is_dir()):
        return embedded_model_dir(spec), "embedded", None
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise SedpaError(f"--model {spec}: no config.json there; pass a Hugging Face model directory")
        return path, "local", None
    repo_id, _, at = spec.partition("@")  # ORG/NAME@REVISION: a branch, tag or commit (e.g. one `sedpa pull --revision` got)
    if at:
        if revision is not None and revision != at:
            raise SedpaError(f"--model {spec} names revision {at!r} but --revision is {revision!r}: give it once")
        revision = at
    if not _HUB_ID.match(repo_id) or repo_id.startswith((".", "/", "~")) or (at == "" and "@" in spec):
        raise SedpaError(f"--model {spec}: no such directory; pass an existing model directory or a Hub id ORG/NAME")
    path = _download(repo_id, revision)
    if not (path / "config.json").is_file():
        raise SedpaError(f"--model {spec}: that Hub repo has no config.json; it is not a model sedpa can load")
    return path, "hub", revision


def _download(repo_id: str, revision: str | None) -> Path:
    """A Hub model in the local cache: the cached snapshot when it is complete (repeated runs, offline
    machines with a pulled copy), else what sedpa loads of it, from one commit (artifact.hub.fetch_model)."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    from sedpa_compress.artifact.hub import _network_errors, cached_model, fetch_model

    cached = cached_model(repo_id, revision)
    if cached is not None:
        return cached
    try:
        return fetch_model(repo_id, revision=revision)[0]
    except RevisionNotFoundError:
        raise SedpaError(f"--model {repo_id}: the Hub repo has no revision {revision!r}; check the branch, tag or commit") from None
    except RepositoryNotFoundError:
        raise SedpaError(f"--model {repo_id}: no such repository on the Hub (or it is private: run `huggingface-cli login`)") from None
    except (HfHubHTTPError, OSError, ValueError, *_network_errors()) as exc:
        raise SedpaError(
            f"cannot fetch {repo_id} from the Hugging Face Hub ({type(exc).__name__}): this machine seems offline; "
            "download it elsewhere and pass the local directory with --model ./path, or `sedpa pull` it where there is network"
        ) from None


def load_model(
    spec: str | None = None,
    *,
    config: str | None = None,
    random_weights: bool = False,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    revision: str | None = None,
    seed: int = 0,
) -> LoadedModel:
    """Load the model a command's --model/--config flags name; `None` means the embedded sedpa-tiny."""
    torch_dtype = parse_dtype(dtype, device)
    if config is not None:
        if spec is not None:
            raise SedpaError("pass either --model or --config, not both")
        if not random_weights:
            raise SedpaError(f"--config {config} builds a geometry without weights: add --random-weights")
        return _random_model(config, torch_dtype, device, seed)
    if random_weights:
        raise SedpaError("--random-weights goes with --config NAME (a geometry preset)")
    path, source, rev = resolve_model_path(spec or DEFAULT_MODEL, revision)
    if is_artifact_dir(path):
        from sedpa_compress.artifact.reader import load_artifact

        return load_artifact(path, device=device, dtype=torch_dtype)
    return load_pretrained_dir(path, source=source, name=spec or DEFAULT_MODEL, dtype=torch_dtype,
                               device=device, revision=rev)


@contextlib.contextmanager
def quiet_weight_loading() -> Iterator[None]:
    """No transformers progress bar ("Loading weights ...") while sedpa loads a model: it would land in
    the middle of `sedpa generate`'s output. The previous setting (and huggingface_hub's, which
    transformers toggles with it) is restored after."""
    import warnings

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils import logging as hf_logging

    was_on, hub_was_off = hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            with warnings.catch_warnings():  # huggingface_hub warns when HF_HUB_DISABLE_PROGRESS_BARS forbids it
                warnings.simplefilter("ignore")
                hf_logging.enable_progress_bar()
        if hub_was_off:
            disable_progress_bars()


def load_pretrained_dir(path: Path, *, source: str, name: str, dtype: torch.dtype, device: str,
                        revision: str | None = None) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        too_big = (path / "config.json").stat().st_size > CONFIG_MAX
    except OSError:
        too_big = False  # transformers says what is wrong with it below
    if too_big:
        raise SedpaError(f"{path}/config.json is larger than {CONFIG_MAX >> 20} MiB, far more than a model config "
                         "needs: pass a Hugging Face model directory")
    try:
        # trust_remote_code=False, always: a model directory's auto_map must never run its .py files
        # (and never prompts "run the custom code? [y/N]", which would hang a non-interactive run).
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers' config validators raise many types
        msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise SedpaError(f"cannot read {path}/config.json ({msg}): pass a Hugging Face model directory") from None
    family = family_for(hf_config)
    if stored_as_int8(path):
        model = _load_int8(path, hf_config, dtype)
    else:
        try:
            # use_safetensors=True: a pytorch_model.bin is a pickle, and sedpa never unpickles a stranger's file.
            with quiet_weight_loading():
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa",
                                                             trust_remote_code=False, use_safetensors=True)
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, RuntimeError, safetensors' own error type...
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SedpaError(f"cannot load weights from {path}: {msg}; check the directory holds *.safetensors") from None
    model.to(device).eval()
    return LoadedModel(
        model=model, tokenizer=load_tokenizer(path), name=name if source != "local" else str(path),
        source=source, family=family, geometry=family.geometry(hf_config), path=path, revision=revision,
    )


def _load_int8(path: Path, hf_config, dtype: torch.dtype):
    """A model folder whose weights are row-wise int8 (`models.int8`): built from its config, the weights
    dequantized into it. Every weight must be there but a tied output head, which is tied after."""
    from transformers import AutoModelForCausalLM

    # imported here, not at the top: `python -m sedpa_compress.models.int8` runs that module, which the package
    # must not have imported before it
    from sedpa_compress.models.int8 import load_int8_state_dict

    state = load_int8_state_dict(path / INT8_FILE, dtype)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation="sdpa",
                                             trust_remote_code=False)
    tied = {"lm_head.weight"} if getattr(hf_config, "tie_word_embeddings", False) else set()
    wrong = shape_mismatches(state, model)
    if wrong:  # load_state_dict would raise a multi-line RuntimeError
        raise SedpaError(f"{path / INT8_FILE} does not fit {path}/config.json ({wrong[0]}): quantize the folder "
                         "again from its model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) - tied or unexpected:
        what = ", ".join([f"missing {m}" for m in sorted(set(missing) - tied)][:3] +
                         [f"unexpected {u}" for u in sorted(unexpected)][:3])
        raise SedpaError(f"{path / INT8_FILE} does not fit {path}/config.json ({what}): quantize the folder "
                         "again from its model.safetensors")
    if tied:
        model.tie_weights()
    return model


def _random_model(name: str, dtype: torch.dtype, device: str, seed: int) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    hf_config = preset_config(name)
    family = family_for(hf_config)
    torch.manual_seed(seed)
    # Build directly on the target device: an 8B model initialised on the CPU takes minutes.
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation="sdpa",
                                                 trust_remote_code=False)
    model.eval()
    return LoadedModel(model=model, tokenizer=None, name=f"random:{name}", source="preset", family=family,
                       geometry=family.geometry(hf_config))
