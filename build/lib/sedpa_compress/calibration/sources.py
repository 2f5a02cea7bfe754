"""Calibration text sources: a JSONL file, a folder of .txt, a Hugging Face dataset, or the bundled text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from sedpa_compress.errors import SedpaError

BUNDLED = "bundled"


def describe_source(data: str | None) -> str:
    return data or BUNDLED


def iter_texts(data: str | None, *, text_field: str = "text", split: str = "train") -> Iterator[str]:
    """Documents from `--data`: None/"bundled", a .jsonl file, a .txt file, a folder of .txt, or a dataset name."""
    if data is None or data == BUNDLED:
        from sedpa_compress.data.text import load_bundled_text

        yield load_bundled_text(split)
        return
    path = Path(data).expanduser()
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise SedpaError(f"--data {data}: the folder holds no .txt files; add some or pass a .jsonl file")
        for f in files:
            yield f.read_text(encoding="utf-8", errors="replace")
    elif path.is_file():
        if path.suffix == ".jsonl":
            yield from _iter_jsonl(path, text_field)
        else:
            yield path.read_text(encoding="utf-8", errors="replace")
    elif path.suffix in (".jsonl", ".txt", ".json") or data.startswith((".", "/", "~")):
        raise SedpaError(f"--data {data}: no such file or folder; pass an existing path, a dataset name or omit it")
    else:
        yield from _iter_hf_dataset(data, text_field, split)


def _iter_jsonl(path: Path, text_field: str) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SedpaError(f"{path}:{lineno}: not valid JSON ({exc.msg}); fix or remove that line") from None
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise SedpaError(f"{path}:{lineno}: no string field {text_field!r}; pass --text-field NAME")
            yield row[text_field]


def _iter_hf_dataset(name: str, text_field: str, split: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise SedpaError(f"--data {name} looks like a Hugging Face dataset: install `sedpa-compress[data]` "
                         "(the `datasets` package) or pass a local .jsonl/.txt") from None
    config = None
    if ":" in name:  # "wikitext:wikitext-2-raw-v1"
        name, config = name.split(":", 1)
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as exc:  # datasets raises many types for offline/missing
        raise SedpaError(f"cannot load dataset {name!r} ({type(exc).__name__}): offline or unknown; "
                         "pass a local .jsonl/.txt/folder with --data") from None
    for row in ds:
        if text_field not in row:
            raise SedpaError(f"dataset {name!r} has no field {text_field!r}; pass --text-field NAME")
        yield row[text_field]


def token_batches(texts: Iterator[str], encode, *, seq_len: int, max_tokens: int) -> Iterator[list[int]]:
    """Concatenate documents (separated by the tokenizer's own boundaries) into `seq_len` windows."""
    buf: list[int] = []
    produced = 0
    for text in texts:
        if not text.strip():
            continue
        buf.extend(encode(text))
        while len(buf) >= seq_len and produced < max_tokens:
            yield buf[:seq_len]
            buf = buf[seq_len:]
            produced += seq_len
        if produced >= max_tokens:
            return
    if buf and produced < max_tokens and produced == 0:
        yield buf  # a short source still calibrates, with what it has
