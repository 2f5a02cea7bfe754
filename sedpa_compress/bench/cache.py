"""Finished benchmark cells, appended one JSON line each beside the result (`<out>.cells.jsonl`), so a
long run that stops (Ctrl-C, a lost GPU, a time limit) resumes where it was: a rerun with the same
model, settings and code skips every cell already there. A cell's fingerprint
(`common.bench_fingerprint`) covers the mode and benchmark settings and the provenance (a digest of
the package sources, library versions, metric definitions, the text and templates read), so a cell
computed by older code is recomputed, never merged. A row served from the cache says `cached: true`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def cells_path(out: Path) -> Path:
    """`bench/results/niah_tiny.json` -> `bench/results/niah_tiny.cells.jsonl`."""
    out = Path(out)
    return out.with_name(out.stem + ".cells.jsonl")


class CellCache:
    """`key -> row` for one fingerprint per row. Lines with another fingerprint (other settings) are
    kept in the file but never returned; a torn last line (killed mid-write) is ignored."""

    def __init__(self, path: Path | None, *, enabled: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.enabled = enabled and self.path is not None
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}
        if self.enabled and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                    self._rows[(item["fp"], item["key"])] = item["row"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        self.hits = 0

    def get(self, fp: str, key: str) -> dict[str, Any] | None:
        """A copy of the finished row, marked `cached: true`; None when this cell was not computed yet."""
        row = self._rows.get((fp, key)) if self.enabled else None
        if row is None:
            return None
        self.hits += 1
        return {**row, "cached": True}

    def put(self, fp: str, key: str, row: dict[str, Any]) -> None:
        row = {k: v for k, v in row.items() if k != "cached"}
        self._rows[(fp, key)] = row
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:  # one write + flush per cell: a kill loses at most one
            f.write(json.dumps({"fp": fp, "key": key, "row": row}, ensure_ascii=False) + "\n")
            f.flush()

    def __len__(self) -> int:
        return len(self._rows)
