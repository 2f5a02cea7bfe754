"""The fast runtime (`runtime/model.py`, `runner.py`) on the CPU: every mode against the reference
path, chunked prefill, the ring cache, TidalDecode, memory refusals and the efficiency benchmark's
plumbing. The CUDA kernels themselves are checked in test_runtime_gpu.py (pytest -m gpu)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import build_tiny, huge_batch_stride, random_pattern
from sedpa_compress.errors import SedpaError
from sedpa_compress.models import load_model
from sedpa_compress.runtime import kernels
from sedpa_compress.runtime.cache import ring_positions, ring_slot, ring_write_plan
from sedpa_compress.runtime.model import FastModel, RuntimeSpec, tidal_selection_layers
from sedpa_compress.runtime.modes import build_mode
from sedpa_compress.runtime.modes.tidal import TidalAttention
from sedpa_compress.runtime.reference import using_mode
from sedpa_compress.runtime.runner import Runner

SINK, RECENT, WINDOW = 4, 16, 40
MODES = ("full", "streaming", "duo", "sedpa-s", "sedpa-w", "tidal")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-layer Qwen2 (q/k/v biases, GQA) in fp32 and a random pattern for it."""
    path = build_tiny("qwen2", tmp_path_factory.mktemp("qwen2") / "model", layers=3)
    loaded = load_model(str(path), dtype="float32")
    return loaded, random_pattern(loaded.geometry, ratio=0.5, sink=SINK, recent=RECENT)


def _spec_and_mode(name: str, pattern, top_k: int = 20):
    if name == "tidal":
        opts = dict(top_k=top_k, dense_layers=1, selection_layers=(1,))
        return RuntimeSpec(mode="tidal", **opts), build_mode("tidal", num_layers=3, **opts)
    kw = dict(pattern=pattern, sink=SINK, recent=RECENT, window=WINDOW if name == "sedpa-w" else None)
    # the low-rank path itself (on tiny models the default policy would multiply the factors back)
    low = dict(lowrank="factored") if name in ("sedpa-s", "sedpa-w") else {}
    return RuntimeSpec(mode=name, **kw, **low), build_mode(name, **kw)


def _reference_steps(model, ids: torch.Tensor, t: int) -> list[torch.Tensor]:
    """Logits of the prompt's last token, then of each following token decoded one at a time."""
    from transformers import DynamicCache

    from sedpa_compress.models.forward_args import ForwardArgs

    cache, args = DynamicCache(), ForwardArgs(model)  # filled in place: no output field to read it back from
    out = model(ids[:, :t], **args(cache))
    logits = [out.logits[0, -1]]
    for j in range(t, ids.shape[1] - 1):
        out = model(ids[:, j:j + 1], **args(cache))
        logits.append(out.logits[0, -1])
    return logits


def _runtime_steps(runner: Runner, ids: torch.Tensor, t: int) -> list[torch.Tensor]:
    logits = [runner.prefill(ids[:, :t])[0]]
    for j in range(t, ids.shape[1] - 1):
        logits.append(runner.decode(ids[:, j])[0].clone())
    return logits


@pytest.fixture(scope="module")
def tiny_mha(tmp_path_factory):
    """Llama without GQA (group 1), 3 layers."""
    path = build_tiny("llama-mha", tmp_path_factory.mktemp("mha") / "model", layers=3)
    loaded = load_model(str(path), dtype="float32")
    return loaded, random_pattern(loaded.geometry, ratio=0.5, sink=SINK, recent=RECENT)


@pytest.mark.parametrize("family", ["qwen2", "llama-mha"])
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_matches_the_reference_path(request, family, mode):
    """Chunked prefill (chunk 37, not a divisor) + decode, against the reference mode decoding
    token by token through transformers with the same masks."""
    loaded, pattern = request.getfixturevalue("tiny" if family == "qwen2" else "tiny_mha")
    spec, ref_mode = _spec_and_mode(mode, pattern)
    ids = torch.randint(0, 300, (1, 106), generator=torch.Generator().manual_seed(1))
    runner = Runner.build(loaded, spec, max_len=110, chunk=37)
    got = _runtime_steps(runner, ids, 100)
    with torch.no_grad(), using_mode(loaded.model, ref_mode):
        want = _reference_steps(loaded.model, ids, 100)
    for g, w in zip(got, want):
        assert rel(g, w) < 1e-4


def test_full_matches_transformers_own_forward(tiny):
    loaded, _ = tiny
    ids = torch.randint(0, 300, (1, 90), generator=torch.Generator().manual_seed(2))
    runner = Runner.build(loaded, RuntimeSpec(mode="full"), max_len=96, chunk=32)
    got = _runtime_steps(runner, ids, 80)
    with torch.no_grad():
        want = loaded.model(ids).logits[0, 79:-1]
    for g, w in zip(got, want):
        assert rel(g, w) < 1e-4


@pytest.mark.parametrize("mode", ["streaming", "duo", "sedpa-w"])
@pytest.mark.parametrize("chunk", [11, 16, 50])
def test_chunked_prefill_equals_one_shot(tiny, mode, chunk):
    """Chunks smaller than, equal to and larger than `recent`, and smaller than the window."""
    loaded, pattern = tiny
    spec, _ = _spec_and_mode(mode, pattern)
    ids = torch.randint(0, 300, (1, 64), generator=torch.Generator().manual_seed(3))
    one = _runtime_steps(Runner.build(loaded, spec, max_len=64, chunk=64), ids, 60)
    chunked = _runtime_steps(Runner.build(loaded, spec, max_len=64, chunk=chunk), ids, 60)
    for a, b in zip(one, chunked):
        assert rel(a, b) < 1e-5


def test_ring_bookkeeping_keeps_exactly_the_sink_and_the_last_band():
    sink, band = 3, 5
    for written in range(0, 30):
        held = ring_positions(written, sink, band)
        kept = {p for p in held.tolist() if p >= 0}
        assert kept == set(range(min(written, sink))) | set(range(max(sink, written - band), written))
        for slot, pos in enumerate(held.tolist()):
            if pos >= 0:
                assert ring_slot(pos, sink, band) == slot
    for start, end in [(0, 2), (0, 20), (4, 6), (9, 31)]:
        offs, slots = ring_write_plan(start, end, sink, band)
        assert len(set(slots.tolist())) == len(slots)  # no slot written twice by one chunk
        after = ring_positions(end, sink, band)
        for off, slot in zip(offs.tolist(), slots.tolist()):
            assert after[slot] == start + off


def test_ring_cache_holds_the_sink_and_last_recent_keys(tiny):
    """After a chunked prefill and some decode steps, every streaming-head ring slot holds the
    post-RoPE key of the position the ring says (taken from a full-cache run): the sink and the last
    `recent` tokens, nothing else."""
    loaded, _ = tiny
    ids = torch.randint(0, 300, (1, 60), generator=torch.Generator().manual_seed(4))
    full = Runner.build(loaded, RuntimeSpec(mode="full"), max_len=64, chunk=13)
    ring = Runner.build(loaded, RuntimeSpec(mode="streaming", sink=SINK, recent=RECENT), max_len=64, chunk=13)
    for r in (full, ring):
        r.prefill(ids[:, :50])
        for j in range(50, 60):
            r.decode(ids[:, j])
    held = ring_positions(60, SINK, RECENT)
    assert sorted(held.tolist()) == list(range(SINK)) + list(range(60 - RECENT, 60))
    assert all(c.k[0].shape[2] == SINK + RECENT for c in ring.caches)
    # layer 0's keys depend on the tokens alone (later layers see streaming attention's outputs)
    fc, rc = full.caches[0], ring.caches[0]
    torch.testing.assert_close(rc.k[0], fc.k[0][:, :, held], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rc.v[0], fc.v[0][:, :, held], rtol=1e-5, atol=1e-6)


def test_heads_are_reordered_retrieval_first(tiny):
    loaded, pattern = tiny
    model = FastModel(loaded, RuntimeSpec(mode="duo", pattern=pattern, sink=SINK, recent=RECENT))
    for li, layer in enumerate(model.layers):
        kinds = [g.kind for g in layer.groups]
        assert kinds == sorted(kinds)  # "full" before "ring"
        assert [h for g in layer.groups for h in g.heads] == (pattern.retrieval_heads(li) + pattern.streaming_heads(li))


def test_tidal_with_k_covering_the_context_equals_full(tiny):
    loaded, _ = tiny
    ids = torch.randint(0, 300, (1, 66), generator=torch.Generator().manual_seed(5))
    tidal = _runtime_steps(Runner.build(loaded, _spec_and_mode("tidal", None, top_k=512)[0], max_len=70), ids, 60)
    full = _runtime_steps(Runner.build(loaded, RuntimeSpec(mode="full"), max_len=70), ids, 60)
    for a, b in zip(tidal, full):
        assert rel(a, b) < 1e-5


def test_tidal_defaults_follow_the_paper():
    assert tidal_selection_layers(32) == (2, 13)  # Llama-3-8B: select after 2 dense layers, re-select at 13
    assert tidal_selection_layers(28) == (2, 11)
    assert tidal_selection_layers(4, 1, (1, 3)) == (1, 3)
    mode = build_mode("tidal", top_k=64)
    assert isinstance(mode, TidalAttention) and mode.top_k == 64
    assert mode.selection_source == "model depth (13/32)"


def test_tidal_reselects_at_the_head_pattern_s_retrieval_layer():
    """With a head pattern, the selection layer is the first after the dense layers with a head of at least half
    the model's strongest gate, and the re-selection layer the first after it whose KV heads' gates sum to about
    the most (the embedded sedpa-tiny's 3 and 5: 13/32 of the depth says 3 alone, which scored 45% NIAH against
    full's 80% at 6K-8K, bench/results/tidal_layers_sedpa-tiny-cpu.json; (2, 5) lost 2 of 20 cells to full at
    26K and 32K where (3, 5) equalled it, bench/results/tidal_selection_sets_sedpa-tiny.json); given layers win;
    a layer the model does not have is refused."""
    from sedpa_compress.heads.pattern import HeadPattern
    from sedpa_compress.models.loader import embedded_model_dir
    from sedpa_compress.runtime.modes.tidal import pattern_selection_layers

    gates = [[1.0, 1.0], [0.0, 0.1], [0.6, 0.3], [0.1, 0.0], [0.0, 0.9], [1.0, 0.95], [0.2, 0.0], [0.0, 1.0]]
    assert pattern_selection_layers(gates) == (2, 5)  # layers 0-1 dense: their gates do not count
    # layer 2's strongest head is weak (0.3 < half of 1.0): its top-k would reflect local heads, so select at 3
    weak_two = [[1.0, 1.0], [0.0, 0.1], [0.2, 0.3], [0.1, 0.8], [0.0, 0.7], [1.0, 0.95], [0.2, 0.0], [0.0, 1.0]]
    assert pattern_selection_layers(weak_two) == (3, 5)
    assert pattern_selection_layers([[0.0, 0.0]] * 2 + [[0.1, 0.1]] * 6) == (2, 3)  # no strong head: right after
    assert pattern_selection_layers([[0.5, 0.5], [0.9, 0.9]], dense_layers=1) == (1,)  # nothing after
    # the first layer within 5% of the largest sum, not the largest itself (saturated gates of a real model)
    near = [[0.0, 0.0]] * 2 + [[0.6, 0.0], [0.0, 0.0]] + [[0.96, 1.0], [0.5, 0.5], [1.0, 1.0]] + [[0.0, 0.0]] * 5
    assert pattern_selection_layers(near) == (2, 4) and pattern_selection_layers(near, tolerance=0.0) == (2, 6)
    late = [[0.1, 0.1]] * 7 + [[1.0, 1.0]]  # the most gate in the last quarter: the depth's default instead
    assert pattern_selection_layers(late) is None
    assert pattern_selection_layers([[0.1, 0.1]] * 6 + [[1.0, 1.0]] * 2) is None  # no strong head before it either
    assert build_mode("tidal", pattern=HeadPattern.from_gates(late, retrieval_ratio=0.5, sink=4, recent=16),
                      num_layers=8).selection_source == "model depth (13/32)"
    pattern = HeadPattern.from_gates(gates, retrieval_ratio=0.5, sink=4, recent=16)
    mode = build_mode("tidal", pattern=pattern, num_layers=8)
    assert mode.selections() == (2, 5) and mode.selection_source == "head pattern"
    assert build_mode("tidal", pattern=pattern, num_layers=8, selection_layers=(2, 3)).selections() == (2, 3)
    with pytest.raises(SedpaError, match="has 8 layers"):
        build_mode("tidal", num_layers=8, selection_layers=(2, 8))
    assert pattern_selection_layers(HeadPattern.load(embedded_model_dir() / "sedpa_pattern.json").gates) == (4, 7)
    from sedpa_compress.bench.efficiency import EfficiencyConfig, Patterns, runtime_spec

    # `bench efficiency` times tidal with a trained pattern's layers, and with the depth's beside a synthetic one
    assert runtime_spec(EfficiencyConfig(), "tidal", pattern, 8192).selection_layers == (2, 5)
    synthetic = Patterns(duo=HeadPattern.from_gates(gates, retrieval_ratio=0.5, sink=4, recent=16, model="synthetic"),
                         sedpa=None, sources={})
    assert synthetic.for_mode("tidal") is None and Patterns(duo=pattern, sedpa=None, sources={}).for_mode("tidal") is pattern


