"""`sedpa push` / `sedpa pull`: artifacts to and from the Hugging Face Hub, through huggingface_hub.

Push checks everything it can before the first request (repo id, manifest, token, --results),
uploads a staged copy of the artifact whose model card names the repo (and shows any --results),
and makes the repo hold exactly that (files left over from an earlier push are deleted in the same
commit). Pull downloads a snapshot into the Hub cache, where `--model ORG/NAME[@REV]` finds it: an
artifact whole, its manifest verified; a base model only with the files sedpa loads.
Every Hub or network failure becomes one SedpaError line.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from sedpa_compress.errors import SedpaError

# The Hub's rules: a namespace and a name of letters, digits, '-', '_', '.', no '--' or '..',
# not starting or ending with '-' or '.', name at most 96 characters.
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_PART}/{_PART}$")
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]+$")
NO_TOKEN = ("no Hugging Face token: run `huggingface-cli login` (or `hf auth login`) or set HF_TOKEN "
            "to a token with write access")


def check_repo_id(repo_id: str, flag: str = "--repo-id") -> str:
    """ORG/NAME as the Hub accepts it, or a one-line SedpaError."""
    repo_id = (repo_id or "").strip()
    name = repo_id.split("/")[-1]
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or len(name) > 96:
        raise SedpaError(f"{flag} {repo_id!r} is not a Hub repo id ORG/NAME: use letters, digits, '-', '_' and '.', "
                         "e.g. my-org/llama-3-8b-sedpa")
    return repo_id


def check_revision(revision: str | None, flag: str = "--revision", what: str = "branch name") -> str | None:
    if revision is None:
        return None
    if not _BRANCH.match(revision) or ".." in revision or revision.startswith(("/", "-")) or revision.endswith(("/", ".")):
        raise SedpaError(f"{flag} {revision!r} is not a valid {what}: use letters, digits, '-', '_', '.', '/'")
    return revision


def resolve_token(token: str | None = None) -> str:
    """An explicit token, else HF_TOKEN, else the one `huggingface-cli login` stored."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise SedpaError(NO_TOKEN)
    return token


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport-level failures of whichever HTTP client this huggingface_hub uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        errors += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(errors)


def _server_message(err) -> str:
    msg = getattr(err, "server_message", None) or ""
    if not msg:
        response = getattr(err, "response", None)
        try:
            msg = response.headers.get("X-Error-Message") or "" if response is not None else ""
        except Exception:  # a response without headers: the status code says enough
            msg = ""
    return " ".join(str(msg).split())[:160]


