"""The English text that ships with sedpa in `data/bundled/` (sources and licences: calibration/SOURCES.md):
haystacks, calibration, training. Stored gzipped (6.7 MB of text in 2.0 MB: the package, and the working tree a
device call carries, stay under their limits); read back to the same text.

Each file is a list of paragraphs separated by blank lines. Every `HELDOUT_EVERY`-th paragraph of each
file (the last of each run of that many) is the held-out split (perplexity, benchmark haystacks), spread
over the whole text so it reads like the rest; the other paragraphs are the train split.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

from sedpa_compress.errors import SedpaError

HELDOUT_EVERY = 20
_SPLITS = ("train", "heldout", "all")


def _candidate_dirs() -> list[Path]:
    return [Path(__file__).resolve().parent / "bundled"]


def bundled_text_paths() -> list[Path]:
    """The shipped English text files, in a fixed order."""
    for folder in _candidate_dirs():
        files = sorted(folder.glob("*.txt.gz"))
        if files:
            return files
    raise SedpaError(
        "the bundled text (sedpa_compress/data/bundled/*.txt.gz) is missing from this install: reinstall sedpa-compress "
        "or pass a text file with --haystack"
    )


def read_text_file(path: Path) -> str:
    """A UTF-8 text file's text, gunzipped when its name ends in .gz."""
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    return path.read_text(encoding="utf-8")


def _paragraphs(path: Path) -> list[str]:
    return [p.strip() for p in read_text_file(path).split("\n\n") if p.strip()]


def split_paragraphs(paths: list[Path], split: str) -> list[str]:
    """The paragraphs of `paths` in one split ("train", "heldout" or "all"): every `HELDOUT_EVERY`-th paragraph of
    each file is held out, the rest is train."""
    if split not in _SPLITS:
        raise SedpaError(f"unknown text split {split!r}: choose one of {', '.join(_SPLITS)}")
    parts: list[str] = []
    for path in paths:
        paras = _paragraphs(path)
        if split == "all":
            parts += paras
        else:
            want_heldout = split == "heldout"
            parts += [p for i, p in enumerate(paras) if (i % HELDOUT_EVERY == HELDOUT_EVERY - 1) == want_heldout]
    return parts


@functools.lru_cache(maxsize=8)
def load_bundled_text(split: str = "train") -> str:
    """All shipped text of one split ("train", "heldout" or "all"), paragraphs joined by blank lines."""
    return "\n\n".join(split_paragraphs(bundled_text_paths(), split))


def corpus_text_paths(folder: Path) -> list[Path]:
    """The .txt files of a training corpus folder (calibration/make_corpus.py builds one), in a fixed order."""
    folder = Path(folder)
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        raise SedpaError(f"corpus {folder} has no .txt files: build one with `python calibration/make_corpus.py "
                         f"--out {folder}` or restore a kept one (python -m sedpa_compress.tiny.corpus restore)")
    return files


def load_corpus_text(folder: Path, split: str = "train") -> str:
    """One split of a training corpus folder, split as the bundled text is (every `HELDOUT_EVERY`-th paragraph
    of each file held out)."""
    return "\n\n".join(split_paragraphs(corpus_text_paths(folder), split))


def load_haystack(path: Path | None = None, min_chars: int = 0) -> str:
    """Haystack text: the bundled held-out text when `path` is None, else the file's text."""
    if path is None:
        text = load_bundled_text("heldout")
        # The held-out split alone may be short for very long contexts: extend with the train split.
        if len(text) < min_chars:
            text = text + "\n\n" + load_bundled_text("train")
        source = "the bundled text"
    else:
        path = Path(path)
        if not path.is_file():
            raise SedpaError(f"haystack file {path} does not exist: pass an existing UTF-8 text file with --haystack")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SedpaError(f"haystack file {path} is not UTF-8 text: convert it or pass another file") from None
        source = str(path)
    if len(text) < min_chars:
        raise SedpaError(
            f"{source} has {len(text)} characters but {min_chars} are needed for this context length: "
            "pass a longer text file with --haystack or use a shorter context"
        )
    return text
