"""`sedpa bench efficiency` on the CPU (issue 12): the plumbing of every row kind (the sedpa runtime,
plain transformers eager and static-cache + torch.compile, max context), each row's method and
floors, the FLOP model by hand, the warm-up that runs exactly the timed shapes, and patterns and
artifacts as timed inputs. The numbers of a CPU dry run mean nothing; the GPU side is
test_bench_efficiency_gpu.py."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import build_tiny, random_pattern
from sedpa_compress.bench import efficiency as eff
from sedpa_compress.bench.efficiency import (
    AttnGroup,
    EfficiencyConfig,
    LayerShape,
    PrefillShape,
    band_pairs,
    causal_pairs,
    chunk_lengths,
    warm_up_prefills,
    method_text,
    prefill_flops,
    prefill_shape_of_runtime,
    prefill_shape_of_transformers,
    resolve_patterns,
    runtime_spec,
    warm_up_row,
)
from sedpa_compress.cli import app
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models import load_model
from sedpa_compress.runtime.model import FastModel, RuntimeSpec
from sedpa_compress.runtime.runner import Runner

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()




@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A 3-layer Qwen2 (GQA 2, q/k/v biases): hidden 64, 4 query heads, 2 KV heads of 16, MLP 128."""
    return build_tiny("qwen2", tmp_path_factory.mktemp("eff") / "model", layers=3)


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_model(str(model_dir), dtype="float32")


def _pattern(mask, sink=7, recent=33) -> HeadPattern:
    gates = [[0.9 if m else 0.1 for m in row] for row in mask]
    return HeadPattern(gates=gates, mask=mask, sink=sink, recent=recent, model="test")


def _invoke(*args):
    return runner.invoke(app, ["bench", "efficiency", *[str(a) for a in args]])


# ------------------------------------------------------------------------------------ FLOP model

def test_attention_pair_counts_by_hand_and_by_brute_force():
    assert causal_pairs(4) == 10
    # sink 1, band 2 over 4 tokens: query 0 sees {0}, 1 sees {0,1}, 2 sees {1,2}+{0}, 3 sees {2,3}+{0}
    assert band_pairs(4, 1, 2) == 1 + 2 + 3 + 3
    for n in (1, 5, 17, 40):
        for sink in (0, 1, 4):
            for band in (1, 3, 16, 64):
                brute = sum(1 for i in range(n) for p in range(i + 1) if p < sink or i - p < band)
                assert band_pairs(n, sink, band) == brute, (n, sink, band)
    assert band_pairs(100, 4, 100) == causal_pairs(100)  # a band as long as the context is full attention


def test_prefill_flops_of_a_tiny_geometry_by_hand():
    # one layer: hidden 8, 2 query heads sharing 1 KV head of 4 dims, MLP 16:
    # q 8x8 + k 8x4 + v 8x4 + o 8x8 + gate/up/down 3x8x16 = 576 weights
    full = PrefillShape((LayerShape(576, (AttnGroup("full", 1),)),), q_per_kv=2, head_dim=4, sink=1, hidden=8, vocab=10)
    # logits of the last token 2*8*10 + projections 2*4*576 + attention 4*d * 2 query heads * 10 pairs
    assert prefill_flops(full, 4) == 160 + 4608 + 16 * 2 * 10
    banded = PrefillShape((LayerShape(576, (AttnGroup("band", 1, 2),)),), 2, 4, 1, 8, 10)
    assert prefill_flops(banded, 4) == 160 + 4608 + 16 * 2 * 9
    # low-rank q: its 8x8 block as rank-2 factors (2x8 down + 8x2 up = 32 weights instead of 64)
    lowrank = PrefillShape((LayerShape(576 - 64 + 32, (AttnGroup("full", 1),)),), 2, 4, 1, 8, 10)
    assert prefill_flops(full, 4) - prefill_flops(lowrank, 4) == 2 * 4 * 32


