"""Calibration statistics: they belong to one model (name, revision) and one attention; bad ones fail clearly."""

from __future__ import annotations

import shutil

import pytest
import torch
from typer.testing import CliRunner

from conftest import build_tiny, random_pattern
from sedpa_compress.calibration.perplexity import heldout_windows, perplexity
from sedpa_compress.calibration.stats import CalibrateConfig, calibrate, load_stats, mask_digest, save_stats
from sedpa_compress.cli import app
from sedpa_compress.data.text import load_bundled_text
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.gated import GatedAttention
from sedpa_compress.models import load_model
from sedpa_compress.runtime.modes import build_mode
from sedpa_compress.svd.whitening import cholesky_factor

CAL = CalibrateConfig(tokens=2048, seq_len=256)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two same-shape models (a base and its 'instruct' sibling) and the base's statistics on disk."""
    tmp = tmp_path_factory.mktemp("cal")
    base = build_tiny("llama", tmp / "base", seed=0)
    sibling = build_tiny("llama", tmp / "instruct", seed=1)
    stats = calibrate(load_model(str(base)), CAL, show_progress=False)
    save_stats(stats, tmp / "base.safetensors")
    return tmp, base, sibling


def test_statistics_of_a_same_shape_sibling_are_refused(models):
    tmp, base, sibling = models
    stats = load_stats(tmp / "base.safetensors")
    stats.check_model(load_model(str(base)))  # its own model: fine
    with pytest.raises(SedpaError, match="was made for .*base.*pass --force"):
        stats.check_model(load_model(str(sibling)))
    stats.check_model(load_model(str(sibling)), force=True)  # the user says it is the same model


def test_statistics_of_another_revision_are_refused(models):
    tmp, base, _ = models
    stats = load_stats(tmp / "base.safetensors")
    loaded = load_model(str(base))
    stats.metadata["revision"] = "a" * 40
    loaded.revision = "b" * 40
    with pytest.raises(SedpaError, match="revision"):
        stats.check_model(loaded)
    stats.check_model(loaded, force=True)
    loaded.revision = None  # an unpinned local directory: nothing to compare
    stats.check_model(loaded)


def test_the_same_directory_named_two_ways_is_the_same_model(models, monkeypatch):
    tmp, base, _ = models
    stats = load_stats(tmp / "base.safetensors")
    monkeypatch.chdir(tmp)
    stats.check_model(load_model("./base"))


def test_compress_cli_refuses_a_siblings_calibration_unless_forced(models):
    tmp, base, sibling = models
    runner = CliRunner()
    pattern = tmp / "p.pattern.json"
    random_pattern(load_model(str(sibling)).geometry).save(pattern)
    args = ["compress", "--model", str(sibling), "--pattern", str(pattern), "--calibration",
            str(tmp / "base.safetensors"), "--rank-ratio", "0.8", "--no-ppl"]
    r = runner.invoke(app, args + ["--out", str(tmp / "a")])
    assert r.exit_code == 2 and "pass --force" in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(app, args + ["--out", str(tmp / "b"), "--force"])
    assert r.exit_code == 0, r.output
    shutil.rmtree(tmp / "b")


def test_non_finite_second_moments_say_so_before_damping():
    c = torch.eye(16)
    c[3, 5] = float("nan")
    with pytest.raises(SedpaError, match="non-finite values"):
        cholesky_factor(c, name="layer 2's q/k/v input")
    c = torch.eye(16)
    c[0, 0] = float("inf")
    with pytest.raises(SedpaError, match="layer 2's q/k/v input holds 1 non-finite"):
        cholesky_factor(c, name="layer 2's q/k/v input")


