"""The runtime's single mode table, its refusals, the fast model's one owner, TidalDecode's
per-KV-head selection, FlexAttention block masks built without compiling, and the benchmarks'
fast-runtime path pinned to the reference path in every mode (run on the CPU here; on CUDA the
benchmarks take the fast path)."""

from __future__ import annotations

import pytest
import torch

from conftest import build_tiny, random_pattern
from sedpa_compress.bench import common
from sedpa_compress.errors import SedpaError
from sedpa_compress.models import load_model
from sedpa_compress.runtime import kernels
from sedpa_compress.runtime.cache import ring_positions
from sedpa_compress.runtime.generate import fast_model
from sedpa_compress.runtime.model import FastModel, RuntimeSpec
from sedpa_compress.runtime.modes import MODE_NAMES, build_mode, check_mode
from sedpa_compress.runtime.modes.table import DEFAULTS, MODES
from sedpa_compress.runtime.modes.tidal import TidalAttention, group_selection_scores
from sedpa_compress.runtime.runner import spec_for_mode

SINK, RECENT, WINDOW = 4, 16, 40


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny("llama", tmp_path_factory.mktemp("llama") / "model", layers=4)
    loaded = load_model(str(path), dtype="float32")
    return loaded, random_pattern(loaded.geometry, ratio=0.5, sink=SINK, recent=RECENT)


def test_one_table_names_every_mode_and_unknown_names_are_refused():
    assert MODE_NAMES == ("full", "streaming", "duo", "sedpa-s", "sedpa-w", "tidal")
    assert [n for n, m in MODES.items() if m.needs_pattern] == ["duo", "sedpa-s", "sedpa-w"]
    assert RuntimeSpec().sink == DEFAULTS.sink and RuntimeSpec().top_k == DEFAULTS.top_k
    with pytest.raises(SedpaError, match="unknown --attention 'fulll'"):
        check_mode("fulll")
    with pytest.raises(SedpaError, match="choose from full,streaming"):
        RuntimeSpec(mode="dou").check(4)

    class Impostor:  # a mode object whose name the table does not know is never run as full attention
        name = "quantum"

    with pytest.raises(SedpaError, match="unknown --attention 'quantum'"):
        spec_for_mode(Impostor(), 4)
    with pytest.raises(SedpaError, match="not an attention mode"):
        spec_for_mode(object(), 4)
    assert spec_for_mode(None, 4).mode == "full"


def test_fast_model_has_one_owner_and_is_rebuilt_only_for_another_spec(tiny):
    loaded, pattern = tiny
    a = fast_model(loaded, RuntimeSpec(mode="full"))
    assert fast_model(loaded, RuntimeSpec(mode="full")) is a and loaded.fast is a
    b = fast_model(loaded, RuntimeSpec(mode="duo", pattern=pattern, sink=SINK, recent=RECENT))
    assert b is not a and loaded.fast is b  # the previous one is no longer held


def test_consumed_weights_refuse_another_mode(tmp_path):
    loaded = load_model(str(build_tiny("llama", tmp_path / "m", layers=2)), dtype="float32")
    fast_model(loaded, RuntimeSpec(mode="full"), consume=True)
    assert loaded.consumed
    with pytest.raises(SedpaError, match="load the model again"):
        fast_model(loaded, RuntimeSpec(mode="streaming", sink=SINK, recent=RECENT))


def test_streaming_heads_without_factors_run_dense_and_say_so(tiny):
    """sedpa-s over weights that have no factors for the pattern's streaming heads: their dense rows,
    a note, and no identity factors (which would read more bytes than the dense rows)."""
    loaded, pattern = tiny
    model = FastModel(loaded, RuntimeSpec(mode="sedpa-s", pattern=pattern, sink=SINK, recent=RECENT))
    assert all(layer.lowrank is None and layer.o_down is None for layer in model.layers)
    assert model.notes and "run dense" in model.notes[0]
    duo = FastModel(loaded, RuntimeSpec(mode="duo", pattern=pattern, sink=SINK, recent=RECENT))
    assert model.weight_bytes() == duo.weight_bytes()