def test_prefill_shapes_of_the_runtime_and_transformers(loaded):
    dense = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128  # q, k+v, o, MLP: 36864 per layer
    hf = prefill_shape_of_transformers(loaded)
    assert [layer.linear_params for layer in hf.layers] == [dense] * 3
    assert hf.layers[0].groups == (AttnGroup("full", 2),) and (hf.q_per_kv, hf.head_dim) == (2, 16)
    full = prefill_shape_of_runtime(FastModel(loaded, RuntimeSpec(mode="full")))
    assert [layer.linear_params for layer in full.layers] == [dense] * 3
    assert prefill_flops(full, 300) == prefill_flops(hf, 300)  # the same function, the same count

    pat = _pattern([[1, 0], [1, 0], [0, 1]], sink=4, recent=16)  # one streaming head per layer
    duo = prefill_shape_of_runtime(FastModel(loaded, RuntimeSpec(mode="duo", pattern=pat, sink=4, recent=16)))
    assert duo.layers[0].groups == (AttnGroup("full", 1), AttnGroup("band", 1, 16)) and duo.sink == 4
    assert prefill_flops(duo, 300) < prefill_flops(full, 300)
    lowrank = FastModel(loaded, RuntimeSpec(mode="sedpa-s", pattern=pat, sink=4, recent=16, lowrank="factored"),
                        synthetic_rank_ratio=0.5)
    # the streaming head's q (32 rows), k, v (16 rows each) and o (32 columns) at rank ratio 0.5:
    # ranks floor(0.5*32*64/96)=10, floor(0.5*16*64/80)=6, 6, floor(0.5*64*32/96)=10
    low = 10 * (32 + 64) + 2 * 6 * (16 + 64) + 10 * (64 + 32)
    expect = dense - (32 * 64 + 2 * 16 * 64 + 64 * 32) + low
    assert [layer.linear_params for layer in prefill_shape_of_runtime(lowrank).layers] == [expect] * 3
    wide = prefill_shape_of_runtime(FastModel(loaded, RuntimeSpec(mode="sedpa-w", pattern=pat, sink=4, recent=16,
                                                                  window=40, lowrank="factored"),
                                                      synthetic_rank_ratio=0.5))
    assert wide.layers[0].groups == (AttnGroup("band", 1, 40), AttnGroup("band", 1, 16))


# -------------------------------------------------------------------------------- warm-up shapes

def test_chunk_lengths_are_the_shapes_a_prefill_runs():
    assert chunk_lengths(40, 48) == [40]  # below the chunk: one short chunk
    assert chunk_lengths(96, 48) == [48]  # a multiple: one shape
    assert chunk_lengths(64, 48) == [48, 16]  # not a multiple: the last chunk is another shape
    assert chunk_lengths(131072, 8192) == [8192]


def test_warm_up_prefills_cover_every_chunk_and_past_block_shape():
    """cuDNN plans per shape: the warm-up runs a full chunk against every past-block shape (a past of
    1..4 chunks with 32K blocks and 8K chunks) and the ragged last chunk, never the whole context."""
    assert warm_up_prefills(131072, 8192, past_block=32768) == [40960]
    assert warm_up_prefills(200000, 8192, past_block=32768) == [40960, 200000 % 8192]
    assert warm_up_prefills(40, 48) == [40] and warm_up_prefills(64, 48) == [64]  # the whole (short) context


def test_warm_up_leaves_the_runner_as_new(loaded):
    """The warm-up runs the row's shapes on the row's own runner and resets it: the timed prefill and
    decode that follow compute what a fresh runner computes."""
    pat = _pattern([[1, 0], [1, 0], [0, 1]], sink=4, recent=16)
    fast = FastModel(loaded, RuntimeSpec(mode="sedpa-w", pattern=pat, sink=4, recent=16, window=24, lowrank="factored"),
                     synthetic_rank_ratio=0.7)
    ids = torch.randint(0, 300, (1, 100))
    warm = Runner(fast, max_len=120, chunk=48)
    assert warm_up_row(warm, 100) >= 0 and warm.length == 0
    fresh = Runner(fast, max_len=120, chunk=48)
    assert torch.allclose(warm.prefill(ids), fresh.prefill(ids), atol=1e-5)
    tok = torch.tensor([5])
    assert torch.allclose(warm.decode(tok), fresh.decode(tok), atol=1e-5)


# ------------------------------------------------------------------------------ pattern settings

