"""Identification recipes: YAML data, unknown fields refused by name, flags override."""

from __future__ import annotations

from pathlib import Path

import pytest

from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.config import IdentifyConfig, load_recipe, shipped_recipe_for

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("identify-*.yaml"))


def test_shipped_recipes_load():
    names = {p.name for p in RECIPES}
    assert {"identify-sedpa-tiny.yaml", "identify-llama-3-8b-1048k.yaml", "identify-llama-2-7b-32k.yaml",
            "identify-mistral-7b-v0.2.yaml", "identify-qwen2-7b.yaml"} <= names
    for path in RECIPES:
        cfg = load_recipe(path)
        assert cfg.context_min < cfg.context_max and cfg.steps > 0
    assert load_recipe(RECIPES[0].parent / "identify-llama-2-7b-32k.yaml").retrieval_ratio == 0.25  # MHA


def test_unknown_field_is_named(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("steps: 10\nlearning_rate: 0.1\n")
    with pytest.raises(SedpaError, match="unknown field.*learning_rate"):
        load_recipe(p)


def test_recipe_that_does_not_parse(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("steps: [10\n")
    with pytest.raises(SedpaError, match="does not parse"):
        load_recipe(p)


def test_wrong_kind_of_value(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("steps: many\n")
    with pytest.raises(SedpaError, match="`steps` must be an integer"):
        load_recipe(p)


def test_bad_values_are_refused(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("context_min: 5000\ncontext_max: 1000\n")
    with pytest.raises(SedpaError, match="context range"):
        load_recipe(p)
    with pytest.raises(SedpaError, match="recipe .* does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_flags_override_the_recipe(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("steps: 10\nlr: 0.1\nretrieval_ratio: 0.25\n")
    cfg = load_recipe(p).with_overrides(steps=3, lr=None, threshold=0.5)
    assert (cfg.steps, cfg.lr, cfg.threshold, cfg.retrieval_ratio) == (3, 0.1, 0.5, None)


def test_threshold_in_recipe_replaces_the_default_ratio(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("threshold: 0.6\n")
    cfg = load_recipe(p)
    assert cfg.threshold == 0.6 and cfg.retrieval_ratio is None


def test_defaults_follow_duoattention():
    cfg = IdentifyConfig()
    assert (cfg.lr, cfg.reg_weight, cfg.steps, cfg.context_min, cfg.context_max, cfg.num_passkeys) == \
        (0.02, 0.05, 2000, 1000, 32000, 10)
    # trained at sink 128 / recent 256, deployed at 64 / 256 (DuoAttention's published run)
    assert (cfg.sink, cfg.recent) == (128, 256)
    published = load_recipe(None)
    assert (published.sink, published.recent, published.pattern_sink, published.pattern_recent) == (128, 256, 64, 256)


def test_training_and_deployment_shapes_are_separate(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("sink: 16\nrecent: 64\n")
    cfg = load_recipe(p)  # no deploy_*: the pattern records what was trained
    assert (cfg.pattern_sink, cfg.pattern_recent) == (16, 64)
    p.write_text("sink: 128\nrecent: 256\ndeploy_sink: 64\ndeploy_recent: 256\n")
    cfg = load_recipe(p)
    assert (cfg.sink, cfg.recent, cfg.pattern_sink, cfg.pattern_recent) == (128, 256, 64, 256)
    # the deployed shape does not change the trained gates: a checkpoint stays valid across it
    assert cfg.fingerprint_fields() == cfg.with_overrides(deploy_sink=32).fingerprint_fields()
    for path in RECIPES:
        r = load_recipe(path)
        if r.sink == 128:
            assert (r.pattern_sink, r.pattern_recent) == (64, 256), path.name
    p.write_text("deploy_recent: 0\n")
    with pytest.raises(SedpaError, match="deploy_sink"):
        load_recipe(p)
    p.write_text("full_attention_source: teacher\n")
    with pytest.raises(SedpaError, match="full_attention_source"):
        load_recipe(p)


def test_the_shipped_recipe_is_found_by_model_name():
    assert shipped_recipe_for("sedpa-tiny").name == "identify-sedpa-tiny.yaml"
    # Hub id or a local directory named like it; the published settings win over the -fast variant
    assert shipped_recipe_for("gradientai/Llama-3-8B-Instruct-Gradient-1048k").name == "identify-llama-3-8b-1048k.yaml"
    assert shipped_recipe_for("/models/Llama-3-8B-Instruct-Gradient-1048k/").name == "identify-llama-3-8b-1048k.yaml"
    assert shipped_recipe_for("some/other-model") is None