def _compressed_tiny(tmp_path, **compress):
    """A 2-layer tiny Llama, a random pattern, and the artifact `run_compress` makes of them with
    CompressConfig(**compress): (plain, artifact, the artifact's pattern)."""
    from sedpa_compress.calibration.stats import CalibrateConfig
    from sedpa_compress.runtime.session import pattern_for
    from sedpa_compress.svd.compress import CompressConfig
    from sedpa_compress.svd.run import CompressJob, run_compress

    plain = load_model(str(build_tiny("llama", tmp_path / "m", layers=2)), dtype="float32")
    random_pattern(plain.geometry, sink=SINK, recent=RECENT).save(tmp_path / "p.pattern.json")
    job = CompressJob(out=tmp_path / "art", pattern=tmp_path / "p.pattern.json", compress=CompressConfig(**compress),
                      calibrate=CalibrateConfig(tokens=1024, seq_len=128), ppl_windows=1, ppl_seq_len=64)
    run_compress(plain, job, show_progress=False)
    art = load_model(str(tmp_path / "art"), dtype="float32")
    return plain, art, pattern_for(art, None)


def _assert_steps_match_reference(model: FastModel, art, ref_mode, *, seed: int) -> None:
    """70 random tokens: the runtime's prefill (chunks of 25) and decode logits against the reference's."""
    ids = torch.randint(0, 300, (1, 70), generator=torch.Generator().manual_seed(seed))
    got = _runtime_steps(Runner(model, max_len=72, chunk=25), ids, 64)
    with torch.no_grad(), using_mode(art.model, ref_mode):
        want = _reference_steps(art.model, ids, 64)
    for g, w in zip(got, want):
        assert rel(g, w) < 1e-4


def test_sedpa_s_on_an_artifact_runs_its_low_rank_factors(tmp_path):
    # uniform ranks factor every streaming slice (greedy may leave a slice dense, and then its layer runs dense)
    plain, art, pattern = _compressed_tiny(tmp_path, rank_ratio=0.6, rank_search="uniform")
    spec, ref_mode = _spec_and_mode("sedpa-s", pattern)
    model = FastModel(art, spec)
    for li, layer in enumerate(model.layers):  # layers with streaming heads run them low-rank
        assert (layer.lowrank is not None and layer.o_up is not None) == bool(pattern.streaming_heads(li))
    assert any(layer.lowrank is not None for layer in model.layers)
    assert model.weight_bytes() < FastModel(plain, RuntimeSpec(mode="duo", pattern=pattern, sink=SINK,
                                                                   recent=RECENT)).weight_bytes()
    _assert_steps_match_reference(model, art, ref_mode, seed=6)


def test_projections_left_dense_by_the_rank_search_run_dense_and_the_rest_low_rank(tmp_path):
    """The default rank search keeps a slice dense where factoring would not save parameters, so one
    layer may hold factored q/o and dense k/v: the runtime runs each projection as the weights hold it,
    and still computes the reference's logits."""
    _, art, pattern = _compressed_tiny(tmp_path, rank_ratio=0.7)
    spec, ref_mode = _spec_and_mode("sedpa-s", pattern)
    model = FastModel(art, spec)
    kinds = {(layer.n_dense[0] < 2, layer.n_dense[1] < 2, layer.n_dense[2] < 2, layer.n_dense[3] < 2)
             for layer in model.layers if pattern.streaming_heads(model.layers.index(layer))}
    assert any(any(k) and not all(k) for k in kinds)  # a layer with factored and dense projections
    duo = FastModel(art, RuntimeSpec(mode="duo", pattern=pattern, sink=SINK, recent=RECENT))
    assert model.weight_bytes() < duo.weight_bytes() and not model.notes
    _assert_steps_match_reference(model, art, ref_mode, seed=7)


def test_factors_that_do_not_pay_run_as_dense_rows_with_the_same_logits(tmp_path, monkeypatch):
    """The default low-rank policy multiplies a projection's factors back into dense rows when they save
    fewer bytes per decode step than their extra kernels cost (every projection of a tiny model): the
    layer then runs like duo's, computes the same logits as the factored path and the reference, and a
    note says so. With kernels free, auto keeps every factored projection factored."""
    from sedpa_compress.runtime import model as runtime_model

    _, art, pattern = _compressed_tiny(tmp_path, rank_ratio=0.5)
    kw = dict(mode="sedpa-s", pattern=pattern, sink=SINK, recent=RECENT)
    factored = FastModel(art, RuntimeSpec(**kw, lowrank="factored"))
    auto = FastModel(art, RuntimeSpec(**kw))
    dense = FastModel(art, RuntimeSpec(**kw, lowrank="dense"))
    assert any(layer.has_lowrank for layer in factored.layers)
    assert not any(layer.has_lowrank for layer in auto.layers + dense.layers)
    assert auto.weight_bytes() > factored.weight_bytes() and "run as dense rows" in " ".join(auto.notes)
    ids = torch.randint(0, 300, (1, 70), generator=torch.Generator().manual_seed(8))
    got = {name: _runtime_steps(Runner(m, max_len=72, chunk=25), ids, 64)
           for name, m in (("factored", factored), ("auto", auto), ("dense", dense))}
    with torch.no_grad(), using_mode(art.model, build_mode("sedpa-s", pattern=pattern, sink=SINK, recent=RECENT)):
        want = _reference_steps(art.model, ids, 64)
    for name in got:
        for g, w in zip(got[name], want):
            assert rel(g, w) < 1e-4, name
    monkeypatch.setattr(runtime_model, "KERNEL_COST_BYTES", 0)
    free = FastModel(art, RuntimeSpec(**kw))
    assert [layer.n_dense for layer in free.layers] == [layer.n_dense for layer in factored.layers]
    with pytest.raises(SedpaError, match="low-rank policy 'fast'"):
        FastModel(art, RuntimeSpec(**kw, lowrank="fast"))


def test_synthetic_low_rank_factors_have_the_asked_rank_ratio(tiny):
    loaded, pattern = tiny
    spec = RuntimeSpec(mode="sedpa-w", pattern=pattern, sink=SINK, recent=RECENT, window=WINDOW, lowrank="factored")
    dense = FastModel(loaded, RuntimeSpec(mode="duo", pattern=pattern, sink=SINK, recent=RECENT))
    low = FastModel(loaded, spec, synthetic_rank_ratio=0.5)
    for ld, ll in zip(dense.layers, low.layers):
        if ll.lowrank is None:
            continue
        n_low = loaded.geometry.num_kv_heads - ll.n_dense[0]
        assert len(set(ll.n_dense)) == 1  # synthetic factors: every projection of a streaming head
        kept = ll.lowrank.down.numel() + sum(u.numel() for u in ll.lowrank.ups)
        full = (ld.qkv_dense.shape[0] - ll.qkv_dense.shape[0]) * ld.qkv_dense.shape[1]
        assert n_low > 0 and 0.35 < kept / full <= 0.5


def test_bad_inputs_are_refused_with_the_fix(tiny):
    loaded, pattern = tiny
    with pytest.raises(SedpaError, match="needs a head pattern"):
        FastModel(loaded, RuntimeSpec(mode="duo"))
    with pytest.raises(SedpaError, match="smaller than --recent"):
        FastModel(loaded, RuntimeSpec(mode="sedpa-w", pattern=pattern, sink=SINK, recent=RECENT, window=RECENT - 1))
    with pytest.raises(SedpaError, match="smaller than --recent"):
        build_mode("sedpa-w", pattern=pattern, sink=SINK, recent=RECENT, window=RECENT - 1)
    with pytest.raises(SedpaError, match="needs a head pattern"):
        build_mode("sedpa-s")
    model = FastModel(loaded, RuntimeSpec(mode="full"))
    with pytest.raises(SedpaError, match=r"largest context that fits with --attention full and --kv-dtype bf16 is \d+ tokens") as err:
        Runner(model, max_len=1 << 24, memory_budget=(1 << 30) + (64 << 20))
    fit = int(str(err.value).split("--kv-dtype bf16 is ")[1].split()[0])
    Runner(model, max_len=fit, memory_budget=(1 << 30) + (64 << 20))  # the size it names does fit
    with pytest.raises(SedpaError):
        Runner(model, max_len=fit + 4096, memory_budget=(1 << 30) + (64 << 20))
    runner = Runner(model, max_len=20)
    with pytest.raises(SedpaError, match="exceed"):
        runner.prefill(torch.zeros(1, 21, dtype=torch.long))


def test_generate_uses_the_fast_runtime_with_the_same_tokens(tiny):
    from sedpa_compress.runtime.generate import GenerateConfig, _generate_fast

    loaded, pattern = tiny
    ids = torch.randint(3, 300, (30,), generator=torch.Generator().manual_seed(7)).tolist()
    for name in ("duo", "tidal"):
        _, mode = _spec_and_mode(name, pattern, top_k=12)
        fast = _generate_fast(loaded, ids, mode, GenerateConfig(max_new_tokens=8))
        with torch.no_grad(), using_mode(loaded.model, mode):
            want = loaded.model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, pad_token_id=0)
        assert loaded.encode is not None and fast.new_tokens == 8
        assert fast.text == loaded.decode(want[0, 30:].tolist())


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_band_attention_through_flex_equals_the_masked_definition():
    """The CUDA prefill path for ring heads (FlexAttention block mask over slot positions), run
    eagerly here: every chunk position against the ring, including chunks that wrap it."""
    torch.manual_seed(8)
    sink, band = 4, 40
    for start, tq in [(0, 100), (300, 77), (1000, 130)]:
        q_pos = torch.arange(start, start + tq)
        k_pos = torch.cat([ring_positions(start, sink, band), q_pos])
        q = torch.randn(1, 8, tq, 32)
        k, v = torch.randn(1, 2, k_pos.numel(), 32), torch.randn(1, 2, k_pos.numel(), 32)
        want = kernels.band_chunk_attention(q, k, v, q_pos, k_pos, sink, band, 0.2)
        got = kernels.band_attention_flex(q, k, v, q_pos, k_pos, sink, band, 0.2, compiled=False)
        assert rel(got, want) < 1e-5


@pytest.mark.parametrize("start,block", [(0, 8), (6, 8), (16, 8), (21, 8), (24, 5)])
def test_blocked_chunk_attention_equals_causal_attention_over_the_prefix(start, block):
    """The cuDNN chunk prefill attends to the chunk itself (causal) and to its past in blocks apart and
    merges them by their log-sum-exps (kernels.blocked_chunk_attention): that equals one causal
    attention of the chunk over the whole prefix, for a past of none, part of a block, whole blocks and
    a remainder (GQA: 4 query heads per KV head)."""
    torch.manual_seed(12)
    tq = 7
    q, k, v = torch.randn(1, 8, tq, 16), torch.randn(1, 2, start + tq, 16), torch.randn(1, 2, start + tq, 16)
    shapes = []

    def attend(q_, k_, v_, causal):  # one call with its log-sum-exp, as cuDNN returns it
        shapes.append((k_.shape[2], causal))
        logits = q_ @ k_.repeat_interleave(4, 1).transpose(-1, -2) * 0.25
        if causal:  # top-left aligned: this is only ever the chunk against itself
            logits = logits.masked_fill(torch.ones(tq, tq, dtype=torch.bool).triu(1), float("-inf"))
        return torch.softmax(logits, -1) @ v_.repeat_interleave(4, 1), torch.logsumexp(logits, -1)

    want = kernels.causal_chunk_attention(q, k, v, start, 0.25)
    got = kernels.blocked_chunk_attention(q, kernels._slices(k, v), start, attend, block=block)
    assert rel(got, want) < 1e-6
    assert shapes[0] == (tq, True) and all(n <= block and not c for n, c in shapes[1:])
    assert sum(n for n, _ in shapes[1:]) == start


