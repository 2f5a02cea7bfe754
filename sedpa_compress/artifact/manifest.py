"""`manifest.json`: the sha256 and size of every file in an artifact, checked before anything is loaded."""

from __future__ import annotations

import hashlib
import os
import posixpath
from pathlib import Path

from sedpa_compress.artifact.safeio import MANIFEST_MAX, read_json
from sedpa_compress.atomic import atomic_write_json
from sedpa_compress.errors import SedpaError

MANIFEST = "manifest.json"
FORMAT = "sedpa-artifact-manifest-v1"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _hub_cache_blobs(directory: Path) -> Path | None:
    """`<cache>/models--ORG--NAME/blobs` when `directory` is a Hub cache snapshot (`.../snapshots/<commit>`).

    huggingface_hub stores a snapshot's files as symlinks into the repo's blobs/, so there (and only
    there) an artifact file may live outside the artifact directory.
    """
    for snapshot in (directory.absolute(), directory.resolve()):
        snapshots, repo = snapshot.parent, snapshot.parent.parent
        if snapshots.name == "snapshots" and repo.name.startswith("models--") and (repo / "blobs").is_dir():
            return (repo / "blobs").resolve()
    return None


# Names the Hub keeps beside an artifact that are not part of it: a pulled snapshot may hold the repo's
# `.gitattributes` (the Hub's initial commit writes it; push never uploads a local one), and
# `hf download --local-dir` keeps its download metadata under `.cache/huggingface/`. sedpa and
# transformers read neither, and neither is ever listed, staged or uploaded.
NOT_LISTED = frozenset({".gitattributes"})
NOT_LISTED_DIR = ".cache/huggingface/"
NAME_MAX = 255  # bytes per path component on Linux, macOS and Windows filesystems
PATH_MAX = 1024


def check_name(name: object) -> str | None:
    """Why `name` cannot be an artifact file name, or None when it can.

    A manifest name must be the plain relative POSIX path write_manifest records: no absolute path,
    no `.`/`..` or empty components, no backslash or drive letter, no control characters, and
    components the filesystem can hold. Checked before the name touches the filesystem, so a NUL byte
    or a 300-character component is a refusal, not an exception from the OS.
    """
    if not isinstance(name, str) or not name:
        return "is empty or not a string"
    if any(not (c.isprintable() or c == " ") for c in name):
        return "holds a control character"
    parts = name.split("/")
    if posixpath.isabs(name) or ".." in parts or ":" in parts[0]:
        return "leads outside the artifact (absolute, a drive letter or '..')"
    if "\\" in name or any(p in ("", ".") for p in parts):
        return "is not a plain relative path (a backslash, or an empty or '.' component)"
    if any(len(p.encode("utf-8", "surrogatepass")) > NAME_MAX for p in parts) or len(name.encode("utf-8", "surrogatepass")) > PATH_MAX:
        return f"is longer than a file name can be ({NAME_MAX} bytes per component)"
    return None


def artifact_file(directory: Path, name: str) -> Path | None:
    """`directory/name` when `name` stays inside the artifact, else None.

    The check is lexical (no absolute names, no `..`), then every symlink on the way must land inside
    the artifact, or inside the Hub cache's blobs/ when the artifact is a cache snapshot. Resolving
    first and comparing parents would refuse every artifact in the default Hub cache. A name the
    filesystem cannot take (NUL byte, too long) or a symlink loop is None too.
    """
    directory = Path(directory)
    norm = posixpath.normpath(str(name).replace("\\", "/"))
    if (not name or posixpath.isabs(norm) or norm == "." or norm == ".." or norm.startswith("../")
            or ":" in norm.split("/")[0]):  # a Windows drive letter
        return None
    target = directory / norm
    try:
        roots = [directory.resolve()]
        blobs = _hub_cache_blobs(directory)
        if blobs is not None:
            roots.append(blobs)
        real = target.resolve()
    except (OSError, RuntimeError, ValueError):  # RuntimeError: a symlink loop (Python < 3.13)
        return None
    if not any(real == r or r in real.parents for r in roots):
        return None
    return target


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_manifest(directory: Path, entries: dict[str, dict] | None = None) -> dict:
    """Write `directory/manifest.json`.

    `entries` (name -> {"sha256", "bytes"}) is what the manifest vouches for; sedpa passes it when it
    rewrites the manifest of an artifact it did not write whole (`sedpa card`, `sedpa push`), so that
    only files it verified or wrote itself are ever listed. Without it every file under `directory` is
    listed: for a directory sedpa has just written itself.
    """
    if entries is None:
        entries = {}
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
            entries[path.relative_to(directory).as_posix()] = file_entry(path)
    manifest = {"format": FORMAT, "files": {name: dict(entries[name]) for name in sorted(entries)}}
    atomic_write_json(directory / MANIFEST, manifest)
    return manifest


