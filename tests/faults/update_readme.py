"""Copy tests/faults/REFUSALS.md (written by a full, passing run of `pytest tests/faults`) into README.md
between `<!-- refusals:start -->` and `<!-- refusals:end -->`, so the README's table is what the suite saw.

    python tests/faults/update_readme.py           # rewrite the section
    python tests/faults/update_readme.py --check   # exit 1 when the README is out of date (CI)
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "README.md"
REFUSALS = HERE / "REFUSALS.md"
START, END = "<!-- refusals:start -->", "<!-- refusals:end -->"


def render(readme: str, table: str) -> str:
    if START not in readme or END not in readme or readme.index(START) > readme.index(END):
        raise SystemExit(f"{README} has no {START} ... {END} section to fill")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table.strip()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    readme = README.read_text(encoding="utf-8")
    updated = render(readme, REFUSALS.read_text(encoding="utf-8"))
    if "--check" in argv:
        if updated != readme:
            print(f"{README.name}: the refusals section differs from {REFUSALS.relative_to(HERE.parents[1])}; "
                  "run `python tests/faults/update_readme.py`", file=sys.stderr)
            return 1
        return 0
    if updated != readme:
        README.write_text(updated, encoding="utf-8")
        print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
