"""How many tokens a second does sedpa-tiny's training step take with each SDPA kernel? At the recipe's long
lengths attention is most of a step's FLOPs (8 layers of hidden 512 at 16K-32K), and a session trains for
~6 minutes, so a faster kernel is more training a session. For each `--backends` kernel
(TinyTrainConfig.attention_backend) and each length: the recipe's model from one seed, a batch of the recipe's
tokens_per_step random tokens, 2 warm-up steps (forward, backward, AdamW), then the median of `--steps` timed
steps. The first step's loss and gradient norm are recorded too: every kernel computes the same step, so they
must agree to bf16 rounding. With `--compile`, one more model per backend, under torch.compile with dynamic shapes
(TinyTrainConfig.compile_model), runs every length in turn as a training run would: rows "<backend>+compile", each
with its first step's time (`first_step_s`: the compile at the first length, a recompile if a later length needs
one) and the whole compile (`compile_s` on the first length's row). Its first length's loss and gradient norm match
the eager rows'; its later lengths continue training that model, so theirs do not compare.

    PYTHONPATH=. python3 bench/scripts/tiny_train_throughput.py --out $OUT/tiny_train_throughput.json
    PYTHONPATH=. python3 bench/scripts/tiny_train_throughput.py --device cpu --lengths 256 --backends auto \
        --tokens-per-step 1024 --steps 2 --out /tmp/t.json      (the plumbing on a CPU)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.tiny.config import load_config
    from sedpa_compress.tiny.model import build_model
    from sedpa_compress.tiny.train import attention_kernel

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/tiny-stage15.yaml")
    ap.add_argument("--lengths", default="4096,16384,32768")
    ap.add_argument("--backends", default="auto,flash,cudnn")  # efficient takes no grouped K/V (TinyTrainConfig)
    ap.add_argument("--tokens-per-step", type=int, help="default: the recipe's")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also each backend under torch.compile (dynamic shapes)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = load_config(Path(args.recipe))
    dev = torch.device(args.device)
    tokens = args.tokens_per_step or cfg.tokens_per_step
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed_steps(model, opt, batch, backend: str, row: dict) -> None:
        """2 warm-up steps and `--steps` timed ones of `model` on `batch`; their median and the first step into row."""
        times, first = [], None
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        for i in range(2 + args.steps):
            sync()
            t0 = time.perf_counter()
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cuda), attention_kernel(backend):
                logits = model(input_ids=batch).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                                     batch[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sync()
            if first is None:
                first = (round(loss.item(), 5), round(gnorm.item(), 5))
                row["first_step_s"] = round(time.perf_counter() - t0, 3)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        step_s = statistics.median(times)
        row.update(step_s=round(step_s, 4), tokens_per_s=round(batch.numel() / step_s),
                   first_loss=first[0], first_grad_norm=first[1],
                   peak_gib=round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if cuda else None)

    lengths = [int(x) for x in args.lengths.split(",")]
    batches = {n: torch.randint(0, cfg.vocab_size, (max(1, tokens // n), n),
                                generator=torch.Generator().manual_seed(n)).to(dev) for n in lengths}
    rows = []
    for length in lengths:
        for backend in args.backends.split(","):
            row: dict = {"length": length, "backend": backend, "batch": list(batches[length].shape)}
            try:
                model = build_model(cfg).to(dev)  # the same seed: the same weights for every kernel
                timed_steps(model, torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda), batches[length],
                            backend, row)
            except Exception as exc:  # noqa: BLE001 - a kernel this GPU or shape cannot run
                row["error"] = str(exc).splitlines()[0][:200]
            finally:
                model = None
                if cuda:
                    torch.cuda.empty_cache()
            rows.append(row)
            print(row, flush=True)
    for backend in args.backends.split(",") if args.compile else []:
        # one compiled model through every length, as a training run takes them (TinyTrainConfig.compile_model)
        model = build_model(cfg).to(dev)
        compiled = torch.compile(model, dynamic=True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
        for length in lengths:
            row = {"length": length, "backend": f"{backend}+compile", "batch": list(batches[length].shape)}
            try:
                timed_steps(compiled, opt, batches[length], backend, row)
                if length == lengths[0]:
                    row["compile_s"] = round(row["first_step_s"] - row["step_s"], 2)
            except Exception as exc:  # noqa: BLE001 - a compile this GPU or shape cannot run
                row["error"] = str(exc).splitlines()[0][:200]
            rows.append(row)
            print(row, flush=True)
        model = compiled = opt = None
        if cuda:
            torch.cuda.empty_cache()
    best = {}
    for r in rows:
        if "tokens_per_s" in r and (r["length"] not in best or r["tokens_per_s"] > best[r["length"]]["tokens_per_s"]):
            best[r["length"]] = {"backend": r["backend"], "tokens_per_s": r["tokens_per_s"]}
    auto = {r["length"]: r["tokens_per_s"] for r in rows if r["backend"] == "auto" and "tokens_per_s" in r}
    summary = {str(n): {**b, "vs_auto": round(b["tokens_per_s"] / auto[n], 3) if n in auto else None}
               for n, b in best.items()}
    result = make_result("tiny-train-throughput", model=f"sedpa-tiny architecture ({args.recipe})",
                         settings={"tokens_per_step": tokens, "steps_timed": args.steps, "warmup_steps": 2,
                                   "device": str(dev), "torch": torch.__version__,
                                   "step": "forward (bf16 autocast), cross-entropy over every token, backward, "
                                           "gradient clipping, fused AdamW"},
                         rows=rows, summary={"fastest": summary},
                         command="PYTHONPATH=. python3 bench/scripts/tiny_train_throughput.py " + " ".join(sys.argv[1:]))
    write_result(Path(args.out), result)


if __name__ == "__main__":
    main()