def test_gqa_calls_fall_back_to_expanded_heads_and_split_them_when_large(monkeypatch):
    """kernels._gqa_call (flash's and cuDNN's GQA): an op that refuses fewer KV heads than query heads
    is remembered as such and gets expanded K/V, one KV head at a time past EXPAND_LIMIT; every way
    gives the same output and log-sum-exp."""
    monkeypatch.setattr(kernels, "NATIVE_GQA", {"op": None})
    torch.manual_seed(14)
    q, k, v = torch.randn(1, 8, 5, 16), torch.randn(1, 2, 9, 16), torch.randn(1, 2, 9, 16)
    calls = []

    def call(q_, k_, v_):  # refuses GQA, as an op without native support does
        if q_.shape[1] != k_.shape[1]:
            raise RuntimeError("heads differ")
        calls.append(k_.shape[1])
        return kernels._math_attend(q_, k_, v_, False, 0.25, 1)

    want = kernels._math_attend(q, k, v, False, 0.25, 4)
    got = kernels._gqa_call(call, "op", q, k, v, 4)
    assert kernels.NATIVE_GQA["op"] is False and calls == [8]
    monkeypatch.setattr(kernels, "EXPAND_LIMIT", 1)
    split = kernels._gqa_call(call, "op", q, k, v, 4)
    assert calls == [8, 4, 4]
    for out in (got, split):
        assert rel(out[0], want[0]) < 1e-6 and rel(out[1], want[1]) < 1e-6


def test_chunk_attention_over_a_read_past_reads_a_block_at_a_time(monkeypatch):
    """fp8 caches: the prefill reads (dequantizes) the past a block at a time through
    kernels.causal_chunk_attention_read, never the whole past at once, and computes what the one-call
    attention over the whole prefix computes."""
    monkeypatch.setattr(kernels, "PAST_BLOCK", 16)
    torch.manual_seed(13)
    start, tq = 40, 8
    q, k, v = torch.randn(1, 8, tq, 16), torch.randn(1, 2, start + tq, 16), torch.randn(1, 2, start + tq, 16)
    spans = []

    def read(s0, s1):
        spans.append((s0, s1))
        return k[:, :, s0:s1], v[:, :, s0:s1]

    got = kernels.causal_chunk_attention_read(q, read, start, 4, 0.25)
    assert rel(got, kernels.causal_chunk_attention(q, k, v, start, 0.25)) < 1e-5
    assert sorted(spans) == [(0, 16), (16, 32), (32, 40), (40, 48)]


# (the efficiency benchmark's plumbing: tests/test_bench_efficiency.py)


# opt-in (SEDPA_TRITON_INTERPRET=1): the CUDA kernels run in Triton's CPU interpreter, in a subprocess
in_triton_interpreter = pytest.mark.skipif(
    os.environ.get("SEDPA_TRITON_INTERPRET") != "1",
    reason="opt-in: needs triton installed; runs the CUDA kernels in Triton's CPU interpreter")


