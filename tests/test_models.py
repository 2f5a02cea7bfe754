"""Model loading: families, errors, presets (issue 2)."""

from __future__ import annotations

import pytest

from conftest import TINY_FAMILIES, build_tiny
from sedpa_compress.errors import SedpaError
from sedpa_compress.models import load_model
from sedpa_compress.models.presets import PRESETS, preset_config


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_each_family_loads_with_its_geometry(family, tmp_path):
    loaded = load_model(str(build_tiny(family, tmp_path / family)))
    g = loaded.geometry
    assert loaded.family.name == family.split("-")[0]
    assert (g.num_layers, g.num_heads, g.head_dim) == (2, 4, 16)
    assert g.num_kv_heads == (4 if family == "llama-mha" else 2)
    assert loaded.family.qkv_bias == (family == "qwen2")


def test_unsupported_architecture_is_refused_by_name(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(SedpaError, match="unsupported architecture 'GPT2LMHeadModel'"):
        load_model(str(tmp_path / "gpt2"))


def test_missing_path_names_the_fix(tmp_path):
    with pytest.raises(SedpaError, match="no such directory"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SedpaError, match="no config.json"):
        load_model(str(tmp_path / "empty"))


def test_hub_id_offline_says_to_pass_a_local_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(SedpaError, match="local directory"):
        load_model("some-org/some-model-that-is-not-cached")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_have_the_published_shapes(name):
    cfg = preset_config(name)
    assert cfg.hidden_size % cfg.num_attention_heads == 0
    assert cfg.num_attention_heads % cfg.num_key_value_heads == 0


def test_config_flags_are_checked():
    with pytest.raises(SedpaError, match="unknown --config"):
        load_model(config="gpt-5", random_weights=True)
    with pytest.raises(SedpaError, match="add --random-weights"):
        load_model(config="llama-3-8b")
