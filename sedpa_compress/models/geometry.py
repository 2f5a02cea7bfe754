"""A model's attention geometry from its config alone: no weights are read or downloaded.

What checking a head pattern against a model needs (layers, KV heads). `--model` takes the same values
as everywhere (Hub id, local directory, artifact, embedded `sedpa-tiny`) and `--config` a geometry
preset; a Hub id fetches only its config.json.
"""

from __future__ import annotations

from pathlib import Path

from sedpa_compress.errors import SedpaError
from sedpa_compress.models.families import AttentionGeometry, family_for
from sedpa_compress.models.loader import DEFAULT_MODEL, EMBEDDED_DIR, resolve_model_path
from sedpa_compress.models.presets import preset_config


def model_geometry(spec: str | None = None, *, config: str | None = None,
                   revision: str | None = None) -> tuple[str, AttentionGeometry]:
    """(name, geometry) of `--model SPEC` or `--config PRESET`; None and None mean sedpa-tiny."""
    if config is not None:
        if spec is not None:
            raise SedpaError("pass either --model or --config, not both")
        hf_config = preset_config(config)
        return f"random:{config}", family_for(hf_config).geometry(hf_config)
    spec = spec or DEFAULT_MODEL
    local = spec == DEFAULT_MODEL or (EMBEDDED_DIR / spec).is_dir() or Path(spec).expanduser().exists()
    if local:
        path, _, _ = resolve_model_path(spec)  # checks the directory; nothing is downloaded
        config_file = path / "config.json"
    else:
        config_file = _hub_config(spec, revision)
    return spec, _geometry_of(config_file)


def _geometry_of(config_file: Path) -> AttentionGeometry:
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.from_pretrained(config_file.parent, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers' config validators raise many types
        msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise SedpaError(f"cannot read {config_file} ({msg}): pass a Hugging Face model directory") from None
    return family_for(hf_config).geometry(hf_config)


def _hub_config(spec: str, revision: str | None) -> Path:
    """config.json of a Hub model: from the local cache when it is there, else downloaded (that file only)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    from sedpa_compress.models.loader import _HUB_ID

    repo_id, _, at = spec.partition("@")
    revision = revision or at or None
    if not _HUB_ID.match(repo_id):
        raise SedpaError(f"--model {spec}: no such directory; pass an existing model directory or a Hub id ORG/NAME")
    try:
        return Path(hf_hub_download(repo_id, "config.json", revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, EntryNotFoundError, FileNotFoundError, OSError):
        pass
    try:
        return Path(hf_hub_download(repo_id, "config.json", revision=revision))
    except RevisionNotFoundError:
        raise SedpaError(f"--model {repo_id}: the Hub repo has no revision {revision!r}; check the branch, tag or commit") from None
    except RepositoryNotFoundError:
        raise SedpaError(f"--model {repo_id}: no such repository on the Hub (or it is private: run `huggingface-cli login`)") from None
    except EntryNotFoundError:
        raise SedpaError(f"--model {repo_id}: that Hub repo has no config.json; it is not a model sedpa can load") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise SedpaError(
            f"cannot fetch {repo_id}/config.json from the Hugging Face Hub ({type(exc).__name__}): this machine seems "
            "offline; pass a local model directory with --model ./path, or the geometry with --config NAME") from None