def test_sink_recent_and_mask_come_from_the_pattern_unless_flags_say(loaded, tmp_path):
    uneven = [[1, 1], [0, 0], [1, 0]]  # uneven retrieval heads per layer, as DuoAttention's patterns are
    path = tmp_path / "u.pattern.json"
    _pattern(uneven, sink=7, recent=33).save(path)
    pats = resolve_patterns(EfficiencyConfig(pattern=path), loaded)
    assert pats.duo.mask == uneven and pats.sedpa.mask == uneven and "its own mask" in pats.sources["duo"]
    spec = runtime_spec(EfficiencyConfig(pattern=path), "duo", pats.duo, 8192)
    assert (spec.sink, spec.recent) == (7, 33)  # the pattern's, not the command's defaults
    spec = runtime_spec(EfficiencyConfig(pattern=path, sink=4), "sedpa-w", pats.sedpa, 100)
    assert (spec.sink, spec.recent, spec.window) == (4, 33, 100)
    assert runtime_spec(EfficiencyConfig(), "full", None, 8192).pattern is None
    rebin = resolve_patterns(EfficiencyConfig(pattern=path, retrieval_ratio=0.5), loaded)
    assert sum(map(sum, rebin.duo.mask)) == 3 and "re-binarised" in rebin.sources["duo"]
    synthetic = resolve_patterns(EfficiencyConfig(), loaded)
    assert synthetic.duo.actual_retrieval_ratio == 0.5 and (synthetic.duo.sink, synthetic.duo.recent) == (64, 256)
    with pytest.raises(SedpaError, match="smaller than --recent 33"):
        runtime_spec(EfficiencyConfig(pattern=path), "sedpa-w", pats.sedpa, 20)


def test_method_text_describes_each_row_kind_as_measured():
    cfg = EfficiencyConfig(decode_tokens=64, warmup_tokens=8, chunk=8192)
    sedpa = method_text("sedpa-runtime", cfg, "cuda")
    assert "64 CUDA-graph replays" in sedpa and "compile_s" in sedpa and "same max_len" in sedpa
    assert "CUDA graph" not in method_text("sedpa-runtime", cfg, "cpu").replace("no CUDA graphs", "")
    eager = method_text("transformers-eager", cfg, "cuda")
    assert "DynamicCache" in eager and "one-shot prefill" in eager and "median of 16 steps" in eager
    assert "CUDA-graph" not in eager and "chunked" not in eager  # neither is true of this row
    static = method_text("transformers-static-compile", cfg, "cuda")
    assert "StaticCache" in static and "reduce-overhead" in static and "chunks of 8192" in static
    assert "median of 64 compiled steps" in static
    maxctx = method_text("max-context", cfg, "cuda")
    assert "random K/V" in maxctx and "no prefill" in maxctx
    with pytest.raises(ValueError):
        method_text("bogus", cfg, "cuda")


# ----------------------------------------------------------------------------------- whole runs

def test_efficiency_cli_dry_run_every_row_kind(model_dir, tmp_path):
    """Contexts below the chunk and not multiples of it, the sedpa rows, both peers in the same run,
    the peers' cap recorded as skipped rows, per-row method and floors, and --max-context."""
    out = tmp_path / "eff.json"
    r = _invoke("--model", model_dir, "--device", "cpu", "--contexts", "40,64,128", "--attention", "full,sedpa-w,tidal",
                "--sink", 4, "--recent", 16, "--window", 32, "--top-k", 16, "--chunk", 48, "--decode-tokens", 3,
                "--reference-max", 64, "--lowrank", "factored", "--out", out)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["benchmark"] == "efficiency" and res["device"] == "cpu" and res["complete"] is True
    assert res["command"].startswith("sedpa bench efficiency --model")
    rows = {(row["mode"], row["context"]): row for row in res["rows"]}
    peers = ("transformers-eager", "transformers-static-compile")
    assert set(rows) == {(m, n) for m in ("full", "sedpa-w", "tidal") + peers for n in (40, 64, 128)}
    for peer in peers:
        assert "--reference-max 64" in rows[(peer, 128)]["skipped"]  # missing, and why
        assert rows[(peer, 64)]["method"] == peer and "skipped" not in rows[(peer, 64)]
    assert rows[("transformers-static-compile", 64)]["fullgraph"] is True
    for row in res["rows"]:
        assert row["method"] in ("sedpa-runtime",) + peers
        if "skipped" in row:
            continue
        assert {"prefill_s", "compile_s", "decode_ms", "floor_ms", "floor_ratio", "prefill_flops", "prefill_floor_s",
                "prefill_floor_ratio", "kv_bytes", "peak_bytes", "params"} <= set(row)
        if row["method"] == "sedpa-runtime":
            assert row["prefill_compiles"] == 0
    assert set(res["settings"]["methods"]) == {"sedpa-runtime", *peers}
    assert res["settings"]["modes_resolved"]["sedpa-w"] == {"sink": 4, "recent": 16, "window": 32, "lowrank": "factored"}
    assert res["settings"]["provenance"]["code"] and res["settings"]["matmul_Fps"] > 0
    assert rows[("sedpa-w", 128)]["params"] < rows[("full", 128)]["params"] == rows[(peers[0], 64)]["params"]
    assert rows[("sedpa-w", 128)]["prefill_flops"] < rows[("full", 128)]["prefill_flops"]
    assert rows[("full", 64)]["prefill_flops"] == rows[(peers[0], 64)]["prefill_flops"]
    assert res["summary"]["sedpa-w"]["kv_ratio_vs_full"] < 1
    assert "--reference-max" in res["summary"]["transformers-eager"]["skipped"]["128"]
    assert set(res["goals"]) >= {"full_decode_floor_ratio_128k", "tidal_decode_speedup_128k"}
    assert out.with_suffix(".png").stat().st_size > 0
    assert "skipped transformers-eager @ 128" in " ".join(r.output.split())

    out2 = tmp_path / "max.json"
    r = _invoke("--model", model_dir, "--device", "cpu", "--max-context", "--attention", "duo,full",
                "--retrieval-ratio", 0.25, "--sink", 4, "--recent", 16, "--chunk", 64, "--decode-tokens", 4,
                "--memory-budget", 1.003, "--out", out2)
    assert r.exit_code == 0, r.output
    res2 = json.loads(out2.read_text())
    rows2 = {row["mode"]: row for row in res2["rows"]}
    assert rows2["duo"]["verified"] and rows2["full"]["verified"] and rows2["duo"]["method"] == "max-context"
    assert rows2["duo"]["max_context"] > rows2["full"]["max_context"] > 0
    assert set(res2["settings"]["methods"]) == {"max-context"}


