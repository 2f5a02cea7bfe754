"""Calibration text sources (`--data`): local files, folders, and Hugging Face datasets through `datasets`
(here local dataset folders in the Hub's layout, so no network is needed), and the errors that say what to do."""

from __future__ import annotations

import json
import sys

import pytest

from sedpa_compress.calibration.sources import dataset_error, iter_texts
from sedpa_compress.errors import SedpaError


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def longbench_like(root):
    """LongBench's Hub layout: one config per task, only a `test` split; the long text is `context`."""
    card = ["---", "configs:"]
    for task, docs in (("gov_report", ["report one", "report two"]), ("qmsum", ["meeting"])):
        (root / task).mkdir(parents=True)
        (root / task / "test.jsonl").write_text("".join(json.dumps({"input": "", "context": d, "answers": ["x"]}) + "\n"
                                                        for d in docs))
        card += [f"- config_name: {task}", "  data_files:", "  - split: test", f"    path: {task}/test.jsonl"]
    (root / "README.md").write_text("\n".join(card + ["---", ""]))
    return root


def test_local_files_and_folders(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert list(iter_texts(str(tmp_path / "a.jsonl"))) == ["one", "two"]
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "b.txt").write_text("bee")
    assert list(iter_texts(str(tmp_path / "txt"))) == ["bee"]
    with pytest.raises(SedpaError, match="no string field 'body'; pass --text-field NAME"):
        list(iter_texts(str(tmp_path / "a.jsonl"), text_field="body"))


def test_a_hugging_face_dataset_in_longbenchs_layout(tmp_path):
    ds = longbench_like(tmp_path / "LongBench")
    # FOLDER:CONFIG, and the only split (test) when the asked-for train split is absent
    assert list(iter_texts(f"{ds}:gov_report", text_field="context")) == ["report one", "report two"]
    assert list(iter_texts(f"{ds}:qmsum", text_field="context")) == ["meeting"]
    with pytest.raises(SedpaError, match="has no field 'text' .*pass --text-field NAME"):
        list(iter_texts(f"{ds}:qmsum"))
    with pytest.raises(SedpaError, match="nope"):
        list(iter_texts(f"{ds}:nope", text_field="context"))


def test_a_plain_dataset_folder_with_a_train_split(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "alpha"}\n{"text": "beta"}\n')
    (folder / "test.jsonl").write_text('{"text": "gamma"}\n')
    assert list(iter_texts(str(folder))) == ["alpha", "beta"]
    assert list(iter_texts(str(folder), split="test")) == ["gamma"]


def test_errors_say_what_to_do(tmp_path, monkeypatch):
    script = tmp_path / "scripted"
    script.mkdir()
    (script / "scripted.py").write_text("import datasets\n")
    (script / "data.json").write_text("{}")
    with pytest.raises(SedpaError, match="loading-script dataset.*Parquet/JSON copy"):
        list(iter_texts(str(script)))
    # offline and missing, as `datasets` reports them
    assert "seems offline" in dataset_error("org/x", ConnectionError("Couldn't reach 'org/x' on the Hub (LocalEntryNotFoundError)"))
    assert "seems offline" in dataset_error("org/x", OSError("[Errno -2] Name or service not known"))
    NotFound = type("DatasetNotFoundError", (Exception,), {})
    assert "no dataset org/x on the Hugging Face Hub" in dataset_error("org/x", NotFound("Dataset 'org/x' doesn't exist on the Hub"))
    # without the [data] extra
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(SedpaError, match=r"needs the `datasets` package: pip install 'sedpa-compress\[data\]'"):
        list(iter_texts("org/some-dataset"))


def test_calibrate_reads_a_dataset_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from conftest import build_tiny
    from sedpa_compress.cli import app

    model = build_tiny("llama", tmp_path / "m", vocab=320)
    ds = longbench_like(tmp_path / "LongBench")
    out = tmp_path / "c.safetensors"
    r = CliRunner().invoke(app, ["calibrate", "--model", str(model), "--data", f"{ds}:gov_report", "--text-field",
                                 "context", "--tokens", "16", "--seq-len", "8", "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    from sedpa_compress.calibration.stats import load_stats

    stats = load_stats(out)
    assert stats.tokens == 16 and stats.metadata["source"].endswith("LongBench:gov_report")
