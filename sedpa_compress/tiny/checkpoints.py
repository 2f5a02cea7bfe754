"""sedpa-tiny's unshipped training stages, kept in git history so that a run can continue in a later session.

A stage's weights (40 MB) cannot stay in the working tree: a device call carries the tree, 64 MiB at most, and the
shipped weights take 40 MB of it. A run's `runs/` folder is not kept between sessions either (stages 10 and 13,
the best so far, were lost that way). So `keep` commits the weights in one commit and removes them in the next:
the blob stays reachable in main's history, the tree stays small, and the ledger (`recipes/tiny-checkpoints.json`)
names each kept stage's blob, config and origin. `restore` writes a loadable model folder from that blob and the
shipped tokenizer; the device machine's git holds the history as it was when the session started, so a stage kept
in one session can be restored on the device from the next one on.

    python -m sedpa_compress.tiny.checkpoints keep runs/stage16/model --name stage16 --note "stage 5 grown to 4 KV heads"
    python -m sedpa_compress.tiny.checkpoints restore stage16 --to runs/init
    python -m sedpa_compress.tiny.checkpoints list
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sedpa_compress.artifact.manifest import sha256_file
from sedpa_compress.atomic import atomic_directory
from sedpa_compress.errors import SedpaError
from sedpa_compress.models.loader import EMBEDDED_DIR
from sedpa_compress.tiny.train import TOKENIZER_FILES

LEDGER = Path("recipes") / "tiny-checkpoints.json"
KEPT_DIR = "checkpoints/sedpa-tiny"  # where a kept stage's weights sit in the one commit that holds them


def _git(repo: Path, *args: str, env: dict[str, str] | None = None, binary: bool = False) -> Any:
    res = subprocess.run(["git", *args], cwd=repo, capture_output=True, env={**os.environ, **(env or {})})
    if res.returncode:
        raise SedpaError(f"git {' '.join(args[:2])} failed in {repo}: {res.stderr.decode().strip()}")
    return res.stdout if binary else res.stdout.decode().strip()


def load_ledger(repo: Path) -> dict[str, Any]:
    path = repo / LEDGER
    return json.loads(path.read_text()) if path.is_file() else {}


def keep(model_dir: Path, name: str, *, repo: Path = Path("."), note: str = "", source: str = "") -> dict[str, Any]:
    """Commit `model_dir`'s weights under checkpoints/sedpa-tiny/<name>.safetensors, then a second commit that
    removes them and records the stage in the ledger. Returns the ledger entry."""
    model_dir, repo = Path(model_dir), Path(repo)
    weights = model_dir / "model.safetensors"
    if not weights.is_file() or not (model_dir / "config.json").is_file():
        raise SedpaError(f"{model_dir} has no model.safetensors and config.json: pass a run's model/ folder")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise SedpaError(f"checkpoint name {name!r}: use letters, digits, '-' and '_'")
    ledger = load_ledger(repo)
    if name in ledger:
        raise SedpaError(f"checkpoint {name!r} is already kept (blob {ledger[name]['blob'][:12]}): choose another name")
    if _git(repo, "diff", "--cached", "--name-only"):
        raise SedpaError("the git index has staged changes: commit or unstage them first, keep commits only the "
                         "checkpoint and the ledger")
    path = f"{KEPT_DIR}/{name}.safetensors"
    blob = _git(repo, "hash-object", "-w", str(weights.resolve()))
    # commit 1: HEAD's tree plus the weights, built in a scratch index (the working tree is not touched)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", "HEAD", env=env)
        _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = _git(repo, "write-tree", env=env)
    head = _git(repo, "rev-parse", "HEAD")
    held = _git(repo, "commit-tree", tree, "-p", head, "-m",
                f"sedpa-tiny checkpoint {name}: its weights, kept in history (removed again by the next commit)")
    # commit 2: the same tree as HEAD plus the ledger entry; the weights leave the tree again
    entry = {"blob": blob, "commit": held, "path": path, "sha256": sha256_file(weights),
             "bytes": weights.stat().st_size,
             "config": json.loads((model_dir / "config.json").read_text()), "from": source, "note": note,
             "tokenizer_sha256": sha256_file(model_dir / "tokenizer.json") if (model_dir / "tokenizer.json").is_file()
             else None}
    ledger[name] = entry
    (repo / LEDGER).parent.mkdir(parents=True, exist_ok=True)
    (repo / LEDGER).write_text(json.dumps(ledger, indent=1) + "\n")
    _git(repo, "update-ref", "HEAD", held, head)  # the index still lacks the weights: the next commit removes them
    _git(repo, "add", str(LEDGER))
    _git(repo, "commit", "-q", "-m", f"sedpa-tiny checkpoint {name} in {LEDGER} (blob {blob[:12]} in {held[:12]})")
    return entry


def restore(name: str, to: Path, *, repo: Path = Path("."), tokenizer_from: Path | None = None) -> Path:
    """A loadable model folder at `to`: the kept weights (checked against their sha256), the kept config and the
    tokenizer of `tokenizer_from` (default: the shipped sedpa-tiny, whose tokenizer every stage shares)."""
    repo, to = Path(repo), Path(to)
    ledger = load_ledger(repo)
    if name not in ledger:
        raise SedpaError(f"no checkpoint {name!r} in {LEDGER}: kept ones are {', '.join(ledger) or 'none'}")
    entry = ledger[name]
    src = Path(tokenizer_from or EMBEDDED_DIR / "sedpa-tiny")
    if entry.get("tokenizer_sha256") and sha256_file(src / "tokenizer.json") != entry["tokenizer_sha256"]:
        raise SedpaError(f"{src}'s tokenizer is not the one checkpoint {name!r} was trained with: pass "
                         "--tokenizer-from with the stage's own")
    try:
        data = _git(repo, "cat-file", "blob", entry["blob"], binary=True)
    except SedpaError:
        raise SedpaError(f"checkpoint {name!r}'s weights (blob {entry['blob'][:12]}) are not in this git: a stage "
                         "kept in this session reaches the device's git in the next one (carry it in the tree "
                         "meanwhile)") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise SedpaError(f"checkpoint {name!r}: blob {entry['blob'][:12]} does not match its sha256")
    with atomic_directory(to) as tmp:
        (tmp / "model.safetensors").write_bytes(data)
        (tmp / "config.json").write_text(json.dumps(entry["config"], indent=2) + "\n")
        for file in (*TOKENIZER_FILES, "generation_config.json"):
            if (src / file).is_file():
                shutil.copy2(src / file, tmp / file)
    return to


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sedpa_compress.tiny.checkpoints", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keep", help="commit a run's weights into history and record them in the ledger")
    k.add_argument("model_dir", type=Path)
    k.add_argument("--name", required=True)
    k.add_argument("--note", default="")
    k.add_argument("--from", dest="source", default="", help="what it continued (a checkpoint name or the shipped model)")
    r = sub.add_parser("restore", help="write a kept stage as a loadable model folder")
    r.add_argument("name")
    r.add_argument("--to", type=Path, required=True)
    r.add_argument("--tokenizer-from", type=Path)
    sub.add_parser("list", help="the kept stages")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "keep":
            e = keep(args.model_dir, args.name, note=args.note, source=args.source)
            print(f"kept {args.name}: blob {e['blob']} in commit {e['commit']}")
        elif args.cmd == "restore":
            print(restore(args.name, args.to, tokenizer_from=args.tokenizer_from))
        else:
            for name, e in load_ledger(Path(".")).items():
                print(f"{name}: blob {e['blob'][:12]}, {e['bytes'] / 1e6:.1f} MB, from {e['from'] or '?'}; {e['note']}")
    except SedpaError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