def run_in_triton_interpreter(code: str, timeout: int = 300) -> None:
    """Run `code` (which prints 'ok' when every check passed) with TRITON_INTERPRET=1."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


@in_triton_interpreter
def test_split_k_decode_kernels_in_the_triton_interpreter():
    """SEDPA_TRITON_INTERPRET=1 pytest -k interpreter: the split-K partial and reduce kernels (up to 256
    splits: the merge in one pass over blocks of head_dim, kernels.REDUCE_ONE_PASS, or in blocks of 64 splits;
    counts that are not powers of two), plain,
    indexed (TidalDecode), reading fp8 caches with per-token scales (fp16 dots: within 2e-3; indexed too, the scales gathered with
    the keys), and over a layer's two head groups in
    one launch (one attention loop a group, or one for both: kernels.TWO_GROUP_ONE_LOOP), on CPU tensors, against the fp32 reference. Needs triton and numpy < 2.4 (Triton 3.6's interpreter turns 1-element arrays into ints,
    which numpy 2.4 refuses; e.g. `pip install --target /tmp/np23 numpy==2.3.*` and PYTHONPATH=/tmp/np23).
    fp32 inputs: the interpreter does not emulate bf16 dot products (the GPU tests cover bf16)."""
    code = (
        "import sys, torch\n"
        "sys.path.insert(0, 'tests')\n"
        "from conftest import huge_batch_stride\n"
        "from sedpa_compress.runtime import kernels\n"
        "torch.manual_seed(0)\n"
        "for (b, h, g, d, t) in [(1, 2, 4, 128, 3000), (2, 3, 1, 64, 700), (1, 1, 7, 32, 100), (1, 1, 4, 16, 17000)]:\n"
        "    q, k, v = torch.randn(b, h, g, d), torch.randn(b, h, t, d), torch.randn(b, h, t, d)\n"
        "    idx = torch.stack([torch.randperm(t)[:min(t, 512)] for _ in range(b)])\n"
        "    for n in (1, 63, t // 3, t):\n"
        "        n, m = torch.tensor([n]), torch.tensor([min(n, 512)])\n"
        "        for got, want in ((kernels._triton_decode(q, k, v, n, d ** -0.5),\n"
        "                           kernels.decode_attention_ref(q, k, v, n, d ** -0.5)),\n"
        "                          (kernels._triton_decode(q, k, v, m, d ** -0.5, index=idx),\n"
        "                           kernels.decode_attention_ref(q, k, v, m, d ** -0.5, index=idx))):\n"
        "            assert float((got - want).norm() / want.norm()) < 1e-5\n"
        "from sedpa_compress.runtime.cache import quantize_fp8, dequantize_fp8\n"
        "for (b, h, g, d, t) in [(1, 2, 4, 128, 3000), (2, 3, 1, 64, 700)]:\n"
        "  q, k, v = torch.randn(b, h, g, d), torch.randn(b, h, t, d) * 3, torch.randn(b, h, t, d)\n"
        "  (kb, ks), (vb, vs) = quantize_fp8(k), quantize_fp8(v)\n"
        "  kd, vd = dequantize_fp8(kb, ks, torch.float32), dequantize_fp8(vb, vs, torch.float32)\n"
        "  for n in (1, 63, t // 3, t):\n"
        "      n = torch.tensor([n])\n"
        "      got = kernels._triton_decode(q, kb, vb, n, d ** -0.5, k_scale=ks, v_scale=vs)\n"
        "      want = kernels.decode_attention_ref(q, kd, vd, n, d ** -0.5)\n"
        "      assert float((got - want).norm() / want.norm()) < 2e-3  # the fp8 path's dots run in fp16\n"
        "      # tidal's sparse layers on fp8 caches: keys, values and their scales gathered per KV head\n"
        "      idx = torch.stack([torch.stack([torch.randperm(t)[:512] for _ in range(h)]) for _ in range(b)])\n"
        "      m = torch.tensor([min(int(n), 512)])\n"
        "      got = kernels._triton_decode(q, kb, vb, m, d ** -0.5, index=idx, k_scale=ks, v_scale=vs)\n"
        "      want = kernels.decode_attention_ref(q, kd, vd, m, d ** -0.5, index=idx)\n"
        "      assert float((got - want).norm() / want.norm()) < 2e-3, ('indexed fp8', n)\n"
        "for fp8, one_loop in ((False, False), (True, False), (False, True), (True, True)):\n"
        "  # a layer's two head groups (full-length + ring) in one launch pair; one attention loop or one a group\n"
        "  kernels.TWO_GROUP_ONE_LOOP = one_loop\n"
        "  q = torch.randn(2, 5, 4, 64)\n"
        "  kv = [torch.randn(2, 3, 900, 64), torch.randn(2, 3, 900, 64), torch.randn(2, 2, 80, 64), torch.randn(2, 2, 80, 64)]\n"
        "  sc = [None] * 4\n"
        "  if fp8:\n"
        "      kv, sc = zip(*map(quantize_fp8, kv))\n"
        "  groups = [(kv[0], kv[1], torch.tensor([700]), sc[0], sc[1]), (kv[2], kv[3], torch.tensor([80]), sc[2], sc[3])]\n"
        "  got = kernels._triton_decode2(q, groups, 0.125)\n"
        "  want = kernels.decode_attention_groups(q, groups, 0.125)\n"
        "  assert float((got - want).norm() / want.norm()) < (2e-3 if fp8 else 1e-5), (fp8, one_loop)\n"
        "  # one sequence whose long group's batch stride is past 2^31 (the longest contexts): two loops\n"
        "  one = [None if x is None else x[:1] for x in (*kv, *sc)]\n"
        "  wide = [huge_batch_stride(x) for x in one[:2]]\n"
        "  groups = [(*wide, torch.tensor([700]), *one[4:6]), (*one[2:4], torch.tensor([80]), *one[6:])]\n"
        "  got = kernels._triton_decode2(q[:1], groups, 0.125)\n"
        "  want = kernels.decode_attention_groups(q[:1], groups, 0.125)\n"
        "  assert float((got - want).norm() / want.norm()) < (2e-3 if fp8 else 1e-5), ('wide', fp8, one_loop)\n"
        "kernels.TWO_GROUP_ONE_LOOP = False\n"
        "# split counts that are not powers of two (the exact rule): key blocks dealt out evenly, merged masked\n"
        "q, k, v = torch.randn(1, 2, 4, 64), torch.randn(1, 2, 5000, 64), torch.randn(1, 2, 5000, 64)\n"
        "for splits in (3, 5, 53, 100):\n"
        "    for n in (1, 700, 4999):\n"
        "        n = torch.tensor([n])\n"
        "        ws = kernels.DecodeWorkspace(1, 2, 4, 64, 5000, q.device, splits=splits)\n"
        "        got = kernels._triton_decode(q, k, v, n, 0.125, workspace=ws)\n"
        "        want = kernels.decode_attention_ref(q, k, v, n, 0.125)\n"
        "        assert float((got - want).norm() / want.norm()) < 1e-5, (splits, n)\n"
        "        groups = [(k[:, :1], v[:, :1], n, None, None), (k[:, 1:, :80], v[:, 1:, :80], torch.tensor([80]), None, None)]\n"
        "        got = kernels._triton_decode2(q, groups, 0.125, workspace=ws)\n"
        "        want = kernels.decode_attention_groups(q, groups, 0.125)\n"
        "        assert float((got - want).norm() / want.norm()) < 1e-5, (splits, n)\n"
        "        # each group its own split count (a ring's few programs), the ring first or second, one loop or two\n"
        "        for keys, one_loop in (((5000, 80), False), ((80, 5000), False), ((5000, 80), True), ((80, 5000), True)):\n"
        "            kernels.TWO_GROUP_ONE_LOOP = one_loop\n"
        "            ws = kernels.DecodeWorkspace(1, 2, 4, 64, 5000, q.device, splits=splits, group_keys=keys)\n"
        "            gs = groups if keys[0] > keys[1] else groups[::-1]\n"
        "            qq = q if keys[0] > keys[1] else q.flip(1)\n"
        "            got = kernels._triton_decode2(qq, gs, 0.125, workspace=ws)\n"
        "            want = kernels.decode_attention_groups(qq, gs, 0.125)\n"
        "            assert float((got - want).norm() / want.norm()) < 1e-5, (splits, n, keys, one_loop)\n"
        "        kernels.TWO_GROUP_ONE_LOOP = False\n"
        "# above 64 splits the one-pass merge (kernels.REDUCE_ONE_PASS) splits head_dim over its programs (99 splits:\n"
        "# 2 blocks of 64 columns, 256: 4 of 32); off, it loops over blocks of 64 splits. One group and two\n"
        "q, k, v = torch.randn(1, 2, 4, 128), torch.randn(1, 2, 9000, 128), torch.randn(1, 2, 9000, 128)\n"
        "kernels.REDUCE_DB = None  # the uncapped merge first\n"
        "for one_pass in (True, False):\n"
        "    kernels.REDUCE_ONE_PASS = one_pass\n"
        "    for splits in (99, 256):\n"
        "        assert (kernels._reduce_launch(splits, 128)['DB'] < 128) == one_pass  # the d blocks are exercised\n"
        "        for n in (700, 8999):\n"
        "            n = torch.tensor([n])\n"
        "            ws = kernels.DecodeWorkspace(1, 2, 4, 128, 9000, q.device, splits=splits)\n"
        "            got = kernels._triton_decode(q, k, v, n, 128 ** -0.5, workspace=ws)\n"
        "            want = kernels.decode_attention_ref(q, k, v, n, 128 ** -0.5)\n"
        "            assert float((got - want).norm() / want.norm()) < 1e-5, (one_pass, splits, n)\n"
        "            groups = [(k[:, :1], v[:, :1], n, None, None),\n"
        "                      (k[:, 1:, :80], v[:, 1:, :80], torch.tensor([80]), None, None)]\n"
        "            # the ring in its own few splits\n"
        "            ws = kernels.DecodeWorkspace(1, 2, 4, 128, 9000, q.device, splits=splits, group_keys=(9000, 80))\n"
        "            got = kernels._triton_decode2(q, groups, 128 ** -0.5, workspace=ws)\n"
        "            want = kernels.decode_attention_groups(q, groups, 128 ** -0.5)\n"
        "            assert float((got - want).norm() / want.norm()) < 1e-5, (one_pass, splits, n)\n"
        "kernels.REDUCE_ONE_PASS = True\n"
        "# the merge over narrower column blocks (kernels.REDUCE_DB): 16 columns a program at 5 and 64 splits, 32 at 256\n"
        "for db, splits in ((16, 5), (16, 64), (32, 256)):\n"
        "    kernels.REDUCE_DB = db\n"
        "    assert kernels._reduce_launch(splits, 128)['DB'] == db\n"
        "    n = torch.tensor([8999])\n"
        "    ws = kernels.DecodeWorkspace(1, 2, 4, 128, 9000, q.device, splits=splits)\n"
        "    got = kernels._triton_decode(q, k, v, n, 128 ** -0.5, workspace=ws)\n"
        "    want = kernels.decode_attention_ref(q, k, v, n, 128 ** -0.5)\n"
        "    assert float((got - want).norm() / want.norm()) < 1e-5, ('reduce_db', db, splits)\n"
        "    ws = kernels.DecodeWorkspace(1, 2, 4, 128, 9000, q.device, splits=splits, group_keys=(9000, 80))\n"
        "    got = kernels._triton_decode2(q, groups, 128 ** -0.5, workspace=ws)\n"
        "    want = kernels.decode_attention_groups(q, groups, 128 ** -0.5)\n"
        "    assert float((got - want).norm() / want.norm()) < 1e-5, ('reduce_db two groups', db, splits)\n"
        "print('ok')\n")
    run_in_triton_interpreter(code)


@in_triton_interpreter
def test_fp8_selection_logits_kernel_in_the_triton_interpreter():
    """SEDPA_TRITON_INTERPRET=1 pytest -k interpreter: tidal's selection logits on fp8 keys in one launch
    (kernels.fp8_selection_logits) equal the block-by-block conversion (model.fp8_logits) to the fp16 query's
    rounding, for a group of 4 and of 1, with the cache longer than the valid length (zeros past it), and with a
    length that ends inside a block."""
    code = (
        "import torch\n"
        "from sedpa_compress.runtime import kernels\n"
        "from sedpa_compress.runtime.cache import quantize_fp8\n"
        "from sedpa_compress.runtime.model import fp8_logits\n"
        "torch.manual_seed(0)\n"
        "for (b, h, g, d, t, n) in [(1, 2, 4, 128, 700, 700), (2, 3, 1, 64, 1000, 333), (1, 1, 4, 64, 300, 1)]:\n"
        "    q = torch.randn(b, h, g, d)\n"
        "    kb, ks = quantize_fp8(torch.randn(b, h, t, d) * 3)\n"
        "    got = kernels.fp8_selection_logits(q, kb, ks, torch.tensor([n]))\n"
        "    want = fp8_logits(q, kb, ks)\n"
        "    err = float((got[..., :n] - want[..., :n]).norm() / want[..., :n].norm())\n"
        "    assert err < 2e-3, (b, h, g, d, t, n, err)\n"
        "    assert not got[..., n:].any(), 'zeros past the length'\n"
        "print('ok')\n")
    run_in_triton_interpreter(code)


@in_triton_interpreter
def test_rope_append_kernel_in_the_triton_interpreter():
    """SEDPA_TRITON_INTERPRET=1 pytest -k interpreter: the one-launch RoPE + cache writes equals the
    compiled function it replaces (one group, and two groups at different slots; q/k/v views of one
    projection output, as the decode step passes them), and leaves every other slot untouched. With fp8
    caches the scales are checked to one bf16 step here and exactly on the GPU, the e4m3 bits only on the GPU
    (test_runtime_gpu.py): Triton 3.6's interpreter truncates fp32 -> bf16 and rounds fp32 -> e4m3 wrongly
    (125.8 -> 64), where the GPU rounds to nearest even."""
    code = (
        "import torch\n"
        "from sedpa_compress.runtime import kernels\n"
        "from sedpa_compress.runtime.model import _rope_append\n"
        "torch.manual_seed(0)\n"
        "for (b, hq, hkv, d, sizes, slots) in [(1, 8, 2, 128, (2,), (37,)), (2, 8, 4, 64, (3, 1), (5, 2)),\n"
        "                                      (1, 4, 2, 32, (1, 1), (0, 9))]:\n"
        "    y = torch.randn(b, 1, (hq + 2 * hkv) * d + 7)\n"
        "    q, k, v = y[..., :hq * d], y[..., hq * d:(hq + hkv) * d], y[..., (hq + hkv) * d:(hq + 2 * hkv) * d]\n"
        "    q, k, v = q.view(b, 1, hq, d), k.view(b, 1, hkv, d), v.reshape(b, 1, hkv, d)\n"
        "    ang = torch.rand(1, d // 2) * 6.0\n"
        "    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)\n"
        "    slot = [torch.tensor([t]) for t in slots]\n"
        "    caches = [[torch.randn(b, n, 40, d) for n in sizes] for _ in range(2)]\n"
        "    want_caches = [[c.clone() for c in cs] for cs in caches]\n"
        "    want = _rope_append(q, k, v, cos, sin, slot, *want_caches, [None] * len(sizes), [None] * len(sizes), sizes)\n"
        "    got = kernels.rope_append(q, k, v, cos, sin, slot, *caches)\n"
        "    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()\n"
        "    for c, w in zip(caches[0] + caches[1], want_caches[0] + want_caches[1]):\n"
        "        assert torch.allclose(c, w, atol=1e-5), (c - w).abs().max()\n"
        "    # fp8 caches: uint8 e4m3 bits and a bf16 scale per (token, head), quantized in the same launch\n"
        "    bits = [[torch.zeros(b, n, 40, d, dtype=torch.uint8) for n in sizes] for _ in range(2)]\n"
        "    scales = [[torch.ones(b, n, 40, dtype=torch.bfloat16) for n in sizes] for _ in range(2)]\n"
        "    want_bits = [[c.clone() for c in cs] for cs in bits]\n"
        "    want_scales = [[c.clone() for c in cs] for cs in scales]\n"
        "    want = _rope_append(q, k, v, cos, sin, slot, *want_bits, *want_scales, sizes)\n"
        "    got = kernels.rope_append(q, k, v, cos, sin, slot, *bits, *scales)\n"
        "    assert torch.allclose(got, want, atol=1e-5)\n"
        "    for c, w in zip(scales[0] + scales[1], want_scales[0] + want_scales[1]):  # one bf16 step at most\n"
        "        assert torch.allclose(c.float(), w.float(), rtol=1 / 128, atol=0)\n"
        "    for c, w in zip(bits[0] + bits[1], want_bits[0] + want_bits[1]):  # only the written slots changed\n"
        "        assert torch.equal((c != 0).sum(-1) > 0, (w != 0).sum(-1) > 0)\n"
        "print('ok')\n")
    run_in_triton_interpreter(code)


def test_decode_linear_is_f_linear_off_cuda_and_for_several_rows():
    """kernels.decode_linear takes the GEMV only for one CUDA token; elsewhere it is F.linear exactly."""
    torch.manual_seed(0)
    w = torch.randn(24, 16)
    for x in (torch.randn(1, 1, 16), torch.randn(1, 5, 16)):
        assert torch.equal(kernels.decode_linear(x, w), torch.nn.functional.linear(x, w))


@in_triton_interpreter
def test_gemv_kernel_in_the_triton_interpreter():
    """The probe's Triton GEMV (kernels.gemv) equals x @ w.T, also where N and K are not multiples of its
    blocks, and refuses a weight that is not row-major; its fused variants (kernels.gemv_fused: RMSNorm
    before, SwiGLU before or after, on gate and up rows in halves or interleaved, residual after; also with one
    reduction after the K loop) equal the eager glue followed by the product; a block as wide as
    K (one-shot: the whole weight block loaded at once, before the PDL wait) as well."""
    code = (
        "import torch\n"
        "from sedpa_compress.runtime import kernels\n"
        "torch.manual_seed(0)\n"
        "for (n, k, bn, bk) in [(64, 256, 8, 128), (100, 300, 16, 256), (7, 1030, 4, 512),\n"
        "                       (64, 256, 8, 256), (100, 300, 16, 4096)]:  # the last two one-shot (block >= K)\n"
        "    w, x = torch.randn(n, k), torch.randn(1, k)\n"
        "    got, want = kernels.gemv(x, w, block_n=bn, block_k=bk), (x @ w.T)[0]\n"
        "    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()\n"
        "from sedpa_compress.runtime.model import _rms_norm, _silu_mul\n"
        "for (n, k, bn, bk) in [(64, 256, 4, 128), (100, 300, 8, 256), (100, 300, 8, 512)]:  # fused variants\n"
        "    w, x, nw, r = torch.randn(n, k), torch.randn(1, k), torch.rand(k) + 0.5, torch.randn(n)\n"
        "    got = kernels.gemv_fused(x, w, norm_weight=nw, eps=1e-5, block_n=bn, block_k=bk)\n"
        "    assert torch.allclose(got, (_rms_norm(x, nw, 1e-5) @ w.T)[0], atol=1e-4, rtol=1e-4)\n"
        "    gu = torch.randn(1, 2 * k)\n"
        "    got = kernels.gemv_fused(gu, w, swiglu=True, residual=r, block_n=bn, block_k=bk)\n"
        "    assert torch.allclose(got, (_silu_mul(gu) @ w.T)[0] + r, atol=1e-4, rtol=1e-4)\n"
        "    # kernels.FUSED_GLUE's chain: the producer adds its output's sum of squares (one atomic add a\n"
        "    # program), the consumer normalises with it instead of recomputing\n"
        "    ss = torch.zeros(1)\n"
        "    y = kernels.gemv_fused(gu, w, swiglu=True, residual=r, ss_out=ss, block_n=bn, block_k=bk)\n"
        "    assert torch.allclose(ss, (y * y).sum().reshape(1), rtol=1e-5), (ss, (y * y).sum())\n"
        "    w2 = torch.randn(50, n)\n"
        "    got = kernels.gemv_fused(y, w2, norm_weight=nw[:n], norm_ss=ss, eps=1e-5, block_n=bn, block_k=bk)\n"
        "    assert torch.allclose(got, (_rms_norm(y[None], nw[:n], 1e-5) @ w2.T)[0], atol=1e-4, rtol=1e-4)\n"
        "    # the norm is the one read, not recomputed: four times the sum of squares halves the output\n"
        "    got = kernels.gemv_fused(y, w2, norm_weight=nw[:n], norm_ss=4 * ss, eps=0.0, block_n=bn, block_k=bk)\n"
        "    assert torch.allclose(got, (_rms_norm(y[None], nw[:n], 0.0) @ w2.T)[0] / 2, atol=1e-4, rtol=1e-4)\n"
        "    # kernels.SS_UNITS: the same chain with the sums of squares in int64 fixed point (order-free adds)\n"
        "    ssi = torch.zeros(1, dtype=torch.int64)\n"
        "    yi = kernels.gemv_fused(gu, w, swiglu=True, residual=r, ss_out=ssi, block_n=bn, block_k=bk)\n"
        "    assert torch.equal(yi, y) and abs(float(ssi) / kernels.SS_UNITS - float((y * y).sum())) < 1e-4 * float((y * y).sum())\n"
        "    got = kernels.gemv_fused(y, w2, norm_weight=nw[:n], norm_ss=ssi, eps=1e-5, block_n=bn, block_k=bk)\n"
        "    assert torch.allclose(got, (_rms_norm(y[None], nw[:n], 1e-5) @ w2.T)[0], atol=1e-4, rtol=1e-4)\n"
        "    try:\n"
        "        kernels.gemv_fused(y, w2, norm_weight=nw[:n], norm_ss=ssi, ss_out=torch.zeros(1), block_n=bn)\n"
        "        raise SystemExit('mixed int64 / fp32 sums were accepted')\n"
        "    except ValueError:\n"
        "        pass\n"
        "    # kernels.FOLD_NORM_WEIGHTS: the norm's weight in W's columns, the GEMV reading no weight\n"
        "    got = kernels.gemv_fused(y, w2 * nw[:n], norm_ss=ssi, eps=1e-5, block_n=bn, block_k=bk)\n"
        "    assert torch.allclose(got, (_rms_norm(y[None], nw[:n], 1e-5) @ w2.T)[0], atol=1e-4, rtol=1e-4)\n"
        "    # kernels.SWIGLU_EPILOGUE: gate_up's GEMV stores silu(gate) * up, its programs reading gate and up rows\n"
        "    wgu = torch.randn(2 * n, k)\n"
        "    got = kernels.gemv_fused(x, wgu, norm_weight=nw, eps=1e-5, swiglu_out=True, block_n=bn, block_k=bk)\n"
        "    want = _silu_mul(_rms_norm(x, nw, 1e-5) @ wgu.T)[0]\n"
        "    assert got.shape == (n,) and torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()\n"
        "    # kernels.GATE_UP_INTERLEAVED: the same weight with its rows interleaved (gate_0, up_0, ...), one tile a\n"
        "    # program, its block_n counting W's rows; one-shot too (a block as wide as K)\n"
        "    wil = torch.stack([wgu[:n], wgu[n:]], 1).reshape(2 * n, k)\n"
        "    for bn2, bk2 in ((2 * bn, bk), (2, bk), (bn, 4096)):\n"
        "        got = kernels.gemv_fused(x, wil, norm_weight=nw, eps=1e-5, swiglu_out=True, swiglu_pairs=True,\n"
        "                                 block_n=bn2, block_k=bk2)\n"
        "        assert got.shape == (n,) and torch.allclose(got, want, atol=1e-4, rtol=1e-4), (bn2, (got - want).abs().max())\n"
        "    # kernels.GEMV_DEFER_REDUCE: one reduction after the K loop, for the plain, the epilogue and the fused chain\n"
        "    for call, expect in ((lambda **o: kernels.gemv_fused(x, w, block_n=bn, block_k=bk, **o), (x @ w.T)[0]),\n"
        "                         (lambda **o: kernels.gemv_fused(x, wgu, norm_weight=nw, eps=1e-5, swiglu_out=True,\n"
        "                                                         block_n=bn, block_k=bk, **o), want),\n"
        "                         (lambda **o: kernels.gemv_fused(x, wil, norm_weight=nw, eps=1e-5, swiglu_out=True,\n"
        "                                                         swiglu_pairs=True, block_n=2 * bn, block_k=bk, **o), want),\n"
        "                         (lambda **o: kernels.gemv_fused(gu, w, swiglu=True, residual=r, block_n=bn, block_k=bk, **o),\n"
        "                          (_silu_mul(gu) @ w.T)[0] + r)):\n"
        "        got = call(defer_reduce=True)\n"
        "        assert torch.allclose(got, expect, atol=1e-4, rtol=1e-4), (got - expect).abs().max()\n"
        "for bad in (dict(swiglu_out=True, swiglu=True), dict(swiglu_out=True), dict(swiglu_pairs=True),\n"
        "            dict(swiglu_out=True, swiglu_pairs=True, block_n=3)):\n"
        "    try:\n"
        "        w_bad = torch.randn(8, 8) if bad.get('block_n') == 3 or 'swiglu_out' not in bad else torch.randn(7, 8)\n"
        "        kernels.gemv_fused(torch.randn(1, 16 if bad.get('swiglu') else 8), w_bad, **bad)\n"
        "        raise SystemExit(f'accepted {bad}')\n"
        "    except ValueError:\n"
        "        pass\n"
        "try:\n"
        "    kernels.gemv(torch.randn(1, 8), torch.randn(8, 16).T)\n"
        "    raise SystemExit('a column-major weight was accepted')\n"
        "except ValueError:\n"
        "    pass\n"
        "print('ok')\n")
    run_in_triton_interpreter(code)


@in_triton_interpreter
def test_gemv_probe_glue_parts_in_the_triton_interpreter():
    """bench/scripts/gemv_probe.py --glue-only on small shapes in Triton's interpreter (its timer replaced by one
    call): every fused projection as the decode step runs it matches the eager glue in fp32 at 2 / 4 / 8 rows a
    program (gate_up's epilogue also at half the rows and on interleaved rows, qkv also with its norm folded), and
    the chain rows run.
    fp32: the interpreter's bf16 casts do not round as the GPU's do (1.2% off a bf16 emulation in torch for the SwiGLU epilogue's four roundings, 0.35% for a plain GEMV's one)."""
    code = (
        "import sys, torch\n"
        "sys.path.insert(0, 'bench/scripts')\n"
        "import gemv_probe\n"
        "gemv_probe.SHAPES = {'qkv': (96, 64), 'o': (64, 64), 'gate_up': (320, 64), 'down': (64, 160)}\n"
        "gemv_probe.COLD_BYTES = 1\n"
        "rows = gemv_probe.glue_parts(torch.device('cpu'), lambda fn: (fn(), 1.0)[1], 1e12, torch.float32)\n"
        "fused = [r for r in rows if r['variant'] == 'fused' and r['part'] != 'layer_chain']\n"
        "assert len(fused) == 27 and all('error' not in r for r in rows), [r for r in rows if 'error' in r]\n"
        "bad = [r for r in fused if r['rel_err'] > 1e-5]\n"
        "assert not bad, bad\n"
        "print('ok')\n")
    run_in_triton_interpreter(code)


@in_triton_interpreter
def test_prefill_merge_kernel_in_the_triton_interpreter():
    """kernels.merge_attention (kernels.PREFILL_MERGE "triton") in Triton's interpreter: the same merged output and
    log-sum-exp as merge_softmax for outputs in the queries' [b, t, h, d] layout (as cuDNN leaves them), bf16 or
    fp32 in, fp32 out in place or bf16 out, rows not a multiple of the block; and a chunk's attention over 1-4 past
    blocks merged by it (kernels.blocked_chunk_attention) equals causal attention over the prefix."""
    code = (
        "import torch\n"
        "from sedpa_compress.runtime import kernels\n"
        "torch.manual_seed(0)\n"
        "b, h, t, d = 2, 3, 37, 16\n"
        "def bshd(dtype):  # [b, h, t, d] viewed from [b, t, h, d] memory\n"
        "    return torch.randn(b, t, h, d).to(dtype).transpose(1, 2)\n"
        "for dt_in, dt_out, in_place in ((torch.float32, torch.float32, True), (torch.bfloat16, torch.float32, False),\n"
        "                                (torch.float32, torch.bfloat16, False)):\n"
        "    o1, o2 = bshd(dt_in), bshd(torch.bfloat16)\n"
        "    l1, l2 = torch.randn(b, h, t) * 3, torch.randn(b, h, t) * 3\n"
        "    want, want_l = kernels.merge_softmax(o1, l1, o2, l2)\n"
        "    out = o1 if in_place else torch.empty_like(o1, dtype=dt_out)\n"
        "    l1c = l1.clone()\n"
        "    kernels.merge_attention(o1, l1c, o2, l2, out, block_t=8)\n"
        "    tol = 1e-6 if dt_out == torch.float32 else 1e-2\n"
        "    assert float((out.float() - want).norm() / want.norm()) < tol, (dt_in, dt_out)\n"
        "    assert float((l1c - want_l).abs().max()) < 1e-5\n"
        "q = torch.randn(1, 8, 7, 16)\n"
        "for start, block in ((6, 8), (16, 8), (21, 8), (24, 5)):\n"
        "    k, v = torch.randn(1, 2, start + 7, 16), torch.randn(1, 2, start + 7, 16)\n"
        "    def attend(q_, k_, v_, causal):\n"
        "        logits = q_ @ k_.repeat_interleave(4, 1).transpose(-1, -2) * 0.25\n"
        "        if causal:\n"
        "            logits = logits.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float('-inf'))\n"
        "        return torch.softmax(logits, -1) @ v_.repeat_interleave(4, 1), torch.logsumexp(logits, -1)\n"
        "    want = kernels.causal_chunk_attention(q, k, v, start, 0.25)\n"
        "    got = kernels.blocked_chunk_attention(q, kernels._slices(k, v), start, attend, block=block, merge_kernel=True)\n"
        "    assert got.dtype == q.dtype and float((got - want).norm() / want.norm()) < 1e-5, (start, block)\n"
        "try:\n"
        "    kernels.merge_attention(o1, l1, o2[..., :8], l2, o1)\n"
        "    raise SystemExit('mismatched shapes were accepted')\n"
        "except ValueError:\n"
        "    pass\n"
        "print('ok')\n")
    run_in_triton_interpreter(code)


@in_triton_interpreter
def test_fused_glue_decode_step_in_the_triton_interpreter():
    """kernels.FUSED_GLUE wired into the decode step (FastModel._fused_mlp and qkv's norm from the sum of squares),
    with the SwiGLU in down's GEMV or in gate_up's (kernels.SWIGLU_EPILOGUE), with 8 rows a program for the
    GEMVs that apply a norm (kernels.GEMV_NORM_BLOCK_N), with the sums of squares in int64 fixed point
    (kernels.SS_UNITS, the default) or fp32, on a model built with its norms' weights folded into the
    projections (kernels.FOLD_NORM_WEIGHTS), and on one with gate_up's rows interleaved (kernels.GATE_UP_INTERLEAVED),
    its GEMVs in Triton's interpreter on CPU tensors: the same logits as the unfused step over 8 tokens, for full
    attention, duo, and sedpa-s with factored o_proj (those layers keep the unfused glue, so the two mix), on a
    3-layer Qwen2 (q/k/v biases). fp32: the interpreter does not emulate bf16 dots."""
    code = (
        "import sys, tempfile, torch\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, 'tests')\n"
        "from conftest import build_tiny, random_pattern\n"
        "from sedpa_compress.models import load_model\n"
        "from sedpa_compress.runtime import kernels\n"
        "from sedpa_compress.runtime.model import FastModel, RuntimeSpec, make_caches, make_state\n"
        "loaded = load_model(str(build_tiny('qwen2', Path(tempfile.mkdtemp()) / 'm', layers=3)), dtype='float32')\n"
        "with torch.no_grad():  # norms away from their ones init (folding them must matter)\n"
        "    for name, m in loaded.model.named_modules():\n"
        "        if name.endswith('norm'):\n"
        "            m.weight.uniform_(0.5, 1.5)\n"
        "pattern = random_pattern(loaded.geometry, ratio=0.5, sink=4, recent=16)\n"
        "ids = torch.randint(0, 300, (1, 72), generator=torch.Generator().manual_seed(0))\n"
        "specs = {'full': (RuntimeSpec(mode='full'), None),\n"
        "         'duo': (RuntimeSpec(mode='duo', pattern=pattern, sink=4, recent=16), None),\n"
        "         'sedpa-s': (RuntimeSpec(mode='sedpa-s', pattern=pattern, sink=4, recent=16, lowrank='factored'), 0.5)}\n"
        "for name, (spec, ratio) in specs.items():\n"
        "    # both defaults are on and read as the model is built: first every case on the unfolded model, [gate; up]\n"
        "    kernels.FOLD_NORM_WEIGHTS, kernels.GATE_UP_INTERLEAVED = False, False\n"
        "    model = FastModel(loaded, spec, synthetic_rank_ratio=ratio)\n"
        "    model._fused = True  # as enable_fusion sets it on CUDA, without its compiles\n"
        "    assert not any(layer.norms_folded or layer.gate_up_interleaved for layer in model.layers)\n"
        "    assert name != 'sedpa-s' or any(layer.o_down is not None for layer in model.layers)\n"
        "    outs = []\n"
        "    units = kernels.SS_UNITS\n"
        "    for fused, epilogue, norm_bn, ss_units, ep_bn in ((False, False, None, units, None),\n"
        "                                                      (True, False, None, units, None),\n"
        "                                                      (True, True, None, units, None), (True, True, 8, units, None),\n"
        "                                                      (True, True, None, None, None), (True, True, None, units, 1)):\n"
        "        kernels.FUSED_GLUE, kernels.SWIGLU_EPILOGUE, kernels.GEMV_NORM_BLOCK_N = fused, epilogue, norm_bn\n"
        "        kernels.SS_UNITS, kernels.EPILOGUE_BLOCK_N = ss_units, ep_bn\n"
        "        caches = make_caches(model, batch=1, max_len=96)\n"
        "        state = make_state(model, caches, 1)\n"
        "        model.prefill_chunk(ids[:, :64], 0, caches)\n"
        "        outs.append(torch.stack([model.decode_step(ids[:, j], torch.tensor([j]), caches, state)\n"
        "                                 for j in range(64, 72)]))\n"
        "        assert ss_units is not None or state.glue_ss.dtype == torch.float32 and bool(state.glue_ss.abs().sum() > 0)\n"
        "    # SwiGLU in down's GEMV, in gate_up's (SWIGLU_EPILOGUE), 8 rows for the normed GEMVs, fp32 sums of squares,\n"
        "    # one activation row a program for gate_up's epilogue GEMV (EPILOGUE_BLOCK_N)\n"
        "    for i in (1, 2, 3, 4, 5):\n"
        "        err = float((outs[i] - outs[0]).norm() / outs[0].norm())\n"
        "        assert err < 1e-5, (name, i, err)\n"
        "    kernels.SS_UNITS, kernels.EPILOGUE_BLOCK_N = units, None\n"
        "    # kernels.FOLD_NORM_WEIGHTS (read as the model is built): prefill and fused decode on the folded weights\n"
        "    kernels.FOLD_NORM_WEIGHTS = True\n"
        "    folded = FastModel(loaded, spec, synthetic_rank_ratio=ratio)\n"
        "    kernels.FOLD_NORM_WEIGHTS = False\n"
        "    folded._fused = True\n"
        "    assert all(layer.norms_folded for layer in folded.layers)\n"
        "    caches = make_caches(folded, batch=1, max_len=96)\n"
        "    state = make_state(folded, caches, 1)\n"
        "    folded.prefill_chunk(ids[:, :64], 0, caches)\n"
        "    got = torch.stack([folded.decode_step(ids[:, j], torch.tensor([j]), caches, state) for j in range(64, 72)])\n"
        "    err = float((got - outs[0]).norm() / outs[0].norm())\n"
        "    assert err < 1e-5, (name, 'folded norms', err)\n"
        "    # kernels.GATE_UP_INTERLEAVED (read as the model is built): gate_up's rows in pairs, the epilogue GEMV\n"
        "    # reading one tile a program; it takes the epilogue whatever SWIGLU_EPILOGUE says\n"
        "    kernels.GATE_UP_INTERLEAVED = True\n"
        "    paired = FastModel(loaded, spec, synthetic_rank_ratio=ratio)\n"
        "    kernels.GATE_UP_INTERLEAVED = False\n"
        "    paired._fused = True\n"
        "    assert all(layer.gate_up_interleaved for layer in paired.layers)\n"
        "    for epilogue, ep_bn in ((True, None), (False, None), (True, 1)):\n"
        "        kernels.SWIGLU_EPILOGUE, kernels.EPILOGUE_BLOCK_N = epilogue, ep_bn\n"
        "        caches = make_caches(paired, batch=1, max_len=96)\n"
        "        state = make_state(paired, caches, 1)\n"
        "        paired.prefill_chunk(ids[:, :64], 0, caches)\n"
        "        got = torch.stack([paired.decode_step(ids[:, j], torch.tensor([j]), caches, state) for j in range(64, 72)])\n"
        "        err = float((got - outs[0]).norm() / outs[0].norm())\n"
        "        assert err < 1e-5, (name, 'interleaved gate_up', epilogue, ep_bn, err)\n"
        "    kernels.SWIGLU_EPILOGUE, kernels.EPILOGUE_BLOCK_N = True, None\n"
        "kernels.FUSED_GLUE, kernels.SWIGLU_EPILOGUE, kernels.GEMV_NORM_BLOCK_N = True, True, None  # the defaults\n"
        "kernels.FOLD_NORM_WEIGHTS, kernels.GATE_UP_INTERLEAVED = True, True\n"
        "print('ok')\n")
    run_in_triton_interpreter(code, timeout=900)  # ~5 min on two CPU cores


@pytest.mark.parametrize("mode", ["full", "duo", "sedpa-s"])
def test_norm_weights_folded_into_the_projections_keep_the_logits(tiny, mode, monkeypatch):
    """kernels.FOLD_NORM_WEIGHTS: a model built with each RMSNorm's weight folded into the columns of qkv_in (the
    low-rank down factors included) and gate_up, its norms then weightless, prefills and decodes to the same
    logits as the unfolded model (fp32 on the CPU: only rounding differs), and holds no more weight bytes."""
    loaded, pattern = tiny
    spec, _ = _spec_and_mode(mode, pattern)
    ids = torch.randint(0, 200, (1, 80), generator=torch.Generator().manual_seed(3))
    # the tiny model's norms are initialised to ones, which folding would leave alone: random weights, put back after
    norms = [m.weight for name, m in loaded.model.named_modules() if name.endswith("layernorm")]
    saved = [w.detach().clone() for w in norms]
    with torch.no_grad():
        for w in norms:
            w.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(w.numel()))
    monkeypatch.setattr(kernels, "FOLD_NORM_WEIGHTS", False)
    try:
        outs, sizes, runners = _built_both_ways("FOLD_NORM_WEIGHTS", loaded, spec, ids, mode, monkeypatch)
    finally:
        with torch.no_grad():
            for w, v in zip(norms, saved):
                w.copy_(v)
    for fold, runner in zip((False, True), runners):
        assert all(layer.norms_folded == fold for layer in runner.model.layers)
    err = float((outs[1] - outs[0]).norm() / outs[0].norm())
    assert err < 1e-5, err
    assert sizes[1] == sizes[0]
    assert mode != "sedpa-s" or any(layer.lowrank is not None for layer in runners[1].model.layers)


def _built_both_ways(flag, loaded, spec, ids, mode, monkeypatch):
    """The logits of 72 prompt tokens and 8 decoded ones, and the weight bytes, of a runner built with kernels.<flag>
    off and of one built with it on (the flag is read as the model is built); the runners too."""
    outs, sizes, runners = [], [], []
    for on in (False, True):
        monkeypatch.setattr(kernels, flag, on)
        runner = Runner.build(loaded, spec, max_len=96, chunk=32,
                              synthetic_rank_ratio=0.5 if mode == "sedpa-s" else None)
        first = runner.prefill(ids[:, :72])
        outs.append(torch.stack([first] + [runner.decode(ids[:, j]).clone() for j in range(72, 80)]))
        sizes.append(runner.model.weight_bytes())
        runners.append(runner)
    return outs, sizes, runners


@pytest.mark.parametrize("mode", ["full", "duo", "sedpa-s"])
def test_interleaved_gate_up_keeps_the_logits(tiny, mode, monkeypatch):
    """kernels.GATE_UP_INTERLEAVED: a model whose gate_up rows are stored gate_0, up_0, gate_1, ... prefills and
    decodes (the CPU's unfused step: the strided SwiGLU of model._silu_mul) to the same logits as one with [gate; up],
    holding the same weight bytes; its rows are the interleaved ones."""
    loaded, pattern = tiny
    spec, _ = _spec_and_mode(mode, pattern)
    ids = torch.randint(0, 200, (1, 80), generator=torch.Generator().manual_seed(4))
    outs, sizes, runners = _built_both_ways("GATE_UP_INTERLEAVED", loaded, spec, ids, mode, monkeypatch)
    mlp = loaded.model.model.layers[0].mlp
    for interleaved, runner in zip((False, True), runners):
        assert all(layer.gate_up_interleaved == interleaved for layer in runner.model.layers)
    layer = runners[1].model.layers[0]
    want_rows = torch.stack([mlp.gate_proj.weight, mlp.up_proj.weight], 1).flatten(0, 1)
    if layer.norms_folded:  # the MLP norm's weight in the columns (FOLD_NORM_WEIGHTS, the default)
        want_rows = want_rows * loaded.model.model.layers[0].post_attention_layernorm.weight
    assert torch.allclose(layer.gate_up, want_rows)
    assert float((outs[1] - outs[0]).norm() / outs[0].norm()) < 1e-5
    assert sizes[1] == sizes[0]


def test_fixed_point_sums_of_squares_near_their_range_switch_to_fp32_and_say_so(tiny):
    """Runner.check_glue_sums, once after the first decode step: the fused glue's int64 sums of squares
    (kernels.SS_UNITS) stay while far inside their range; a sum within 64x of 2^63 units, or a wrapped (negative)
    one, turns the runner's buffer to fp32 and notes why."""
    loaded, _ = tiny
    runner = Runner.build(loaded, RuntimeSpec(mode="full"), max_len=64)
    assert runner.state.glue_ss.dtype == torch.int64  # the default, SS_UNITS set
    runner.prefill(torch.randint(0, 200, (1, 8)))
    runner.decode(torch.tensor([5]))  # the check runs here: zeros on the CPU, which never fuses
    assert runner.state.glue_ss.dtype == torch.int64 and not runner.model.notes
    for big in (1 << 60, -5):
        runner.state.glue_ss = torch.tensor([3, big], dtype=torch.int64)
        runner.check_glue_sums()
        assert runner.state.glue_ss.dtype == torch.float32 and runner.state.glue_ss.shape == (2,)
        assert "adds them in fp32" in runner.model.notes[-1]
        assert ("wrapped" in runner.model.notes[-1]) == (big < 0)
    runner.state.glue_ss = torch.tensor([1 << 40], dtype=torch.int64)  # 65536 at 2^24 units: stays
    runner.check_glue_sums()
    assert runner.state.glue_ss.dtype == torch.int64


def test_compiled_prefill_glue_equals_eager_for_any_chunk_length(tiny):
    """What enable_fusion compiles for the prefill on CUDA (norms, residual adds, RoPE, SwiGLU; dynamic shapes),
    here on the CPU's inductor: the same hidden states as the eager functions over a 256-token chunk and a
    44-token one, duo (two head groups a layer), and a second prompt compiles nothing more."""
    import torch._dynamo

    from sedpa_compress.runtime.model import make_caches

    loaded, pattern = tiny
    model = FastModel(loaded, RuntimeSpec(mode="duo", pattern=pattern, sink=SINK, recent=RECENT))
    ids = torch.randint(0, 200, (1, 300), generator=torch.Generator().manual_seed(0))

    def prefill() -> torch.Tensor:
        caches = make_caches(model, batch=1, max_len=512)
        return torch.cat([model.prefill_chunk(ids[:, :256], 0, caches, keep_all=True),
                          model.prefill_chunk(ids[:, 256:], 256, caches, keep_all=True)], 1)

    want = prefill()
    model.compile_prefill_glue()
    got = prefill()
    assert rel(got, want) <= 1e-5 and not model.notes
    torch._dynamo.utils.counters.clear()
    again = prefill()
    assert torch.equal(again, got) and not torch._dynamo.utils.counters["stats"].get("unique_graphs")


def test_rope_append_kernel_is_chosen_only_where_it_fits():
    assert kernels.rope_append_fits(128, 2) == kernels.HAS_TRITON
    assert not kernels.rope_append_fits(128, 3) and not kernels.rope_append_fits(80, 1)


# ------------------------------------------------------------------------------------ fp8 KV caches

@pytest.mark.parametrize("mode", ["full", "streaming", "duo", "sedpa-w"])
def test_fp8_caches_hold_the_bf16_caches_values_and_keep_the_logits(tiny, mode):
    """--kv-dtype fp8: every slot (full-length and ring, written by prefill chunks and by decode) holds
    the value the unquantized cache holds, within e4m3's rounding (3 mantissa bits: <= 1/16 of the
    vector's scale per element), and the logits stay within a few percent; the caches take
    (head_dim + 2) / (head_dim * dtype bytes) of the memory."""
    from sedpa_compress.runtime import cache as kv

    loaded, pattern = tiny
    kw = dict(mode=mode, pattern=pattern if mode in ("duo", "sedpa-w") else None, sink=SINK, recent=RECENT,
              window=WINDOW if mode == "sedpa-w" else None)
    ids = torch.randint(0, 300, (1, 120), generator=torch.Generator().manual_seed(9))
    runners, logits = {}, {}
    for kv_dtype in ("bf16", "fp8"):
        r = Runner(FastModel(loaded, RuntimeSpec(**kw, kv_dtype=kv_dtype)), max_len=128, chunk=40)
        logits[kv_dtype] = torch.stack(_runtime_steps(r, ids, 100))
        runners[kv_dtype] = r
    plain, fp8 = runners["bf16"], runners["fp8"]
    d = loaded.geometry.head_dim
    assert fp8.kv_bytes() == pytest.approx(plain.kv_bytes() * (d + 2) / (d * 4))  # fp32 model on the CPU
    assert fp8.kv_bytes() == memory_cache_bytes(fp8)
    for layer, (c_plain, c_fp8) in enumerate(zip(plain.caches, fp8.caches)):
        assert c_fp8.k[0].dtype == torch.uint8 and c_fp8.k_scale[0].dtype == kv.SCALE_DTYPE
        for gi in range(len(c_plain.groups)):
            for want, got in zip(c_plain.read(gi), c_fp8.read(gi)):
                if layer == 0:  # same inputs: only the rounding differs
                    err = (got.float() - want.float()).abs().amax(-1)
                    assert bool((err <= want.float().abs().amax(-1) / 16 + 1e-6).all())
                else:  # deeper layers also carry the earlier layers' rounding
                    assert rel(got, want) < 0.1
    assert rel(logits["fp8"], logits["bf16"]) < 0.06


def test_tidal_reads_fp8_caches(tiny, monkeypatch):
    """tidal with --kv-dtype fp8: the selection layers' logits come from the fp8 keys converted a block of
    positions at a time (`fp8_logits`: the same as the dequantized keys' GEMM, whatever the block), the sparse
    layers read the selected positions' bytes and scales; with top-k covering the context it equals full
    attention on the same fp8 caches, and sparse it stays within fp8's rounding of tidal on unquantized caches."""
    from sedpa_compress.runtime import kernels
    from sedpa_compress.runtime.cache import dequantize_fp8, quantize_fp8
    from sedpa_compress.runtime.model import fp8_logits

    loaded, _ = tiny
    q, k = torch.randn(1, 2, 4, 16), torch.randn(1, 2, 300, 16) * 3
    kb, ks = quantize_fp8(k)
    want = torch.matmul(q, dequantize_fp8(kb, ks, torch.float32).transpose(-1, -2))
    for block in (64, 128, 4096):  # several blocks, a partial last one, one block
        monkeypatch.setattr(kernels, "PAST_BLOCK", block)
        assert rel(fp8_logits(q, kb, ks), want) < 1e-3  # the scales are bf16 on the logits
    ids = torch.randint(0, 300, (1, 96), generator=torch.Generator().manual_seed(5))
    steps = {}
    for name, spec in (("tidal fp8 covering", _spec_and_mode("tidal", None, top_k=512)[0]),
                       ("full fp8", RuntimeSpec(mode="full")),
                       ("tidal fp8 sparse", _spec_and_mode("tidal", None, top_k=24)[0]),
                       ("tidal sparse", _spec_and_mode("tidal", None, top_k=24)[0])):
        if "fp8" in name:
            spec = dataclasses.replace(spec, kv_dtype="fp8")
        steps[name] = torch.stack(_runtime_steps(Runner.build(loaded, spec, max_len=100), ids, 40))
    assert rel(steps["tidal fp8 covering"], steps["full fp8"]) < 1e-5
    assert rel(steps["tidal fp8 sparse"], steps["tidal sparse"]) < 0.06
    assert rel(steps["tidal fp8 sparse"], steps["tidal fp8 covering"]) > 1e-3  # the sparse layers did select


def memory_cache_bytes(runner: Runner) -> int:
    from sedpa_compress.runtime import memory

    return memory.cache_bytes(runner.model, batch=runner.batch, max_len=runner.max_len)


def test_fp8_caches_double_the_longest_context_and_refuse_what_they_cannot_run(tiny, tmp_path, monkeypatch):
    """The memory plan: fp8 caches take (head_dim + 2) / (2 head_dim) of bf16's bytes, so more tokens fit
    in the same budget (here 1.5x: this tiny model's head_dim 16 makes the scales 12% and the prefill's
    per-layer temporaries large next to 16 layers of cache; Llama-3-8B at 25% retrieval heads gives ~1.85x), and a context
    too long is refused before allocating, naming the KV dtype and what fits with it."""
    from sedpa_compress.runtime import memory
    from sedpa_compress.runtime import runner as runner_module

    path = build_tiny("llama", tmp_path / "bf16", layers=16)
    loaded = load_model(str(path), dtype="bfloat16")
    budget = 64 << 20
    fits = {}
    for kv_dtype in ("bf16", "fp8"):
        model = FastModel(loaded, RuntimeSpec(mode="full", kv_dtype=kv_dtype))
        fits[kv_dtype] = memory.max_context(model, chunk=256, free_bytes=budget + memory.MARGIN)
        fits[kv_dtype + " cache"] = memory.cache_bytes(model, batch=1, max_len=4096)
    d = loaded.geometry.head_dim
    assert fits["fp8 cache"] == pytest.approx(fits["bf16 cache"] * (d + 2) / (2 * d))
    assert 1.4 < fits["fp8"] / fits["bf16"] < 2.0
    model = FastModel(loaded, RuntimeSpec(mode="full", kv_dtype="fp8"))
    with pytest.raises(SedpaError, match=rf"--kv-dtype fp8 is {fits['fp8']} tokens"):
        Runner(model, max_len=fits["fp8"] + 4096, chunk=256, memory_budget=budget + memory.MARGIN)
    runner = Runner(model, max_len=2048, chunk=256)
    monkeypatch.setattr(runner_module, "FILL_CHUNK", 300)  # a few slots at a time, the last step a partial one
    runner.fill_synthetic(2000)  # the max-context benchmark's fill, quantized
    k, _ = runner.caches[0].read(0, 2000)
    assert torch.isfinite(k.float()).all() and 0.5 < float(k.float().std()) < 2
    for cache in runner.caches:  # every slot of every head got its values and a scale
        assert all(bool((sc > 0).all()) for sc in cache.k_scale + cache.v_scale)
    with pytest.raises(SedpaError, match="--kv-dtype 'int4'"):
        FastModel(loaded, RuntimeSpec(mode="full", kv_dtype="int4"))


def test_contexts_past_what_the_decode_kernels_index_are_refused_before_allocating(tiny):
    """A head's slots x head_dim must stay under 2^31 elements (the kernels index a slot in int32; a head's base,
    past 2^31 at the longest contexts, in int64): the memory plan's longest context stops there however much memory
    is free, a longer context is refused before anything is allocated, and modes whose caches are all rings have
    no such limit."""
    from sedpa_compress.runtime import memory

    loaded, _ = tiny
    d = loaded.geometry.head_dim
    full = FastModel(loaded, RuntimeSpec(mode="full"))
    assert memory.position_limit(full) == (2**31 - 1) // d
    assert memory.max_context(full, free_bytes=1 << 60) == (2**31 - 1) // d
    with pytest.raises(SedpaError, match=rf"longer than the decode kernels index \({(2**31 - 1) // d} positions"):
        Runner(full, max_len=(2**31 - 1) // d + 1, memory_budget=1 << 60)
    streaming = FastModel(loaded, RuntimeSpec(mode="streaming", sink=4, recent=16))
    assert memory.position_limit(streaming) is None
    assert memory.max_context(streaming, free_bytes=1 << 60) >= 1 << 30


@pytest.mark.skipif(not shutil.which("cc"), reason="torch.compile on the CPU needs a C compiler")
@pytest.mark.parametrize("kv_dtype", ["bf16", "fp8"])
def test_compiled_rope_and_cache_writes_equal_the_eager_ones(kv_dtype):
    """The decode step's fused RoPE + cache writes (what enable_fusion compiles on CUDA) trace as one
    graph, mutate the caches in place, and write what the eager function writes (fp8: to within one
    e4m3 step, where the compiled division rounds differently)."""
    from sedpa_compress.runtime.cache import HeadGroup, LayerCache
    from sedpa_compress.runtime.model import _rope_append

    torch.manual_seed(0)
    groups = [HeadGroup("full", (0, 1)), HeadGroup("ring", (2, 3), 8)]
    caches = [LayerCache(groups, batch=1, max_len=32, sink=4, head_dim=16, dtype=torch.float32, device="cpu",
                         kv_dtype=kv_dtype) for _ in range(2)]
    q, k, v = torch.randn(1, 1, 8, 16), torch.randn(1, 1, 4, 16), torch.randn(1, 1, 4, 16)
    cos, sin = torch.randn(1, 16), torch.randn(1, 16)
    slots = [torch.tensor([5]), torch.tensor([9])]
    compiled = torch.compile(_rope_append, dynamic=False, fullgraph=True)
    got = [fn(q, k, v, cos, sin, slots, c.k, c.v, c.k_scale, c.v_scale, (2, 2))
           for fn, c in ((_rope_append, caches[0]), (compiled, caches[1]))]
    assert torch.equal(got[0], got[1])
    for gi in range(2):
        for (a, b) in zip(caches[0].read(gi), caches[1].read(gi)):
            assert float(a.abs().sum()) > 0  # the slot was written
            assert torch.allclose(a, b, rtol=0.13 if kv_dtype == "fp8" else 0, atol=1e-6)


def test_a_fused_function_that_cannot_compile_falls_back_to_the_eager_one_and_says_so():
    """On the first call or a later recompile: eager from then on, with a note; real errors still raise."""
    from sedpa_compress.runtime.fallback import FirstCallFallback as _FirstCallFallback

    notes: list[str] = []
    calls = []

    def broken(x):
        raise RuntimeError("no lowering for float8_e4m3fn here\nmore")

    fused = _FirstCallFallback(broken, lambda x: calls.append(x) or x + 1, notes, "RoPE + cache writes")
    assert fused(1) == 2 and fused(2) == 3 and calls == [1, 2]
    assert notes == ["RoPE + cache writes run eagerly (torch.compile failed: no lowering for float8_e4m3fn here)"]
    ok = _FirstCallFallback(lambda x: x * 10, lambda x: x, notes, "x")
    assert ok(3) == 30 and len(notes) == 1

    def later(x):  # compiles for one head split, fails on the recompile for another
        if x > 5:
            raise RuntimeError("recompile failed")
        return x * 10

    mixed = _FirstCallFallback(later, lambda x: x, notes, "y")
    assert mixed(3) == 30 and mixed(7) == 7 and mixed(3) == 3 and notes[-1].startswith("y run eagerly")
    with pytest.raises(ValueError):  # a real error raises again from the eager function
        _FirstCallFallback(later, lambda x: int("nan"), notes, "z")(7)
    # the one-launch Triton RoPE + cache writes falls back to the compiled function, and says so
    triton_first = _FirstCallFallback(broken, lambda x: x - 1, notes, "RoPE + cache writes",
                                      instead="by the compiled function", failed="the one-launch Triton kernel")
    assert triton_first(5) == 4 and notes[-1] == ("RoPE + cache writes run by the compiled function (the one-launch "
                                                  "Triton kernel failed: no lowering for float8_e4m3fn here)")


def test_decode_splits_follow_the_cache_dtype_launch_and_an_explicit_count():
    """The split-K workspace sizes its splits from its cache dtype's launch (fp8: 128-key blocks, so a
    short context gets half the splits of bf16's 64-key blocks), its busy heads, or an explicit count."""
    cpu = torch.device("cpu")
    assert kernels.num_splits(131072, 8) == 64 and kernels.num_splits(131072, 4) == 128
    assert kernels.num_splits(131072, 8, programs_per_sm=2) == 32
    bf16 = kernels.DecodeWorkspace(1, 8, 4, 128, 2048, cpu, kv_dtype="bf16")
    fp8 = kernels.DecodeWorkspace(1, 8, 4, 128, 2048, cpu, kv_dtype="fp8")
    blocks = kernels.DECODE_LAUNCH["fp8"]["BLOCK_N"] // kernels.DECODE_LAUNCH["bf16"]["BLOCK_N"]
    assert bf16.splits == 16 and fp8.splits == 16 // blocks
    duo = kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu, busy_heads=4)
    assert duo.splits == 128 and duo.acc.numel() == 8 * 128 * duo.g_pad * 128
    assert kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu, splits=32).splits == 32
    assert kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu, splits=48).splits == 48
    # a two-group layer's ring (sink + recent) takes one program a head; a long window its share of the splits
    ring = kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu, busy_heads=4, group_keys=(131072, 320))
    assert ring.group_splits == (ring.splits, 1)
    assert kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu, busy_heads=4, splits=64,
                                   group_keys=(8320, 131072)).group_splits == (5, 64)
    assert kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu).group_splits is None
    with pytest.raises(ValueError, match="from 1 to 256"):
        kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu, splits=300)


