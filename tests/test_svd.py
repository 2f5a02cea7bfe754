"""Activation-aware SVD, rank search and the dual path (issue 2)."""

from __future__ import annotations

import pytest
import torch

from conftest import build_tiny, random_pattern
from sedpa_compress.calibration.stats import CalibrateConfig, calibrate
from sedpa_compress.errors import SedpaError
from sedpa_compress.models import load_model
from sedpa_compress.svd.compress import CompressConfig, compress_model, plan_slices
from sedpa_compress.svd.factored import DualPathLinear
from sedpa_compress.svd.rank_search import (
    DENSE,
    Spectrum,
    budget,
    greedy_ranks,
    kept_params,
    relative_ranks,
    search_ranks,
    total_error,
    type_ranks,
    uniform_ranks,
)
from sedpa_compress.svd.whitening import candidate_factors, cholesky_factor, factors_at_rank

CAL = CalibrateConfig(tokens=4096, seq_len=256)


def _ids(n: int = 48, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 300, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def loaded_llama(tmp_path):
    return load_model(str(build_tiny("llama", tmp_path / "m")))


def test_rank_ratio_one_reproduces_logits(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))
    ref = loaded.model(_ids()).logits
    stats = calibrate(loaded, CAL, show_progress=False)
    report = compress_model(loaded, stats, None, CompressConfig(rank_ratio=1.0, scope="all"), show_progress=False)
    assert report.model_params_after == report.model_params_before
    assert torch.equal(loaded.model(_ids()).logits, ref)


def test_whitened_svd_beats_plain_svd_on_calibration_inputs():
    torch.manual_seed(0)
    # anisotropic activations, as real LLM hidden states are (a few outlier channels)
    scales = torch.ones(64)
    scales[:4] = 20.0
    x = torch.randn(4096, 64) * scales
    w = torch.randn(48, 64)
    c = x.T @ x / x.shape[0]
    chol = cholesky_factor(c)
    rank = 16
    errs = {}
    for name, L in (("whitened", chol), ("plain", None)):
        up, down = factors_at_rank(*candidate_factors(w, L, max_rank=rank), rank)
        errs[name] = ((x @ (w - up @ down).T) ** 2).sum().item()
    assert errs["whitened"] < 0.8 * errs["plain"]


def test_whitened_compression_has_lower_output_error_than_plain(tmp_path):
    from sedpa_compress.data.text import load_bundled_text

    path = build_tiny("llama", tmp_path / "m")
    errors = {}
    for whiten in (True, False):
        loaded = load_model(str(path))
        # inputs from the calibration distribution (the bundled text), not random ids
        ids = torch.tensor([loaded.encode(load_bundled_text("train")[:4000])[:256]])
        ref = loaded.model(ids).logits
        stats = calibrate(loaded, CAL, show_progress=False)
        compress_model(loaded, stats, None, CompressConfig(rank_ratio=0.85, scope="all", whiten=whiten),
                       show_progress=False)
        errors[whiten] = (loaded.model(ids).logits - ref).norm().item()
    assert errors[True] < 0.7 * errors[False]


PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "q_proj")


def _spectra(seed: int = 0) -> list[Spectrum]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (o, n) in enumerate([(64, 256), (32, 256), (32, 256), (256, 64), (128, 128)]):
        decay = torch.rand(1, generator=g).item() * 0.3 + 0.02
        sv = torch.exp(-decay * torch.arange(min(o, n), dtype=torch.float64)) * (1 + i)
        out.append(Spectrum(f"p{i}", o, n, sv, kind=PROJ[i]))
    return out


def _valid(spectra, ranks, min_rank=1):
    return all(r is DENSE or min(min_rank, s.max_rank) <= r <= s.max_rank for r, s in zip(ranks, spectra))


@pytest.mark.parametrize("ratio", [0.3, 0.6, 0.85, 0.95, 0.999])
def test_greedy_meets_budget_within_one_rank_and_beats_uniform(ratio):
    spectra = _spectra()
    ranks = greedy_ranks(spectra, ratio)
    used = kept_params(spectra, ranks)
    limit = budget(spectra, ratio)
    assert used <= limit
    assert limit - used < max(s.params_per_rank for s in spectra)  # within one rank of one projection
    assert _valid(spectra, ranks)
    uni = uniform_ranks(spectra, ratio)
    assert kept_params(spectra, uni) <= limit
    assert total_error(spectra, ranks) <= total_error(spectra, uni)


