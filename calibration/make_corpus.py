"""Build a broad English training corpus for the tiny model from Debian packages (maintainer script).

The embedded `sedpa-tiny` is trained on the King James Bible and Python's docs only, and memorises them.
This script gathers much more, and much more varied, English: technical manuals, user help, FAQs,
definitions, quotations, satire, novels and game narrative, all from freely licensed packages in Debian main.

    python calibration/make_corpus.py --out /tmp/corpus [--work /tmp/corpus-work] [--only wordnet,austen]

For each source it runs `apt-get download` (in WORK/debs, skipped when the .deb is already there), unpacks
it with `dpkg -x` into WORK/x/PACKAGE, extracts plain paragraphs, cleans them and writes OUT/<source>.txt
(one paragraph a line, one blank line between paragraphs, as in `make_text.py`) and OUT/SOURCES.md (file,
what, package and version, licence, paragraphs, MB). Needs Debian's apt-get and dpkg-deb; no other
dependencies. File walks are sorted, caps are deterministic, and paragraphs are deduplicated across the
whole corpus (first source wins), so the output is the same on every run with the same package versions.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import html
import json
import lzma
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

MIN_CHARS = 60  # shorter pieces are headings, labels and fragments
MAX_CHARS = 2000  # longer paragraphs are split at sentence ends
MAX_SHARE = 0.40  # no source may dominate the corpus

# ---------------------------------------------------------------------------------------------------------
# Paragraph cleaning, shared by every source


_WS = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u2019\u201d)\]]*\s+(?=[\"'\u2018\u201c(\[]?[A-Z0-9])")
_OVERSTRIKE = re.compile(r".\x08")  # nroff-style bold/underline: "_\bX" and "X\bX"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CODE_START = re.compile(r"^(\$ |# |% |>>> |\.\.\. |[a-z_]+\(.*\)\s*[;{]|[{}<]|#include|//|/\*|[A-Za-z_.]+ = )")
_CODE_CHARS = set("{}[]<>=;$\\|_/@#~^`*")
_BOILERPLATE = re.compile(
    r"WITHOUT ANY WARRANTY|Permission is granted to (copy|make)|This (program|library|file|document) is free "
    r"software|you can redistribute it and/or modify|SPDX-License-Identifier|All rights reserved|"
    r"Copyright \(C\)|Copyright ©|^Copyright \d|Licensed under the|Creative Commons Attribution|"
    r"^(Prev|Next|Up|Home|Table of Contents)\b", re.I)
# Function words: real English prose is full of them; identifier soup, lists and other languages are not.
_STOPWORDS = frozenset(
    "a an the and or but if then so of to in on at by for with from as is are was were be been being it its "
    "this that these those he she they we you i me him her them us my your his their our not no can will "
    "would should could may might must do does did has have had which who whom what when where how there "
    "here all any some one also than into out up about more most only such other each".split())


def normalize(text: str) -> str:
    """One line: overstrikes and control characters removed, whitespace collapsed."""
    text = _OVERSTRIKE.sub("", text.replace("\u00a0", " ").replace("\u00ad", ""))
    return _WS.sub(" ", _CONTROL.sub(" ", text)).strip()


def split_long(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """Split a paragraph longer than max_chars at sentence ends (at spaces if one sentence is too long)."""
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        while len(sentence) > max_chars:  # a run-on "sentence": cut at the last space that fits
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            pieces.append(sentence[:cut])
            sentence = sentence[cut:].strip()
        pieces.append(sentence)
    out: list[str] = []
    for s in pieces:
        if out and len(out[-1]) + 1 + len(s) <= max_chars:
            out[-1] += " " + s
        else:
            out.append(s)
    return out


_END = ".!?:;\"')]\u201d\u2019\u2026"  # sentence punctuation a whole paragraph ends with


def is_prose(text: str, min_chars: int = MIN_CHARS, need_end: bool = True) -> bool:
    """True for an English prose paragraph; False for fragments, code, command lines, tables and boilerplate.
    With need_end, the paragraph must end like a sentence (one that does not was cut short by a dropped
    code block or list)."""
    if len(text) < min_chars or _CODE_START.match(text) or _BOILERPLATE.search(text):
        return False
    if need_end and text[-1] not in _END:
        return False
    if not (text[0].isalnum() or text[0] in "\"'(\u2018\u201c[-\u2014"):
        return False
    letters = sum(c.isalpha() for c in text)
    spaces = text.count(" ")
    if (letters + spaces) / len(text) < 0.85 or sum(c in _CODE_CHARS for c in text) / len(text) > 0.03:
        return False  # mostly non-letters: code, paths, tables, ASCII art
    words = re.findall(r"[A-Za-z']+", text.lower())
    if len(words) < 8 or sum(w in _STOPWORDS for w in words) / len(words) < 0.12:
        return False  # not English sentences (names, identifiers, word lists, another language)
    return sum(len(w) > 25 for w in text.split()) == 0  # no long tokens: URLs, hashes, run-together junk


def clean(raw: Iterable[str], min_chars: int = MIN_CHARS, need_end: bool = True) -> Iterator[str]:
    """Normalise, split at MAX_CHARS and keep the prose pieces of raw paragraphs."""
    for para in raw:
        for piece in split_long(normalize(para)):
            if is_prose(piece, min_chars, need_end):
                yield piece


def _dedup_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def thin(paragraphs: list[str], max_chars: int) -> list[str]:
    """Keep about max_chars of paragraphs, spread evenly over the source (not just its first part)."""
    total = sum(len(p) + 2 for p in paragraphs)
    if total <= max_chars:
        return paragraphs
    kept, kept_chars, seen_chars = [], 0, 0
    for p in paragraphs:
        seen_chars += len(p) + 2
        if kept_chars < max_chars * seen_chars / total:
            kept.append(p)
            kept_chars += len(p) + 2
    return kept


# ---------------------------------------------------------------------------------------------------------
# Readers: one per source format; each yields raw paragraphs (already one line or not), cleaned later


def _read(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def walk(root: Path, patterns: Iterable[str], exclude: Iterable[str] = ()) -> list[Path]:
    """Files under root matching any glob pattern, without excluded path parts, in sorted order."""
    excl = tuple(exclude)
    files = {p for pat in patterns for p in root.rglob(pat) if p.is_file()}
    return sorted(p for p in files if not any(e in p.relative_to(root).as_posix() for e in excl))


# reStructuredText (kernel docs) ---------------------------------------------------------------------------

_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+_:.<>])\1{2,}\s*$")
_RST_TABLE = re.compile(r"^(\+[-=+]+\+?|\|.*|[=\-]{2,}(\s+[=\-]{2,})+)\s*$")
_RST_FIELD = re.compile(r"^:[\w\- ]+:(\s|$)")
_RST_BULLET = re.compile(r"^([-*+\u2022]|\d+[.)]|#\.|\(?[a-zA-Z0-9]\))\s+")
_RST_DIRECTIVE = re.compile(r"^\.\.\s+([\w:-]+)::\s*(.*)$")
_RST_ADMONITIONS = frozenset("note warning tip hint important attention caution danger error admonition "
                             "seealso sidebar topic".split())
_RST_ROLE = re.compile(r":[\w:+.-]+:`~?!?([^`<]*?)\s*(?:<[^>]*>)?`")
_RST_LINK = re.compile(r"`([^`<]*?)\s*(?:<[^>]*>)?`__?")


def rst_inline(text: str) -> str:
    """Strip reST inline markup, keeping the words: roles, literals, links, emphasis, footnote refs."""
    text = _RST_ROLE.sub(r"\1", text)
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = _RST_LINK.sub(r"\1", text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    text = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])", r"\1", text)
    text = re.sub(r"\s?\[(#\w*|\d+|\*)\]_", "", text)  # footnote references
    text = re.sub(r"\|(\w[\w -]*)\|", r"\1", text)  # substitutions
    text = re.sub(r"(?<=\w)__?(?=[\s.,;:)]|$)", "", text)  # `name`_ references written without backquotes
    text = re.sub(r"\\(.)", r"\1", text)
    return text.replace(" ::", "").replace("::", ":")


def rst_paragraphs(text: str) -> list[str]:
    """Prose paragraphs of a reST (or plain text) document, one line each, markup stripped.

    Dropped: literal blocks (after `::`), directives other than admonitions (code, images, tables,
    kernel-doc, comments), headings, tables, field lists and definition-list terms."""
    out: list[str] = []
    block: list[str] = []
    block_indent = 0
    skip_indent: int | None = None  # inside a literal block / directive: skip lines indented deeper than this

    def flush() -> None:
        nonlocal skip_indent
        if not block:
            return
        para = " ".join(block)
        block.clear()
        if para.rstrip().endswith("::"):
            skip_indent = block_indent  # what follows, indented deeper, is a literal block
        out.append(rst_inline(para))

    for line in text.expandtabs(8).splitlines() + [""]:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not stripped or indent > skip_indent:
                continue
            skip_indent = None
        if not stripped:
            flush()
            continue
        if stripped.startswith(".."):
            flush()
            m = _RST_DIRECTIVE.match(stripped)
            if m and m.group(1).lower() in _RST_ADMONITIONS:
                if m.group(2) and m.group(1).lower() not in ("admonition", "topic", "sidebar"):
                    block.append(m.group(2))  # ".. note:: text on the same line"
                    block_indent = indent
                continue  # an admonition's body is prose: read on
            skip_indent = indent  # code, images, tables, comments, toctrees...
            continue
        if _RST_UNDERLINE.match(stripped) or _RST_TABLE.match(stripped):
            block.clear()  # a heading's title line (or a table row) went into the block: drop it all
            skip_indent = indent if _RST_TABLE.match(stripped) and not _RST_UNDERLINE.match(stripped) else None
            continue
        if _RST_FIELD.match(stripped) and not block:
            skip_indent = indent  # ":Author: ..." metadata and its continuation lines
            continue
        bullet = _RST_BULLET.match(stripped)
        if bullet:
            flush()
            stripped = stripped[bullet.end():]
            indent += bullet.end()
        elif block and indent > block_indent and len(block) == 1 and not block[0].endswith((".", ":", ",")):
            block.clear()  # a definition-list term: keep only its definition
        if not block:
            block_indent = indent
        block.append(stripped)
    return out


def linux_docs(roots: dict[str, Path]) -> Iterator[str]:
    docs = roots["linux-doc-6.1"] / "usr/share/doc/linux-doc-6.1/Documentation"
    # translations are not English; devicetree bindings and ABI entries are schemas, not prose
    for path in walk(docs, ["*.rst.gz", "*.txt.gz"], exclude=["translations/", "devicetree/", "ABI/",
                                                               "sphinx", "output/"]):
        yield from rst_paragraphs(_read(path))


# POD (Perl's manual) ------------------------------------------------------------------------------------

_POD_CODE = re.compile(r"([A-Z])<([^<>]*)>")
_POD_MULTI = re.compile(r"([A-Z])<{2,}\s+(.*?)\s+>{2,}", re.S)


def _pod_code(m: re.Match[str]) -> str:
    code, body = m.group(1), m.group(2)
    if code in "XZ":
        return ""  # index entries, null markers
    if code == "E":
        named = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}
        if body in named:
            return named[body]
        try:  # E<0x3c> hex, E<074> octal, E<60> decimal
            if body.lower().startswith("0x"):
                return chr(int(body, 16))
            if body.isdigit():
                return chr(int(body, 8 if body.startswith("0") else 10))
        except ValueError:
            return body
        return html.unescape(f"&{body};")
    if code == "L":
        text, bar, target = body.partition("|")
        if bar:
            return text
        name, _, section = body.partition("/")
        return section.strip('"') or name
    return body


def pod_inline(text: str) -> str:
    text = _POD_MULTI.sub(_pod_code, text)
    while True:
        new = _POD_CODE.sub(_pod_code, text)
        if new == text:
            return text
        text = new


def pod_paragraphs(text: str) -> list[str]:
    """Ordinary paragraphs of a POD document; verbatim (indented) paragraphs, headings, items and
    =begin/=end blocks dropped."""
    out: list[str] = []
    in_pod, in_begin = False, False
    for para in re.split(r"\n[ \t]*\n", text):
        if not para.strip():
            continue
        if para.startswith("="):
            cmd = para.split(None, 1)[0]
            in_pod = cmd != "=cut"
            if cmd == "=begin":
                in_begin = True
            elif cmd == "=end":
                in_begin = False
            continue
        if not in_pod or in_begin or para[0] in " \t":
            continue
        out.append(pod_inline(" ".join(line.strip() for line in para.splitlines())))
    return out


# perlNNNdelta files are changelogs; these others are tables, licences, non-English or generated C API lists
PERL_SKIP = re.compile(r"^perl(\d+delta|toc|artistic|gpl|hist|cn|jp|ko|tw|uniprops|api|intern|delta)\.pod$")


def perl_docs(roots: dict[str, Path]) -> Iterator[str]:
    for path in walk(roots["perl-doc"] / "usr/share/perl", ["*.pod"]):
        if not PERL_SKIP.match(path.name):
            yield from pod_paragraphs(_read(path))


# HTML and Mallard XML -----------------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    "p div li dd ul ol dl blockquote section article header footer aside figure figcaption caption table tr td "
    "th br hr body html form fieldset center address "
    # Mallard (GNOME help)
    "page item steps list terms tree note listing example synopsis".split())
_VOID_TAGS = frozenset("br hr img meta link input area base col embed param source track wbr".split())
_ADMONITION_SUMMARIES = frozenset(("Note", "Tip", "Warning", "Caution", "Important"))
SKIP_TAGS = frozenset(
    "head script style pre table nav title h1 h2 h3 h4 h5 h6 dt svg math noscript button select "
    # Mallard: metadata, terminal screens, media, titles
    "info screen media desc".split())
SKIP_CLASSES = frozenset(
    "navheader navfooter toc list-of-tables list-of-figures list-of-examples programlisting screen synopsis "
    "cmdsynopsis funcsynopsis refsynopsisdiv literallayout listingblock literalblock highlight sphinxsidebar "
    "related footer docnav breadcrumbs legalnotice copyright authorgroup author revhistory mediaobject "
    "titlepage index glossary func_signature column_definition figure title".split())


class HTMLText(HTMLParser):
    """Collects the text of block elements as paragraphs, skipping whole subtrees of code, navigation,
    tables (admonition tables excepted: DocBook wraps notes in them) and headings."""

    def __init__(self, skip_tags: frozenset[str] = SKIP_TAGS, skip_classes: frozenset[str] = SKIP_CLASSES):
        super().__init__(convert_charrefs=True)
        self.skip_tags, self.skip_classes = skip_tags, skip_classes
        self.paragraphs: list[str] = []
        self._buf: list[str] = []
        self._skip: str | None = None  # tag name of the subtree being skipped
        self._depth = 0  # nesting of that tag name inside it

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        text = re.sub(r" ?\(\s+\)", "", text)  # brackets left empty by a dropped inline image
        self._buf.clear()
        if text:
            self.paragraphs.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is not None:
            self._depth += tag == self._skip
            return
        if tag in _VOID_TAGS:
            self._buf.append(" ")
            return
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        admonition = tag == "table" and a.get("summary") in _ADMONITION_SUMMARIES
        if (tag in self.skip_tags and not admonition) or classes & self.skip_classes:
            self._flush()
            self._skip, self._depth = tag, 1
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is None:  # <br/>, <media .../>: never opens a subtree to skip
            self._buf.append(" ")
            if tag in _BLOCK_TAGS:
                self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self._skip is not None:
            if tag == self._skip:
                self._depth -= 1
                if self._depth == 0:
                    self._skip = None
            return
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip is None:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_paragraphs(text: str, skip_classes: frozenset[str] = SKIP_CLASSES) -> list[str]:
    """Prose paragraphs of an HTML (or Mallard XML) page."""
    parser = HTMLText(skip_classes=skip_classes)
    parser.feed(text)
    parser.close()
    return parser.paragraphs


def html_source(package: str, folder: str, patterns: Iterable[str] = ("*.html",),
                exclude: Iterable[str] = ()) -> Callable[[dict[str, Path]], Iterator[str]]:
    def build(roots: dict[str, Path]) -> Iterator[str]:
        for path in walk(roots[package] / folder, patterns, exclude):
            yield from html_paragraphs(_read(path))
    return build


# dictd databases (WordNet, Jargon File, Devil's Dictionary) ----------------------------------------------

_DICT_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _dict_number(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _DICT_B64.index(c)
    return n


def dict_entries(index: str, data: bytes) -> Iterator[tuple[str, str]]:
    """(headword, entry text) of a dictd database: index lines are `word TAB offset TAB length` with
    offsets in dictd's base64; data is the uncompressed .dict. Entries shared by several headwords
    come once; the database's own 00-database-* entries are skipped."""
    seen: set[tuple[int, int]] = set()
    for line in index.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith(("00-database", "00database")):
            continue
        span = (_dict_number(parts[1]), _dict_number(parts[2]))
        if span in seen:
            continue
        seen.add(span)
        yield parts[0], data[span[0]:span[0] + span[1]].decode("utf-8", errors="replace")