def test_the_two_group_kernel_takes_its_own_launch_where_one_is_set(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delitem(kernels.DECODE_LAUNCH, "fp8-two")
    assert kernels.launch_key("fp8", two_groups=True) == "fp8"  # no entry of its own: the dtype's
    monkeypatch.setitem(kernels.DECODE_LAUNCH, "fp8-two", dict(BLOCK_N=64, num_warps=4, num_stages=3))
    monkeypatch.setitem(kernels.DECODE_PROGRAMS_PER_SM, "fp8-two", 1)
    monkeypatch.setitem(kernels.DECODE_PROGRAMS_PER_SM, "fp8", 4)
    assert kernels.launch_key("fp8", two_groups=True) == "fp8-two" and kernels.launch_key("fp8") == "fp8"
    two = kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu, busy_heads=4, kv_dtype="fp8", two_groups=True)
    one = kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu, busy_heads=4, kv_dtype="fp8")
    assert two.splits == 33 and one.splits == 128  # 132 / 4 busy heads, exact for the two-group kernel


def test_short_caches_take_fewer_splits_with_more_key_blocks_each(monkeypatch):
    """kernels.MIN_SPLIT_BLOCKS bounds the split count of a short cache only: sedpa-w's 8K window (8256 keys, 4
    busy heads, 5 programs an SM, exact) takes 64 splits of two 64-key blocks by default and 16 of eight at 8;
    at 128K the GPU-filling count is unchanged. The workspace is sized by it."""
    assert kernels.num_splits(8256, 4, programs_per_sm=5, rounding="exact") == 64
    assert kernels.num_splits(131072, 4, programs_per_sm=5, rounding="exact") == 165
    monkeypatch.setattr(kernels, "MIN_SPLIT_BLOCKS", 8)
    assert kernels.num_splits(8256, 4, programs_per_sm=5, rounding="exact") == 16
    assert kernels.num_splits(8256, 4, programs_per_sm=5, rounding="nearest") == 16
    assert kernels.num_splits(131072, 4, programs_per_sm=5, rounding="exact") == 165
    ws = kernels.DecodeWorkspace(1, 8, 4, 128, 8256, torch.device("cpu"), busy_heads=4, group_keys=(8256, 320))
    assert ws.splits == 16 and ws.group_splits == (16, 1)


