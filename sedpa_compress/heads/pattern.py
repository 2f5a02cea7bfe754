"""The head pattern file (`*.pattern.json`): per-layer, per-KV-head gates and the binary mask."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sedpa_compress.atomic import atomic_write_json
from sedpa_compress.errors import SedpaError
from sedpa_compress.models.families import AttentionGeometry

FORMAT_VERSION = 1


@dataclass
class HeadPattern:
    """Which KV heads are retrieval heads (full cache) and which are streaming heads (sink + recent).

    `gates[layer][kv_head]` is the trained alpha in [0, 1]; `mask[layer][kv_head]` is 1 for a
    retrieval head and 0 for a streaming head. Query heads of a GQA group follow their KV head.
    """

    gates: list[list[float]]
    mask: list[list[int]]
    sink: int
    recent: int
    model: str = ""
    revision: str | None = None
    retrieval_ratio: float | None = None
    threshold: float | None = None
    training: dict[str, Any] = field(default_factory=dict)  # recipe, steps, final losses, metrics
    format_version: int = FORMAT_VERSION

    @property
    def num_layers(self) -> int:
        return len(self.gates)

    @property
    def num_kv_heads(self) -> int:
        return len(self.gates[0]) if self.gates else 0

    @property
    def actual_retrieval_ratio(self) -> float:
        total = self.num_layers * self.num_kv_heads
        return sum(map(sum, self.mask)) / total if total else 0.0

    def retrieval_heads(self, layer: int) -> list[int]:
        return [h for h, m in enumerate(self.mask[layer]) if m]

    def streaming_heads(self, layer: int) -> list[int]:
        return [h for h, m in enumerate(self.mask[layer]) if not m]

    @classmethod
    def from_gates(
        cls,
        gates: list[list[float]],
        *,
        sink: int,
        recent: int,
        retrieval_ratio: float | None = None,
        threshold: float | None = None,
        **meta: Any,
    ) -> HeadPattern:
        mask = binarize(gates, retrieval_ratio=retrieval_ratio, threshold=threshold)
        return cls(gates=[[float(g) for g in row] for row in gates], mask=mask, sink=sink, recent=recent,
                   retrieval_ratio=retrieval_ratio, threshold=threshold, **meta)

    def with_ratio(self, retrieval_ratio: float | None = None, threshold: float | None = None) -> HeadPattern:
        """The same gates binarized at another retrieval ratio or threshold."""
        if retrieval_ratio is None and threshold is None:
            return self
        mask = binarize(self.gates, retrieval_ratio=retrieval_ratio, threshold=threshold)
        return HeadPattern(**{**asdict(self), "mask": mask, "retrieval_ratio": retrieval_ratio, "threshold": threshold})

    def validate_for(self, geometry: AttentionGeometry, source: str = "pattern") -> None:
        if (self.num_layers, self.num_kv_heads) != (geometry.num_layers, geometry.num_kv_heads):
            raise SedpaError(
                f"{source} has {self.num_layers} layers x {self.num_kv_heads} KV heads but the model has "
                f"{geometry.num_layers} x {geometry.num_kv_heads}: identify heads for this model with "
                "`sedpa identify-heads --model ...`"
            )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["num_layers"] = self.num_layers
        d["num_kv_heads"] = self.num_kv_heads
        d["actual_retrieval_ratio"] = round(self.actual_retrieval_ratio, 6)
        return d

    def save(self, path: Path) -> None:
        atomic_write_json(Path(path), self.to_json())

    @classmethod
    def from_json(cls, data: Any, source: str = "pattern") -> HeadPattern:
        if not isinstance(data, dict):
            raise SedpaError(f"{source}: not a head pattern (expected a JSON object); pass a *.pattern.json file")
        try:
            gates = data["gates"]
            sink, recent = int(data["sink"]), int(data["recent"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(inf)
            raise SedpaError(f"{source}: missing or bad field {str(exc)[:100]}; regenerate it with `sedpa identify-heads`") from None
        _check_matrix(gates, source, "gates", lambda g: isinstance(g, (int, float)) and not isinstance(g, bool)
                      and math.isfinite(g) and 0.0 <= g <= 1.0)
        mask = data.get("mask")
        if mask is None:
            raise SedpaError(f"{source}: no `mask`; regenerate it with `sedpa identify-heads` or `sedpa heads show --retrieval-ratio R`")
        _check_matrix(mask, source, "mask", lambda m: m in (0, 1) and not isinstance(m, float))
        if len(mask) != len(gates) or any(len(a) != len(b) for a, b in zip(mask, gates)):
            raise SedpaError(f"{source}: `mask` and `gates` differ in shape; regenerate the pattern")
        # The file states its shape; a hand-edited or truncated gates matrix must not pass for another model.
        for name, actual in (("num_layers", len(gates)), ("num_kv_heads", len(gates[0]))):
            if name in data and data[name] != actual:
                raise SedpaError(f"{source}: says {name} {data[name]!r} but its gates have {actual}; regenerate the pattern")
        if sink < 0 or recent < 1:
            raise SedpaError(f"{source}: sink must be >= 0 and recent >= 1 (got {sink}, {recent})")
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise SedpaError(f"{source}: pattern format {version!r} is not {FORMAT_VERSION}; upgrade sedpa-compress")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs.update(gates=[[float(g) for g in row] for row in gates], mask=[[int(m) for m in row] for row in mask],
                      sink=sink, recent=recent)
        if not isinstance(kwargs.get("training", {}), dict):
            raise SedpaError(f"{source}: `training` must be an object")
        return cls(**kwargs)

    @classmethod
    def load(cls, path: Path, geometry: AttentionGeometry | None = None) -> HeadPattern:
        path = Path(path)
        if not path.is_file():
            raise SedpaError(f"pattern file {path} does not exist: make one with `sedpa identify-heads --model ...`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # ValueError: JSONDecodeError, or an integer too long to parse
            raise SedpaError(f"pattern file {path} is not valid JSON ({str(exc)[:100]}); regenerate it with `sedpa identify-heads`") from None
        except RecursionError:
            raise SedpaError(f"pattern file {path} is nested too deeply to be a pattern; regenerate it") from None
        pattern = cls.from_json(data, source=str(path))
        if geometry is not None:
            pattern.validate_for(geometry, source=str(path))
        return pattern


def _check_matrix(rows: Any, source: str, name: str, ok) -> None:
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows):
        raise SedpaError(f"{source}: `{name}` must be a non-empty list of per-layer lists")
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise SedpaError(f"{source}: `{name}` rows differ in length; every layer needs the same number of KV heads")
    try:
        good = all(ok(v) for r in rows for v in r)
    except (OverflowError, TypeError, ValueError):  # an integer too large for a float, say
        good = False
    if not good:
        raise SedpaError(f"{source}: `{name}` holds values outside its range; regenerate the pattern")


TIE_SEED = 0  # the tie-break of `head_order`; fixed, so a pattern re-binarized later gets the same mask


def head_order(gates: list[list[float]], seed: int = TIE_SEED) -> list[tuple[int, int]]:
    """Every (layer, kv_head), largest gate first; equal gates in a seeded random order.

    Trained gates saturate: published DuoAttention patterns have 57-145 gates at exactly 1.0, so at a
    low retrieval ratio the tie-break decides which heads are kept. Breaking ties by position would
    always keep the lowest layers; DuoAttention adds tiny seeded noise (< 1e-6) before its quantile. A
    seeded random permutation among exactly equal gates does the same without ever reordering two gates
    that differ, however little.
    """
    import random

    flat = [(li, hi) for li, row in enumerate(gates) for hi in range(len(row))]
    tie = list(range(len(flat)))
    random.Random(seed).shuffle(tie)
    order = sorted(range(len(flat)), key=lambda i: (-gates[flat[i][0]][flat[i][1]], tie[i]))
    return [flat[i] for i in order]


def binarize(gates: list[list[float]], *, retrieval_ratio: float | None = None,
             threshold: float | None = None, seed: int = TIE_SEED) -> list[list[int]]:
    """Gates -> mask. By ratio: the top `ratio` fraction of all KV heads become retrieval heads, as
    DuoAttention's global quantile, equal gates ordered by `head_order` (seeded random); by threshold:
    gate >= threshold."""
    if (retrieval_ratio is None) == (threshold is None):
        raise SedpaError("give exactly one of --retrieval-ratio or --threshold to turn gates into a mask")
    if threshold is not None:
        return [[int(g >= threshold) for g in row] for row in gates]
    if not 0.0 <= retrieval_ratio <= 1.0:
        raise SedpaError(f"--retrieval-ratio {retrieval_ratio} is outside [0, 1]: pass a fraction such as 0.5")
    order = head_order(gates, seed)
    keep = round(retrieval_ratio * len(order))
    chosen = set(order[:keep])
    return [[int((li, hi) in chosen) for hi in range(len(row))] for li, row in enumerate(gates)]