def test_efficiency_with_an_uneven_pattern_file(model_dir, loaded, tmp_path):
    path = tmp_path / "u.pattern.json"
    _pattern([[1, 1], [0, 0], [1, 0]], sink=4, recent=16).save(path)
    out = tmp_path / "e.json"
    r = _invoke("--model", model_dir, "--device", "cpu", "--pattern", path, "--contexts", 64, "--attention",
                "duo,sedpa-s", "--peers", "none", "--chunk", 32, "--decode-tokens", 2, "--out", out)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert [row["mode"] for row in res["rows"]] == ["duo", "sedpa-s"]
    s = res["settings"]
    assert s["retrieval_heads"]["duo"] == 3 and s["modes_resolved"]["duo"] == {"sink": 4, "recent": 16}
    assert "methods" in s and set(s["methods"]) == {"sedpa-runtime"}


def test_efficiency_on_an_artifact_times_its_own_pattern_and_factors(model_dir, loaded, tmp_path):
    random_pattern(loaded.geometry, sink=4, recent=16).save(tmp_path / "p.pattern.json")
    r = runner.invoke(app, ["compress", "--model", str(model_dir), "--pattern", str(tmp_path / "p.pattern.json"),
                            "--tokens", "512", "--seq-len", "64", "--no-ppl", "--rank-ratio", "0.6",
                            "--out", str(tmp_path / "art")])
    assert r.exit_code == 0, r.output
    art = load_model(str(tmp_path / "art"), dtype="float32")
    factored = FastModel(art, RuntimeSpec(mode="sedpa-s", pattern=HeadPattern.load(tmp_path / "art" / "sedpa_pattern.json"),
                                          sink=4, recent=16, lowrank="factored"))
    out = tmp_path / "e.json"
    r = _invoke("--model", tmp_path / "art", "--device", "cpu", "--contexts", 64, "--attention", "full,sedpa-s",
                "--peers", "transformers-eager", "--chunk", 32, "--decode-tokens", 2, "--lowrank", "factored",
                "--out", out)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    s = res["settings"]
    assert s["low_rank"] == "the artifact's factors" and "artifact's own sedpa_pattern.json" in s["pattern_sources"]["sedpa"]
    assert s["modes_resolved"]["sedpa-s"] == {"sink": 4, "recent": 16, "lowrank": "factored"}  # the artifact pattern's own
    rows = {row["mode"]: row for row in res["rows"]}
    assert rows["sedpa-s"]["params"] == eff.runtime_params(factored) < rows["full"]["params"]


