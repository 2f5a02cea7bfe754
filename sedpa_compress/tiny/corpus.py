"""sedpa-tiny's training corpus beyond the bundled text, kept in git history so the device can train on it.

`calibration/make_corpus.py` builds the corpus (a folder of .txt files, paragraphs separated by blank lines, and
its SOURCES.md) from Debian packages; it is tens of MB, too large for the working tree a device call carries
(64 MiB, 40 MB of it the shipped weights) and too large to ship in the package. `keep` packs the folder into one
xz-compressed tar and keeps it in history (tiny/history.py), named in `recipes/tiny-corpora.json`; `restore`
unpacks it anywhere, on this machine or on the device (from the session after the one that kept it). A recipe
names the folder in `corpus`.

    python calibration/make_corpus.py --out runs/corpus/broad
    python -m sedpa_compress.tiny.corpus keep runs/corpus/broad --name broad-v1
    python -m sedpa_compress.tiny.corpus restore broad-v1 --to runs/corpus/broad-v1
    python -m sedpa_compress.tiny.corpus list
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from sedpa_compress.atomic import atomic_directory
from sedpa_compress.data.text import corpus_text_paths
from sedpa_compress.errors import SedpaError, one_line_errors
from sedpa_compress.tiny import history

LEDGER = Path("recipes") / "tiny-corpora.json"
KEPT_DIR = "corpora/sedpa-tiny"  # where a kept corpus sits in the one commit that holds it


def load_ledger(repo: Path) -> dict[str, Any]:
    return history.load_ledger(repo, LEDGER)


def pack(folder: Path, archive: Path) -> list[str]:
    """`folder`'s .txt files and SOURCES.md as an xz tar whose bytes depend on their contents alone (sorted
    names, no times or owners), so that packing the same corpus twice gives the same blob."""
    files = corpus_text_paths(folder) + ([folder / "SOURCES.md"] if (folder / "SOURCES.md").is_file() else [])
    with tarfile.open(archive, "w:xz", preset=9) as tar:
        for path in sorted(files):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return [p.name for p in sorted(files)]


def keep(folder: Path, name: str, *, repo: Path = Path("."), note: str = "") -> dict[str, Any]:
    """Pack `folder` and keep it in history under corpora/sedpa-tiny/<name>.tar.xz; returns the ledger entry."""
    folder, repo = Path(folder), Path(repo)
    history.check_name(name, load_ledger(repo), "corpus")
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / f"{name}.tar.xz"
        files = pack(folder, archive)
        text_bytes = sum((folder / f).stat().st_size for f in files if f.endswith(".txt"))
        entry = {"files": files, "text_bytes": text_bytes, "note": note}
        return history.keep_in_history(repo, archive, f"{KEPT_DIR}/{name}.tar.xz", LEDGER, name, entry, "corpus")


def restore(name: str, to: Path, *, repo: Path = Path(".")) -> Path:
    """The kept corpus `name` unpacked into the folder `to` (written whole or not at all)."""
    repo, to = Path(repo), Path(to)
    ledger = load_ledger(repo)
    if name not in ledger:
        raise SedpaError(f"no corpus {name!r} in {LEDGER}: kept ones are {', '.join(ledger) or 'none'}")
    data = history.read_kept(repo, ledger[name], name, "corpus")
    with atomic_directory(to) as tmp, tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/" in member.name or member.name.startswith("."):
                raise SedpaError(f"corpus {name!r} holds {member.name!r}: a kept corpus is flat files only")
            (tmp / member.name).write_bytes(tar.extractfile(member).read())
    return to


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sedpa_compress.tiny.corpus", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keep", help="pack a corpus folder into history and record it in the ledger")
    k.add_argument("folder", type=Path)
    k.add_argument("--name", required=True)
    k.add_argument("--note", default="")
    r = sub.add_parser("restore", help="unpack a kept corpus into a folder")
    r.add_argument("name")
    r.add_argument("--to", type=Path, required=True)
    sub.add_parser("list", help="the kept corpora")
    args = ap.parse_args(argv)
    with one_line_errors():
        if args.cmd == "keep":
            e = keep(args.folder, args.name, note=args.note)
            print(f"kept {args.name}: {e['bytes'] / 1e6:.1f} MB packed ({e['text_bytes'] / 1e6:.1f} MB of text), "
                  f"blob {e['blob']} in commit {e['commit']}")
        elif args.cmd == "restore":
            print(restore(args.name, args.to))
        else:
            for name, e in load_ledger(Path(".")).items():
                print(f"{name}: blob {e['blob'][:12]}, {e['text_bytes'] / 1e6:.1f} MB of text in {len(e['files'])} "
                      f"files; {e['note']}")


if __name__ == "__main__":
    main()
