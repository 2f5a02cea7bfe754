"""Rebuild the shipped English text in this folder (run once by a maintainer; not needed at runtime).

    apt-get download bible-kjv bible-kjv-text && for f in bible-kjv*.deb; do dpkg -x $f /tmp/kjv; done
    python calibration/make_text.py --bible /tmp/kjv/usr/bin/bible --bible-data /tmp/kjv/usr/lib

    apt-get download python3.11-doc && dpkg -x python3.11-doc_*.deb /tmp/pydoc
    python calibration/make_text.py ... --python-doc-sources /tmp/pydoc/usr/share/doc/python3.11/html/_sources

Writes, gzipped, kjv.txt.gz (King James Version, public domain), python_docs.txt.gz (Python's reference topics and
standard-library docstrings, PSF licence) and python_manual.txt.gz (prose of the Python 3.11 tutorial, HOWTOs,
FAQ and library reference from the reST sources, PSF licence). Paragraphs are separated by one blank line.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sysconfig
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "sedpa_compress" / "data" / "bundled"  # inside the package, so wheels carry it
KJV_BOOKS = ("Gen1:1-Rev22:21",)  # the whole Bible, verse numbers dropped
VERSES_PER_PARAGRAPH = 8


def kjv_text(bible: str, data: str) -> str:
    paragraphs: list[str] = []
    for book in KJV_BOOKS:
        out = subprocess.run([bible, "-p", data, "-l0", book],
                             capture_output=True, text=True, check=True).stdout
        verses: list[str] = []
        for line in out.splitlines():
            m = re.match(r"^\s+\d+ (.*)$", line)
            if m:
                verses.append(m.group(1).strip())
            elif line.strip() and verses:  # a chapter heading ends the paragraph
                paragraphs.append(" ".join(verses))
                verses = []
            if len(verses) >= VERSES_PER_PARAGRAPH:
                paragraphs.append(" ".join(verses))
                verses = []
        if verses:
            paragraphs.append(" ".join(verses))
    return "\n\n".join(paragraphs) + "\n"


def _clean_doc(doc: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", textwrap.dedent(doc)):
        lines = [l.strip() for l in para.strip().splitlines()]
        if not lines or any(l.startswith((">>>", "...", "$ ")) for l in lines):
            continue  # doctest and shell examples are code, not prose
        text = " ".join(lines)
        letters = sum(c.isalpha() or c == " " for c in text)
        if len(text) >= 80 and letters / len(text) > 0.85 and text[0].isalpha():
            out.append(text)
    return out


def python_docs_text() -> str:
    import pydoc_data.topics as topics

    paragraphs: list[str] = []
    for key in sorted(topics.topics):
        paragraphs += _clean_doc(topics.topics[key])
    root = sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in
                             ("site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                tree = ast.parse(Path(dirpath, name).read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc:
                        paragraphs += _clean_doc(doc)
    seen: set[str] = set()
    unique = [p for p in paragraphs if not (p in seen or seen.add(p))]
    return "\n\n".join(unique) + "\n"


_ROLE = re.compile(r":[a-z:]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")
MANUAL_PARTS = ("tutorial", "howto", "faq", "library", "reference", "using")
MANUAL_MAX_CHARS = 2_400_000


def _rst_paragraphs(text: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.splitlines()
        if not lines or lines[0].startswith((" ", "\t", "..", "|", "+", "=", "-", "*", ">>>", "#")):
            continue  # code, directives, tables, lists, headings
        para = " ".join(l.strip() for l in lines)
        para = _ROLE.sub(lambda m: m.group(1), para)
        para = re.sub(r"``([^`]*)``", r"\1", para)
        para = re.sub(r"`([^`<]*?)(?:\s*<[^>]*>)?`_*", r"\1", para)
        para = para.replace("::", ":").replace("\\", "").strip()
        letters = sum(c.isalpha() or c == " " for c in para)
        if len(para) >= 120 and letters / len(para) > 0.88 and para[0].isupper() and para[-1] in ".:?!)":
            out.append(para)
    return out


def python_manual_text(sources: Path) -> str:
    paragraphs: list[str] = []
    for part in MANUAL_PARTS:
        for path in sorted((sources / part).rglob("*.rst.txt")):
            paragraphs += _rst_paragraphs(path.read_text(encoding="utf-8"))
    seen: set[str] = set()
    unique = [p for p in paragraphs if not (p in seen or seen.add(p))]
    kept, size = [], 0
    for p in unique:
        if size + len(p) > MANUAL_MAX_CHARS:
            break
        kept.append(p)
        size += len(p) + 2
    return "\n\n".join(kept) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bible", default="bible")
    ap.add_argument("--bible-data", default="/usr/lib")
    ap.add_argument("--python-doc-sources", default="/usr/share/doc/python3.11/html/_sources")
    args = ap.parse_args()
    write_gzipped(HERE / "python_manual.txt.gz", python_manual_text(Path(args.python_doc_sources)))
    write_gzipped(HERE / "kjv.txt.gz", kjv_text(args.bible, args.bible_data))
    write_gzipped(HERE / "python_docs.txt.gz", python_docs_text())


def write_gzipped(path: Path, text: str) -> None:
    """The text gzipped with no timestamp or name in the header, so the same text gives the same bytes."""
    import gzip

    path.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))


if __name__ == "__main__":
    main()