def test_tidal_selects_positions_per_kv_head():
    """Each KV head keeps the positions its own query heads attend to most (summed over the GQA group)."""
    torch.manual_seed(0)
    b, hkv, g, d, t = 1, 2, 3, 16, 50
    key = torch.randn(b, hkv, t, d)
    query = torch.zeros(b, hkv * g, 1, d)
    query[:, :g, 0] = key[:, 0, 7] * 4  # head 0's group looks at position 7, head 1's at position 31
    query[:, g:, 0] = key[:, 1, 31] * 4
    scores = group_selection_scores(query, key, torch.ones(b, t, dtype=torch.bool), d ** -0.5)
    assert scores.shape == (b, hkv, t)
    top = scores.topk(1, dim=-1).indices[0, :, 0].tolist()
    assert top == [7, 31]
    mode = TidalAttention(top_k=1, dense_layers=0, selection_layers=(0,), num_layers=2)
    mode.attend(0, query, key, key, None, d ** -0.5)
    assert mode._index[0, :, 0].tolist() == [7, 31]
    out = mode.attend(1, query, key, key, None, d ** -0.5)  # a sparse layer: head h reads only its position
    assert torch.allclose(out[0, :g, 0], key[0, 0, 7].expand(g, d)) and torch.allclose(out[0, g:, 0],
                                                                                     key[0, 1, 31].expand(g, d))


def test_indexed_decode_kernel_reference_takes_one_list_per_head():
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 30, 8), torch.randn(1, 2, 30, 8)
    idx = torch.stack([torch.arange(0, 10), torch.arange(20, 30)])[None]  # [b, hkv, n]
    got = kernels.decode_attention_ref(q, k, v, torch.tensor([10]), 0.3, index=idx)
    for h, lo in ((0, 0), (1, 20)):
        want = kernels.decode_attention_ref(q[:, h:h + 1], k[:, h:h + 1, lo:lo + 10], v[:, h:h + 1, lo:lo + 10],
                                            torch.tensor([10]), 0.3)
        assert torch.allclose(got[:, h:h + 1], want, atol=1e-6)


@pytest.mark.parametrize("start,band,sink,tq", [(0, 64, 16, 512), (3000, 64, 16, 512), (3000, 1024, 16, 300),
                                                (700, 200, 0, 256), (130, 5000, 4, 1000)])
def test_band_block_mask_is_built_exactly_without_compiling(start, band, sink, tq):
    """Every visible (query, key) pair lies in a computed block, no block without one is computed, and
    a block marked full (mask_mod skipped) has every pair visible."""
    q_pos = torch.arange(start, start + tq)
    k_pos = torch.cat([ring_positions(start, sink, band), q_pos])
    bm = kernels.band_block_mask(q_pos, k_pos, sink, band)
    pad = torch.nn.functional.pad
    qp, kp = pad(q_pos, (0, kernels._pad_to(tq)), value=-1), pad(k_pos, (0, kernels._pad_to(k_pos.numel())), value=-1)
    dist = qp[:, None] - kp[None, :]
    vis = (kp[None] >= 0) & (qp[:, None] >= 0) & (dist >= 0) & ((kp[None] < sink) | (dist < band))
    blk = kernels.FLEX_BLOCK
    nq, nk = qp.numel() // blk, kp.numel() // blk
    some = vis.view(nq, blk, nk, blk).any(-1).any(1)
    every = vis.view(nq, blk, nk, blk).all(-1).all(1)
    computed = bm.to_dense()[0, 0].bool()
    assert torch.equal(computed, some)
    full = torch.zeros(nq, nk, dtype=torch.bool)
    for i in range(nq):
        full[i, bm.full_kv_indices[0, 0, i, :bm.full_kv_num_blocks[0, 0, i]].long()] = True
    assert torch.equal(full, every & some)


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_benchmarks_fast_path_matches_the_reference_path(tiny, mode, monkeypatch, tmp_path):
    """`bench ppl` / `bench niah` on CUDA run the fast runtime: pinned here to the reference path
    (per-token NLL with a decode tail, and greedy tokens), in every mode."""
    loaded, pattern = tiny
    if mode in ("sedpa-s", "sedpa-w"):
        loaded, pattern = _artifact(tmp_path, pattern)
    kw = dict(pattern=pattern, sink=SINK, recent=RECENT, window=WINDOW if mode == "sedpa-w" else None)
    if mode == "tidal":
        kw = dict(top_k=12, dense_layers=1, num_layers=loaded.geometry.num_layers)
    m = None if mode == "full" else build_mode(mode, **kw)
    ids = torch.randint(0, 300, (90,), generator=torch.Generator().manual_seed(3)).tolist()
    want_nll = common.token_nll(loaded, ids, m, chunk=32, decode_tail=6)
    want_tokens = common.greedy_generate(loaded, ids[:70], m, 6, chunk=32)
    monkeypatch.setattr(common, "runs_fast", lambda _loaded: True)
    got_nll = common.token_nll(loaded, ids, m, chunk=32, decode_tail=6)
    got_tokens = common.greedy_generate(loaded, ids[:70], m, 6, chunk=32)
    assert got_nll.shape == want_nll.shape == (89,)
    assert torch.allclose(got_nll, want_nll, atol=2e-4, rtol=1e-4)
    assert got_tokens == want_tokens


