"""`sedpa identify-heads`, `sedpa heads show`, `sedpa heads probe` through the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sedpa_compress.cli import app
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.heads.probe import probe_conditions, ProbeConfig, ranked_heads

from conftest import build_tiny, random_pattern

runner = CliRunner()
SMALL = ["--sink", "4", "--recent", "16", "--context-min", "600", "--context-max", "700", "--num-passkeys", "2",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny("llama", tmp_path_factory.mktemp("m") / "model", max_pos=1024)


def invoke(args):
    return runner.invoke(app, args, catch_exceptions=False)


def test_identify_then_show(model_dir, tmp_path):
    out = tmp_path / "tiny.pattern.json"
    r = invoke(["identify-heads", "--model", str(model_dir), "--steps", "2", "--out", str(out), *SMALL])
    assert r.exit_code == 0, r.output
    pattern = HeadPattern.load(out)
    assert pattern.num_layers == 2 and pattern.num_kv_heads == 2
    r = invoke(["heads", "show", str(out), "--retrieval-ratio", "0.25", "--save", str(tmp_path / "q.pattern.json")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "tiny.pattern.png").stat().st_size > 1000
    assert "token-selection layers from these gates: 1" in r.output  # 2 layers: selection after the first alone
    assert HeadPattern.load(tmp_path / "q.pattern.json").actual_retrieval_ratio == 0.25
    # --resume after a finished run continues from the last checkpoint: nothing left to train
    r = invoke(["identify-heads", "--model", str(model_dir), "--steps", "2", "--out", str(out), "--resume", *SMALL])
    assert r.exit_code == 0 and "resumed from step 2" in r.output


def test_bad_recipe_exits_2_with_the_field_named(model_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stepz: 3\n")
    r = invoke(["identify-heads", "--model", str(model_dir), "--recipe", str(recipe)])
    assert r.exit_code == 2 and "stepz" in r.output


def test_probe_writes_json_and_png(model_dir, tmp_path):
    from sedpa_compress.models import load_model

    geom = load_model(str(model_dir)).geometry
    pattern_path = tmp_path / "p.pattern.json"
    random_pattern(geom, sink=4, recent=16).save(pattern_path)
    out = tmp_path / "probe.json"
    r = invoke(["heads", "probe", "--model", str(model_dir), "--pattern", str(pattern_path), "--k", "1",
                "--contexts", "200", "--depths", "0.5", "--samples", "1", "--random-trials", "2",
                "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    assert result["benchmark"] == "probe" and out.with_suffix(".png").is_file()
    assert set(result["summary"]) == {"full", "streaming", "top-1", "bottom-1", "random-1", "duo", "random-duo"}
    assert result["summary"]["random-1"]["n"] == 2 and result["summary"]["random-1"]["trials"] == 2
    assert {"top_k_drop_points", "bottom_k_drop_points", "duo_minus_random_duo_points"} <= set(result["findings"])
    assert all({"mode", "context", "depth", "accuracy"} <= set(row) for row in result["rows"])


def test_probe_arms_force_the_right_heads():
    from sedpa_compress.models.families import AttentionGeometry

    geom = AttentionGeometry(num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8, hidden_size=32,
                             max_position_embeddings=512)
    pattern = random_pattern(geom, ratio=0.5)
    ranked = ranked_heads(pattern)
    arms = {(c, t): p for c, _, t, p in probe_conditions(pattern, ProbeConfig(k=2, random_trials=2))}
    streaming = lambda p: {(li, h) for li, row in enumerate(p.mask) for h, m in enumerate(row) if not m}  # noqa: E731
    assert streaming(arms[("top-2", 0)]) == set(ranked[:2])
    assert streaming(arms[("bottom-2", 0)]) == set(ranked[-2:])
    assert len(streaming(arms[("random-2", 1)])) == 2
    assert arms[("duo", 0)].mask == pattern.mask
    assert arms[("random-duo", 0)].actual_retrieval_ratio == pattern.actual_retrieval_ratio
    assert arms[("full", 0)] is None


def test_probe_refuses_k_larger_than_the_heads(model_dir, tmp_path):
    from sedpa_compress.models import load_model

    pattern_path = tmp_path / "p.pattern.json"
    random_pattern(load_model(str(model_dir)).geometry).save(pattern_path)
    r = invoke(["heads", "probe", "--model", str(model_dir), "--pattern", str(pattern_path), "--k", "9",
                "--device", "cpu"])
    assert r.exit_code == 2 and "--k 9" in r.output