def _dict_files(root: Path, name: str) -> tuple[str, bytes]:
    base = root / "usr/share/dictd" / name
    return _read(base.with_suffix(".index")), gzip.decompress(base.with_suffix(".dict.dz").read_bytes())


_WN_SENSE = re.compile(r"^\s+(?:(n|v|adj|adv)\s+)?(\d+):\s*(.*)$")
_WN_POS = {"n": "noun", "v": "verb", "adj": "adjective", "adv": "adverb"}


def wordnet_paragraph(entry: str) -> str:
    """One WordNet entry as a dictionary paragraph:
    `dog (noun) 1. a member of the genus Canis ...: "the dog barked all night". Also: domestic dog. (verb) 1. ...`
    """
    lines = entry.splitlines()
    head = lines[0].strip()
    senses: list[tuple[str | None, str, str]] = []  # (part of speech or None, number, text)
    for line in lines[1:]:
        m = _WN_SENSE.match(line)
        if m:
            senses.append((m.group(1), m.group(2), m.group(3)))
        elif senses and line.strip():
            pos, num, text = senses[-1]
            senses[-1] = (pos, num, text + " " + line.strip())
    parts = [head]
    for pos, num, text in senses:
        text = re.sub(r"-\s+(?=[a-z])", "-", text)  # words hyphenated across lines by the formatter
        syn = re.search(r"\[syn:\s*(.*?)\]", text)
        text = re.sub(r"\s*\[(syn|ant|also|see):.*?\]", "", text).strip()
        gloss, _, examples = text.partition('; "')
        sense = f"{num}. {gloss.strip()}"
        if examples:
            sense += ': "' + examples.strip().rstrip(";")
        sense = sense.rstrip(".;, ") + "."
        if syn:
            others = [w for w in re.findall(r"\{([^}]*)\}", syn.group(1)) if w.lower() != head.lower()]
            if others:
                sense += " Also: " + ", ".join(others) + "."
        parts.append((f"({_WN_POS[pos]}) " if pos else "") + sense)
    return " ".join(parts) if len(parts) > 1 else ""