def test_every_factored_rank_saves_parameters():
    """Break-even is r·(m+n) >= m·n: a square 128x128 slice at rank 64 costs exactly its dense size."""
    for s in _spectra():
        assert s.max_rank * s.params_per_rank < s.dense_params <= (s.max_rank + 1) * s.params_per_rank
    assert Spectrum("sq", 128, 128, torch.ones(128)).max_rank == 63


def test_slices_at_break_even_stay_dense():
    """At --rank-ratio 0.999 only a few slices need to give up anything; the rest stay exact instead of
    all dropping their tails beyond break-even for no saving (a slice goes dense -> max_rank in one step)."""
    spectra = _spectra()
    ranks = greedy_ranks(spectra, 0.999)
    assert sum(r is DENSE for r in ranks) >= len(spectra) - 1
    assert total_error(spectra, ranks) < 0.05 * total_error(spectra, [s.max_rank for s in spectra])
    assert greedy_ranks(spectra, 1.0) == [DENSE] * len(spectra)
    # the first step of a slice is worth its whole tail: with a tail that costs a lot, the cheaper slices go first
    heavy = Spectrum("heavy", 64, 64, torch.ones(64, dtype=torch.float64))  # flat: its tail is half its energy
    light = Spectrum("light", 64, 64, torch.exp(-torch.arange(64, dtype=torch.float64)))
    r_heavy, r_light = greedy_ranks([heavy, light], 0.75)
    assert r_heavy is DENSE and r_light is not DENSE


def test_rank_zero_only_when_asked():
    """A slice whose singular values are negligible would be pruned to rank 0 (its head's q/k/v/o
    contribution gone, silently); the minimum rank keeps it, and min_rank=0 prunes on request."""
    spectra = _spectra()
    spectra.append(Spectrum("negligible", 64, 256, torch.full((64,), 1e-9, dtype=torch.float64), kind="v_proj"))
    for search in ("greedy", "relative", "type", "uniform"):
        ranks = search_ranks(spectra, 0.05, search)
        assert all(r is DENSE or r >= 1 for r in ranks), search
    assert search_ranks(spectra, 0.05, "greedy", min_rank=0)[-1] == 0
    assert all(r is DENSE or r >= 4 for r in search_ranks(spectra, 0.05, "greedy", min_rank=4))


@pytest.mark.parametrize("ratio", [0.3, 0.6, 0.85])
def test_scale_normalised_searches_meet_the_budget(ratio):
    spectra = _spectra()
    limit = budget(spectra, ratio)
    rel = relative_ranks(spectra, ratio)
    assert _valid(spectra, rel) and limit - max(s.params_per_rank for s in spectra) < kept_params(spectra, rel) <= limit
    typ = type_ranks(spectra, ratio)
    assert _valid(spectra, typ)
    for kind in set(PROJ):  # every projection type keeps the ratio on its own
        group = [(s, r) for s, r in zip(spectra, typ) if s.kind == kind]
        assert kept_params([s for s, _ in group], [r for _, r in group]) <= budget([s for s, _ in group], ratio)
    # relative error is what `relative` minimises: it beats greedy there, greedy beats it on absolute error
    rel_err = lambda rs: sum(s.error(r) / s.energy() for s, r in zip(spectra, rs))  # noqa: E731
    assert rel_err(rel) <= rel_err(greedy_ranks(spectra, ratio)) + 1e-12
    assert total_error(spectra, greedy_ranks(spectra, ratio)) <= total_error(spectra, rel) + 1e-12


def test_unknown_rank_search_is_refused():
    with pytest.raises(SedpaError, match="unknown --rank-search"):
        search_ranks(_spectra(), 0.5, "best")


def test_greedy_beats_uniform_on_a_real_model(loaded_llama):
    stats = calibrate(loaded_llama, CAL, show_progress=False)
    errs = {}
    for search in ("greedy", "uniform"):
        loaded = load_model(str(loaded_llama.path))
        report = compress_model(loaded, stats, None, CompressConfig(rank_ratio=0.6, scope="all", rank_search=search),
                                show_progress=False)
        errs[search] = report.total_error
        assert report.slice_params_after <= 0.6 * report.slice_params_before
    assert errs["greedy"] < errs["uniform"]


