"""Is a sedpa-tiny stage's miss the wording or the retrieval? The same NIAH cells (contexts x depths x samples,
full attention, one seed) asked in the training family's wordings and in the held-out family's, for each
model given. A model that finds the value in the training wordings and misses it in the held-out ones at the
same length has learnt the wordings, not the retrieval. CPU is enough at 1K-4K.

    PYTHONPATH=. python3 bench/scripts/tiny_wording_gap.py --model sedpa_compress/models/embedded/sedpa-tiny \
        --model runs/stage10/model --out bench/results/tiny_wording_gap_cpu.json

--ablate adds the held-out family with one part of its wording taken from the training family at a time
(the needle sentence, the question, the answer prefix, the vocabulary, and the vocabulary's keys,
attributes and invented-word syllables alone): the part whose swap closes most of the gap is the one the
model has not learnt to read. --families picks some of them by name.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def ablations() -> list:
    """The held-out family with one part of its wording from the training family (its written frames)."""
    from sedpa_compress.data.wordings import HELDOUT_WORDINGS, TRAIN_WORDINGS

    held, train = HELDOUT_WORDINGS.phrasing, TRAIN_WORDINGS.phrasing
    parts = {"needle": ("lead_ins", "cores", "trailers"), "question": ("preambles", "questions", "instructions"),
             "answer_prefix": ("answer_prefixes",)}
    out = [dataclasses.replace(HELDOUT_WORDINGS, name=f"heldout+train_{part}",
                               phrasing=dataclasses.replace(held, **{f: getattr(train, f) for f in fields}))
           for part, fields in parts.items()]
    out.append(dataclasses.replace(HELDOUT_WORDINGS, name="heldout+train_vocabulary", vocab=TRAIN_WORDINGS.vocab))
    # the vocabulary by part: keys (names, places, objects, groups), attributes, and the syllables of invented
    # words (pseudo-word keys and word values)
    vparts = {"keys": ("first_names", "surnames", "places", "colours", "things", "groups"),
              "attributes": ("modifiers", "nouns", "bare_attributes"), "syllables": ("syllables",)}
    hv, tv = HELDOUT_WORDINGS.vocab, TRAIN_WORDINGS.vocab
    out += [dataclasses.replace(HELDOUT_WORDINGS, name=f"heldout+train_{part}",
                                vocab=dataclasses.replace(hv, **{f: getattr(tv, f) for f in fields}))
            for part, fields in vparts.items()]
    return out


def main() -> None:
    from sedpa_compress.bench.results import weights_sha256
    from sedpa_compress.data.wordings import HELDOUT_WORDINGS, TRAIN_WORDINGS
    from sedpa_compress.tiny.evaluate import load_model_dir, needle_rows

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", required=True, help="a model folder (repeat for more)")
    ap.add_argument("--contexts", default="1024,4096")
    ap.add_argument("--depths", type=int, default=10)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--seed", type=int, default=4321, help="not the acceptance run's 1234: other cells")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ablate", action="store_true", help="also the held-out family with one part from training")
    ap.add_argument("--families", help="only these families, by name (e.g. heldout,heldout+train_keys)")
    ap.add_argument("--values", default="default",
                    help="every value of one format in every family (e.g. phrase: held-out phrases for both, so "
                         "that only the wording differs); default: each family's own mix")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    contexts = [int(c) for c in args.contexts.split(",")]
    rows, summary = [], {}
    shas = {str(m): sha for m in args.model if (sha := weights_sha256(m))}  # hashed once, saved after every family
    save = functools.partial(_save, args, contexts, shas)
    families = [TRAIN_WORDINGS, HELDOUT_WORDINGS] + (ablations() if args.ablate or args.families else [])
    if args.families:
        families = [f for f in families if f.name in args.families.split(",")]
    if args.values != "default":
        from sedpa_compress.bench.niah import value_weights

        families = [dataclasses.replace(f, value_weights=value_weights(args.values)) for f in families]
    for path in args.model:
        model, tok = load_model_dir(path, args.device)
        for family in families:
            t0 = time.time()
            got = needle_rows(model, tok, contexts, args.depths, args.samples, modes=("full",), templates=family,
                              seed=args.seed, log=lambda *a: None)
            by_ctx = {str(c): round(sum(r["accuracy"] for r in got if r["context"] == c) / args.depths, 3)
                      for c in contexts}
            rows.append({"model": str(path), "wordings": family.name, "accuracy_by_context": by_ctx,
                         "cells": args.depths * args.samples * len(contexts), "wall_s": round(time.time() - t0, 1)})
            summary.setdefault(str(path), {})[family.name] = by_ctx
            print(f"{path}  {family.name:8s} {by_ctx}", flush=True)
            # written after each family: a run cut by a time limit keeps what finished (the H200 run of 2026-12-02
            # was cut at 400 s after 7 of 9 families and wrote nothing)
            save(rows, summary, done=False)
    save(rows, summary, done=True)


def _save(args: argparse.Namespace, contexts: list[int], shas: dict[str, str], rows: list, summary: dict,
          done: bool) -> None:
    from sedpa_compress.bench.results import make_result, write_result

    result = make_result("tiny-wording-gap", model=", ".join(str(m) for m in args.model),
                         settings={"contexts": contexts, "depths": args.depths, "samples": args.samples,
                                   "seed": args.seed, "mode": "full", "values": args.values,
                                   "families": "data.wordings TRAIN_WORDINGS (its written frames and its own "
                                               "procedural slots) and HELDOUT_WORDINGS (with --ablate also "
                                               "HELDOUT_WORDINGS with one part's lists from TRAIN_WORDINGS); the "
                                               "haystack is the bundled held-out text for all",
                                   "accuracy": "value in the first line of the answer"},
                         rows=rows, summary=summary,
                         weights_sha256=shas)
    result["complete"] = done  # false: cut before its last family
    write_result(args.out, result)


if __name__ == "__main__":
    main()