def wordnet(roots: dict[str, Path]) -> Iterator[str]:
    for _, entry in dict_entries(*_dict_files(roots["dict-wn"], "wn")):
        yield wordnet_paragraph(entry)


def dict_paragraphs(entry: str, head_line: bool) -> list[str]:
    """Paragraphs of a Jargon File / Devil's Dictionary entry. With head_line, the entry starts with the
    headword (and part of speech) on lines of their own: they lead the first paragraph."""
    paras = [" ".join(line.strip() for line in p.splitlines()) for p in re.split(r"\n\s*\n", entry.strip())]
    paras = [re.sub(r"\{([^{}]*)\}", r"\1", p) for p in paras if p]  # {cross references}
    if head_line and paras:
        lead = paras.pop(0)
        if paras and paras[0].startswith("[") and len(paras[0]) < 200 and len(paras) > 1:
            lead += " " + paras.pop(0)  # [etymology] goes with the headword
        if paras:
            paras[0] = lead + ": " + paras[0]
    return [p.replace("_", "") for p in paras]  # Devil's _italics_


def jargon(roots: dict[str, Path]) -> Iterator[str]:
    for _, entry in dict_entries(*_dict_files(roots["dict-jargon"], "jargon")):
        yield from dict_paragraphs(entry, head_line=True)