def test_calibrating_under_duo_attention_records_the_pattern(models):
    tmp, base, _ = models
    loaded = load_model(str(base))
    pattern = random_pattern(loaded.geometry, sink=2, recent=8)
    full = calibrate(loaded, CAL, show_progress=False)
    duo = calibrate(loaded, CalibrateConfig(tokens=2048, seq_len=256, attention="duo"), show_progress=False,
                    pattern=pattern)
    assert duo.metadata["attention"] == "duo" and duo.metadata["pattern_mask"] == mask_digest(pattern)
    assert full.metadata["attention"] == "full"
    # layer 0's q/k/v input is the embedding either way; o_proj inputs see the windowed streaming heads
    torch.testing.assert_close(duo.attn_input[0], full.attn_input[0])
    layer = next(li for li in range(pattern.num_layers) if pattern.streaming_heads(li))
    assert not torch.allclose(duo.o_input[layer], full.o_input[layer], rtol=1e-3, atol=1e-5)
    duo.check_pattern(pattern)
    other = random_pattern(loaded.geometry, seed=5, sink=2, recent=8)
    with pytest.raises(SedpaError, match="another head pattern"):
        duo.check_pattern(other)
    duo.check_pattern(other, force=True)
    full.check_pattern(other)  # full-attention statistics fit any pattern
    with pytest.raises(SedpaError, match="--attention duo"):
        calibrate(loaded, CalibrateConfig(tokens=256, seq_len=64, attention="duo"), show_progress=False)


def test_duo_perplexity_on_the_fast_path_equals_the_duo_mode(models):
    _, base, _ = models
    loaded = load_model(str(base))
    pattern = random_pattern(loaded.geometry, sink=2, recent=8)
    windows = heldout_windows(loaded.encode, load_bundled_text("heldout")[:20000], seq_len=200, count=2)
    fast = perplexity(loaded.model, windows, "cpu",
                      mode=GatedAttention.from_mask(pattern.mask, sink=pattern.sink, recent=pattern.recent))
    ref = perplexity(loaded.model, windows, "cpu", mode=build_mode("duo", pattern=pattern))
    assert fast == pytest.approx(ref, rel=1e-5)
    assert fast != pytest.approx(perplexity(loaded.model, windows, "cpu"), rel=1e-4)


def test_auto_attention_calibrates_under_the_pattern_when_there_is_one(models):
    _, base, _ = models
    loaded = load_model(str(base))
    pattern = random_pattern(loaded.geometry, sink=2, recent=8)
    auto = CalibrateConfig(tokens=512, seq_len=128)
    assert auto.attention == "auto"
    assert calibrate(loaded, auto, show_progress=False).metadata["attention"] == "full"
    stats = calibrate(loaded, auto, show_progress=False, pattern=pattern)
    assert stats.metadata["attention"] == "duo" and stats.metadata["pattern_mask"] == mask_digest(pattern)


def test_the_bundled_text_is_gzipped_and_reads_back_as_its_paragraphs(tmp_path):
    """data/bundled/ ships gzipped (a device call's tree and the wheel stay small); make_text.py writes the same
    bytes for the same text (no timestamp in the header), and a .gz file reads as the plain file does, so the
    train / held-out split of every paragraph is what it was."""
    import importlib.util
    from pathlib import Path

    from sedpa_compress.data.text import HELDOUT_EVERY, bundled_text_paths, read_text_file, split_paragraphs

    paths = bundled_text_paths()
    assert [p.name for p in paths] == ["kjv.txt.gz", "python_docs.txt.gz", "python_manual.txt.gz"]
    spec = importlib.util.spec_from_file_location(
        "make_text", Path(__file__).resolve().parents[1] / "calibration" / "make_text.py")
    make_text = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_text)
    text = "first paragraph\nof two lines\n\nsecond — ünïcode\n\n" + "\n\n".join(f"p{i}" for i in range(45))
    (tmp_path / "plain.txt").write_text(text, encoding="utf-8")
    make_text.write_gzipped(tmp_path / "a.txt.gz", text)
    make_text.write_gzipped(tmp_path / "b.txt.gz", text)
    assert (tmp_path / "a.txt.gz").read_bytes() == (tmp_path / "b.txt.gz").read_bytes()
    assert read_text_file(tmp_path / "a.txt.gz") == text
    for split in ("train", "heldout", "all"):
        assert split_paragraphs([tmp_path / "a.txt.gz"], split) == split_paragraphs([tmp_path / "plain.txt"], split)
    assert len(split_paragraphs([tmp_path / "a.txt.gz"], "heldout")) == 47 // HELDOUT_EVERY
    assert load_bundled_text("heldout").startswith(split_paragraphs(paths[:1], "heldout")[0])
