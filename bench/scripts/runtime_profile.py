"""Where a decode step's time goes on the GPU (Llama-3-8B geometry, random weights): the graph-replayed
step against its bandwidth floor, the top kernels of one eager step (torch.profiler), and the
bandwidth each building block reaches alone (split-K decode attention, a GEMV, a copy). Used to
explain the gap to the floor in `sedpa bench efficiency`; writes a text report. With --prefill: where
one prefill chunk's time goes instead (the last 8K chunk of a --context prompt, its past filled directly):
the chunk's wall time and its top kernels.

    PYTHONPATH=. python3 bench/scripts/runtime_profile.py --context 65536 --out decode_profile.txt
    PYTHONPATH=. python3 bench/scripts/runtime_profile.py --mode duo --context 131072 --prefill --out prefill_profile.txt
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from sedpa_compress.bench.efficiency import copy_bandwidth, kv_bytes_read, synthetic_pattern
from sedpa_compress.models import load_model
from sedpa_compress.runtime import kernels
from sedpa_compress.runtime.model import FastModel, RuntimeSpec
from sedpa_compress.runtime.runner import Runner


def timed(fn, reps: int = 20) -> float:
    """Median milliseconds of fn() over `reps` runs (CUDA events)."""
    for _ in range(3):
        fn()
    out = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        out.append((s, e))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in out)


def prefill_profile(runner: Runner, args, say) -> None:
    """The last `args.chunk` tokens of an `args.context` prompt: the past filled directly, the chunk
    prefilled (twice untimed: compilation and cuDNN plans), then timed and profiled."""
    from torch.profiler import ProfilerActivity, profile

    past = args.context - args.chunk
    runner.fill_synthetic(past)
    ids = torch.randint(0, 1000, (1, args.chunk), device="cuda")

    def chunk() -> None:
        runner.length = past
        runner.pos.fill_(past)
        runner.prefill(ids)

    ms = timed(chunk, reps=5)
    say(f"{args.mode} ({args.kv_dtype} KV): prefill chunk of {args.chunk} tokens after {past} tokens: {ms:.1f} ms")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        chunk()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70)
    say("top kernels of that chunk:\n" + table)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--context", type=int, default=65536)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--kv-dtype", default="bf16", choices=["bf16", "fp8"])
    ap.add_argument("--prefill", action="store_true", help="profile the last prefill chunk instead of a decode step")
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--out", default="decode_profile.txt")
    args = ap.parse_args()
    lines: list[str] = []

    def say(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    dev = torch.device("cuda")
    bw = copy_bandwidth(dev)
    say(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    loaded = load_model(config="llama-3-8b", random_weights=True, dtype="bfloat16", device="cuda")
    pattern = synthetic_pattern(loaded.geometry, ratio=0.5, sink=64, recent=256)
    spec = RuntimeSpec(mode=args.mode, pattern=pattern if args.mode in ("duo", "sedpa-s", "sedpa-w") else None,
                       window=8192 if args.mode == "sedpa-w" else None, kv_dtype=args.kv_dtype)
    fast = FastModel(loaded, spec, consume=True, synthetic_rank_ratio=0.85 if args.mode.startswith("sedpa") else None)
    loaded = None
    torch.cuda.empty_cache()
    runner = Runner(fast, max_len=args.context + 256, chunk=args.chunk)
    if args.prefill:
        prefill_profile(runner, args, say)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        return
    runner.fill_synthetic(args.context)
    tok = torch.zeros(1, dtype=torch.long, device=dev)
    step = timed(lambda: runner.decode(tok), reps=32)
    read = fast.bytes_read_per_token() + kv_bytes_read(fast, args.context)
    say(f"{args.mode} ({args.kv_dtype} KV) @ {args.context}: graph decode {step:.2f} ms; floor {read / bw * 1e3:.2f} ms "
        f"({read / 2**30:.1f} GiB read); achieved {read / (step / 1e3) / 1e12:.2f} TB/s")

    # one eager step under the profiler: which kernels take the time
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(2):
            fast.decode_step(runner.token, runner.pos, runner.caches, runner.state)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fast.decode_step(runner.token, runner.pos, runner.caches, runner.state)
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60)
    say("top kernels of one eager decode step:\n" + table)

    # building blocks alone
    hkv, g, d = fast.hkv, fast.group, fast.d
    from sedpa_compress.runtime.cache import quantize_fp8

    # all of a layer's KV heads (full) and half of them (duo's retrieval heads at ratio 0.5): does a launch with
    # half the bytes reach the same bandwidth?
    for heads, t in ((hkv, 32768), (hkv, 131072), (hkv // 2, 131072)):
        q = torch.randn(1, heads, g, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, heads, t, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        n = torch.tensor([t], device=dev)
        ws = kernels.DecodeWorkspace(1, heads, g, d, t, dev)
        out = torch.empty_like(q)
        ms = timed(lambda: kernels.decode_attention(q, k, v, n, d ** -0.5, workspace=ws, out=out))
        (kb, ks), (vb, vs) = quantize_fp8(k), quantize_fp8(v)
        ms8 = timed(lambda: kernels.decode_attention(q, kb, vb, n, d ** -0.5, workspace=ws, out=out, k_scale=ks,
                                                     v_scale=vs))
        launch = kernels._reduce_launch(ws.splits, d)
        red = timed(lambda: kernels._decode_reduce[(heads, g, d // launch["DB"])](
            ws.acc, ws.m, ws.l, out, out.stride(0), out.stride(1), out.stride(2), heads, heads, G_PAD=ws.g_pad, D=d,
            SPLITS=ws.splits, S1=ws.splits, S2=ws.splits, **launch, **kernels._pdl()))
        qs = q.reshape(1, heads * g, 1, d)
        sd = timed(lambda: F.scaled_dot_product_attention(qs, k, v, enable_gqa=True))
        nbytes, nbytes8 = 2 * k.numel() * 2, 2 * (kb.numel() + ks.numel() * ks.element_size())
        say(f"decode attention, one layer, {heads} KV heads x {t} keys: split-K bf16 {ms * 1e3:.0f} us "
            f"({nbytes / (ms / 1e3) / 1e12:.2f} TB/s, {ws.splits} splits; its merge alone {red * 1e3:.1f} us); fp8 "
            f"{ms8 * 1e3:.0f} us ({nbytes8 / (ms8 / 1e3) / 1e12:.2f} TB/s); torch SDPA bf16 {sd * 1e3:.0f} us "
            f"({nbytes / (sd / 1e3) / 1e12:.2f} TB/s)")
        del q, k, v, kb, vb
    # duo's layer as it runs: the retrieval half over the whole cache and the streaming half over sink + recent,
    # in one two-group launch pair, against the retrieval half alone
    half, t, ring = hkv // 2, 131072, 64 + 256
    q = torch.randn(1, hkv, g, d, device=dev, dtype=torch.bfloat16)
    k1, k2 = (torch.randn(1, half, n_keys, d, device=dev, dtype=torch.bfloat16) for n_keys in (t, ring))
    v1, v2 = torch.randn_like(k1), torch.randn_like(k2)
    n1, n2 = torch.tensor([t], device=dev), torch.tensor([ring], device=dev)
    ws2 = kernels.DecodeWorkspace(1, hkv, g, d, t, dev, busy_heads=half, group_keys=(t, ring))
    out = torch.empty_like(q)
    two = timed(lambda: kernels.decode_attention_groups(q, [(k1, v1, n1, None, None), (k2, v2, n2, None, None)],
                                                        d ** -0.5, workspace=ws2, out=out))
    nbytes = 2 * (k1.numel() + k2.numel()) * 2
    say(f"duo's two-group decode attention, {half} + {half} KV heads x {t} / {ring} keys: {two * 1e3:.0f} us "
        f"({nbytes / (two / 1e3) / 1e12:.2f} TB/s, splits {ws2.group_splits})")
    del k1, v1
    layer = fast.layers[0]
    x = torch.randn(1, 1, fast.hidden, device=dev, dtype=torch.bfloat16)
    for name, w in (("gate_up", layer.gate_up), ("down", layer.down), ("qkv", layer.qkv_dense), ("lm_head", fast.lm_head)):
        xin = x if w.shape[1] == fast.hidden else torch.randn(1, 1, w.shape[1], device=dev, dtype=torch.bfloat16)
        ms = timed(lambda: F.linear(xin, w))
        say(f"GEMV {name} {tuple(w.shape)}: {ms * 1e3:.0f} us ({w.numel() * 2 / (ms / 1e3) / 1e12:.2f} TB/s)")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