def devil(roots: dict[str, Path]) -> Iterator[str]:
    for _, entry in dict_entries(*_dict_files(roots["dict-devil"], "devil")):
        yield from dict_paragraphs(entry, head_line=False)


# fortune(6) databases -----------------------------------------------------------------------------------

FORTUNE_SKIP = frozenset(("ascii-art", "art"))  # "art" is mostly ASCII pictures too


def fortune_paragraphs(text: str) -> list[str]:
    """Each fortune (between `%` lines) as one paragraph; an attribution line `-- Author` stays at the end."""
    out = []
    for cookie in re.split(r"^%\s*$", text, flags=re.M):
        lines = [_OVERSTRIKE.sub("", line).strip() for line in cookie.splitlines()]
        lines = [line for line in lines if line]
        if lines:
            out.append(" ".join(lines))
    return out


def fortunes(roots: dict[str, Path]) -> Iterator[str]:
    for pkg in ("fortunes-min", "fortunes"):
        for path in walk(roots[pkg] / "usr/share/games/fortunes", ["*"]):
            if "." not in path.name and path.name not in FORTUNE_SKIP and not path.is_symlink():
                yield from fortune_paragraphs(_read(path))


# R lazy-load data (janeaustenr) ----------------------------------------------------------------------------


class RVector(list):  # type: ignore[type-arg]
    """An R vector: its elements, plus its attributes (names, class...)."""
    attrs: dict[str | None, object] = {}