def read_manifest(directory: Path) -> dict:
    """The parsed manifest, its entries checked for shape and names (nothing on disk is compared yet)."""
    path = Path(directory) / MANIFEST
    fix = "re-download or re-create the artifact"
    try:
        if path.is_symlink() and artifact_file(directory, MANIFEST) is None:
            raise SedpaError(f"{path} leads outside the artifact: refusing to read it")
        present = path.is_file()
    except OSError as exc:
        raise SedpaError(f"cannot read {path} ({exc.strerror}): {fix}") from None
    if not present:
        raise SedpaError(f"{directory} has no {MANIFEST}: it is not a complete sedpa artifact; re-run `sedpa compress`")
    manifest = read_json(path, limit=MANIFEST_MAX, what="artifact manifest", fix=fix)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(files, dict):
        raise SedpaError(f"{path} is malformed (not a {FORMAT} manifest); {fix}")
    for name, info in files.items():
        why = check_name(name)
        if why is not None:
            raise SedpaError(f"{path} lists a file name that {why} ({name[:80]!r}): refusing to read it; {fix}")
        if name == MANIFEST or name in NOT_LISTED or name.startswith(NOT_LISTED_DIR):
            raise SedpaError(f"{path} lists {name!r}, which a manifest never vouches for: {fix}")
        digest = info.get("sha256") if isinstance(info, dict) else None
        size = info.get("bytes") if isinstance(info, dict) else None
        if (not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)
                or not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise SedpaError(f"{path} is malformed (the entry of {name!r} needs a sha256 and a byte count); {fix}")
    return manifest


def unlisted_files(directory: Path, listed: set[str] | dict) -> list[str]:
    """Everything under `directory` that is not a directory and that the manifest does not list (a
    symlink to a directory counts as a file here: it is never followed), `.gitattributes` aside."""
    found = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        rel = Path(root).relative_to(directory)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            key = (rel / name).as_posix()
            if key != MANIFEST and key not in NOT_LISTED and not key.startswith(NOT_LISTED_DIR) and key not in listed:
                found.append(key)
    return sorted(found)


def check_entry(directory: Path, name: str, info: dict) -> Path:
    """The verified path of one listed file: inside the artifact, present, of the listed size and sha256."""
    target = artifact_file(directory, name)
    if target is None:
        raise SedpaError(f"{Path(directory) / MANIFEST} lists {name!r}, outside the artifact (or a broken or looping "
                         "symlink): refusing to read it")
    try:
        if not target.is_file():
            raise SedpaError(f"artifact file {name} is missing: re-download or re-create the artifact")
        ok = target.stat().st_size == info["bytes"] and sha256_file(target) == info["sha256"]
    except OSError as exc:
        raise SedpaError(f"cannot read artifact file {name} ({exc.strerror}): re-download or re-create the artifact") from None
    if not ok:
        raise SedpaError(f"artifact file {name} fails its sha256 in {MANIFEST} (corrupt or modified): "
                         "re-download or re-create the artifact")
    return target


def verify_manifest(directory: Path) -> dict:
    """Raise SedpaError naming the first file that is missing, altered or unlisted.

    The manifest is the only door into an artifact: once this returns, every file under `directory`
    is one the manifest lists and the listed bytes are what is on disk. Anything else there (an extra
    weights shard, a tokenizer file, a pattern, a symlink) is refused by name, because the loaders
    read what they find in the directory.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    files = manifest["files"]
    try:
        stray = unlisted_files(directory, files)
    except OSError as exc:
        raise SedpaError(f"cannot list {directory} ({exc.strerror}): check the artifact directory") from None
    if stray:
        more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        raise SedpaError(f"{directory} holds {stray[0]!r}{more}, which {MANIFEST} does not list: sedpa reads only files "
                         "the manifest vouches for; remove it, or re-create the artifact")
    for name, info in files.items():
        check_entry(directory, name, info)
    return manifest
