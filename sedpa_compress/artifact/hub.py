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
import os
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
        if status == 412:
            raise SedpaError(f"{repo_id} changed while sedpa was pushing (another push landed first): nothing was "
                             "replaced; look at the repo, then push again") from None
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
    private: bool = False  # a new repo is created private; an existing public one is refused (never ignored)
    revision: str | None = None  # a branch; created from main when it does not exist yet
    commit_message: str | None = None
    token: str | None = field(default=None, repr=False)  # None: HF_TOKEN, then the stored login; never in a repr
    endpoint: str | None = None  # None: HF_ENDPOINT or https://huggingface.co
    show_progress: bool = True
    results: list[Path] = field(default_factory=list)  # benchmark JSONs for the pushed card (local artifact untouched)
    force: bool = False  # replace the files of an existing branch that is not a sedpa artifact


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
    from sedpa_compress.models.loaded import is_artifact_dir

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


STAGING_FALLBACK = "sedpa-push"  # the staging name in the system temp dir


def _staging_dir(artifact: Path) -> Path:
    """A fresh `.NAME.push-pid<N>-*` directory, cleaned by the next push like any partial output when
    this one is killed.

    Beside the artifact so hard links work (same filesystem), except in a Hub cache, whose
    `snapshots/` folder must hold only snapshots: there, and where the artifact's folder is not
    writable, in the system temp dir.
    """
    from sedpa_compress.artifact.manifest import _hub_cache_blobs
    from sedpa_compress.atomic import remove_stale

    artifact = Path(artifact).absolute()
    places = [] if _hub_cache_blobs(artifact) is not None else [(artifact.parent, artifact.name)]
    places.append((Path(tempfile.gettempdir()), STAGING_FALLBACK))
    for parent, name in places:
        try:
            remove_stale(parent, name)
            return Path(tempfile.mkdtemp(prefix=f".{name}.push-pid{os.getpid()}-", dir=parent))
        except OSError:
            continue
    raise SedpaError(f"cannot create a staging folder beside {artifact} or in {tempfile.gettempdir()}: "
                     "free disk space or check permissions")


def _is_sedpa_repo(files: list[str]) -> bool:
    """A branch sedpa pushed holds the artifact's manifest beside its config (the Hub adds .gitattributes)."""
    return {"manifest.json", "config.json"} <= set(files)


