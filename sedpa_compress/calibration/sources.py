"""Calibration text sources: a JSONL file, a folder of .txt, a Hugging Face dataset, or the bundled text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from sedpa_compress.errors import SedpaError

BUNDLED = "bundled"


def describe_source(data: str | None) -> str:
    return data or BUNDLED


_DATASET_FILES = ("*.parquet", "*.arrow", "*.jsonl", "*.json", "*.csv", "README.md", "dataset_info.json")


def iter_texts(data: str | None, *, text_field: str = "text", split: str = "train") -> Iterator[str]:
    """Documents from `--data`: None/"bundled", a .jsonl file, a .txt file, a folder of .txt, or a Hugging
    Face dataset: a Hub name, NAME:CONFIG (e.g. THUDM/LongBench:gov_report), or a local dataset folder
    (Parquet/JSON files or a dataset card; FOLDER:CONFIG picks a config)."""
    if data is None or data == BUNDLED:
        from sedpa_compress.data.text import load_bundled_text

        yield load_bundled_text(split)
        return
    path = Path(data).expanduser()
    folder, _, config = data.rpartition(":")
    if not path.exists() and folder and Path(folder).expanduser().is_dir():  # FOLDER:CONFIG
        yield from _iter_hf_dataset(str(Path(folder).expanduser()), text_field, split, config=config)
        return
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if files:
            for f in files:
                yield f.read_text(encoding="utf-8", errors="replace")
            return
        if any(next(path.rglob(pattern), None) is not None for pattern in _DATASET_FILES):
            yield from _iter_hf_dataset(str(path), text_field, split)
            return
        raise SedpaError(f"--data {data}: the folder holds no .txt files; add some or pass a .jsonl file")
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


DATA_FIX = "pass a local .jsonl/.txt/folder with --data, or omit it for the bundled text"


def _iter_hf_dataset(name: str, text_field: str, split: str, *, config: str | None = None) -> Iterator[str]:
    """Rows of a Hugging Face dataset through `datasets` (streamed: nothing beyond what is read is
    downloaded). The split asked for, or the dataset's only split (LongBench has only `test`)."""
    try:
        import datasets
    except ImportError:
        raise SedpaError(f"--data {name} looks like a Hugging Face dataset, which needs the `datasets` package: "
                         f"pip install 'sedpa-compress[data]' (or pip install datasets); or {DATA_FIX}") from None
    if config is None and ":" in name and not Path(name).exists():  # "wikitext:wikitext-2-raw-v1"
        name, config = name.split(":", 1)
    label = f"{name}:{config}" if config else name
    try:
        splits = datasets.load_dataset(name, config, streaming=True)
        if split not in splits:
            if len(splits) != 1:
                raise SedpaError(f"dataset {label} has no split {split!r} (it has {', '.join(splits)}); "
                                 "calibration reads `train` or a dataset's only split")
            split = next(iter(splits))
        for row in splits[split]:
            if text_field not in row:
                raise SedpaError(f"dataset {label} has no field {text_field!r} (it has {', '.join(row)}); "
                                 "pass --text-field NAME")
            yield row[text_field]
    except SedpaError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for offline, missing, scripts
        raise SedpaError(dataset_error(label, exc)) from None


def dataset_error(label: str, exc: Exception) -> str:
    """One line for a `datasets` failure: what went wrong, in words, and what to do."""
    text, kind = str(exc), type(exc).__name__
    first = (text.strip().splitlines() or [kind])[0][:160]
    if "scripts are no longer supported" in text or "trust_remote_code" in text:
        return (f"dataset {label} is a loading-script dataset, which `datasets` no longer runs (and sedpa never runs a "
                f"repository's code): use a Parquet/JSON copy of it, or {DATA_FIX}")
    if kind == "DatasetNotFoundError" or "doesn't exist on the Hub" in text:
        return f"no dataset {label} on the Hugging Face Hub (or it is private: `huggingface-cli login`); or {DATA_FIX}"
    if "BuilderConfig" in text or "Config name is missing" in text:
        return f"dataset {label}: {first}; name a config as NAME:CONFIG"
    if kind in ("ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "ReadTimeout", "ConnectTimeout") \
            or "offline" in text.lower() or "Name or service not known" in text:
        return (f"cannot fetch dataset {label} from the Hugging Face Hub ({kind}): this machine seems offline; "
                f"{DATA_FIX}")
    return f"cannot load dataset {label} ({kind}: {first}); {DATA_FIX}"


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