def test_the_merge_takes_narrower_column_blocks_when_asked(monkeypatch):
    """kernels.REDUCE_DB caps the merge's head_dim columns a program (more programs, each loading less), never
    widens them, keeps the uncapped launch for a head_dim the width does not tile, and refuses a width that is
    not a power of two. 16 is the default (launch sweep 7)."""
    assert kernels.REDUCE_DB == 16
    monkeypatch.setattr(kernels, "REDUCE_DB", None)
    assert kernels._reduce_launch(64, 128) == dict(SPLITS_P2=64, SB=64, DB=128, num_warps=8)
    monkeypatch.setattr(kernels, "REDUCE_DB", 16)
    assert kernels._reduce_launch(64, 72) == dict(SPLITS_P2=64, SB=64, DB=72, num_warps=8)
    assert kernels._reduce_launch(64, 128) == dict(SPLITS_P2=64, SB=64, DB=16, num_warps=4)
    assert kernels._reduce_launch(256, 128) == dict(SPLITS_P2=256, SB=256, DB=16, num_warps=8)
    monkeypatch.setattr(kernels, "REDUCE_DB", 64)
    assert kernels._reduce_launch(256, 128)["DB"] == 32  # already narrower: unchanged
    monkeypatch.setattr(kernels, "REDUCE_DB", 24)
    with pytest.raises(ValueError, match="REDUCE_DB=24: use a power of two"):
        kernels._reduce_launch(64, 128)


