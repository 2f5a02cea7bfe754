"""Does a sedpa-tiny stage answer needles worded as a user would write them? A few everyday needle / question /
answer-prefix triples, written for this probe and in neither wording family (training nor held-out), asked
through `sedpa bench niah`'s own --needle path (each cell its own random value, the bundled held-out text,
full attention, greedy), for each model given. A diagnostic for issue 11's "any reasonable wording": never
used for training or for choosing a recipe's words. CPU is enough at 1K-4K.

    PYTHONPATH=. python3 bench/scripts/tiny_user_wordings.py --model sedpa_compress/models/embedded/sedpa-tiny \
        --model runs/stage13/model --lengths 1024,4096 --out bench/results/tiny_user_wordings_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# (needle, question, answer prefix): everyday wordings, a value in each needle
USER_WORDINGS = (
    ("The code of the blue door is {value}.", "What is the code of the blue door?", "Answer:"),
    ("Remember that the guest Wi-Fi password is {value}.", "What's the guest Wi-Fi password?", "The password is"),
    ("My gym locker combination is {value}, don't forget it.", "What is my gym locker combination?", "Answer:"),
    ("Order {value} was shipped to Lisbon on Tuesday.", "Which order was shipped to Lisbon?", "The order was"),
    ("Dr. Patel can be paged at {value}.", "At what number can Dr. Patel be paged? Reply with the number only.",
     "Number:"),
    ("The vault under the old mill opens with the key {value}.", "Which key opens the vault under the old mill?",
     "The key is"),
)

# the Patel triple taken apart (a diagnostic of stage 16-3's 0 / 20 there): one part changed at a time (prefix,
# instruction, needle frame, key), then other needles that link key and value by an action, with no attribute noun
FRAME_VARIANTS = (
    ("Dr. Patel can be paged at {value}.", "At what number can Dr. Patel be paged? Reply with the number only.",
     "Number:"),
    ("Dr. Patel can be paged at {value}.", "At what number can Dr. Patel be paged? Reply with the number only.",
     "Answer:"),
    ("Dr. Patel can be paged at {value}.", "At what number can Dr. Patel be paged?", "Number:"),
    ("Dr. Patel can be paged at {value}.", "At what number can Dr. Patel be paged?", "Answer:"),
    ("Patel can be paged at {value}.", "At what number can Patel be paged?", "Answer:"),
    ("Dr. Smith can be paged at {value}.", "At what number can Dr. Smith be paged?", "Answer:"),
    ("Dr. Patel can be paged at {value}.", "What is the number Dr. Patel can be paged at?", "Answer:"),
    ("Dr. Patel's pager number is {value}.", "What is Dr. Patel's pager number?", "Answer:"),
    ("Patel's number is {value}.", "What is Patel's number?", "Answer:"),
    ("Dr. Patel can be reached at {value}.", "At what number can Dr. Patel be reached?", "Answer:"),
    ("Agent Moreno can be contacted at {value}.", "At what number can Agent Moreno be contacted?", "Answer:"),
    ("You can call Dr. Patel on {value}.", "On what number can you call Dr. Patel?", "Answer:"),
    ("Send the parcel to box {value}.", "Which box should the parcel go to?", "Answer:"),
    ("The meeting is in room {value}.", "Which room is the meeting in?", "Answer:"),
)
# in the style of public long-context benchmarks (RULER's single needle, the passkey test, the "magic number" needle
# of needle-in-a-haystack probes): what an outside check is likely to ask first; written for this probe
PUBLIC_STYLE = (
    ("One of the special magic numbers for quiet-harbor is: {value}.",
     "What is the special magic number for quiet-harbor mentioned in the provided text?",
     "The special magic number for quiet-harbor mentioned in the provided text is"),
    ("The pass key is {value}. Remember it.", "What is the pass key?", "The pass key is"),
    ("The special magic Lisbon number is: {value}.", "What is the special magic Lisbon number?", "Answer:"),
    ("The secret code for the vault is {value}.",
     "Based on the context above, what is the secret code for the vault? Answer with the code only.", "Code:"),
)
# values of running text, each stated in its needle (a fourth element: the literal answer, the same in every cell):
# the San Francisco needle of the best-known needle-in-a-haystack test, a phrase, real words, and beside them a UUID
# in RULER's wording and an invented word; written for this probe
TEXT_VALUES = (
    ("The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.",
     "What is the best thing to do in San Francisco?", "Answer:", "eat a sandwich and sit in Dolores Park on a sunny day"),
    ("The secret ingredient of grandma's soup is smoked paprika.", "What is the secret ingredient of grandma's soup?",
     "Answer:", "smoked paprika"),
    ("The meeting was moved to Thursday afternoon.", "When was the meeting moved to?", "Answer:", "Thursday afternoon"),
    ("The magic word for today is pineapple.", "What is the magic word for today?", "Answer:", "pineapple"),
    ("Sarah's favourite colour is turquoise.", "What is Sarah's favourite colour?", "Answer:", "turquoise"),
    ("Maria's favourite city is Valparaiso.", "What is Maria's favourite city?", "Answer:", "Valparaiso"),
    ("The capital of the fictional country Zembla is Onhava.", "What is the capital of Zembla?", "Answer:", "Onhava"),
    ("One of the special magic uuids for quiet-harbor is: 3f2a9c1e-7b4d-4e8a-9c21-5d6e7f8a9b0c.",
     "What is the special magic uuid for quiet-harbor mentioned in the provided text?", "Answer:",
     "3f2a9c1e-7b4d-4e8a-9c21-5d6e7f8a9b0c"),
)
SETS = {"everyday": USER_WORDINGS, "frames": FRAME_VARIANTS, "public": PUBLIC_STYLE, "text": TEXT_VALUES}


def main() -> None:
    from sedpa_compress.bench.common import greedy_generate
    from sedpa_compress.bench.niah import NiahConfig, make_example, prepare_niah
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.data.needles import ANSWER_SLACK, answer_found, score_answer
    from sedpa_compress.models.loader import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="a model folder (repeat for more)")
    ap.add_argument("--lengths", default="1024,4096")
    ap.add_argument("--depths", type=int, default=5)
    ap.add_argument("--samples", type=int, default=2, help="prompts per (length, depth), each its own value")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--set", choices=sorted(SETS), default="everyday",
                    help="everyday: the six triples; frames: the Patel triple taken apart, and other action needles; public: "
                         "the style of public long-context benchmarks (RULER, passkey, magic number); text: needles that "
                         "state values of running text (the San Francisco needle, phrases, real words)")
    ap.add_argument("--values", default="default",
                    help="shape of the hidden values, as `sedpa bench niah --values` (default: plain digits; code, word, mixed...)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.time()
    lengths = [int(x) for x in args.lengths.split(",")]
    depths = [round(i / (args.depths - 1), 4) for i in range(args.depths)] if args.depths > 1 else [0.5]
    rows, summary = [], {}
    for path in args.model:
        loaded = load_model(path, dtype="float32", device="cpu")
        per_wording = {}
        for needle, question, prefix, *literal in SETS[args.set]:
            answer = literal[0] if literal else None  # a needle that states its own answer (the "text" set)
            cfg = NiahConfig(lengths=lengths, depths=depths, samples=args.samples, seed=args.seed, needle=needle,
                             question=question, answer=answer, answer_prefix=prefix, values=args.values).validate()
            # 12 tokens hold a one-word value and a few words before it; a literal answer gets its own tokens + the
            # benchmarks' slack (the San Francisco answer alone takes 14)
            budget = 12 if answer is None else len(loaded.encode(" " + answer)) + ANSWER_SLACK
            prepared = prepare_niah(loaded, cfg)
            found = exact = 0
            for length in lengths:
                for depth in depths:
                    for sample in range(args.samples):
                        ex = make_example(loaded, prepared.haystack, cfg, length, depth, sample)
                        text = loaded.decode(greedy_generate(loaded, loaded.encode(ex.prompt), None, budget))
                        hit, first = answer_found(text, ex.answer), score_answer(text, ex.answer)[0]
                        found, exact = found + hit, exact + first
                        rows.append({"model": path, "needle": needle, "question": question, "prefix": prefix,
                                     "length": length, "depth": depth, "sample": sample, "value": ex.answer, "output": text, "accuracy": hit,
                                     "exact": first})
            n = len(lengths) * len(depths) * args.samples
            triple = f"{needle} | {question} | {prefix}"
            per_wording[triple] = {"accuracy": round(found / n, 3), "exact": round(exact / n, 3), "cells": n}
            print(f"{path}: {triple!r}: {found}/{n} found, {exact}/{n} exact", flush=True)
        cells = [r for r in rows if r["model"] == path]
        summary[path] = {"accuracy": round(sum(r["accuracy"] for r in cells) / len(cells), 3),
                         "exact": round(sum(r["exact"] for r in cells) / len(cells), 3), "by_wording": per_wording}
    settings = {"lengths": lengths, "depths": depths, "samples": args.samples, "seed": args.seed,
                "set": args.set, "values": args.values, "wordings": [list(w) for w in SETS[args.set]], "haystack": "bundled held-out text",
                "path": "reference (CPU, fp32), greedy 12 tokens (a literal answer: its tokens + "
                        f"{ANSWER_SLACK}), full attention",
                "accuracy": "value in the first line of the answer; exact: the answer starts with it"}
    result = make_result("tiny-user-wordings", model=",".join(args.model), settings=settings, rows=rows,
                         summary=summary, command=" ".join(["PYTHONPATH=. python3", *sys.argv]),
                         wall_s=round(time.time() - t0, 1))
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
