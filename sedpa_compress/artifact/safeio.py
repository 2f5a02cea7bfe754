"""Bounded reads of the JSON and YAML that come with models and artifacts.

A stranger's `manifest.json`, `config.json`, safetensors index or model card can be huge, nested
past Python's recursion limit, not UTF-8, hold an integer with more digits than Python converts, or
(YAML) hide an alias bomb. Each of these is one SedpaError line here, never a traceback or an hour
of expansion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sedpa_compress.errors import SedpaError

MiB = 1 << 20
# Far above what the real files need (a 405B model's index is ~1.5 MB, a config a few KB), far below
# what would hurt to read into memory.
MANIFEST_MAX = 16 * MiB
CONFIG_MAX = 16 * MiB
INDEX_MAX = 64 * MiB
RESULT_MAX = 64 * MiB
CARD_METADATA_MAX = 1 * MiB


def read_bounded(path: Path, limit: int, what: str, fix: str) -> bytes:
    """The bytes of `path`, refused when it is larger than `limit`."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise SedpaError(f"cannot read {what} {path} ({getattr(exc, 'strerror', None) or type(exc).__name__}): {fix}") from None
    if len(data) > limit:
        raise SedpaError(f"{what} {path} is larger than {limit // MiB} MiB, far more than such a file needs: {fix}")
    return data


def read_json(path: Path, *, limit: int, what: str, fix: str) -> Any:
    """Parse `path` as UTF-8 JSON, at most `limit` bytes; any malformation is one SedpaError line."""
    data = read_bounded(path, limit, what, fix)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise SedpaError(f"{what} {path} is not UTF-8 text: {fix}") from None
    except RecursionError:
        raise SedpaError(f"{what} {path} is nested too deeply to parse: {fix}") from None
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python's digit limit
        kind = "holds an integer too long to convert" if "digits" in str(exc) else "is not valid JSON"
        raise SedpaError(f"{what} {path} {kind}: {fix}") from None


def safe_yaml(text: str, what: str, fix: str) -> Any:
    """`yaml.safe_load` of a document that must not use aliases.

    safe_load runs no code but expands aliases: a few hundred bytes of nested `*a` references make
    billions of nodes (the "billion laughs"). Model-card metadata never needs them, so a document
    that has one is refused before anything is composed. Raises yaml.YAMLError for broken YAML.
    """
    import yaml

    if len(text.encode("utf-8", errors="replace")) > CARD_METADATA_MAX:
        raise SedpaError(f"{what} is larger than {CARD_METADATA_MAX // MiB} MiB: {fix}")
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise SedpaError(f"{what} uses YAML aliases (*name), which sedpa does not expand: {fix}")
    return yaml.safe_load(text)
