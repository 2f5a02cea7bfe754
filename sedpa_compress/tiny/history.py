"""Files kept in git history rather than in the working tree (sedpa-tiny's unshipped stages, its training corpus).

A device call carries the working tree, 64 MiB at most, and the shipped weights take 40 MB of it; the device's
git, though, holds main's whole history as it was when the session started. So a large file is committed in one
commit and removed again by the next: its blob stays reachable from main, the tree stays small, and a ledger names
the blob. Anything kept in one session can be read back on the device from the next session on.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sedpa_compress.artifact.manifest import sha256_file
from sedpa_compress.errors import SedpaError


def git(repo: Path, *args: str, env: dict[str, str] | None = None, binary: bool = False) -> Any:
    res = subprocess.run(["git", *args], cwd=repo, capture_output=True, env={**os.environ, **(env or {})})
    if res.returncode:
        raise SedpaError(f"git {' '.join(args[:2])} failed in {repo}: {res.stderr.decode().strip()}")
    return res.stdout if binary else res.stdout.decode().strip()


def load_ledger(repo: Path, ledger: Path) -> dict[str, Any]:
    path = Path(repo) / ledger
    return json.loads(path.read_text()) if path.is_file() else {}


def check_name(name: str, ledger: dict[str, Any], what: str) -> None:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise SedpaError(f"{what} name {name!r}: use letters, digits, '-' and '_'")
    if name in ledger:
        raise SedpaError(f"{what} {name!r} is already kept (blob {ledger[name]['blob'][:12]}): choose another name")


def keep_in_history(repo: Path, file: Path, path: str, ledger: Path, name: str, entry: dict[str, Any],
                    what: str) -> dict[str, Any]:
    """Commit `file` at `path` on top of HEAD, then a second commit (HEAD's tree, `file` absent again) that records
    `entry` (plus blob, commit, path, sha256, bytes) under `name` in the JSON `ledger`. Returns the full entry."""
    repo = Path(repo)
    if git(repo, "diff", "--cached", "--name-only"):
        raise SedpaError(f"the git index has staged changes: commit or unstage them first, keeping a {what} "
                         "commits only it and its ledger")
    blob = git(repo, "hash-object", "-w", str(Path(file).resolve()))
    # commit 1: HEAD's tree plus the file, built in a scratch index (the working tree is not touched)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(repo, "read-tree", "HEAD", env=env)
        git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = git(repo, "write-tree", env=env)
    head = git(repo, "rev-parse", "HEAD")
    held = git(repo, "commit-tree", tree, "-p", head, "-m",
               f"sedpa-tiny {what} {name}: kept in history (removed again by the next commit)")
    # commit 2: HEAD's tree plus the ledger entry; the file leaves the tree again
    full = {"blob": blob, "commit": held, "path": path, "sha256": sha256_file(Path(file)),
            "bytes": Path(file).stat().st_size, **entry}
    kept = load_ledger(repo, ledger)
    kept[name] = full
    (repo / ledger).parent.mkdir(parents=True, exist_ok=True)
    (repo / ledger).write_text(json.dumps(kept, indent=1) + "\n")
    git(repo, "update-ref", "HEAD", held, head)  # the index still lacks the file: the next commit removes it
    git(repo, "add", str(ledger))
    git(repo, "commit", "-q", "-m", f"sedpa-tiny {what} {name} in {ledger} (blob {blob[:12]} in {held[:12]})")
    return full


def read_kept(repo: Path, entry: dict[str, Any], name: str, what: str) -> bytes:
    """The bytes of a kept file, checked against its sha256."""
    try:
        data = git(Path(repo), "cat-file", "blob", entry["blob"], binary=True)
    except SedpaError:
        raise SedpaError(f"{what} {name!r} (blob {entry['blob'][:12]}) is not in this git: a file kept in this "
                         "session reaches the device's git in the next one (carry it in the tree meanwhile)") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise SedpaError(f"{what} {name!r}: blob {entry['blob'][:12]} does not match its sha256")
    return data

