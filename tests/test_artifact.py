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