def _artifact(tmp_path, pattern):
    from sedpa_compress.calibration.stats import CalibrateConfig
    from sedpa_compress.svd.compress import CompressConfig
    from sedpa_compress.svd.run import CompressJob, run_compress

    plain = load_model(str(build_tiny("llama", tmp_path / "m", layers=4)), dtype="float32")
    pattern.save(tmp_path / "p.pattern.json")
    job = CompressJob(out=tmp_path / "art", pattern=tmp_path / "p.pattern.json", compress=CompressConfig(rank_ratio=0.6),
                      calibrate=CalibrateConfig(tokens=1024, seq_len=128), ppl_windows=1, ppl_seq_len=64)
    run_compress(plain, job, show_progress=False)
    from sedpa_compress.runtime.session import pattern_for

    art = load_model(str(tmp_path / "art"), dtype="float32")
    return art, pattern_for(art, None)


def test_reference_generation_times_its_decode_between_the_first_and_last_token():
    """generate's reference path measures tokens/s from the times its new tokens were ready (a stopping
    criterion that never stops), not as generate's time less a separately timed prefill, which a busy machine
    made negative (5e9 tokens/s in a CI log); one new token has no rate."""
    from sedpa_compress.runtime.generate import GenerateResult, _TokenClock

    clock = _TokenClock()
    ids = torch.zeros(1, 3, dtype=torch.long)
    assert not clock(ids, torch.zeros(1, 5)).any()
    clock.times = [10.0, 10.5, 11.0, 11.5]
    assert clock.decode_s(4) == pytest.approx(2.0)  # 0.5 s a token, 4 tokens
    assert GenerateResult("", 1, 4, 0.1, clock.decode_s(4)).tokens_per_s == pytest.approx(2.0)
    clock.times = [10.0]
    one = GenerateResult("", 1, 1, 0.1, clock.decode_s(1)).tokens_per_s
    assert one != one  # NaN: the command prints n/a


@pytest.mark.parametrize("tq", [1, 7, 30])
def test_streaming_mask_of_a_left_padded_row_is_its_unpadded_mask_shifted(tq):
    """`streaming_mask(start=pad)` (the batched acceptance's mask): each row sees, within its own text, exactly what
    the unpadded mask of that text gives (the sink counted from its first real token), and never its padding."""
    from sedpa_compress.runtime.reference import streaming_mask

    tk, sink, recent = 30, 3, 5
    pad = torch.tensor([0, 4, 11])
    batched = streaming_mask(tq, tk, sink, recent, torch.device("cpu"), start=pad)
    assert batched.shape == (3, tq, tk)
    for row, p in enumerate(pad.tolist()):
        own = streaming_mask(min(tq, tk - p), tk - p, sink, recent, torch.device("cpu"))
        assert torch.equal(batched[row, tq - own.shape[0]:, p:], own)
        assert not batched[row, :, :p].any()
    assert torch.equal(batched[0], streaming_mask(tq, tk, sink, recent, torch.device("cpu")))
