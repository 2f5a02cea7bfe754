"""`manifest.json`: the sha256 and size of every file in an artifact, checked before anything is loaded."""

from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import Path

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


def artifact_file(directory: Path, name: str) -> Path | None:
    """`directory/name` when `name` stays inside the artifact, else None.

    The check is lexical (no absolute names, no `..`), then every symlink on the way must land inside
    the artifact, or inside the Hub cache's blobs/ when the artifact is a cache snapshot. Resolving
    first and comparing parents would refuse every artifact in the default Hub cache.
    """
    directory = Path(directory)
    norm = posixpath.normpath(str(name).replace("\\", "/"))
    if (not name or posixpath.isabs(norm) or norm == "." or norm == ".." or norm.startswith("../")
            or ":" in norm.split("/")[0]):  # a Windows drive letter
        return None
    target = directory / norm
    roots = [directory.resolve()]
    blobs = _hub_cache_blobs(directory)
    if blobs is not None:
        roots.append(blobs)
    real = target.resolve()
    if not any(real == r or r in real.parents for r in roots):
        return None
    return target


def write_manifest(directory: Path) -> dict:
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(directory).as_posix()
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"format": FORMAT, "files": files}
    atomic_write_json(directory / MANIFEST, manifest)
    return manifest


def verify_manifest(directory: Path) -> dict:
    """Raise SedpaError naming the first file that is missing, altered or unlisted."""
    path = directory / MANIFEST
    if not path.is_file():
        raise SedpaError(f"{directory} has no {MANIFEST}: it is not a complete sedpa artifact; re-run `sedpa compress`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
        entries = [(str(name), str(info["sha256"]), int(info["bytes"])) for name, info in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError) as exc:
        raise SedpaError(f"{path} is malformed ({type(exc).__name__}); re-download or re-create the artifact") from None
    for name, digest, size in entries:
        target = artifact_file(directory, name)
        if target is None:
            raise SedpaError(f"{path} lists {name!r}, outside the artifact: refusing to read it")
        if not target.is_file():
            raise SedpaError(f"artifact file {name} is missing: re-download or re-create the artifact")
        if target.stat().st_size != size or sha256_file(target) != digest:
            raise SedpaError(f"artifact file {name} fails its sha256 in {MANIFEST} (corrupt or modified): "
                             "re-download or re-create the artifact")
    return manifest