class _RReader:
    """The part of R's XDR serialization format that data packages use: vectors, strings, pairlists."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.refs = data, 0, []  # type: list[object]

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def item(self) -> object:
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (254, 253, 252, 251, 250, 242, 241):  # NULL, environments, markers
            return None
        if kind == 255:  # reference to an earlier symbol
            return self.refs[(flags >> 8) - 1 if flags >> 8 else self.int() - 1]
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            self.pos += n
            return self.data[self.pos - n:self.pos].decode("utf-8", errors="replace")
        if kind == 1:  # SYMSXP
            sym = self.item()
            self.refs.append(sym)
            return sym
        if kind == 2:  # pairlist, read iteratively: tag -> value
            out: dict[str | None, object] = {}
            while True:
                if has_attr:
                    self.item()
                key = self.item() if has_tag else None
                out[key if isinstance(key, str) or key is None else str(key)] = self.item()
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
                if kind == 254:
                    return out
                if kind != 2:
                    raise ValueError(f"unsupported pairlist tail {kind}")
        if kind in (16, 19, 20):  # character vector, list, expression
            vec = RVector(self.item() for _ in range(self.int()))
        elif kind in (10, 13):  # logical, integer
            n = self.int()
            vec = RVector(struct.unpack_from(f">{n}i", self.data, self.pos))
            self.pos += 4 * n
        elif kind == 14:  # double
            n = self.int()
            vec = RVector(struct.unpack_from(f">{n}d", self.data, self.pos))
            self.pos += 8 * n
        else:
            raise ValueError(f"unsupported R type {kind}")
        if has_attr:
            vec.attrs = self.item()  # type: ignore[assignment]
        return vec


def r_unserialize(data: bytes) -> object:
    if data[:2] != b"X\n":
        raise ValueError("not R's XDR serialization")
    reader = _RReader(data)
    reader.pos = 2
    version = reader.int()
    reader.pos += 8  # writer and minimal reader R versions
    if version == 3:
        reader.pos += 4 + reader.int()  # native encoding name
    return reader.item()


def r_lazyload(folder: Path, name: str = "Rdata") -> dict[str, object]:
    """Objects of an installed R package's lazy-load database (NAME.rdx index + NAME.rdb blobs)."""
    index = r_unserialize(gzip.decompress((folder / f"{name}.rdx").read_bytes()))
    variables = index[0]  # type: ignore[index]
    blob = (folder / f"{name}.rdb").read_bytes()
    out = {}
    for var, (offset, length) in zip(variables.attrs["names"], variables):
        raw = blob[offset:offset + length]
        method = raw[4:5]  # 4-byte length, then the compression type (plain zlib has none)
        data = {b"Z": lambda b: zlib.decompress(b[5:]), b"2": lambda b: bz2.decompress(b[5:]),
                b"X": lambda b: lzma.decompress(b[5:]), b"0": lambda b: b[5:]}.get(
                    method, lambda b: zlib.decompress(b[4:]))(raw)
        out[var] = r_unserialize(data)
    return out


def text_paragraphs(lines: Iterable[str]) -> list[str]:
    """Paragraphs of plain text given as lines: blank lines separate, wrapped lines are joined."""
    out, block = [], []
    for line in list(lines) + [""]:
        if line.strip():
            block.append(line.strip())
        elif block:
            out.append(" ".join(block))
            block = []
    return out


