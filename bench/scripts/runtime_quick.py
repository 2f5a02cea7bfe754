"""Quick GPU timing of the fast runtime's decode step (development aid; the real numbers come
from `sedpa bench efficiency`)."""
import sys, time
import torch
from sedpa_compress.models import load_model
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.runtime.model import RuntimeSpec, FastModel
from sedpa_compress.runtime.runner import Runner

lm = load_model(config="llama-3-8b", random_weights=True, device="cuda", dtype="bfloat16")
geo = lm.geometry
g = torch.Generator().manual_seed(0)
pat = HeadPattern.from_gates(torch.rand(geo.num_layers, geo.num_kv_heads, generator=g).tolist(), sink=64, recent=256, retrieval_ratio=0.5)
ctxs = [int(c) for c in sys.argv[1].split(",")] if len(sys.argv) > 1 else [65536]
for mode in ["full", "duo", "sedpa-w", "tidal"]:
    spec = RuntimeSpec(mode=mode, pattern=pat, sink=64, recent=256, window=8192 if mode == "sedpa-w" else None)
    fm = FastModel(lm, spec, synthetic_rank_ratio=0.85 if mode == "sedpa-w" else None)
    for ctx in ctxs:
        r = Runner(fm, max_len=ctx + 128)
        r.fill_synthetic(ctx)
        tok = torch.zeros(1, dtype=torch.long, device="cuda")
        for _ in range(4):
            r.decode(tok)
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(32):
            r.decode(tok)
        e.record(); torch.cuda.synchronize()
        print(f"{mode:8s} ctx {ctx:7d} decode {s.elapsed_time(e)/32:.2f} ms  kv {r.kv_bytes()/2**30:.2f} GiB", flush=True)
        del r
        torch.cuda.empty_cache()
    del fm