def test_rank_ratio_just_below_one_leaves_most_projections_exact(loaded_llama):
    """--rank-ratio 0.999 must be close to 1.0 (the model untouched), not every slice cut at break-even."""
    ids = _ids()
    ref = loaded_llama.model(ids).logits
    stats = calibrate(loaded_llama, CAL, show_progress=False)
    drift = {}
    for search in ("greedy", "uniform"):
        loaded = load_model(str(loaded_llama.path))
        report = compress_model(loaded, stats, None, CompressConfig(rank_ratio=0.999, scope="all", rank_search=search),
                                show_progress=False)
        assert report.slice_params_after <= 0.999 * report.slice_params_before
        drift[search] = (loaded.model(ids).logits - ref).norm().item()
        if search == "greedy":
            assert len(report.dense_slices) >= len(report.projections) - 1
            attns = loaded.family.attention_modules(loaded.model)
            assert all(not isinstance(getattr(attns[p.layer], p.proj), DualPathLinear)
                       for p in report.projections if p.rank is None)
    # uniform keeps 99.9% of every slice, i.e. cuts each at its break-even rank: far more drift
    assert drift["greedy"] < 0.5 * drift["uniform"]


def test_dual_path_keeps_retrieval_heads_bit_identical(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))
    pattern = random_pattern(loaded.geometry, ratio=0.5)
    attns = loaded.family.attention_modules(loaded.model)
    before = {(i, p): getattr(a, p).weight.detach().clone() for i, a in enumerate(attns)
              for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    biases = {(i, p): getattr(a, p).bias.detach().clone() for i, a in enumerate(attns)
              for p in ("q_proj", "k_proj", "v_proj") if getattr(a, p).bias is not None}
    stats = calibrate(loaded, CAL, show_progress=False)
    report = compress_model(loaded, stats, pattern, CompressConfig(rank_ratio=0.5), show_progress=False)
    assert report.projections  # something was factored
    g = loaded.geometry
    for layer, attn in enumerate(attns):
        for kv in pattern.retrieval_heads(layer):
            q_rows = torch.cat([torch.arange((kv * g.group_size + j) * g.head_dim, (kv * g.group_size + j + 1) * g.head_dim)
                                for j in range(g.group_size)])
            kv_rows = torch.arange(kv * g.head_dim, (kv + 1) * g.head_dim)
            for proj, rows, split in (("q_proj", q_rows, "rows"), ("k_proj", kv_rows, "rows"),
                                      ("v_proj", kv_rows, "rows"), ("o_proj", q_rows, "cols")):
                module = getattr(attn, proj)
                # a layer with no streaming head is left a plain Linear
                w = module.dense_equivalent() if isinstance(module, DualPathLinear) else module.weight
                orig = before[(layer, proj)]
                if split == "rows":
                    assert torch.equal(w[rows], orig[rows])
                else:
                    assert torch.equal(w[:, rows], orig[:, rows])
        for (lay, proj), bias in biases.items():
            if lay == layer:
                assert torch.equal(getattr(attn, proj).bias, bias)


def test_scope_streaming_without_pattern_is_refused(loaded_llama):
    with pytest.raises(SedpaError, match="needs a head pattern"):
        plan_slices(loaded_llama, None, "streaming")


def test_scope_all_factors_every_head(loaded_llama):
    slices = plan_slices(loaded_llama, None, "all")
    assert len(slices) == 4 * loaded_llama.geometry.num_layers
    assert all(s.dense_index.numel() == 0 for s in slices)


def test_cholesky_damps_singular_second_moments():
    x = torch.randn(8, 32)  # fewer samples than dimensions: singular
    chol = cholesky_factor(x.T @ x / 8)
    assert torch.isfinite(chol).all()


def test_min_rank_zero_prunes_and_reports_it(loaded_llama, monkeypatch):
    """An explicit prune (min_rank 0): the slice's factors are empty, its contribution zero, and the report says so."""
    import sedpa_compress.svd.compress as compress_module

    stats = calibrate(loaded_llama, CAL, show_progress=False)
    real = compress_module.search_ranks

    def prune_first(spectra, ratio, method, *, min_rank):
        ranks = real(spectra, ratio, method, min_rank=min_rank)
        return [0] + ranks[1:]

    monkeypatch.setattr(compress_module, "search_ranks", prune_first)
    report = compress_model(loaded_llama, stats, None, CompressConfig(rank_ratio=0.5, scope="all", min_rank=0),
                            show_progress=False)
    assert report.pruned_slices == [report.projections[0].name]
    module = getattr(loaded_llama.family.attention_modules(loaded_llama.model)[0], report.projections[0].proj)
    assert isinstance(module, DualPathLinear) and module.rank == 0
    assert torch.count_nonzero(module.dense_equivalent()) == 0
    assert torch.isfinite(loaded_llama.model(_ids()).logits).all()