def austen(roots: dict[str, Path]) -> Iterator[str]:
    books = r_lazyload(roots["r-cran-janeaustenr"] / "usr/lib/R/site-library/janeaustenr/data")
    for name in sorted(books):
        for para in text_paragraphs(books[name]):  # type: ignore[arg-type]
            yield re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"\1", para)  # _italics_ of the Gutenberg text


# Game narrative ------------------------------------------------------------------------------------------

_WML_TOKEN = re.compile(r'\[(/?)([\w:]+)\]|(\w+)\s*=\s*(_?)\s*"((?:[^"]|"")*)"|(\w+)\s*=\s*([^\n"]*)')
_SPEAKER = re.compile(r"^[A-Z][A-Za-z' _-]*$")


def wml_paragraphs(text: str) -> list[str]:
    """Story text, unit lore and dialogue of a Wesnoth WML file. Consecutive [message]s of one [event]
    become one paragraph: `Konrad: "We must make haste!" Delfador: "..."`."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    out: list[str] = []
    dialogue: list[str] = []
    message: dict[str, str] = {}

    def usable(s: str) -> str | None:
        s = re.sub(r"<[^>]+>", "", s.replace('""', '"'))
        return None if "$" in s or "{" in s or "~" in s else " ".join(s.split())

    for m in _WML_TOKEN.finditer(text):
        closing, tag, key, translatable, value, raw_key, raw_value = m.groups()
        if tag:
            if tag == "message" and closing:
                said = usable(message.get("message", ""))
                speaker = message.get("speaker", "").replace("_", " ")
                if said:
                    dialogue.append(f'{speaker}: "{said}"' if _SPEAKER.match(speaker) and
                                    speaker.lower() not in ("narrator", "unit", "second unit") else said)
                message = {}
            elif closing and tag in ("event", "part", "scenario", "story") and dialogue:
                out.append(" ".join(dialogue))
                dialogue = []
        elif key and translatable:
            if key == "message":
                message["message"] = value
            elif key in ("story", "description"):
                said = usable(value)
                if said:
                    out.extend(p for p in re.split(r"\n\s*\n", said) if p)
        elif raw_key == "speaker":
            message["speaker"] = raw_value.strip()
    if dialogue:
        out.append(" ".join(dialogue))
    return out


WESNOTH_CAMPAIGNS = ("did", "dm", "dw", "ei", "httt", "l", "low", "nr", "sof", "sota", "sotbe", "thot", "trow",
                     "tsg", "ttb", "utbs")


def wesnoth(roots: dict[str, Path]) -> Iterator[str]:
    for pkg in ("wesnoth-1.16-data",) + tuple(f"wesnoth-1.16-{c}" for c in WESNOTH_CAMPAIGNS):
        for path in walk(roots[pkg] / "usr/share/games/wesnoth/1.16/data", ["*.cfg"], exclude=["test/"]):
            for para in wml_paragraphs(_read(path)):
                yield from split_long(para)


# Endless Sky's placeholders, filled with fixed stand-ins so the sentences read naturally
ES_FILL = {"<first>": "Alex", "<last>": "Morgan", "<ship>": "Aurora", "<system>": "Sol", "<planet>": "Earth",
           "<origin>": "Earth", "<destination>": "New Boston", "<stopovers>": "New Boston", "<npc>": "Vigil",
           "<date>": "the fifth of May", "<day>": "the fifth of May", "<tons>": "twenty tons",
           "<commodity>": "food", "<cargo>": "twenty tons of food", "<payment>": "forty thousand credits",
           "<fare>": "two thousand credits", "<bunks>": "four bunks", "<passengers>": "four passengers",
           "<fine>": "ten thousand credits", "<waypoints>": "Sol"}


def endless_sky_paragraphs(text: str) -> list[str]:
    """Backquoted strings of an Endless Sky data file: conversations, dialogs and planet descriptions."""
    out = []
    for s in re.findall(r"`([^`]*)`", text):
        for key, value in ES_FILL.items():
            s = s.replace(key, value)
        if not re.search(r"<[a-z][^>]*>|&\[", s):  # an unknown placeholder left: skip rather than guess
            out.append(s)
    return out


def endless_sky(roots: dict[str, Path]) -> Iterator[str]:
    for path in walk(roots["endless-sky-data"] / "usr/share/games/endless-sky/data", ["*.txt"]):
        yield from endless_sky_paragraphs(_read(path))


CDDA_KEYS = frozenset(("description", "text", "dynamic_line", "messages", "offer", "yes", "no", "success",
                       "advice", "job_description", "failure", "accepted", "rejected", "info"))


def cataclysm_strings(obj: object, key: str | None = None) -> Iterator[str]:
    """Text values of Cataclysm: DDA JSON under keys that hold prose (descriptions, lore, dialogue)."""
    if isinstance(obj, dict):
        if key in CDDA_KEYS and isinstance(obj.get("str"), str):
            yield obj["str"]  # a translatable {"str": ...} object
            return
        for k, v in obj.items():
            yield from cataclysm_strings(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from cataclysm_strings(v, key)
    elif isinstance(obj, str) and key in CDDA_KEYS:
        s = re.sub(r"</?color[^>]*>|</?(?:good|bad|info|em|i|b)>", "", obj)
        if "<" not in s and "%" not in s and "$" not in s:  # <name_b>-style placeholders and format strings
            yield from s.split("\n\n")


def cataclysm(roots: dict[str, Path]) -> Iterator[str]:
    root = roots["cataclysm-dda-data"] / "usr/share/games/cataclysm-dda"
    for path in walk(root, ["*.json"], exclude=["mapgen", "tileset", "gfx", "sound"]):
        try:
            data = json.loads(_read(path))
        except json.JSONDecodeError:
            continue
        yield from cataclysm_strings(data)


def crawl_paragraphs(text: str) -> list[str]:
    """Descriptions of a Dungeon Crawl database file: entries between `%%%%` lines, a key line first."""
    out = []
    for entry in re.split(r"^%%%%\s*$", text, flags=re.M):
        lines = [line for line in entry.strip().splitlines() if not line.startswith("#")][1:]  # key
        for para in text_paragraphs(lines):
            para = re.sub(r"</?[a-z]+>", "", para)  # colour tags
            if not re.search(r"[@$<>{}]", para):  # message templates
                out.append(para)
    return out


def crawl(roots: dict[str, Path]) -> Iterator[str]:
    # quotes.txt is quotations from (mostly copyrighted) books: left out
    for path in walk(roots["crawl-common"] / "usr/share/crawl/dat/descript", ["*.txt"]):
        if path.parent.name == "descript" and path.name != "quotes.txt":
            yield from crawl_paragraphs(_read(path))


_FREECIV_STRING = re.compile(r'_\(\s*"((?:[^"\\]|\\.)*)"\s*\)', re.S)


def freeciv_strings(text: str) -> list[str]:
    """Translatable strings `_("...")` of Freeciv's help and rulesets, backslash-newline joined."""
    out = []
    for s in _FREECIV_STRING.findall(text):
        s = s.replace("\\\n", "").replace("\\n", "\n").replace('\\"', '"')
        if "%" not in s:  # printf templates
            out.extend(p for p in re.split(r"\n\s*\n", s) if p.strip())
    return out


