"""Which value formats a sedpa-tiny stage finds at each length, from acceptance JSONs already written
(`python -m sedpa_compress.tiny.evaluate`, full attention): the per-context breakdown of
`tiny.evaluate.accuracy_by_value_format`, recomputed from the JSON's cells, so that stages evaluated before the
summary carried it (`accuracy_by_value_format_by_context`) compare too. Reads files only; no model.

Each file's misses are also sorted by what the answer's first line holds (a partial copy of the value, another
number, or prose). With several files, each is also compared with the first cell by cell where both asked the same needle at the
same (length, depth, sample), as the acceptance's seeded cells do: how many cells only the later stage found,
how many it lost, and the two-sided sign test's p over those. One run has 30 cells a length, so a mean moves by
~0.03 from sampling alone; the paired count says whether a stage changed more than that.

    PYTHONPATH=. python3 bench/scripts/tiny_acceptance_formats.py \
        bench/results/tiny_stage13_acceptance_h200.json bench/results/tiny_stage14_acceptance_h200.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def by_context(result: dict, mode: str = "full", bands: tuple[int, ...] = (8192,)) -> dict[str, dict]:
    """{band: {format: {"accuracy", "cells"}}} over the mode's rows, contexts grouped at the `bands` edges
    (default: up to 8K, and above)."""
    from sedpa_compress.tiny.evaluate import accuracy_by_value_format

    rows = [r for r in result["rows"] if r["mode"] == mode]
    edges = sorted(bands)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        lo = max([0] + [e for e in edges if r["context"] > e])
        hi = min([e for e in edges if r["context"] <= e], default=None)
        name = f"{lo // 1024}K-{hi // 1024}K" if hi else f">{lo // 1024}K"
        groups.setdefault(name, []).append(r)
    return {name: accuracy_by_value_format(g) for name, g in groups.items()}


def paired(base: dict, other: dict, mode: str = "full") -> dict[str, float | int]:
    """Cells both results asked with the same needle at the same (context, depth, sample): {"cells", "gained" (found
    only by `other`), "lost" (found only by `base`), "p"} with p the two-sided exact sign test over gained + lost."""
    from sedpa_compress.tiny.evaluate import answer_found

    def hits(result: dict) -> dict[tuple, tuple[str, bool]]:
        return {(r["context"], r["depth"], i): (c["needle"], answer_found(c["output"], c["value"]))
                for r in result["rows"] if r["mode"] == mode for i, c in enumerate(r.get("cells", []))}

    a, b = hits(base), hits(other)
    both = [k for k in a if k in b and a[k][0] == b[k][0]]
    gained = sum(1 for k in both if b[k][1] and not a[k][1])
    lost = sum(1 for k in both if a[k][1] and not b[k][1])
    n = gained + lost
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2 ** n if n else 0.5
    return {"cells": len(both), "gained": gained, "lost": lost, "p": min(1.0, 2 * tail)}


def miss_kinds(result: dict, mode: str = "full") -> dict[str, int]:
    """The mode's missed cells by what the first line of the answer holds: "partial" (three or more characters of the
    value in a row: " 66-P6" for N66-P6, a copy that started late or stopped early), "other value" (digits, but none
    of the value's runs: another number), or "prose" (neither: the model wrote text instead of copying)."""
    from sedpa_compress.tiny.evaluate import answer_found

    kinds = {"partial": 0, "other value": 0, "prose": 0}
    for row in (r for r in result["rows"] if r["mode"] == mode):
        for cell in row.get("cells", []):
            value, line = cell["value"], cell["output"].strip().split("\n", 1)[0]
            if answer_found(cell["output"], value):
                continue
            runs = (value[i:i + 3] for i in range(len(value) - 2))
            kind = "partial" if any(r in line for r in runs) else \
                "other value" if any(ch.isdigit() for ch in line) else "prose"
            kinds[kind] += 1
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("acceptance", nargs="+", type=Path, help="acceptance JSONs (tiny.evaluate --out)")
    ap.add_argument("--mode", default="full")
    ap.add_argument("--bands", default="8192", help="context edges, comma-separated (default 8192: <=8K, >8K)")
    args = ap.parse_args()
    bands = tuple(int(x) for x in args.bands.split(","))
    for path in args.acceptance:
        res = by_context(json.loads(path.read_text()), args.mode, bands)
        if not any(res.values()):
            print(f"{path.name}: no cells (written before the acceptance JSON kept each cell's output)")
            continue
        for band, formats in res.items():
            cells = ", ".join(f"{f} {round(v['accuracy'] * v['cells'])}/{v['cells']}" for f, v in formats.items())
            print(f"{path.name} {band}: {cells}")
        misses = miss_kinds(json.loads(path.read_text()), args.mode)
        print(f"{path.name} misses: " + ", ".join(f"{k} {n}" for k, n in misses.items()))
    first = json.loads(args.acceptance[0].read_text())
    for path in args.acceptance[1:]:
        c = paired(first, json.loads(path.read_text()), args.mode)
        if c["cells"]:
            print(f"{path.name} against {args.acceptance[0].name}: {c['cells']} shared cells, {c['gained']} found only "
                  f"here, {c['lost']} lost, sign test p = {c['p']:.3f}")


if __name__ == "__main__":
    main()