def test_split_counts_round_to_the_nearest_power_of_two_or_the_exact_count(monkeypatch):
    """A two-group layer with 5 or 6 busy heads at 2 programs an SM wants 53 or 44 splits: nearest rounding gives
    64 and 32 (320 and 192 programs for a 264 target), flooring gave 32 to both (160 for 5 heads), the exact
    rule 53 and 44."""
    assert kernels.num_splits(131072, 5, programs_per_sm=2) == 64
    assert kernels.num_splits(131072, 6, programs_per_sm=2) == 32
    assert kernels.num_splits(131072, 3, programs_per_sm=2) == 64
    assert kernels.num_splits(2048, 5, programs_per_sm=2) == 16  # still >= 2 key blocks a split
    monkeypatch.setattr(kernels, "SPLIT_ROUNDING", "floor")
    assert kernels.num_splits(131072, 5, programs_per_sm=2) == 32
    assert kernels.num_splits(131072, 8) == 64 and kernels.num_splits(131072, 4) == 128
    monkeypatch.setattr(kernels, "SPLIT_ROUNDING", "exact")
    assert [kernels.num_splits(131072, n, programs_per_sm=2) for n in (2, 3, 5, 6)] == [132, 88, 53, 44]
    assert kernels.num_splits(2048, 5, programs_per_sm=2) == 16 and kernels.num_splits(131072, 1) == 256
    monkeypatch.setattr(kernels, "REDUCE_DB", None)  # the merge's own sizing (REDUCE_DB caps it: the test below)
    assert kernels._reduce_launch(53, 128) == dict(SPLITS_P2=64, SB=64, DB=128, num_warps=8)
    assert kernels._reduce_launch(1, 128)["SPLITS_P2"] == 1
    # above 64 splits every split in one pass over a block of head_dim, the 64 x 128 tile's registers
    assert kernels._reduce_launch(99, 128) == dict(SPLITS_P2=128, SB=128, DB=64, num_warps=8)
    assert kernels._reduce_launch(132, 128) == dict(SPLITS_P2=256, SB=256, DB=32, num_warps=8)
    monkeypatch.setattr(kernels, "REDUCE_ONE_PASS", False)
    assert kernels._reduce_launch(132, 128) == dict(SPLITS_P2=256, SB=64, DB=128, num_warps=8)


