"""DuoAttention's pattern layout in and out: `sedpa heads import` / `heads export`, and `compress --pattern`
taking either format.

The fixture is a run folder in DuoAttention's published layout for Llama-3-8B's geometry (32 layers x
8 KV heads): `attn_patterns/<model>/<run>/full_attention_heads.tsv` (numpy savetxt, tab-separated, gates
that stray slightly below 0 as trained ones do, several exactly 1.0) and a `config.json` with the
training run's arguments. The gates are random, made here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_refused, build_tiny, random_pattern, invoke_cli
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.interop import duo_binarize, export_duo_pattern, import_duo_pattern
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models.loader import EMBEDDED_DIR
from sedpa_compress.models.geometry import model_geometry

sedpa, _err = invoke_cli, assert_refused


def duo_gates(layers: int, heads: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = rng.uniform(0, 1, (layers, heads))
    g[rng.random((layers, heads)) < 0.25] = rng.uniform(-3e-4, 0, 1)  # trained gates end just below 0
    g[0, -1] = g[-1, 0] = 1.0
    return g


def write_duo_run(root, gates: np.ndarray, *, model="Llama-3-8B-Instruct-Gradient-1048k", sink=128, recent=256,
                  extra: dict | None = None):
    run = root / "attn_patterns" / model / "lr=0.02-reg=0.05-ctx=1000_32000-multi_passkey10"
    run.mkdir(parents=True)
    np.savetxt(run / "full_attention_heads.tsv", gates, delimiter="\t")
    cfg = {"model_name": f"models/{model}", "lr": 0.02, "num_steps": 2000, "reg_weight": 0.05,
           "context_length_min": 1000, "context_length_max": 32000, "num_passkeys": 10, "sink_size": sink,
           "recent_size": recent, "threshold": 0.5, "sparsity": None, "seed": 42, **(extra or {})}
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def numpy_duo_mask(gates: np.ndarray, ratio: float) -> np.ndarray:
    """DuoAttention's evaluation rule, written out: clip, numpy seed 42, noise below 1e-6, >= the
    (1 - ratio)-quantile of the noised gates."""
    np.random.seed(42)
    noised = np.clip(gates, 0, 1) + np.random.uniform(0, 1e-6, gates.shape)
    return (noised >= np.quantile(noised, 1 - ratio)).astype(int)


@pytest.fixture
def llama3_run(tmp_path):
    gates = duo_gates(32, 8)
    return write_duo_run(tmp_path, gates), gates


def test_import_a_llama3_8b_pattern_by_geometry(llama3_run, tmp_path):
    run, gates = llama3_run
    out = tmp_path / "llama3.pattern.json"
    r = sedpa("heads", "import", run, "--config", "llama-3-8b", "--random-weights", "--out", out)
    assert r.exit_code == 0, r.output
    p = HeadPattern.load(out)
    assert (p.num_layers, p.num_kv_heads) == (32, 8)
    assert (p.sink, p.recent) == (128, 256)  # from config.json
    assert np.allclose(p.gates, np.clip(gates, 0, 1), atol=0, rtol=0)  # clipped to [0, 1] as DuoAttention loads them
    assert min(map(min, p.gates)) == 0.0
    # no flag, no sparsity in the config: DuoAttention's default sparsity 0.5 -> 128 of 256 heads
    assert sum(map(sum, p.mask)) == 128 and p.retrieval_ratio == 0.5
    assert p.training["imported_from"]["config"]["reg_weight"] == 0.05
    assert "128/256 retrieval heads" in r.output
    # the parent folder attn_patterns/<model>/ with a single run finds that run
    r = sedpa("heads", "import", run.parent, "--config", "llama-3-8b", "--out", tmp_path / "b.pattern.json")
    assert r.exit_code == 0, r.output
    assert HeadPattern.load(tmp_path / "b.pattern.json").mask == p.mask


@pytest.mark.parametrize("ratio", [0.5, 0.3, 0.25, 0.7, 0.1])
def test_ratio_binarisation_is_duoattentions_quantile(llama3_run, ratio):
    run, gates = llama3_run
    p = import_duo_pattern(run, retrieval_ratio=ratio)
    assert np.array_equal(np.array(p.mask), numpy_duo_mask(gates, ratio))


def test_threshold_binarisation(llama3_run, tmp_path):
    run, gates = llama3_run
    out = tmp_path / "t.pattern.json"
    r = sedpa("heads", "import", run, "--config", "llama-3-8b", "--threshold", 0.6, "--out", out)
    assert r.exit_code == 0, r.output
    p = HeadPattern.load(out)
    assert np.array_equal(np.array(p.mask), (np.clip(gates, 0, 1) >= 0.6).astype(int))
    assert p.threshold == 0.6 and p.retrieval_ratio is None


def test_ties_are_broken_as_duoattention_breaks_them(tmp_path):
    # bf16 gates, as published: few distinct values, many exactly 1.0, so the noise picks among ties
    rng = np.random.default_rng(5)
    gates = np.round(rng.uniform(0, 1, (32, 8)) * 8) / 8
    gates[rng.random((32, 8)) < 0.35] = 1.0
    assert len(np.unique(gates)) <= 9 and (gates == 1.0).sum() > 64
    run = write_duo_run(tmp_path, gates)
    for ratio in (0.5, 0.25):
        mask = np.array(import_duo_pattern(run, retrieval_ratio=ratio).mask)
        assert np.array_equal(mask, numpy_duo_mask(gates, ratio))
        assert mask.sum() == round(ratio * 256)  # the noise makes the quantile cut exact
    # ratio 0 and 1: none and all, as DuoAttention's thresholds 2 and -1
    assert duo_binarize([[0.2, 1.0]], retrieval_ratio=0.0) == [[0, 0]]
    assert duo_binarize([[0.0, 1.0]], retrieval_ratio=1.0) == [[1, 1]]
    with pytest.raises(SedpaError, match="outside"):
        duo_binarize([[0.5]], retrieval_ratio=1.5)


def test_wrong_geometry_is_refused(llama3_run, tmp_path):
    run, _ = llama3_run
    _err(sedpa("heads", "import", run, "--config", "llama-3.2-1b", "--out", tmp_path / "x.pattern.json"),
         "has 32 layers x 8 KV heads but the model has 16 x 8: this pattern was trained for another model")
    _err(sedpa("heads", "import", run, "--config", "llama-2-7b", "--out", tmp_path / "x.pattern.json"),
         "but the model has 32 x 32")
    assert not (tmp_path / "x.pattern.json").exists()
    tiny = build_tiny("llama", tmp_path / "tiny")
    r = sedpa("compress", "--model", tiny, "--pattern", run, "--no-ppl", "--out", tmp_path / "art", "--device", "cpu")
    _err(r, "has 32 layers x 8 KV heads but the model has 2 x 2")


def test_round_trip_tsv_to_sedpa_to_tsv(llama3_run, tmp_path):
    run, gates = llama3_run
    sedpa_file = tmp_path / "p.pattern.json"
    assert sedpa("heads", "import", run, "--config", "llama-3-8b", "--out", sedpa_file).exit_code == 0
    back = tmp_path / "back"
    r = sedpa("heads", "export", sedpa_file, "--format", "duo-attention", back)
    assert r.exit_code == 0, r.output
    exported = np.loadtxt(back / "full_attention_heads.tsv", delimiter="\t")
    assert exported.shape == (32, 8) and np.array_equal(exported, np.clip(gates, 0, 1))
    cfg = json.loads((back / "config.json").read_text())
    assert (cfg["sink_size"], cfg["recent_size"], cfg["sparsity"]) == (128, 256, 0.5)
    # and back in: the same pattern
    again = import_duo_pattern(back, model_geometry(config="llama-3-8b")[1])
    first = HeadPattern.load(sedpa_file)
    assert again.gates == first.gates and again.mask == first.mask and (again.sink, again.recent) == (128, 256)
    # exporting onto an existing run folder is refused
    _err(sedpa("heads", "export", sedpa_file, "--format", "duo-attention", back), "already exists")
    _err(sedpa("heads", "export", sedpa_file, "--format", "csv", tmp_path / "c"), "--format 'csv': choose duo-attention")


def test_round_trip_sedpa_to_tsv_to_sedpa(tmp_path):
    tiny = build_tiny("llama", tmp_path / "tiny", layers=3)
    geometry = model_geometry(str(tiny))[1]
    for ratio in (0.5, 1 / 3, 2 / 3):
        p = random_pattern(geometry, ratio=ratio, seed=3, sink=4, recent=16)
        out = export_duo_pattern(p, tmp_path / f"duo{ratio:.2f}")
        q = import_duo_pattern(out, geometry)  # the exported sparsity binarises it back the same way
        assert q.gates == p.gates and q.mask == p.mask and (q.sink, q.recent) == (4, 16)


def test_compress_takes_either_format(tmp_path):
    tiny = build_tiny("llama", tmp_path / "tiny")
    geometry = model_geometry(str(tiny))[1]
    run = write_duo_run(tmp_path, duo_gates(geometry.num_layers, geometry.num_kv_heads, seed=1), model="tiny",
                        sink=4, recent=16)
    art = tmp_path / "art"
    r = sedpa("compress", "--model", tiny, "--pattern", run / "full_attention_heads.tsv", "--rank-ratio", 0.8,
              "--tokens", 512, "--seq-len", 64, "--no-ppl", "--retrieval-ratio", 0.5, "--out", art, "--device", "cpu")
    assert r.exit_code == 0, r.output
    shipped = HeadPattern.load(art / "sedpa_pattern.json")
    assert shipped.mask == import_duo_pattern(run, retrieval_ratio=0.5).mask and (shipped.sink, shipped.recent) == (4, 16)
    assert sum(map(sum, shipped.mask)) == 2  # 2 of 4 KV heads


def test_bad_duo_files(tmp_path):
    run = write_duo_run(tmp_path, duo_gates(4, 2))
    tsv = run / "full_attention_heads.tsv"
    tsv.write_text("0.1\t0.2\n0.3\n")
    with pytest.raises(SedpaError, match=r"full_attention_heads.tsv:2: 1 gates but the first row has 2"):
        import_duo_pattern(run)
    tsv.write_text("0.1\tabc\n")
    with pytest.raises(SedpaError, match="not tab-separated numbers"):
        import_duo_pattern(run)
    tsv.write_text("0.1\tnan\n")
    with pytest.raises(SedpaError, match="not finite"):
        import_duo_pattern(run)
    tsv.write_text("0.1\t0.9\n")
    (run / "config.json").unlink()
    with pytest.raises(SedpaError, match="no integer `sink_size`; pass --sink N"):
        import_duo_pattern(tsv)
    assert import_duo_pattern(tsv, sink=64, recent=256).mask == [[0, 1]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SedpaError, match="holds no full_attention_heads.tsv"):
        import_duo_pattern(tmp_path / "empty")
    two = tmp_path / "two"
    for name in ("r1", "r2"):
        (two / name).mkdir(parents=True)
        (two / name / "full_attention_heads.tsv").write_text("0.5\n")
    with pytest.raises(SedpaError, match="holds 2 DuoAttention runs"):
        import_duo_pattern(two)
    _err(sedpa("heads", "import", tmp_path / "missing", "--config", "llama-3-8b"), "does not exist")


def test_geometry_without_weights(tmp_path):
    name, g = model_geometry(config="llama-3-8b")
    assert (g.num_layers, g.num_kv_heads, g.num_heads) == (32, 8, 32) and name == "random:llama-3-8b"
    name, g = model_geometry(None)
    shipped = json.loads((EMBEDDED_DIR / "sedpa-tiny" / "config.json").read_text())  # the embedded model's own
    assert name == "sedpa-tiny" and (g.num_layers, g.num_kv_heads) == (shipped["num_hidden_layers"],
                                                                       shipped["num_key_value_heads"])
    with pytest.raises(SedpaError, match="either --model or --config"):
        model_geometry("sedpa-tiny", config="llama-3-8b")
    with pytest.raises(SedpaError, match="no such directory"):
        model_geometry("./not/here")
