"""Which attention kernel should the full-attention chunked prefill use on this GPU? Times, for one
Llama-3-8B layer's heads (32 query / 8 KV heads, head_dim 128, bf16), a chunk of queries against its
past plus itself (causal), by every candidate path:

  - `runtime`: what `kernels.causal_chunk_attention` runs (cuDNN: the past without a mask and the
    chunk's causal square, merged by their log-sum-exps; settings.cudnn says whether it ran), and the same with
    each merge (`kernels.PREFILL_MERGE`): `runtime-triton-merge` (`kernels.merge_attention`, one pass a past
    block) and `runtime-compiled-merge` (`merge_softmax` under torch.compile);
  - `flash-one-call`: what it ran before cuDNN (one aten flash call over the prefix, causal aligned
    bottom right, GQA native where the op takes it);
  - `split-merge`: what it ran until 2026-11-29 (aten flash on the past and on the chunk, GQA heads
    expanded, the two softmaxes merged by their log-sum-exp: 18.0 s for a 128K prefill against plain
    transformers' 11.96 s);
  - `sdpa-oneshot`: `F.scaled_dot_product_attention(..., is_causal=True, enable_gqa=True)` over the
    whole prefix, queries = every token (what plain transformers runs in one shot; the per-chunk cost
    is its time x chunk / prefix);
  - `sdpa-lower-right`: one SDPA call per chunk with `causal_lower_right` (PyTorch picks the backend);
  - `flex`: FlexAttention with a causal-with-offset block mask and native GQA.

Writes JSON: ms per chunk and achieved TFLOP/s per (past, path), and which backend won.

    PYTHONPATH=. python3 bench/scripts/prefill_attention_probe.py --out $OUT/prefill_attention_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_profile import timed  # noqa: E402  (median ms over CUDA events)


def split_merge(q, k, v, start: int, scale: float) -> torch.Tensor:
    """The chunk prefill's attention before 2026-11-29: past and chunk apart, merged by log-sum-exp."""
    group = q.shape[1] // k.shape[1]
    ke, ve = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    flash = torch.ops.aten._scaled_dot_product_flash_attention
    if start == 0:
        return flash(q, ke, ve, 0.0, True, False, scale=scale)[0]
    o1, l1 = flash(q, ke[:, :, :start], ve[:, :, :start], 0.0, False, False, scale=scale)[:2]
    o2, l2 = flash(q, ke[:, :, start:], ve[:, :, start:], 0.0, True, False, scale=scale)[:2]
    m = torch.maximum(l1, l2)
    w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
    den = w1 + w2
    return (o1.float() * (w1 / den)[..., None] + o2.float() * (w2 / den)[..., None]).to(q.dtype)


def merged_by(merge: str, fn):
    """fn run with kernels.PREFILL_MERGE set to `merge` (the past blocks' log-sum-exp merge), then put back."""
    from sedpa_compress.runtime import kernels

    def run():
        before, kernels.PREFILL_MERGE = kernels.PREFILL_MERGE, merge
        try:
            return fn()
        finally:
            kernels.PREFILL_MERGE = before

    return run


def main() -> None:
    from sedpa_compress.bench.results import make_result, write_result
    from sedpa_compress.runtime import kernels

    ap = argparse.ArgumentParser()
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--pasts", default="0,16384,57344,122880")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    hq, hkv, d, c = 32, 8, 128, args.chunk
    scale = d ** -0.5
    dev, dt = torch.device("cuda"), torch.bfloat16
    rows = []
    for past in [int(p) for p in args.pasts.split(",")]:
        n = past + c
        q = torch.randn(1, hq, c, d, device=dev, dtype=dt)
        k = torch.randn(1, hkv, n, d, device=dev, dtype=dt)
        v = torch.randn(1, hkv, n, d, device=dev, dtype=dt)
        flops = 4 * d * hq * (c * past + c * (c + 1) // 2)
        paths = {"runtime": lambda: kernels.causal_chunk_attention(q, k, v, past, scale),
                 "runtime-triton-merge": merged_by("triton", lambda: kernels.causal_chunk_attention(q, k, v, past, scale)),
                 "runtime-compiled-merge": merged_by("compiled",
                                                     lambda: kernels.causal_chunk_attention(q, k, v, past, scale)),
                 "flash-one-call": lambda: kernels._flash(q, k, v, True, scale, hq // hkv)[0],
                 "split-merge": lambda: split_merge(q, k, v, past, scale)}
        qa = torch.randn(1, hq, n, d, device=dev, dtype=dt)
        paths["sdpa-oneshot"] = lambda: F.scaled_dot_product_attention(qa, k, v, is_causal=True, scale=scale,
                                                                       enable_gqa=True)
        try:
            from torch.nn.attention.bias import causal_lower_right

            bias = causal_lower_right(c, n)
            paths["sdpa-lower-right"] = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale,
                                                                               enable_gqa=True)
        except Exception as err:  # noqa: BLE001 - report what this torch lacks
            rows.append({"past": past, "path": "sdpa-lower-right", "error": str(err).splitlines()[0]})
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention

            flex = torch.compile(flex_attention, dynamic=False)
            mask = create_block_mask(lambda b, h, qi, ki: qi + past >= ki, 1, 1, c, n, device="cuda")
            paths["flex"] = lambda: flex(q, k, v, block_mask=mask, scale=scale, enable_gqa=True)
        except Exception as err:  # noqa: BLE001
            rows.append({"past": past, "path": "flex", "error": str(err).splitlines()[0]})
        want = split_merge(q, k, v, past, scale).float()  # the previous path: the new ones must agree with it
        for name, fn in paths.items():
            try:
                ms = timed(fn, reps=5)
                if name == "sdpa-oneshot":  # the whole prefix's queries: its share of this chunk
                    all_flops = 4 * d * hq * n * (n + 1) // 2
                    rows.append({"past": past, "path": name, "ms_whole_prefix": round(ms, 3),
                                 "tflops": round(all_flops / ms / 1e9, 1)})
                    continue
                err = float((fn().float() - want).norm() / want.norm())
                rows.append({"past": past, "path": name, "ms": round(ms, 3), "tflops": round(flops / ms / 1e9, 1),
                             "rel_err_vs_split_merge": round(err, 5)})
            except Exception as exc:  # noqa: BLE001 - a path this GPU/torch cannot run
                rows.append({"past": past, "path": name, "error": str(exc).splitlines()[0][:300]})
            print(json.dumps(rows[-1]), flush=True)
        del q, k, v, qa
        torch.cuda.empty_cache()
    best = {}
    for r in rows:
        if "ms" in r and (r["past"] not in best or r["ms"] < best[r["past"]]["ms"]):
            best[r["past"]] = {"path": r["path"], "ms": r["ms"]}
    result = make_result("prefill-attention-probe", model="llama-3-8b geometry (one layer's heads)",
                         settings={"chunk": c, "heads": [hq, hkv], "head_dim": d, "dtype": "bfloat16",
                                   "torch": torch.__version__, "native_gqa": dict(kernels.NATIVE_GQA),
                                   "cudnn": dict(kernels._CUDNN_STATE), "prefill_merge": kernels.PREFILL_MERGE,
                                   "cudnn_version": torch.backends.cudnn.version()},
                         rows=rows, summary={"fastest_per_past": best},
                         command="PYTHONPATH=. python3 bench/scripts/prefill_attention_probe.py " + " ".join(sys.argv[1:]))
    write_result(Path(args.out), result)


if __name__ == "__main__":
    main()