def test_efficiency_refuses_bad_flags(tmp_path):
    for args, msg in ((["--window", "100", "--recent", "256", "--device", "cpu"], "smaller than --recent"),
                      (["--attention", "full,fast"], "unknown --attention"),
                      (["--peers", "vllm"], "unknown --peers"),
                      (["--contexts", "8k,lots"], "--contexts"),
                      (["--retrieval-ratio", "0", "--device", "cpu"], "--retrieval-ratio")):
        r = _invoke("--model", tmp_path, *args)
        assert r.exit_code == 2 and msg in r.output, r.output
        assert "Traceback" not in r.output


def test_goals_compare_each_row_with_its_reference_and_take_the_worst_context():
    from sedpa_compress.bench.efficiency import goals

    def row(mode, ctx, decode, prefill=10.0, kv=100, peak=200, floor=1.0):
        return {"mode": mode, "context": ctx, "decode_ms": decode, "prefill_s": prefill, "kv_bytes": kv,
                "peak_bytes": peak, "floor_ratio": floor}

    rows = [row("full", 131072, 10.0, prefill=40.0, floor=1.1), row("duo", 131072, 7.0, prefill=20.0, kv=60),
            row("sedpa-w", 131072, 5.0, prefill=8.0, kv=10, peak=150, floor=1.3),
            row("sedpa-s", 32768, 6.0), row("duo", 32768, 6.6), row("sedpa-s", 131072, 7.5),
            {"mode": "transformers-static-compile", "context": 131072, "skipped": "over --reference-max"}]
    g = goals(rows)
    assert g["full_decode_floor_ratio_128k"] == {"value": 1.1, "target": "<= 1.15", "met": True}
    assert g["duo_decode_speedup_128k"]["value"] == round(10 / 7, 4) and g["duo_decode_speedup_128k"]["met"]
    assert g["sedpa-w_vs_duo_decode_128k"]["value"] == 1.4 and g["sedpa-w_vs_duo_kv_128k"]["met"]
    assert g["sedpa-w_decode_floor_ratio_128k"]["met"] is False  # 1.3 > 1.2
    assert g["sedpa-w_prefill_speedup_128k"]["value"] == 5.0 and g["duo_prefill_speedup_128k"]["value"] == 2.0
    never = g["sedpa-s_never_slower_than_duo"]  # faster at 32K (1.1x) but slower at 128K (7/7.5)
    assert never["met"] is False and never["worst_context"] == 131072
    assert g["full_vs_static_compile_128k"]["value"] is None and g["full_vs_static_compile_128k"]["met"] is None


def test_decode_rows_carry_their_step_spread_and_speed_goals_report_it():
    """One run's medians differ by noise: each row keeps its steps' 10th / 90th percentiles, and a decode
    speed goal says how far the two rows' steps spread, so a 0.3% miss can be read against it, and whether the two
    rows read the same bytes a step (the same work: their difference is noise)."""
    from sedpa_compress.bench.efficiency import decode_stats, goals

    stats = decode_stats([5.0, 5.1, 5.2, 5.3, 5.4, 5.5, 5.6, 5.7, 5.8, 5.9, 9.0])
    assert stats == {"decode_ms": 5.5, "decode_ms_p10": 5.1, "decode_ms_p90": 5.9}
    rows = [{"mode": "duo", "context": 131072, "decode_ms": 7.26, "decode_ms_p10": 7.2, "decode_ms_p90": 7.4},
            {"mode": "sedpa-s", "context": 131072, "decode_ms": 7.28, "decode_ms_p10": 7.25, "decode_ms_p90": 7.3}]
    never = goals(rows)["sedpa-s_never_slower_than_duo"]
    assert never["met"] is False and never["step_spread_pct"] == round(100 * 0.2 / 7.26, 2)
    assert never["miss_within_step_spread"] is True  # 0.3% slower, steps spread 2.8%: still reported as missed
    rows[1].update(decode_ms=7.8, decode_ms_p10=7.79, decode_ms_p90=7.81)
    assert goals(rows)["sedpa-s_never_slower_than_duo"]["miss_within_step_spread"] is False
    assert "same_bytes_read" not in goals(rows)["sedpa-s_never_slower_than_duo"]  # rows without their bytes
    # rows that read the same bytes a step (sedpa-s on duo's dense rows) are marked so; others are not
    for r in rows:
        r.update(weight_read_bytes=15_000, kv_read_bytes=8_000)
    assert goals(rows)["sedpa-s_never_slower_than_duo"]["same_bytes_read"] is True
    rows[1]["weight_read_bytes"] = 14_000
    assert goals(rows)["sedpa-s_never_slower_than_duo"]["same_bytes_read"] is False