def freeciv(roots: dict[str, Path]) -> Iterator[str]:
    root = roots["freeciv-data"] / "usr/share/games/freeciv"
    for path in [root / "helpdata.txt"] + walk(root, ["*.ruleset"]):
        yield from freeciv_strings(_read(path))


# ---------------------------------------------------------------------------------------------------------
# The sources


@dataclass
class Source:
    name: str  # output file stem
    what: str
    packages: tuple[str, ...]
    licence: str
    build: Callable[[dict[str, Path]], Iterable[str]]
    min_chars: int = MIN_CHARS
    need_end: bool = True  # False where paragraphs may end with an attribution or a line of verse
    max_mb: float | None = None  # thinned evenly to this size


SOURCES: list[Source] = [
    Source("austen", "Jane Austen's six novels (Project Gutenberg text)", ("r-cran-janeaustenr",),
           "public domain text (package MIT)", austen),
    Source("devils_dictionary", "Ambrose Bierce, The Devil's Dictionary (satirical definitions, verse)",
           ("dict-devil",), "public domain", devil, min_chars=40, need_end=False),
    Source("fortunes", "fortune(6) quotations, jokes and riddles (offensive sets not included)",
           ("fortunes-min", "fortunes"), "BSD (fortune-mod); quotations", fortunes, min_chars=40, need_end=False),
    Source("wesnoth", "Battle for Wesnoth: campaign story, dialogue and unit lore (16 campaigns)",
           ("wesnoth-1.16-data",) + tuple(f"wesnoth-1.16-{c}" for c in WESNOTH_CAMPAIGNS), "GPL-2+", wesnoth),
    Source("endless_sky", "Endless Sky: mission conversations and planet descriptions", ("endless-sky-data",),
           "GPL-3+", endless_sky),
    Source("cataclysm", "Cataclysm: Dark Days Ahead: item, monster and place descriptions, lore, NPC dialogue",
           ("cataclysm-dda-data",), "CC-BY-SA-3.0", cataclysm),
    Source("crawl", "Dungeon Crawl Stone Soup: monster, god, item, spell and place descriptions",
           ("crawl-common",), "GPL-2+", crawl),
    Source("freeciv", "Freeciv help: nation histories, buildings, technologies, governments",
           ("freeciv-data",), "GPL-2+", freeciv),
    Source("wordnet", "WordNet 3.0 glosses and example sentences, one paragraph per word", ("dict-wn",),
           "WordNet 3.0 licence (BSD-like)", wordnet, max_mb=6.0),
    Source("jargon", "The Jargon File 4.4.7 (hacker slang, history, humour)", ("dict-jargon",),
           "public domain", jargon),
    Source("gnome_help", "GNOME desktop user help (Mallard pages, C locale)", ("gnome-user-docs",),
           "CC-BY-SA-3.0",
           html_source("gnome-user-docs", "usr/share/help/C", ("*.page",))),
    Source("gimp_help", "GIMP 2.10 user manual", ("gimp-help-en",), "GFDL-1.2+ (no invariant sections)",
           html_source("gimp-help-en", "usr/share/gimp/2.0/help/en")),
    Source("debian_handbook", "The Debian Administrator's Handbook (Debian 11)", ("debian-handbook",),
           "GPL-2+ or CC-BY-SA-3.0",
           html_source("debian-handbook", "usr/share/doc/debian-handbook/html/en-US")),
    Source("debian_reference", "Debian Reference (Osamu Aoki)", ("debian-reference-en",), "GPL-2+",
           html_source("debian-reference-en", "usr/share/debian-reference", ("*.en.html",))),
    Source("postgresql_manual", "PostgreSQL 15 manual", ("postgresql-doc-15",), "PostgreSQL (BSD-like)",
           html_source("postgresql-doc-15", "usr/share/doc/postgresql-doc-15/html")),
    Source("git_docs", "Git manual pages, user manual, how-tos and technical notes", ("git-doc",), "GPL-2",
           html_source("git-doc", "usr/share/doc/git-doc", ("*.html",))),
    Source("perl_docs", "Perl 5.36 manual (perlfaq, tutorials, reference; changelogs and C API left out)",
           ("perl-doc",), "GPL-1+ or Artistic", perl_docs),
    Source("linux_docs", "Linux 6.1 kernel Documentation (reST and text; translations, DT bindings, ABI out)",
           ("linux-doc-6.1",), "GPL-2", linux_docs, max_mb=12.0),
]


