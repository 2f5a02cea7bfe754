"""`sedpa bench efficiency` on CUDA (run on the GPU machine: pytest -m gpu tests/test_bench_efficiency_gpu.py):
the timed prefill never compiles (contexts below the chunk, not multiples of it, and a sedpa-w ring
larger than the shortest row's cache), the transformers peers run in the same call, and no measured
time beats its own floor."""

from __future__ import annotations

import pytest

from conftest import build_head_dim_128_llama
from sedpa_compress.bench.efficiency import EfficiencyConfig, run_efficiency

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_head_dim_128_llama(tmp_path_factory.mktemp("effgpu") / "model")


def test_every_row_kind_on_cuda_without_compiling_inside_a_timed_prefill(model_dir, tmp_path):
    cfg = EfficiencyConfig(model=str(model_dir), contexts=[300, 1000, 2500], modes=["full", "duo", "sedpa-w", "tidal"],
                           sink=16, recent=64, window=512, top_k=128, chunk=1024, decode_tokens=16,
                           reference_max=4096, out=tmp_path / "e.json", device="cuda")
    res = run_efficiency(cfg, progress=lambda msg: None)
    rows = res["rows"]
    assert not [r for r in rows if "skipped" in r], [r for r in rows if "skipped" in r]
    kinds = {r["method"] for r in rows}
    assert kinds == {"sedpa-runtime", "transformers-eager", "transformers-static-compile"}
    for r in rows:
        if r["method"] == "sedpa-runtime":
            # 300 < chunk, 2500 = 1024 + 1024 + 452, and sedpa-w's 528-slot ring exceeds the 300 row's cache
            assert r["prefill_compiles"] == 0, r
            assert "warning" not in r
        assert r["decode_ms"] >= 0.9 * r["floor_ms"], r  # a time below its floor means a wrong floor
        assert r["prefill_s"] >= 0.9 * r["prefill_floor_s"], r
    static = [r for r in rows if r["method"] == "transformers-static-compile"]
    assert all(r["fullgraph"] and r["compile_mode"] == "reduce-overhead" for r in static)
    first_w = next(r for r in rows if r["mode"] == "sedpa-w")
    assert first_w["compile_s"] > first_w["prefill_s"]  # FlexAttention's first compilation is there, not in prefill_s
