"""Does a sedpa-tiny stage copy a value that follows a joining phrase it never trained on? The same needle
statement ("the {attr} of {key} <phrase> {value}", the training family's questions and answer prefixes, no
lead-in or trailer) with one joining phrase at a time, and one value format at a time (plain digits, a
letter-digit code, an invented word), on the same cells. A model whose misses concentrate on codes and words
after unseen phrases cannot tell where a value starts unless a trained word marks it: digits mark themselves.

    PYTHONPATH=. python3 bench/scripts/tiny_value_boundary.py --model sedpa_compress/models/embedded/sedpa-tiny \
        --out bench/results/tiny_value_boundary_cpu.json

The phrases default to two the training family writes ("is", "equals"), three the held-out family writes
("stands at", "reads", "would be") and an invented word no family holds ("zorbels").
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

FORMATS = ("digits", "code", "word")


def family(phrase: str, value_format: str):
    """The training family with one needle frame ending in `phrase`, values of one format only."""
    from sedpa_compress.data.wordings import TRAIN_WORDINGS, VALUE_FORMATS

    weights = tuple(1.0 if f == value_format else 0.0 for f in VALUE_FORMATS)
    phrasing = dataclasses.replace(TRAIN_WORDINGS.phrasing, cores=(f"the {{attr}} of {{key}} {phrase} {{value}}",),
                                   lead_ins=("",), trailers=("",), wild=0.0)
    return dataclasses.replace(TRAIN_WORDINGS, name=f"{phrase} / {value_format}", phrasing=phrasing,
                               value_weights=weights)


def main() -> None:
    from sedpa_compress.bench.results import make_result, weights_sha256, write_result
    from sedpa_compress.data.needles import answer_found
    from sedpa_compress.tiny.evaluate import load_model_dir, needle_rows

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", required=True, help="a model folder (repeat for more)")
    ap.add_argument("--phrases", default="is,equals,stands at,reads,would be,zorbels",
                    help="comma-separated joining phrases between attribute and value")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--contexts", default="1024")
    ap.add_argument("--depths", type=int, default=10)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2468)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    phrases, formats = args.phrases.split(","), args.formats.split(",")
    if unknown := [f for f in formats if f not in FORMATS]:
        ap.error(f"--formats {','.join(unknown)}: choose from {','.join(FORMATS)}")
    rows, summary = [], {}
    for path in args.model:
        model, tok = load_model_dir(path, args.device)
        for phrase in phrases:
            for fmt in formats:
                t0 = time.time()
                got = needle_rows(model, tok, contexts, args.depths, args.samples, modes=("full",),
                                  templates=family(phrase, fmt), seed=args.seed, log=lambda *a: None)
                acc = round(sum(r["accuracy"] for r in got) / len(got), 3)
                misses = [c for r in got for c in r["cells"] if not answer_found(c["output"], c["value"])]
                rows.append({"model": str(path), "phrase": phrase, "format": fmt, "accuracy": acc,
                             "cells": len(got) * args.samples, "misses": misses[:5],
                             "wall_s": round(time.time() - t0, 1)})
                summary.setdefault(str(path), {}).setdefault(phrase, {})[fmt] = acc
                print(f"{path}  {phrase!r:14s} {fmt:7s} {acc}", flush=True)
    result = make_result("tiny-value-boundary", model=", ".join(str(m) for m in args.model),
                         settings={"contexts": contexts, "depths": args.depths, "samples": args.samples,
                                   "seed": args.seed, "mode": "full", "phrases": phrases, "formats": formats,
                                   "family": "data.wordings TRAIN_WORDINGS with one needle frame 'the {attr} of "
                                             "{key} <phrase> {value}', no lead-in or trailer, no procedural slots, "
                                             "values of one format; bundled held-out text as haystack",
                                   "accuracy": "value in the first line of the answer"},
                         rows=rows, summary=summary,
                         weights_sha256={str(m): sha for m in args.model if (sha := weights_sha256(m))})
    write_result(args.out, result)


if __name__ == "__main__":
    main()
