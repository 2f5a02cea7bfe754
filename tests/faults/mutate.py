"""Hypothesis strategies that turn a good file into the files a stranger (or a bad disk) could hand sedpa:
JSON documents with one node replaced, dropped or added, text cut short or with bytes flipped, and
safetensors files with a wrong header length, a mutated header (dtypes, shapes, offsets) or a cut body.

Every strategy starts from a real, valid file, so most examples are *almost* right — the inputs a
loader is most likely to get wrong.
"""

from __future__ import annotations

import copy
import json
import re
import struct
from typing import Any

from hypothesis import strategies as st

# Values that break naive loaders: huge and negative numbers, NaN/inf, wrong types, deep nesting.
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from([float("inf"), float("-inf"), float("nan"), 10**400, -(10**400), 1e308, -0.0, 0.5]),
    st.sampled_from(["", "F32", "I64", "BF16", "U8", "float32", "../../etc/passwd", "\x00", "rows", "cols", "0" * 64]),
)
JSON_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=8)

_HUGE_INT = "9" * 5000  # beyond Python's int-parsing digit limit: json.loads raises ValueError
_DEEP = "[" * 50_000  # RecursionError in json.loads


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _get(node: Any, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


@st.composite
def mutated_json(draw, doc: Any, *, edits: int = 3) -> Any:
    """`doc` with 1..edits structural edits: a node replaced by any JSON value, a key dropped or added,
    a list element dropped or duplicated, a number nudged off by one or scaled."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, edits))):
        paths = _paths(doc)
        if draw(st.booleans()):  # half the edits hit the top two levels, where a loader's fields live
            paths = [p for p in paths if len(p) <= 2] or paths
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "drop", "add", "nudge", "dup"]))
        if not path:
            if op == "replace":
                doc = draw(JSON_VALUES)
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        if op == "replace":
            parent[key] = draw(JSON_VALUES)
        elif op == "drop":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(JSON_VALUES)
        elif op == "nudge" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = parent[key] + draw(st.sampled_from([-1, 1])) if draw(st.booleans()) \
                else parent[key] * draw(st.sampled_from([-1, 0, 2, 1000, 10**9]))
        elif op == "dup" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
    return doc


@st.composite
def mutated_bytes(draw, data: bytes) -> bytes:
    """Raw damage: cut short, bytes flipped or inserted, or emptied."""
    op = draw(st.sampled_from(["truncate", "flip", "insert", "empty"]))
    if op == "empty" or not data:
        return b""
    if op == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    i = draw(st.integers(0, len(data) - 1))
    if op == "flip":
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    return data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]


@st.composite
def mutated_json_text(draw, doc: Any) -> bytes:
    """A JSON file as a loader may find it: structurally mutated, damaged as bytes, or pathological."""
    kind = draw(st.sampled_from(["structure", "structure", "structure", "bytes", "pathological"]))
    if kind == "structure":
        return json.dumps(draw(mutated_json(doc)), allow_nan=True).encode()
    if kind == "bytes":
        return draw(mutated_bytes(json.dumps(doc).encode()))
    text = json.dumps(doc)
    numbers = [m.span() for m in re.finditer(r"(?<![\w.\"])-?\d+(?![\w.\"])", text)]
    if numbers and draw(st.booleans()):  # one integer literal of the file, made too long to parse
        a, b = draw(st.sampled_from(numbers))
        return (text[:a] + _HUGE_INT + text[b:]).encode()
    return draw(st.sampled_from([
        _DEEP.encode(), ("[" * 5000 + "]" * 5000).encode(),
        b"\xff\xfe" + text.encode("utf-16-le"), b"null", b"[]", b'""', text.encode() + b"\x00garbage",
    ]))


def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def join_safetensors(header: Any, body: bytes, *, pad: bool = True) -> bytes:
    raw = json.dumps(header, allow_nan=True).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


@st.composite
def mutated_safetensors(draw, data: bytes) -> bytes:
    """A safetensors file with a lying length field, a mutated header (dtype, shape, offsets, metadata)
    or a body cut short / grown."""
    header, body = split_safetensors(data)
    kind = draw(st.sampled_from(["header", "header", "tensor", "consistent", "consistent", "length", "body", "bytes"]))
    if kind == "length":
        n = draw(st.sampled_from([0, 1, 7, 2**40, 2**64 - 1, len(data), len(data) - 9, 100_000_001]))
        return struct.pack("<Q", n) + data[8:]
    if kind == "body":
        cut = draw(st.integers(0, max(0, len(body) - 1)))
        return join_safetensors(header, body[:cut] if draw(st.booleans()) else body + b"\x00" * 64)
    if kind == "bytes":
        return draw(mutated_bytes(data))
    if kind == "consistent":  # passes the safetensors parser: same bytes, another dtype/shape, or NaN/inf inside
        name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        entry = header[name]
        a, b = entry["data_offsets"]
        width = {"F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I64": 8, "F64": 8, "U8": 1}.get(entry["dtype"], 1)
        count = (b - a) // width
        how = draw(st.sampled_from(["dtype", "reshape", "poison"]))
        if how == "dtype":
            same = {1: ["U8", "I8", "BOOL"], 2: ["F16", "BF16", "I16"], 4: ["F32", "I32", "U32"], 8: ["I64", "F64"]}[width]
            entry["dtype"] = draw(st.sampled_from(same))
        elif how == "reshape":
            entry["shape"] = draw(st.sampled_from([[count], [1, count], [count, 1], [2, count // 2]]
                                                  if count % 2 == 0 else [[count], [1, count], [count, 1]]))
            if entry["shape"][-1] * (entry["shape"][0] if len(entry["shape"]) > 1 else 1) != count:
                entry["shape"] = [count]
        elif width >= 2 and count:
            i = a + width * draw(st.integers(0, count - 1))
            poison = {2: b"\xff\x7f", 4: draw(st.sampled_from([b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f"])),
                      8: b"\x00" * 6 + b"\xf8\x7f"}[width]
            body = body[:i] + poison + body[i + width:]
        return join_safetensors(header, body)
    if kind == "tensor":  # one tensor's dtype/shape/offsets, the mutation most likely to pass the parser
        name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        entry = header[name]
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        if field == "dtype":
            entry["dtype"] = draw(st.sampled_from(["F16", "BF16", "F64", "I32", "I64", "U8", "BOOL", "I8", "F8_E4M3", "Q4"]))
        elif field == "shape":
            entry["shape"] = draw(st.lists(st.integers(0, 70), max_size=3))
        else:
            a, b = entry["data_offsets"]
            entry["data_offsets"] = [a, b - draw(st.sampled_from([1, 2, 4]))] if draw(st.booleans()) else [b, a]
        return join_safetensors(header, body)
    return join_safetensors(draw(mutated_json(header)), body, pad=draw(st.booleans()))
