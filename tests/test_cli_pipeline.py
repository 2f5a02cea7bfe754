"""`sedpa calibrate → compress → generate` through the CLI, and every bad input of issue 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import build_tiny, random_pattern
from sedpa_compress.cli import app
from sedpa_compress.models import load_model

runner = CliRunner()


def sedpa(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    model = build_tiny("qwen2", tmp / "model")
    loaded = load_model(str(model))
    random_pattern(loaded.geometry).save(tmp / "p.pattern.json")
    other = build_tiny("llama", tmp / "other", layers=3)
    random_pattern(load_model(str(other)).geometry).save(tmp / "other.pattern.json")
    return tmp, model, other


def test_end_to_end(setup):
    tmp, model, _ = setup
    r = sedpa("calibrate", "--model", model, "--tokens", 2048, "--seq-len", 256, "--out", tmp / "cal.safetensors")
    assert r.exit_code == 0, r.output
    r = sedpa("compress", "--model", model, "--pattern", tmp / "p.pattern.json", "--calibration", tmp / "cal.safetensors",
              "--rank-ratio", 0.8, "--out", tmp / "art")
    assert r.exit_code == 0, r.output
    assert "whole-model reduction" in r.output and "calibration perplexity" in r.output
    cfg = json.loads((tmp / "art" / "config.json").read_text())
    assert cfg["sedpa"]["rank_ratio"] == 0.8 and cfg["sedpa"]["projections"]
    r = sedpa("generate", "--model", tmp / "art", "--prompt", "The king said", "--max-new-tokens", 5)
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())  # rich wraps the summary line where the numbers make it long
    assert "sedpa-s attention" in said and "tokens/s" in said
    prompt = tmp / "prompt.txt"
    prompt.write_text("In the beginning")
    r = sedpa("generate", "--model", model, "--prompt-file", prompt, "-n", 4, "--temperature", 0.8, "--top-p", 0.9)
    assert r.exit_code == 0, r.output
    assert "full attention" in " ".join(r.output.split())


def _err(r, text: str) -> None:
    assert r.exit_code == 2, r.output
    assert text in r.output
    assert "Traceback" not in r.output


def test_bad_inputs(setup):
    tmp, model, other = setup
    pattern = tmp / "p.pattern.json"
    _err(sedpa("compress", "--model", tmp / "missing", "--scope", "all", "--out", tmp / "x"), "no such directory")
    _err(sedpa("compress", "--model", model, "--rank-ratio", 0, "--scope", "all", "--out", tmp / "x"), "outside (0, 1]")
    _err(sedpa("compress", "--model", model, "--rank-ratio", 1.2, "--scope", "all", "--out", tmp / "x"), "outside (0, 1]")
    _err(sedpa("compress", "--model", model, "--out", tmp / "x"), "needs a head pattern")
    _err(sedpa("compress", "--model", model, "--pattern", tmp / "other.pattern.json", "--out", tmp / "x"),
         "KV heads but the model has")
    (tmp / "exists").mkdir(exist_ok=True)
    _err(sedpa("compress", "--model", model, "--scope", "all", "--out", tmp / "exists"), "already exists")
    # calibration made for another model
    r = sedpa("calibrate", "--model", other, "--tokens", 512, "--seq-len", 128, "--out", tmp / "other.safetensors")
    assert r.exit_code == 0, r.output
    _err(sedpa("compress", "--model", model, "--scope", "all", "--calibration", tmp / "other.safetensors", "--out", tmp / "x"),
         "made for another model")
    empty = tmp / "empty.jsonl"
    empty.write_text("")
    _err(sedpa("calibrate", "--model", model, "--data", empty, "--out", tmp / "e.safetensors"), "gave no tokens")
    bad = tmp / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json\n')
    _err(sedpa("calibrate", "--model", model, "--data", bad, "--out", tmp / "b.safetensors"), "bad.jsonl:2")
    _err(sedpa("generate", "--model", model), "exactly one of --prompt")
    _err(sedpa("generate", "--model", model, "--prompt", "hi", "--attention", "duo"), "needs a head pattern")
    _err(sedpa("generate", "--model", model, "--prompt", "hi", "--attention", "sedpa-w", "--pattern", pattern,
               "--window", 2), "smaller than --recent")
    assert not (tmp / "x").exists()


def test_unsupported_architecture_exits_2(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    _err(sedpa("compress", "--model", tmp_path / "gpt2", "--scope", "all", "--out", tmp_path / "x"), "unsupported architecture")


def test_corrupt_artifact_exits_2(setup, tmp_path):
    tmp, model, _ = setup
    r = sedpa("compress", "--model", model, "--scope", "all", "--tokens", 1024, "--seq-len", 128, "--no-ppl",
              "--out", tmp_path / "art")
    assert r.exit_code == 0, r.output
    f = tmp_path / "art" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
    _err(sedpa("generate", "--model", tmp_path / "art", "--prompt", "hi"), "fails its sha256")
