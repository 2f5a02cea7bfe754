"""How much of a sedpa-tiny stage's language modelling is memorised? Perplexity (full attention, 1K windows, BOS
first) on the bundled text's train split, on its held-out split (and on a training corpus folder's, `--corpus`), and
on text files the project never trained on (`--text`, repeat), for each model given. A model that has learnt English has train and held-out perplexity close
together and a finite one on new text; one that memorised its corpus has a train perplexity near 1 and a held-out
one many times larger, and the external check's haystacks are new text. Each bundled split is measured per source
file (the King James Bible reads nothing like the Python manual). CPU is enough.

    PYTHONPATH=. python3 bench/scripts/tiny_text_fit.py --model sedpa_compress/models/embedded/sedpa-tiny \
        --model runs/stage16b-2/model --text ../shared/seeds/duoattention.md --out bench/results/tiny_text_fit_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.data.text import HELDOUT_EVERY, bundled_text_paths, corpus_text_paths, split_paragraphs
    from sedpa_compress.tiny.evaluate import perplexity

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="a model folder (repeat for more)")
    ap.add_argument("--text", action="append", default=[], type=Path,
                    help="a text file no stage trained on (repeat for more)")
    ap.add_argument("--corpus", type=Path, help="a training corpus folder (recipe `corpus`): its files' splits too")
    ap.add_argument("--tokens", type=int, default=8192, help="tokens measured per text (from its middle)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    for path in args.text:
        if not path.is_file():
            raise SystemExit(f"error: --text {path}: no such file; pass a plain-text file")
    t0 = time.time()
    texts: dict[str, str] = {}
    sources = bundled_text_paths() + (corpus_text_paths(args.corpus) if args.corpus else [])
    for path in sources:
        for split in ("train", "heldout"):
            paras = split_paragraphs([path], split)
            # the middle of each split: a file's opening (a licence, a title page) reads like none of the rest
            texts[f"{split}:{path.stem}"] = "\n\n".join(paras[len(paras) // 2:])
    for path in args.text:
        texts[f"new:{path.name}"] = path.read_text(encoding="utf-8", errors="replace")
    rows, summary = [], {}
    for model_dir in args.model:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        ppl = {}
        for name, text in texts.items():
            ppl[name] = round(perplexity(model, tok, text, max_tokens=args.tokens), 2)
            rows.append({"model": model_dir, "text": name, "ppl": ppl[name]})
        gaps = {name.split(":", 1)[1]: round(ppl[f"heldout:{name.split(':', 1)[1]}"] / v, 1)
                for name, v in ppl.items() if name.startswith("train:")}
        summary[model_dir] = {"ppl": ppl, "heldout_over_train": gaps}
        print(f"{model_dir}: {ppl}; held-out / train {gaps}", flush=True)
    settings = {"tokens_per_text": args.tokens, "window": 1024, "texts": list(texts),
                "split": f"every {HELDOUT_EVERY}th paragraph of each bundled file is held out; each split from its "
                         "middle", "path": "reference (CPU, fp32), full attention"}
    result = make_result("tiny-text-fit", model=",".join(args.model), settings=settings, rows=rows,
                         summary=summary, command=" ".join(["PYTHONPATH=. python3", *sys.argv]),
                         wall_s=round(time.time() - t0, 1))
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