# ---------------------------------------------------------------------------------------------------------
# Packages


def fetch(package: str, work: Path) -> tuple[Path, str]:
    """Download (once) and unpack (once) a Debian package; returns its root folder and version."""
    debs, unpacked = work / "debs", work / "x" / package
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True, capture_output=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
    deb = found[-1]
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                             text=True).stdout.strip()
    stamp = unpacked / ".unpacked"
    if not stamp.exists() or stamp.read_text() != deb.name:
        shutil.rmtree(unpacked, ignore_errors=True)
        unpacked.mkdir(parents=True)
        subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
        stamp.write_text(deb.name)
    return unpacked, version


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for <source>.txt and SOURCES.md")
    ap.add_argument("--work", type=Path, default=Path("/tmp/corpus-work"), help="downloads and unpacked packages")
    ap.add_argument("--only", default="", help="comma-separated source names (default: all)")
    args = ap.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    sources = [s for s in SOURCES if not only or s.name in only]
    args.out.mkdir(parents=True, exist_ok=True)

    seen: set[str] = set()
    results: list[tuple[Source, str, list[str]]] = []
    for src in sources:
        fetched = {pkg: fetch(pkg, args.work) for pkg in src.packages}
        roots = {pkg: root for pkg, (root, _) in fetched.items()}
        versions = ", ".join(f"`{pkg}` {ver}" for pkg, (_, ver) in fetched.items())
        if len(fetched) > 3:  # the Wesnoth campaigns: one version for all
            vers = {ver for _, ver in fetched.values()}
            versions = f"`{src.packages[0]}` and {len(fetched) - 1} campaign packages {', '.join(sorted(vers))}"
        paragraphs = []
        for para in clean(src.build(roots), src.min_chars, src.need_end):
            key = _dedup_key(para)
            if key not in seen:
                seen.add(key)
                paragraphs.append(para)
        if src.max_mb:
            paragraphs = thin(paragraphs, int(src.max_mb * 1e6))
        results.append((src, versions, paragraphs))
        print(f"{src.name}: {len(paragraphs)} paragraphs, {sum(len(p) + 2 for p in paragraphs) / 1e6:.2f} MB",
              file=sys.stderr)

    rows = ["# Training corpus", "",
            "Built by `calibration/make_corpus.py` from Debian packages: plain English, one paragraph a line, "
            "one blank line between paragraphs, deduplicated across files.", "",
            "| file | what | Debian package | licence | paragraphs | MB |", "|---|---|---|---|---|---|"]
    total = 0
    for src, versions, paragraphs in results:
        text = "\n\n".join(paragraphs) + "\n"
        (args.out / f"{src.name}.txt").write_text(text, encoding="utf-8")
        size = len(text.encode("utf-8"))
        total += size
        rows.append(f"| `{src.name}.txt` | {src.what} | {versions} | {src.licence} | {len(paragraphs)} | "
                    f"{size / 1e6:.2f} |")
    rows.append(f"| **total** | | | | {sum(len(p) for _, _, p in results)} | {total / 1e6:.2f} |")
    (args.out / "SOURCES.md").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for src, _, paragraphs in results:
        share = sum(len(p) + 2 for p in paragraphs) / max(total, 1)
        if share > MAX_SHARE and len(results) > 1:
            print(f"warning: {src.name} is {share:.0%} of the corpus (over {MAX_SHARE:.0%})", file=sys.stderr)


if __name__ == "__main__":
    main()
