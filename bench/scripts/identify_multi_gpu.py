"""Step time of `sedpa identify-heads` at the Llama-3-8B recipe on one GPU and on two (torchrun), in one run.

    PYTHONPATH=. python3 bench/scripts/identify_multi_gpu.py --out $OUT/identify_multi_gpu_llama-3-8b.json

The driver (this script without --worker) runs itself as a worker twice and merges what they write:
  1. one process on GPU 0, batch_size 1 (the recipe as published: one sample per step);
  2. `torchrun --standalone --nproc-per-node 2`, batch_size 2 (one sample per GPU per step; the gate
     gradients all-reduced over NCCL).
Each worker builds random Llama-3-8B weights (`--config llama-3-8b --random-weights`: the same shapes and
FLOPs as the real model), trains a few steps at each fixed context length through `identify_heads` (the
function `sedpa identify-heads` calls), and rank 0 records every step's seconds (the first step per
length is warm-up: FlexAttention compile, block masks). A step on two GPUs waits for the slower one, so
its seconds are the job's. Then a smoke run of the real command line,
`torchrun ... -m sedpa_compress identify-heads --config llama-3-8b --random-weights ...`, checks that the
CLI path works on NCCL (exit status, wall time).

The JSON (the bench results shape) holds per-step seconds per context and GPU count, the throughput
ratio (samples/s on 2 GPUs over 1 GPU, per context and over the recipe's context mix), and the projected
wall time of the 2000-step recipe, from the measured step times by the quadratic-in-context model of
`identify_projection.py` (so: projected, not measured end to end):
  - 1 GPU, 2000 steps x 1 sample (the recipe as published);
  - 2 GPUs, 2000 steps x 2 samples (`--batch-size 2`: the same step count, twice the samples);
  - 2 GPUs, the recipe's 2000 samples as 1000 steps x 2 (`--batch-size 2 --steps 1000`).
Data parallel cannot shorten a chain of 2000 one-sample steps; which of the last two matches the
published gates is a quality question this script does not answer.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def worker(args: argparse.Namespace) -> None:
    import torch

    from sedpa_compress.distributed import launch
    from sedpa_compress.heads.config import load_recipe
    from sedpa_compress.heads.train import identify_heads
    from sedpa_compress.models import load_model

    t_start = time.perf_counter()
    with launch("") as world:
        recipe = load_recipe(args.recipe)
        t0 = time.perf_counter()
        loaded = load_model(config=args.config, random_weights=True, device=world.device)
        cuda = world.device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
        load_s = time.perf_counter() - t0
        rows = []
        tmp = Path(tempfile.mkdtemp(prefix="identify_multi_gpu_"))
        for ctx in [int(c) for c in args.contexts.split(",")]:
            go = world.broadcast(time.perf_counter() - t_start < args.budget_s)  # every rank decides alike
            if not go:
                if world.main:
                    print(f"budget reached: skipping {ctx}", flush=True)
                continue
            cfg = recipe.with_overrides(context_min=ctx, context_max=ctx, steps=args.steps, checkpoint_every=10_000,
                                        batch_size=world.size)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            secs: list[float] = []
            result = identify_heads(loaded, cfg, out=tmp / f"c{ctx}.pattern.json", world=world,
                                    on_step=lambda log, g: secs.append(log.seconds))
            timed = secs[1:] or secs
            row = {"mode": f"gpus-{world.size}", "gpus": world.size, "context": ctx, "samples_per_step": world.size,
                   "s_per_step": sum(timed) / len(timed), "warmup_s": secs[0], "step_seconds": secs,
                   "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None, "distill": result.history[-1].distill}
            row["samples_per_s"] = world.size / row["s_per_step"]
            rows.append(row)
            if world.main:
                print(json.dumps(row), flush=True)
        if world.main:
            Path(args.part).write_text(json.dumps({"rows": rows, "load_s": load_s, "gpus": world.size,
                                                   "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                                                   "dtype": str(next(loaded.model.parameters()).dtype)}))


def project(rows: list[dict], recipe, steps: int, overhead_s: float, per_length_s: float) -> dict:
    import numpy as np
    from identify_projection import recipe_lengths, step_model

    f, coef = step_model(sorted(rows, key=lambda r: r["context"]))
    lengths = np.array(recipe_lengths(recipe), dtype=float)
    mean_s = float(f(lengths).mean())
    total_s = mean_s * steps + overhead_s + per_length_s * len(lengths)
    return {"steps": steps, "mean_s_per_step": round(mean_s, 4), "train_minutes": round(mean_s * steps / 60, 2),
            "projected_minutes": round(total_s / 60, 2), "fits_45_min": total_s / 60 <= 45.0,
            "fit_coefficients_c2_c1_c0": [float(x) for x in coef]}


def overheads(part: dict, load_minutes: float) -> tuple[float, float]:
    rows = sorted(part["rows"], key=lambda r: r["context"])
    compile_s = max(0.0, rows[0]["warmup_s"] - rows[0]["s_per_step"])
    later = [max(0.0, r["warmup_s"] - r["s_per_step"]) for r in rows[1:]]
    return compile_s + load_minutes * 60, (sum(later) / len(later) if later else 0.0)


def run_bounded(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str, float]:
    """(exit status or None on timeout, output, seconds); on timeout the whole process group goes (torchrun
    and its workers), so no GPU is left busy."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        code = None
    return code, output or "", time.perf_counter() - t0