@contextlib.contextmanager
def hub_errors(action: str, repo_id: str, endpoint: str, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub / network exceptions into one SedpaError line naming the fix."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    network = _network_errors()
    unreachable = (f"cannot reach the Hugging Face Hub at {endpoint} to {action} {repo_id}: check the network "
                   "connection, proxy settings or HF_ENDPOINT")
    try:
        yield
    except SedpaError:
        raise
    except OfflineModeIsEnabled:
        raise SedpaError(f"HF_HUB_OFFLINE is set, so sedpa cannot {action} {repo_id}: unset it, or use a local "
                         "directory with --model ./path") from None
    except GatedRepoError:
        raise SedpaError(f"{repo_id} is gated: accept its terms on the Hub page, then `huggingface-cli login`") from None
    except RevisionNotFoundError:
        raise SedpaError(f"{repo_id} has no revision {revision!r}: check --revision (a branch, tag or commit)") from None
    except RepositoryNotFoundError:
        raise SedpaError(f"{repo_id}: no such repository on the Hub, or it is private and your token cannot see it: "
                         "check the id or run `huggingface-cli login`") from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        detail = _server_message(err)
        if status == 401:
            raise SedpaError(f"the Hub rejected the token (401 Unauthorized{': ' + detail if detail else ''}): "
                             "run `huggingface-cli login` again or set HF_TOKEN to a valid token") from None
        if status == 403:
            raise SedpaError(f"the token may not {action} {repo_id} (403 Forbidden{': ' + detail if detail else ''}): "
                             "use a token with write access to that namespace") from None
        if status is not None and status >= 500:
            raise SedpaError(f"the Hub failed to {action} {repo_id} ({status}{': ' + detail if detail else ''}): "
                             "try again later") from None
        raise SedpaError(f"the Hub refused to {action} {repo_id} ({status}{': ' + detail if detail else ''})") from None
    except HFValidationError as err:
        raise SedpaError(f"{repo_id}: {str(err).splitlines()[0][:160]}") from None
    except LocalEntryNotFoundError:
        # snapshot_download: the Hub could not be reached and the cache has no copy
        raise SedpaError(unreachable) from None
    except network as err:
        raise SedpaError(f"{unreachable} ({type(err).__name__})") from None
    except ValueError as err:  # e.g. the Hub's validate-yaml rejecting README.md metadata
        raise SedpaError(f"the Hub rejected the upload of {repo_id}: {' '.join(str(err).split())[:200]}") from None


# ----------------------------------------------------------------------------------- push


@dataclass
class PushConfig:
    """Everything `sedpa push` needs."""

    artifact: Path
    repo_id: str
    private: bool = False
    revision: str | None = None  # a branch; created from main when it does not exist yet
    commit_message: str | None = None
    token: str | None = None  # None: HF_TOKEN, then the stored login
    endpoint: str | None = None  # None: HF_ENDPOINT or https://huggingface.co
    show_progress: bool = True
    results: list[Path] = field(default_factory=list)  # benchmark JSONs for the pushed card (local artifact untouched)


@dataclass
class PushResult:
    repo_id: str
    url: str
    revision: str
    commit: str | None
    files: int
    bytes: int


def check_artifact(artifact: Path, verb: str = "push") -> dict:
    """A complete artifact whose manifest verifies, or a SedpaError before any network call."""
    from sedpa_compress.artifact.manifest import verify_manifest
    from sedpa_compress.models.loader import is_artifact_dir

    artifact = Path(artifact)
    if not artifact.is_dir():
        raise SedpaError(f"{artifact} is not a directory: pass the --out of `sedpa compress`")
    if not is_artifact_dir(artifact):
        raise SedpaError(f"{artifact} is not a sedpa artifact (no config.json with a `sedpa` block): "
                         "pass the --out of `sedpa compress`")
    try:
        return verify_manifest(artifact)
    except SedpaError as err:
        raise SedpaError(f"refusing to {verb} {artifact}: {err}") from None


def _staging_dir(artifact: Path) -> Path:
    # Beside the artifact so hard links work (same filesystem); the system temp dir otherwise.
    try:
        return Path(tempfile.mkdtemp(prefix=f".{artifact.name}.push-", dir=artifact.parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix="sedpa-push-"))


def push(config: PushConfig) -> PushResult:
    """Upload an artifact to ORG/NAME (creating the repo, and the branch for --revision)."""
    from sedpa_compress.artifact.card import add_results, stage_copy, write_card
    from sedpa_compress.artifact.manifest import verify_manifest

    repo_id = check_repo_id(config.repo_id)
    revision = check_revision(config.revision)
    artifact = Path(config.artifact)
    check_artifact(artifact, "push")
    token = resolve_token(config.token)
    endpoint = _endpoint(config.endpoint)

    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    staging = _staging_dir(artifact)
    try:
        stage_copy(artifact, staging)
        add_results(staging, list(config.results))  # checked here, still before any network call
        write_card(staging, repo_id=repo_id)  # the pushed card's usage lines name the repo
        manifest = verify_manifest(staging)
        files = manifest["files"]
        api = HfApi(endpoint=endpoint, token=token)
        message = config.commit_message or f"Upload sedpa artifact {artifact.name}"
        if not config.show_progress:
            disable_progress_bars()
        try:
            with hub_errors("create", repo_id, endpoint):
                url = api.create_repo(repo_id, private=config.private, exist_ok=True, repo_type="model")
            if revision and revision != "main":
                with hub_errors("create a branch in", repo_id, endpoint, revision):
                    api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
            with hub_errors("upload to", repo_id, endpoint, revision):
                info = api.upload_folder(repo_id=repo_id, folder_path=staging, repo_type="model", revision=revision,
                                         commit_message=message, delete_patterns="*")
        finally:
            if not config.show_progress:
                enable_progress_bars()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PushResult(repo_id=repo_id, url=str(url), revision=revision or "main", commit=getattr(info, "oid", None),
                      files=len(files) + 1, bytes=sum(int(f["bytes"]) for f in files.values()))


# ----------------------------------------------------------------------------------- pull


@dataclass
class PullResult:
    repo_id: str
    revision: str
    path: Path
    is_artifact: bool


def pull(repo_id: str, *, revision: str | None = None, token: str | None = None, endpoint: str | None = None,
         cache_dir: Path | None = None) -> PullResult:
    """Download ORG/NAME into the Hub cache (where `--model ORG/NAME` finds it); verify an artifact's manifest.

    An artifact comes down whole (its manifest lists every file); a base model only with what sedpa
    loads (`HUB_MODEL_PATTERNS`), not the .bin/.pth duplicates many base repos also carry.
    """
    import json

    from huggingface_hub import HfApi, snapshot_download

    from sedpa_compress.artifact.manifest import verify_manifest
    from sedpa_compress.models.loader import HUB_MODEL_PATTERNS

    repo_id = check_repo_id(repo_id, flag="pull")
    revision = check_revision(revision, flag="--revision", what="revision (a branch, tag or commit)")
    endpoint = _endpoint(endpoint)
    where = dict(revision=revision, token=token, endpoint=endpoint, cache_dir=str(cache_dir) if cache_dir is not None else None)
    with hub_errors("download", repo_id, endpoint, revision):
        # The file list, then config.json, to know what to fetch. Not through hf_hub_download: it retries
        # an unreachable Hub for ~20 s before failing; these fail at once.
        info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision)
        if "config.json" not in {s.rfilename for s in info.siblings or []}:
            raise SedpaError(f"{repo_id} has no config.json: it is not a model repo sedpa can load")
        config = Path(snapshot_download(repo_id, allow_patterns=["config.json"], **where)) / "config.json"
        try:
            artifact = isinstance(json.loads(config.read_text(encoding="utf-8")).get("sedpa"), dict)
        except (ValueError, AttributeError, UnicodeDecodeError):
            raise SedpaError(f"{repo_id}: its config.json is not valid JSON; it is not a model sedpa can load") from None
        path = Path(snapshot_download(repo_id, allow_patterns=None if artifact else HUB_MODEL_PATTERNS, **where))
    if artifact:
        try:
            verify_manifest(path)
        except SedpaError as err:
            raise SedpaError(f"downloaded {repo_id} but it fails its manifest ({err}); it was modified on the Hub "
                             "after it was pushed: push it again with `sedpa push`") from None
    return PullResult(repo_id=repo_id, revision=revision or "main", path=path, is_artifact=artifact)