def test_split_rounding_is_exact_for_the_two_group_kernels_alone():
    """Timed in the whole duo step (bench/results/decode_launch_sweep2_h200.json), the exact split count
    stands for the two-group kernels; full attention's one-group kernel keeps the power of two it was timed
    with. A string still sets every kernel's rule (the sweep's --rounding)."""
    cpu = torch.device("cpu")
    assert kernels.split_rounding("bf16") == "nearest" and kernels.split_rounding("bf16-two") == "exact"
    assert kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu).splits == 64  # 4 programs an SM: 66 exact
    two = kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu, busy_heads=5, group_keys=(131072, 320))
    assert two.splits == round(kernels.DECODE_PROGRAMS_PER_SM["bf16-two"] * kernels.SMS / 5)


def test_the_two_group_kernel_takes_two_loops_for_strides_past_int32(monkeypatch):
    """The JIT types an integer argument int64 from 2^31 on, and the one-loop two-group kernel assigns both groups'
    strides to one variable, which Triton refuses to compile for int64 and int32 (the ring's) together: the
    launcher keeps such caches (the longest contexts) on two loops, and everything else on one."""
    launched = []

    class Kernel:  # stands in for the Triton kernel: records the launch's ONE_LOOP
        def __getitem__(self, grid):
            return lambda *args, **kw: launched.append(kw["ONE_LOOP"])

    monkeypatch.setattr(kernels, "_decode_partial2", Kernel(), raising=False)
    monkeypatch.setattr(kernels, "_merge_launch", lambda *a: None)
    monkeypatch.setattr(kernels, "TWO_GROUP_ONE_LOOP", True)
    q = torch.zeros(1, 8, 4, 128)
    k1, k2 = torch.zeros(1, 4, 1024, 128), torch.zeros(1, 4, 64, 128)
    n1, n2 = torch.tensor([1024]), torch.tensor([64])
    for big in (False, True):
        g1 = huge_batch_stride(k1) if big else k1
        kernels._triton_decode2(q, [(g1, g1, n1, None, None), (k2, k2, n2, None, None)], 0.1)
    assert launched == [True, False]
    assert not kernels.one_loop_fits([2**31])
    monkeypatch.setattr(kernels, "TWO_GROUP_ONE_LOOP", False)
    assert not kernels.one_loop_fits([1])


@pytest.mark.parametrize("fp8", [False, True])
def test_two_loops_compile_for_int64_strides_where_one_loop_does_not(fp8):
    """The reason for the rule above, on Triton itself: compiled ahead of time for sm_90 (no GPU needed), the
    two-group kernel with int64 retrieval-cache strides and int32 ring strides compiles with a loop per group and
    not with one loop. Should a Triton accept the second, the rule can go."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = kernels._decode_partial2
    consts = dict(G=4, G_PAD=16, D=128, BLOCK_N=64, SPLITS=99, S1=99, S2=1, FP8=fp8, GDC=False)
    cache, scales = ("*u8", "*bf16") if fp8 else ("*bf16", "*i64")  # bf16 caches pass the lengths as scales
    pointers = dict(Q="*bf16", K1=cache, V1=cache, LEN1="*i64", KS1=scales, VS1=scales, K2=cache, V2=cache,
                    LEN2="*i64", KS2=scales, VS2=scales, ACC="*fp32", M="*fp32", L="*fp32")
    wide = {"s1kb", "s1vb"}  # the retrieval cache's batch strides, past 2^31

    def compile_with(one_loop: bool):
        sig = {name: "constexpr" if name in consts or name == "ONE_LOOP" else pointers.get(name) or
               ("fp32" if name == "scale" else "i64" if name in wide else "i32") for name in fn.arg_names}
        return triton.compile(ASTSource(fn, sig, constexprs=dict(consts, ONE_LOOP=one_loop)),
                              target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, num_stages=2))

    compile_with(False)
    with pytest.raises(Exception, match="Mismatched type"):
        compile_with(True)


def test_the_shipped_launch_table_is_the_probe_s_choice():
    """The H200 probe (bench/results/decode_kernel_probe_h200.json) found half the splits best for fp8's one-group
    kernel (full fp8: 32 of 8 heads; full bf16 keeps 64); the whole duo step, with the two-group kernel's one
    attention loop, 5 programs an SM for bf16 and 6 for fp8 with exact split counts
    (bench/results/decode_launch_sweep4_h200.json): 4 busy heads at 128K get 165 and 198 splits."""
    cpu = torch.device("cpu")
    two = {dt: kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu, busy_heads=4, kv_dtype=dt, two_groups=True)
           for dt in ("bf16", "fp8")}
    one = {dt: kernels.DecodeWorkspace(1, 8, 4, 128, 131072, cpu, kv_dtype=dt) for dt in ("bf16", "fp8")}
    assert kernels.TWO_GROUP_ONE_LOOP
    assert two["bf16"].splits == 165 and two["fp8"].splits == 198
    assert one["bf16"].splits == 64 and one["fp8"].splits == 32
    assert kernels.DECODE_LAUNCH["fp8-two"]["num_stages"] == 2 and kernels.DECODE_LAUNCH["fp8"]["num_stages"] == 3