def driver(args: argparse.Namespace) -> None:
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.heads.config import load_recipe

    t_start = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    me = [sys.executable, str(Path(__file__).resolve()), "--worker", "--recipe", args.recipe, "--config", args.config,
          "--contexts", args.contexts, "--steps", str(args.steps)]
    parts, logs = {}, {}
    for gpus in (1, 2):
        part = out.with_name(out.stem + f".gpus{gpus}.part.json")
        budget = args.budget_s / 3  # each worker's share; the CLI smoke run takes the rest
        cmd = ([*me, "--part", str(part), "--budget-s", str(budget)] if gpus == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                *me[1:], "--part", str(part), "--budget-s", str(budget)])
        first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
        run_env = env if gpus == 2 else {**env, "CUDA_VISIBLE_DEVICES": first}
        print(f"== {gpus} GPU(s): {' '.join(cmd)}", flush=True)
        code, output, wall = run_bounded(cmd, run_env, max(60.0, args.budget_s / 2))
        logs[gpus] = {"returncode": code, "wall_s": round(wall, 1), "tail": output[-2500:]}
        print(output[-4000:], flush=True)
        if code == 0 and part.is_file():
            parts[gpus] = json.loads(part.read_text())
            part.unlink()

    # The command line itself under torchrun (NCCL): a few short steps, exit status and wall time.
    smoke = None
    left = args.budget_s - (time.perf_counter() - t_start)
    if left > 90:
        pattern = out.with_name(out.stem + ".smoke.pattern.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "sedpa_compress", "identify-heads", "--config", args.config, "--random-weights", "--recipe",
               args.recipe, "--steps", "3", "--batch-size", "2", "--context-min", "3000", "--context-max", "4000",
               "--out", str(pattern)]
        code, output, wall = run_bounded(cmd, env, left - 30)
        smoke = {"command": " ".join(cmd[1:]).replace(str(out.parent), "$OUT"), "returncode": code,
                 "timed_out": code is None, "wall_s": round(wall, 1), "pattern_written": pattern.is_file(),
                 "tail": output[-1500:]}
        print("smoke:", json.dumps(smoke)[:2000], flush=True)
        for p in (pattern, pattern.with_name(pattern.name.replace(".pattern.json", ".identify-ckpt.pt"))):
            p.unlink(missing_ok=True)

    recipe = load_recipe(args.recipe)
    rows = [r for g in (1, 2) for r in parts.get(g, {}).get("rows", [])]
    summary, projection = {}, {}
    for g, part in parts.items():
        rs = part["rows"]
        summary[f"gpus-{g}"] = {"s_per_step": {r["context"]: round(r["s_per_step"], 4) for r in rs},
                                "samples_per_s": {r["context"]: round(r["samples_per_s"], 4) for r in rs},
                                "peak_bytes": max(r["peak_bytes"] or 0 for r in rs), "load_s": round(part["load_s"], 1)}
    if 1 in parts and 2 in parts:
        one = {r["context"]: r for r in parts[1]["rows"]}
        two = {r["context"]: r for r in parts[2]["rows"]}
        ratio = {c: round(two[c]["samples_per_s"] / one[c]["samples_per_s"], 3) for c in sorted(one.keys() & two.keys())}
        for r in rows:
            if r["gpus"] == 2 and r["context"] in ratio:
                r["throughput_ratio"] = ratio[r["context"]]
        if len(one) >= 2 and len(two) >= 2:
            o1, l1 = overheads(parts[1], args.load_minutes)
            o2, l2 = overheads(parts[2], args.load_minutes)
            p1 = project(parts[1]["rows"], recipe, recipe.steps, o1, l1)
            p2 = project(parts[2]["rows"], recipe, recipe.steps, o2, l2)
            p2_half = project(parts[2]["rows"], recipe, -(-recipe.steps // 2), o2, l2)
            mix_ratio = 2 * p1["mean_s_per_step"] / p2["mean_s_per_step"]
            projection = {
                "method": "projected from the measured step times (not measured end to end): quadratic fit of "
                          "s/step in context (identify_projection.step_model), mean over the recipe's context "
                          "lengths x steps + first compile + per-length recompile + model load (assumed)",
                "recipe": args.recipe, "model_load_minutes_assumed": args.load_minutes,
                "throughput_ratio_recipe_mix": round(mix_ratio, 3), "goal_throughput_ratio": 1.8,
                "meets_throughput_goal": mix_ratio >= 1.8,
                "gpus-1_2000x1": p1, "gpus-2_2000x2": p2, "gpus-2_1000x2": p2_half, "budget_minutes": 45.0,
            }
        summary.setdefault("gpus-2", {})["throughput_ratio"] = ratio
    device = next((p["device"] for p in parts.values()), "unknown")
    result = make_result(
        "identify-multi-gpu", model=f"random:{args.config}", device=f"{device} (1 and 2 GPUs)",
        settings={"config": args.config, "recipe": args.recipe, "contexts": args.contexts,
                  "steps_per_context": args.steps, "warmup_steps_per_context": 1, "samples_per_gpu_per_step": 1,
                  "dtype": next((p["dtype"] for p in parts.values()), None),
                  "backend": "flash SDPA (full) + FlexAttention (sink+recent), per-layer checkpointing; NCCL all-reduce"},
        rows=rows, summary=summary, projection=projection, smoke_cli=smoke, workers=logs,
        command="PYTHONPATH=. python3 bench/scripts/identify_multi_gpu.py --out $OUT/identify_multi_gpu_llama-3-8b.json")
    write_result(out, result)
    print(json.dumps({"summary": summary, "projection": projection}, indent=1))
    print(f"wrote {out} in {time.perf_counter() - t_start:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="identify_multi_gpu.json")
    ap.add_argument("--config", default="llama-3-8b")
    ap.add_argument("--recipe", default="recipes/identify-llama-3-8b-1048k.yaml")
    ap.add_argument("--contexts", default="8192,16384,32768")
    ap.add_argument("--steps", type=int, default=4, help="steps per context; the first is warm-up")
    ap.add_argument("--budget-s", type=float, default=480, help="the whole run (both workers and the smoke run)")
    ap.add_argument("--load-minutes", type=float, default=1.0, help="an 8B model from local disk, for the projection")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--part", default="")
    args = ap.parse_args()
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