def _target(api, repo_id: str, revision: str | None, endpoint: str) -> tuple[bool, bool, list[str] | None, str | None]:
    """(repo exists, repo is private, files on the target branch (None: no such branch yet), the commit
    the push builds on). One look before anything is written."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    with hub_errors("read", repo_id, endpoint, revision):
        try:
            info = api.model_info(repo_id, revision=revision)
        except RevisionNotFoundError:
            main = api.model_info(repo_id)  # the branch will start from main: nothing on a branch is replaced
            return True, bool(main.private), None, main.sha
        except RepositoryNotFoundError:
            return False, False, None, None
    return True, bool(info.private), sorted(s.rfilename for s in info.siblings or []), info.sha


def push(config: PushConfig) -> PushResult:
    """Upload an artifact to ORG/NAME (creating the repo, and the branch for --revision).

    What is uploaded is exactly the manifest's files (staged as regular files and checked against the
    manifest), the re-rendered card, any --results and the new manifest; the branch ends up holding
    only those (plus the Hub's .gitattributes). An existing branch that is not a sedpa artifact is
    replaced only with `force`; `private` on an existing public repo is refused.
    """
    from sedpa_compress.artifact.card import add_results, stage_artifact, write_card

    repo_id = check_repo_id(config.repo_id)
    revision = check_revision(config.revision)
    artifact = Path(config.artifact)
    manifest = check_artifact(artifact, "push")
    token = resolve_token(config.token)
    endpoint = _endpoint(config.endpoint)

    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    staging = _staging_dir(artifact)
    try:
        stage_artifact(artifact, staging, manifest)
        added = add_results(staging, list(config.results))  # checked here, still before any network call
        files = write_card(staging, manifest=manifest, added=added, repo_id=repo_id)["files"]  # the card names the repo
        api = HfApi(endpoint=endpoint, token=token)
        message = config.commit_message or f"Upload sedpa artifact {artifact.name}"
        where = f"{repo_id}@{revision}" if revision else repo_id
        exists, private, remote, parent = _target(api, repo_id, revision, endpoint)
        if exists and config.private and not private:
            raise SedpaError(f"{repo_id} already exists and is public, so --private cannot hide it: make it private in "
                             "its settings on the Hub first, or push without --private")
        foreign = [f for f in remote or [] if f != ".gitattributes"]
        if foreign and not _is_sedpa_repo(foreign) and not config.force:
            raise SedpaError(f"{where} holds {len(foreign)} file(s) (e.g. {foreign[0]!r}) and is not a sedpa artifact "
                             "(no manifest.json): the push would delete them; pass --force to replace them, or push to "
                             "another --repo-id or --revision")
        if not config.show_progress:
            disable_progress_bars()
        try:
            if exists:
                url = f"{endpoint}/{repo_id}"
            else:
                with hub_errors("create", repo_id, endpoint):
                    url = api.create_repo(repo_id, private=config.private, exist_ok=True, repo_type="model")
            if revision and revision != "main" and remote is None:
                with hub_errors("create a branch in", repo_id, endpoint, revision):
                    api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
            with hub_errors("upload to", repo_id, endpoint, revision):
                # parent_commit: the branch as looked at above; had someone pushed since, the Hub refuses
                # the commit instead of deleting files nobody looked at.
                info = api.upload_folder(repo_id=repo_id, folder_path=staging, repo_type="model", revision=revision,
                                         commit_message=message, delete_patterns="*", parent_commit=parent)
        finally:
            if not config.show_progress:
                enable_progress_bars()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PushResult(repo_id=repo_id, url=str(url), revision=revision or "main", commit=getattr(info, "oid", None),
                      files=len(files) + 1, bytes=sum(int(f["bytes"]) for f in files.values()))


# ----------------------------------------------------------------------------------- pull

# What sedpa loads from a base model repo, besides config.json and the safetensors weights (the single
# file, or the shards its index names): generation settings, the card (licence), the tokenizer files.
# Not the .bin/.pth/.gguf duplicates, the remote code (never run) or anything else a repo carries.
BASE_MODEL_FILES = ["generation_config.json", "README.md", "tokenizer*", "special_tokens_map.json",
                    "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "chat_template*", "*.tiktoken"]
INDEX_FILE = "model.safetensors.index.json"


@dataclass
class PullResult:
    repo_id: str
    revision: str
    path: Path
    is_artifact: bool
    commit: str | None = None


def _wanted(snapshot: Path, repo_id: str, repo_files: set[str] | None) -> tuple[bool, list[str]]:
    """(is a sedpa artifact, the exact files sedpa loads) from a snapshot holding config.json and, when
    the repo has them, manifest.json and the weights index. `repo_files`: the commit's file list (None
    for a cached snapshot: then what is wanted is judged from the files alone)."""
    import fnmatch

    from sedpa_compress.artifact.manifest import MANIFEST, check_name, read_manifest
    from sedpa_compress.artifact.safeio import CONFIG_MAX, INDEX_MAX, read_json

    config = read_json(snapshot / "config.json", limit=CONFIG_MAX, what=f"{repo_id}'s config.json",
                       fix="it is not a model sedpa can load")
    if not isinstance(config, dict):
        raise SedpaError(f"{repo_id}'s config.json is not a JSON object: it is not a model sedpa can load")
    if isinstance(config.get("sedpa"), dict):
        if repo_files is not None and MANIFEST not in repo_files:
            raise SedpaError(f"{repo_id} is a sedpa artifact without {MANIFEST}: it cannot be verified; push it again "
                             "with `sedpa push`")
        try:
            names = sorted(read_manifest(snapshot)["files"])
        except SedpaError as err:
            raise SedpaError(f"{repo_id}: {err}") from None
        return True, [MANIFEST, *names]
    names = ["config.json"]
    if repo_files is None or INDEX_FILE in repo_files:
        index = snapshot / INDEX_FILE
        if index.is_file() or index.is_symlink():
            data = read_json(index, limit=INDEX_MAX, what=f"{repo_id}'s weights index", fix="it is not a model sedpa can load")
            shards = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(shards, dict) or not all(isinstance(v, str) and check_name(v) is None for v in shards.values()):
                raise SedpaError(f"{repo_id}'s {INDEX_FILE} is malformed: it is not a model sedpa can load")
            names += [INDEX_FILE, *sorted(set(shards.values()))]
        elif repo_files is not None:
            raise SedpaError(f"{repo_id}: {INDEX_FILE} did not download")
    if INDEX_FILE not in names and (repo_files is None or "model.safetensors" in repo_files):
        names.append("model.safetensors")  # a repo without safetensors weights: the loader says so
    if repo_files is not None:
        names += [f for f in sorted(repo_files) if any(fnmatch.fnmatchcase(f, p) for p in BASE_MODEL_FILES)]
    return False, list(dict.fromkeys(names))


def _remember_ref(snapshot: Path, revision: str | None, commit: str) -> None:
    """Record `revision -> commit` in the Hub cache's refs/ (what huggingface_hub does for a branch), so
    that `--model ORG/NAME[@REV]` finds this snapshot offline; downloads by commit id do not write it."""
    from sedpa_compress.atomic import atomic_write_text

    name = revision or "main"
    if name == commit:
        return
    storage = snapshot.parent.parent  # <cache>/models--ORG--NAME/snapshots/<commit>
    if snapshot.parent.name == "snapshots" and storage.name.startswith("models--"):
        atomic_write_text(storage / "refs" / name, commit)


def fetch_model(repo_id: str, *, revision: str | None = None, token: str | None = None, endpoint: str | None = None,
                cache_dir: Path | None = None) -> tuple[Path, bool, str]:
    """Download what sedpa loads of ORG/NAME at one commit into the Hub cache: (snapshot, is an
    artifact, commit). huggingface_hub errors propagate (callers word them).

    The revision is resolved once; every file comes from that commit, so a push landing meanwhile
    cannot mix two versions. An artifact brings exactly its manifest's files; a base model its
    config, safetensors weights (the index's shards only), tokenizer files, generation config and card.
    """
    import glob

    from huggingface_hub import HfApi, snapshot_download

    info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision)
    commit = info.sha
    repo_files = {s.rfilename for s in info.siblings or []}
    if "config.json" not in repo_files:
        raise SedpaError(f"{repo_id}: that Hub repo has no config.json; it is not a model sedpa can load")
    where = dict(revision=commit, token=token, endpoint=endpoint, cache_dir=str(cache_dir) if cache_dir is not None else None)
    first = [f for f in ("config.json", "manifest.json", INDEX_FILE) if f in repo_files]
    snapshot = Path(snapshot_download(repo_id, allow_patterns=[glob.escape(f) for f in first], **where))
    artifact, names = _wanted(snapshot, repo_id, repo_files)
    absent = [n for n in names if n not in repo_files]
    if absent:
        raise SedpaError(f"{repo_id} lacks {absent[0]!r}, which its {'manifest' if artifact else 'weights index'} "
                         "names: the repo is incomplete; push it again")
    path = Path(snapshot_download(repo_id, allow_patterns=[glob.escape(n) for n in names], **where))
    _remember_ref(path, revision, commit)
    return path, artifact, commit


def cached_model(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot of ORG/NAME[@REV] when it holds everything sedpa loads, else None (then it
    is downloaded): a pull killed halfway leaves a snapshot with only its config."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=["config.json"]))
        if not (path / "config.json").is_file():
            return None
        _artifact, names = _wanted(path, repo_id, None)
    except (SedpaError, OSError, ValueError):  # LocalEntryNotFoundError is an OSError
        return None
    return path if all((path / n).is_file() for n in names) else None


def pull(repo_id: str, *, revision: str | None = None, token: str | None = None, endpoint: str | None = None,
         cache_dir: Path | None = None) -> PullResult:
    """Download ORG/NAME into the Hub cache (where `--model ORG/NAME` finds it); verify an artifact's manifest.

    One commit for everything (see `fetch_model`): an artifact's manifest files, or a base model's
    config, weights and tokenizer, never the .bin/.pth duplicates many base repos also carry.
    """
    from sedpa_compress.artifact.manifest import verify_manifest

    repo_id = check_repo_id(repo_id, flag="pull")
    revision = check_revision(revision, flag="--revision", what="revision (a branch, tag or commit)")
    endpoint = _endpoint(endpoint)
    with hub_errors("download", repo_id, endpoint, revision):
        path, artifact, commit = fetch_model(repo_id, revision=revision, token=token, endpoint=endpoint,
                                             cache_dir=cache_dir)
    if artifact:
        try:
            verify_manifest(path)
        except SedpaError as err:
            raise SedpaError(f"downloaded {repo_id} but it fails its manifest ({err}); it was modified on the Hub "
                             "after it was pushed: push it again with `sedpa push`") from None
    return PullResult(repo_id=repo_id, revision=revision or "main", path=path, is_artifact=artifact, commit=commit)
