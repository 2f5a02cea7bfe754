"""sedpa-tiny's unshipped training stages, kept in git history so that a run can continue in a later session.

A stage's weights (40 MB) cannot stay in the working tree: a device call carries the tree, 64 MiB at most, and the
shipped weights take 40 MB of it. A run's `runs/` folder is not kept between sessions either (stages 10 and 13,
the best so far, were lost that way). So `keep` commits the weights in one commit and removes them in the next:
the blob stays reachable in main's history, the tree stays small, and the ledger (`recipes/tiny-checkpoints.json`)
names each kept stage's blob, config and origin. `restore` writes a loadable model folder from that blob and the
shipped tokenizer (or its value_space or plain form, tiny.tokenizer, for a stage trained with the other); the device machine's git holds the history as it was when the session started, so a stage kept
in one session can be restored on the device from the next one on.

    python -m sedpa_compress.tiny.checkpoints keep runs/stage16/model --name stage16 --note "stage 5 grown to 4 KV heads"
    python -m sedpa_compress.tiny.checkpoints restore stage16 --to runs/init
    python -m sedpa_compress.tiny.checkpoints list
    python -m sedpa_compress.tiny.checkpoints average runs/stage21/model runs/stage21b/model --to runs/soup21
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from sedpa_compress.artifact.manifest import sha256_file
from sedpa_compress.atomic import atomic_directory
from sedpa_compress.errors import SedpaError, one_line_errors
from sedpa_compress.models.loaded import INT8_FILE, stored_as_int8
from sedpa_compress.models.loader import EMBEDDED_DIR
from sedpa_compress.tiny import history
from sedpa_compress.tiny.tokenizer import tokenizer_forms
from sedpa_compress.tiny.train import TOKENIZER_FILES

LEDGER = Path("recipes") / "tiny-checkpoints.json"
KEPT_DIR = "checkpoints/sedpa-tiny"  # where a kept stage's weights sit in the one commit that holds them


def load_ledger(repo: Path) -> dict[str, Any]:
    return history.load_ledger(repo, LEDGER)


def keep(model_dir: Path, name: str, *, repo: Path = Path("."), note: str = "", source: str = "") -> dict[str, Any]:
    """Commit `model_dir`'s weights under checkpoints/sedpa-tiny/<name>.safetensors (<name>.int8.safetensors for a
    folder stored as int8, models.int8), then a second commit that removes them and records the stage in the ledger.
    Returns the ledger entry."""
    model_dir, repo = Path(model_dir), Path(repo)
    weights = model_dir / (INT8_FILE if stored_as_int8(model_dir) else "model.safetensors")
    if not weights.is_file() or not (model_dir / "config.json").is_file():
        raise SedpaError(f"{model_dir} has no model.safetensors (or {INT8_FILE}) and config.json: pass a run's model/ "
                         "folder")
    history.check_name(name, load_ledger(repo), "checkpoint")
    entry = {"config": json.loads((model_dir / "config.json").read_text()), "from": source, "note": note,
             "tokenizer_sha256": sha256_file(model_dir / "tokenizer.json") if (model_dir / "tokenizer.json").is_file()
             else None, "weights_file": weights.name}
    suffix = ".int8.safetensors" if weights.name == INT8_FILE else ".safetensors"
    return history.keep_in_history(repo, weights, f"{KEPT_DIR}/{name}{suffix}", LEDGER, name, entry, "checkpoint")


def restore(name: str, to: Path, *, repo: Path = Path("."), tokenizer_from: Path | None = None) -> Path:
    """A loadable model folder at `to`: the kept weights (checked against their sha256), the kept config and the
    tokenizer of `tokenizer_from` (default: the shipped sedpa-tiny, whose tokenizer every stage shares)."""
    repo, to = Path(repo), Path(to)
    ledger = load_ledger(repo)
    if name not in ledger:
        raise SedpaError(f"no checkpoint {name!r} in {LEDGER}: kept ones are {', '.join(ledger) or 'none'}")
    entry = ledger[name]
    src = Path(tokenizer_from or EMBEDDED_DIR / "sedpa-tiny")
    data = history.read_kept(repo, entry, name, "checkpoint")
    with atomic_directory(to) as tmp:
        (tmp / entry.get("weights_file", "model.safetensors")).write_bytes(data)  # int8 stages keep their file name
        (tmp / "config.json").write_text(json.dumps(entry["config"], indent=2) + "\n")
        for file in (*TOKENIZER_FILES, "generation_config.json"):
            if (src / file).is_file():
                shutil.copy2(src / file, tmp / file)
        want = entry.get("tokenizer_sha256")
        if want and sha256_file(tmp / "tokenizer.json") != want:
            # the stage was trained with the other form of the shipped tokenizer (value_space or plain, tiny.tokenizer):
            # derived, not kept
            match = next((b for b in tokenizer_forms(src / "tokenizer.json").values()
                          if hashlib.sha256(b).hexdigest() == want), None)
            if match is None:
                raise SedpaError(f"{src}'s tokenizer is not the one checkpoint {name!r} was trained with (in neither "
                                 "its plain nor its value_space form): pass --tokenizer-from with the stage's own")
            (tmp / "tokenizer.json").write_bytes(match)
    return to


def average(model_dirs: list[Path], to: Path) -> Path:
    """The uniform average of runs' weights (a model soup: fine-tunes of one start often sit in one basin, where the
    mean of their weights can beat each). The runs must share one config's shape, weight names and tokenizer; `to`
    gets the averaged weights (in their dtype, averaged in fp32), the last run's config and tokenizer, and a
    training.json naming the runs (tiny.ship lists them as the stages before this one)."""
    from safetensors.torch import load_file, save_file

    dirs = [Path(d) for d in model_dirs]
    if len(dirs) < 2:
        raise SedpaError("average takes two or more model folders: pass the runs to average")
    for d in dirs:
        if not (d / "model.safetensors").is_file() or not (d / "tokenizer.json").is_file():
            raise SedpaError(f"{d} has no model.safetensors and tokenizer.json: pass a run's model/ folder")
    states = [load_file(str(d / "model.safetensors")) for d in dirs]
    shapes = [{k: (tuple(v.shape), v.dtype) for k, v in sd.items()} for sd in states]
    for d, sh in zip(dirs[1:], shapes[1:]):
        if sh != shapes[0]:
            raise SedpaError(f"{d}'s weights differ in names, shapes or dtypes from {dirs[0]}'s: average only runs "
                             "of one shape (fine-tunes of one start)")
        if (d / "tokenizer.json").read_bytes() != (dirs[0] / "tokenizer.json").read_bytes():
            raise SedpaError(f"{d}'s tokenizer differs from {dirs[0]}'s: the weights of runs with different "
                             "tokenizers do not mean the same thing; average runs of one tokenizer")
    mean = {k: (sum(sd[k].float() for sd in states) / len(states)).to(states[0][k].dtype).contiguous()
            for k in states[0]}
    with atomic_directory(Path(to)) as tmp:
        for name in ("config.json", "generation_config.json", *TOKENIZER_FILES):
            if (dirs[-1] / name).is_file():
                shutil.copy2(dirs[-1] / name, tmp / name)
        save_file(mean, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        # what tiny.ship reads: a stage with no training of its own, whose runs are the stages before it
        command = ("python -m sedpa_compress.tiny.checkpoints average " + " ".join(str(d) for d in dirs)
                   + f" --to {to}")
        (tmp / "training.json").write_text(json.dumps({"averaged": len(dirs), "command": command,
                                                       "runs": [str(d) for d in dirs]}, indent=2) + "\n")
    return Path(to)


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
    a = sub.add_parser("average", help="the uniform average of runs' weights (one shape and tokenizer) as a model folder")
    a.add_argument("model_dirs", type=Path, nargs="+")
    a.add_argument("--to", type=Path, required=True)
    args = ap.parse_args(argv)
    with one_line_errors():
        if args.cmd == "keep":
            e = keep(args.model_dir, args.name, note=args.note, source=args.source)
            print(f"kept {args.name}: blob {e['blob']} in commit {e['commit']}")
        elif args.cmd == "restore":
            print(restore(args.name, args.to, tokenizer_from=args.tokenizer_from))
        elif args.cmd == "average":
            print(average(args.model_dirs, args.to))
        else:
            for name, e in load_ledger(Path(".")).items():
                print(f"{name}: blob {e['blob'][:12]}, {e['bytes'] / 1e6:.1f} MB, from {e['from'] or '?'}; {e['note']}")


if __name__ == "__main__":
    main()
