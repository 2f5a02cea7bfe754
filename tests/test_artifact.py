"""The artifact: atomic writing, manifest, loading with the artifact alone (issue 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conftest import build_tiny, random_pattern
from sedpa_compress.artifact.manifest import write_manifest
from sedpa_compress.calibration.stats import CalibrateConfig
from sedpa_compress.errors import SedpaError
from sedpa_compress.models import load_model
from sedpa_compress.svd.compress import CompressConfig
from sedpa_compress.svd.factored import DualPathLinear
from sedpa_compress.svd.run import CompressJob, run_compress

CAL = CalibrateConfig(tokens=2048, seq_len=256)


def _compress(model_dir: Path, out: Path, tmp: Path, **kw) -> tuple:
    loaded = load_model(str(model_dir))
    pattern = random_pattern(loaded.geometry)
    pattern.save(tmp / "p.pattern.json")
    job = CompressJob(out=out, pattern=tmp / "p.pattern.json", compress=CompressConfig(rank_ratio=0.7),
                      calibrate=CAL, ppl_windows=1, ppl_seq_len=128, **kw)
    outcome = run_compress(loaded, job, show_progress=False)
    return loaded, outcome


def test_round_trip_gives_the_same_logits(tiny_model_dir, tmp_path):
    loaded, outcome = _compress(tiny_model_dir, tmp_path / "art", tmp_path)
    ids = torch.randint(0, 300, (1, 40), generator=torch.Generator().manual_seed(0))
    expected = loaded.model(ids).logits
    art = load_model(str(tmp_path / "art"))
    assert art.source == "artifact" and art.artifact["rank_ratio"] == 0.7
    assert any(isinstance(m, DualPathLinear) for m in art.model.modules())
    assert torch.equal(art.model(ids).logits, expected)
    files = set(os.listdir(tmp_path / "art"))
    assert {"config.json", "model.safetensors", "sedpa_pattern.json", "manifest.json", "README.md"} <= files
    assert outcome.metrics["params_after"] < outcome.metrics["params_before"]


@pytest.fixture
def artifact(tmp_path) -> Path:
    _compress(build_tiny("llama", tmp_path / "m"), tmp_path / "art", tmp_path)
    return tmp_path / "art"


def test_existing_out_is_refused_and_overwrite_replaces_it(artifact, tmp_path):
    with pytest.raises(SedpaError, match="already exists"):
        _compress(tmp_path / "m", artifact, tmp_path)
    _compress(tmp_path / "m", artifact, tmp_path, overwrite=True)
    assert load_model(str(artifact)).source == "artifact"


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import huggingface_hub

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(huggingface_hub, "save_torch_state_dict", boom)
    with pytest.raises(SedpaError, match="No space left"):
        _compress(build_tiny("llama", tmp_path / "m"), tmp_path / "art", tmp_path)
    assert not (tmp_path / "art").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".art")]


def test_modified_file_fails_its_sha256(artifact):
    weights = artifact / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(SedpaError, match="fails its sha256"):
        load_model(str(artifact))


def test_truncated_safetensors_header_is_a_clear_error(artifact):
    weights = artifact / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:6])
    write_manifest(artifact)  # a consistent manifest: the loader itself must catch it
    with pytest.raises(SedpaError, match="not a valid safetensors"):
        load_model(str(artifact))


def test_missing_file_and_bad_indices(artifact):
    cfg = json.loads((artifact / "config.json").read_text())
    name = next(iter(cfg["sedpa"]["projections"]))
    cfg["sedpa"]["projections"][name]["rank"] += 1
    (artifact / "config.json").write_text(json.dumps(cfg))
    write_manifest(artifact)
    with pytest.raises(SedpaError, match="shape"):
        load_model(str(artifact))
    (artifact / "sedpa_pattern.json").unlink()
    with pytest.raises(SedpaError, match="missing"):
        load_model(str(artifact))


def test_generate_output_has_no_weight_loading_progress_bar(tiny_llama_dir):
    """Issue 15: transformers' "Loading weights" bar used to land in `sedpa generate`'s output."""
    from typer.testing import CliRunner

    from sedpa_compress.cli import app

    r = CliRunner().invoke(app, ["generate", "--model", str(tiny_llama_dir), "--prompt", "hi", "-n", 2,
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "Loading weights" not in r.output and "it/s]" not in r.output, r.output
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # the setting is restored for the caller's own loads


def test_artifact_modules_do_not_import_the_model_loader():
    """Issue 15: the import circle artifact/{card,reader,writer} <-> models/loader is broken: LoadedModel
    and the tokenizer loader live in models/loaded.py, which imports neither side; the loader reaches the
    artifact reader only inside load_model. The old import path still works (a re-export)."""
    import ast
    import subprocess
    import sys

    package = Path(__file__).resolve().parents[1] / "sedpa_compress"
    for name in ("card", "reader", "writer", "hub", "manifest"):
        tree = ast.parse((package / "artifact" / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "sedpa_compress.models.loader" not in imported, name
    tree = ast.parse((package / "models" / "loaded.py").read_text())
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert not any(m.startswith(("sedpa_compress.models.loader", "sedpa_compress.artifact.")) and
                   m != "sedpa_compress.artifact.safeio" for m in top), top
    for first in ("sedpa_compress.artifact.reader", "sedpa_compress.artifact.card", "sedpa_compress.models.loader"):
        code = f"import sys, {first}\nprint(sorted(m for m in sys.modules if m.startswith('sedpa_compress.artifact.')))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        if first.endswith("loader"):  # the loader alone pulls in no reader/writer/card
            assert out.stdout.strip() == "['sedpa_compress.artifact.safeio']", out.stdout
    from sedpa_compress.models.loaded import LoadedModel as Moved, load_tokenizer
    from sedpa_compress.models.loader import LoadedModel, _load_tokenizer, is_artifact_dir  # noqa: F401

    assert LoadedModel is Moved and _load_tokenizer is load_tokenizer


def test_only_hub_bookkeeping_may_sit_unlisted_beside_an_artifact(artifact):
    """Issue 17: every file is listed, or refused by name; a Hub snapshot's `.gitattributes` and the
    `.cache/huggingface/` metadata of `hf download --local-dir` are the only exceptions."""
    from sedpa_compress.artifact.manifest import verify_manifest

    (artifact / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (artifact / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (artifact / ".cache" / "huggingface" / "download" / "config.json.metadata").write_text("abc\n")
    verify_manifest(artifact)
    assert load_model(str(artifact)).source == "artifact"
    (artifact / ".cache" / "other.json").write_text("{}")
    with pytest.raises(SedpaError, match="'.cache/other.json', which manifest.json does not list"):
        load_model(str(artifact))


def test_artifact_stores_the_base_dtype_and_tied_embeddings_once(tmp_path):
    """A bf16 base compressed on a CPU (loaded in fp32) gives a bf16 artifact, with a tied embedding
    stored once: not an fp32 artifact twice the size of its base."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from conftest import random_pattern, tiny_config
    from sedpa_compress.calibration.stats import CalibrateConfig
    from sedpa_compress.models import load_model
    from sedpa_compress.svd.compress import CompressConfig
    from sedpa_compress.svd.run import CompressJob, run_compress

    cfg = tiny_config("llama", layers=2)
    cfg.tie_word_embeddings = True
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16).save_pretrained(tmp_path / "base")
    base_bytes = (tmp_path / "base" / "model.safetensors").stat().st_size
    plain = load_model(str(tmp_path / "base"), dtype="float32")
    random_pattern(plain.geometry).save(tmp_path / "p.pattern.json")
    job = CompressJob(out=tmp_path / "art", pattern=tmp_path / "p.pattern.json", compress=CompressConfig(rank_ratio=0.9),
                      calibrate=CalibrateConfig(tokens=512, seq_len=128), ppl_windows=1, ppl_seq_len=64)
    run_compress(plain, job, show_progress=False)
    with safe_open(str(tmp_path / "art" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
        dtypes = {f.get_slice(n).get_dtype() for n in names}
    assert "BF16" in dtypes and "F32" not in dtypes
    assert not ({"lm_head.weight", "model.embed_tokens.weight"} <= set(names))  # the tied matrix once
    assert (tmp_path / "art" / "model.safetensors").stat().st_size < 1.1 * base_bytes
    assert json.loads((tmp_path / "art" / "config.json").read_text())["dtype"] == "bfloat16"
    art = load_model(str(tmp_path / "art"), dtype="float32")
    assert art.model.lm_head.weight.data_ptr() == art.model.model.embed_tokens.weight.data_ptr()
