"""The artifact's model card (issue 7): Hub-valid YAML metadata, the base model's licence, the pattern
heatmap, measured benchmark tables added by `sedpa card ART --results ...`, and nothing unmeasured."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import build_tiny, random_pattern
from sedpa_compress.artifact.card import (CARD_FILE, base_license, card_metadata, render_card, split_front_matter,
                                          update_card)
from sedpa_compress.artifact.heatmap import HEATMAP_FILE, pattern_heatmap_png
from sedpa_compress.artifact.manifest import verify_manifest
from sedpa_compress.bench.results import make_result, write_result
from sedpa_compress.cli import app
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def sedpa(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in result.output, err
    return err


def _pattern() -> HeadPattern:
    gates = [[0.9, 0.1, 0.7, 0.2], [0.3, 0.8, 0.05, 0.6]]
    return HeadPattern.from_gates(gates, sink=4, recent=64, retrieval_ratio=0.5, model="test")


def _block(**kw) -> dict:
    block = {"format_version": 1, "base_model": "meta-llama/Meta-Llama-3-8B", "base_revision": "abc123",
             "scope": "streaming", "rank_ratio": 0.8, "rank_search": "greedy", "sink": 4, "recent": 64,
             "projections": {"model.layers.0.self_attn.q_proj": {"rank": 12}, "model.layers.1.self_attn.k_proj": {"rank": 30}},
             "metrics": {"params_before": 1000, "params_after": 900, "reduction": 0.1}, "license": "llama3"}
    return {**block, **kw}


def _meta(text: str) -> dict:
    meta, body = split_front_matter(text)
    assert meta is not None and body.startswith("# "), text[:300]
    return meta


# ----------------------------------------------------------------------------------- pure rendering


def test_card_metadata_is_valid_hub_yaml():
    from huggingface_hub import ModelCard

    text = render_card({"model_type": "llama"}, _block(), _pattern())
    meta = _meta(text)
    assert meta == card_metadata({"model_type": "llama"}, _block())
    assert meta["base_model"] == "meta-llama/Meta-Llama-3-8B"
    assert meta["license"] == "llama3" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-generation" and {"sedpa", "llama"} <= set(meta["tags"])
    # huggingface_hub's own parser reads the same metadata (it raises on YAML it cannot use).
    card = ModelCard(text, ignore_metadata_errors=False)
    assert card.data.base_model == "meta-llama/Meta-Llama-3-8B" and "sedpa" in card.data.tags


def test_local_or_random_base_is_not_named_as_a_hub_base_model():
    for base in ("/data/models/llama", "./model", "random:llama-3-8b", "sedpa-tiny"):
        meta = _meta(render_card({"model_type": "llama"}, _block(base_model=base, license=None), None))
        assert "base_model" not in meta and "license" not in meta, (base, meta)


@pytest.mark.parametrize(("licence", "fields"), [
    ("apache-2.0", {"license": "apache-2.0"}),
    ("Apache-2.0", {"license": "apache-2.0"}),
    ("other:llama-community", {"license": "other", "license_name": "llama-community"}),
    ("My Own Licence v2", {"license": "other", "license_name": "my-own-licence-v2"}),
])
def test_licences_become_fields_the_hub_accepts(licence, fields):
    meta = _meta(render_card({"model_type": "qwen2"}, _block(license=licence), None))
    assert {k: meta.get(k) for k in fields} == fields
    if fields["license"] != "other":
        assert "license_name" not in meta


def test_card_states_what_was_done_and_only_measured_numbers():
    text = render_card({"model_type": "llama"}, _block(), _pattern(), heatmap=HEATMAP_FILE)
    for fact in ("| rank ratio | 0.8 |", "| parameters before | 1,000 |", "| parameters after | 900 |",
                 "| parameter reduction | 10.00% |", "4 of 8 KV heads", "ranks 12–30", "`meta-llama/Meta-Llama-3-8B`",
                 f"![retrieval and streaming heads]({HEATMAP_FILE})", "trust_remote_code=True", "sedpa_compress.load"):
        assert fact in text, fact
    assert "Measured results" not in text  # no benchmark given: no benchmark section, no invented numbers
    assert "perplexity" not in text.lower()  # not measured in this block
    no_image = render_card({"model_type": "llama"}, _block(), _pattern())
    assert "![" not in no_image and "## Head pattern" not in no_image


def test_pushed_card_names_the_repo():
    text = render_card({"model_type": "llama"}, _block(), None, repo_id="org/llama-3-8b-sedpa")
    assert 'from_pretrained("org/llama-3-8b-sedpa", trust_remote_code=True, revision=revision)' in text
    assert 'AutoTokenizer.from_pretrained("org/llama-3-8b-sedpa", revision=revision)' in text
    assert "sedpa pull org/llama-3-8b-sedpa" in text and "THIS_DIR_OR_REPO" not in text


def test_trust_remote_code_advice_pins_a_revision():
    """Issue 17: running a repo's code is advised only together with pinning the commit one has read."""
    text = render_card({"model_type": "llama"}, _block(), None, repo_id="org/m")
    advice = next(line for line in text.splitlines() if line.startswith("`trust_remote_code=True` runs"))
    assert "pin" in advice and "`revision`" in advice and "commit" in advice
    assert 'revision = "COMMIT_ID"' in text


def test_base_license_from_readme_front_matter_or_config(tmp_path):
    assert base_license(None) is None and base_license(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "license": "mit"}))
    assert base_license(tmp_path) == "mit"
    (tmp_path / CARD_FILE).write_text("---\nlicense: llama3\nlanguage: [en]\n---\n# Base\n")
    assert base_license(tmp_path) == "llama3"  # the card wins over config.json
    (tmp_path / CARD_FILE).write_text("---\nlicense: other\nlicense_name: tongyi-qianwen\n---\n# Base\n")
    assert base_license(tmp_path) == "other:tongyi-qianwen"
    (tmp_path / CARD_FILE).write_text("---\n: not: yaml: [\n---\n")
    assert base_license(tmp_path) == "mit"  # a broken card falls back to config.json


def test_base_card_yaml_alias_bomb_is_refused_not_expanded(tmp_path):
    """300 bytes of nested aliases: yaml.safe_load shares the nodes, but reading the licence (`str()` of
    it) expanded them, to 35 MB here and to gigabytes with two more levels. Refused before anything is
    composed, in one line naming the file."""
    bomb = ["---", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 7):
        bomb.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]")
    bomb += ["license: *g", "---", "# Base"]
    (tmp_path / CARD_FILE).write_text("\n".join(bomb) + "\n")
    with pytest.raises(SedpaError, match="uses YAML aliases"):
        base_license(tmp_path)
    (tmp_path / CARD_FILE).write_text("---\nlicense: mit\npad: '" + "x" * (2 << 20) + "'\n---\n# Base\n")
    with pytest.raises(SedpaError, match="larger than 1 MiB"):
        base_license(tmp_path)


def test_heatmap_is_a_deterministic_png_and_skipped_without_matplotlib(monkeypatch):
    pytest.importorskip("matplotlib")
    png = pattern_heatmap_png(_pattern())
    assert png is not None and png.startswith(PNG)
    assert pattern_heatmap_png(_pattern()) == png  # same pattern, same bytes, same manifest sha256
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    assert pattern_heatmap_png(_pattern()) is None


# ----------------------------------------------------------------------------------- a real artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    from sedpa_compress.calibration.stats import CalibrateConfig
    from sedpa_compress.models import load_model
    from sedpa_compress.svd.compress import CompressConfig
    from sedpa_compress.svd.run import CompressJob, run_compress

    tmp = tmp_path_factory.mktemp("card-art")
    base = build_tiny("qwen2", tmp / "model")
    (base / CARD_FILE).write_text("---\nlicense: apache-2.0\n---\n# A tiny base\n")
    loaded = load_model(str(base))
    random_pattern(loaded.geometry).save(tmp / "p.pattern.json")
    run_compress(loaded, CompressJob(out=tmp / "art", pattern=tmp / "p.pattern.json", measure_ppl=False,
                                     compress=CompressConfig(rank_ratio=0.7),
                                     calibrate=CalibrateConfig(tokens=512, seq_len=64)), show_progress=False)
    return tmp / "art"


def test_compress_writes_card_heatmap_and_inherited_licence(artifact):
    text = (artifact / CARD_FILE).read_text()
    meta = _meta(text)
    assert meta["license"] == "apache-2.0" and "qwen2" in meta["tags"]
    manifest = verify_manifest(artifact)
    if importlib.util.find_spec("matplotlib") is not None:  # the [bench] extra draws it; without it, no image
        assert (artifact / HEATMAP_FILE).read_bytes().startswith(PNG)
        assert HEATMAP_FILE in manifest["files"] and f"]({HEATMAP_FILE})" in text
    assert "| rank ratio | 0.7 |" in text and "Measured results" not in text


def _niah(path: Path, *, png: bool = True) -> Path:
    result = make_result("niah", model="test/tiny", device="cpu", command="sedpa bench niah --model ART",
                         settings={"contexts": [256, 512], "depths": 3},
                         rows=[{"mode": "full", "context": 256, "depth": 0.5, "accuracy": 1.0},
                               {"mode": "sedpa-s", "context": 256, "depth": 0.5, "accuracy": 0.75}],
                         summary={"full": {"accuracy": 1.0}, "sedpa-s": {"accuracy": 0.75}})
    write_result(path, result)
    if png:
        path.with_suffix(".png").write_bytes(PNG + b"picture")
    return path


def test_sedpa_card_adds_measured_tables_and_keeps_the_manifest_valid(artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    niah = _niah(tmp_path / "niah_tiny.json")
    r = sedpa("card", art, "--results", niah)
    assert r.exit_code == 0, r.output
    text = (art / CARD_FILE).read_text()
    assert "## Measured results" in text and "### niah" in text
    assert "| mode | accuracy |" in text and "| sedpa-s | 0.75 |" in text and "| full | 1 |" in text
    assert "![niah_tiny](results/niah_tiny.png)" in text and "Command: `sedpa bench niah --model ART`" in text
    assert (art / "results" / "niah_tiny.json").is_file() and (art / "results" / "niah_tiny.png").is_file()
    manifest = verify_manifest(art)
    assert {"results/niah_tiny.json", "results/niah_tiny.png", CARD_FILE} <= set(manifest["files"])
    _meta(text)  # still valid metadata
    # Again with the same file: the same card (no duplicate section); the source artifact is untouched.
    assert sedpa("card", art, "--results", niah).exit_code == 0
    assert (art / CARD_FILE).read_text() == text
    assert not (artifact / "results").exists() and "Measured results" not in (artifact / CARD_FILE).read_text()
    # Without --results the card is re-rendered from what results/ already holds.
    assert sedpa("card", art).exit_code == 0 and (art / CARD_FILE).read_text() == text


def test_rows_table_when_a_result_has_no_summary(artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    path = tmp_path / "ppl.json"
    write_result(path, make_result("ppl", model="m", device="cpu", settings={}, summary={},
                                   rows=[{"mode": "full", "context": 1024, "ppl": 12.3456}]))
    update = update_card(art, [path])
    assert update.added == ["results/ppl.json"] and update.results == 1
    text = (art / CARD_FILE).read_text()
    assert "| mode | context | ppl |" in text and "| full | 1,024 | 12.35 |" in text


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "is not valid JSON"),
    (json.dumps({"rows": []}), "is not a sedpa benchmark result"),
    (json.dumps({"benchmark": "niah", "rows": {}}), "`rows` must be a list"),
])
def test_bad_results_are_one_line_and_change_nothing(artifact, tmp_path, content, message):
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    before = {p.name: p.read_bytes() for p in art.iterdir() if p.is_file()}
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert message in one_line_error(sedpa("card", art, "--results", bad))
    assert {p.name: p.read_bytes() for p in art.iterdir() if p.is_file()} == before
    assert "does not exist" in one_line_error(sedpa("card", art, "--results", tmp_path / "missing.json"))


def test_card_refuses_a_corrupt_artifact_and_a_non_artifact(artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    with (art / "model.safetensors").open("ab") as f:
        f.write(b"tampered")
    err = one_line_error(sedpa("card", art, "--results", _niah(tmp_path / "n.json", png=False)))
    assert "fails its sha256" in err  # never bless a modified artifact with a fresh manifest
    assert not (art / "results").exists()
    with pytest.raises(SedpaError, match="not a sedpa artifact"):
        update_card(tmp_path, [])


def test_card_refuses_stray_files_and_lists_only_what_sedpa_wrote(artifact, tmp_path):
    """Issue 17: `sedpa card` rewrites the manifest only over files it verified or wrote: a stray file is
    refused by name (not blessed with a fresh manifest), and a Hub `.gitattributes` is left unlisted."""
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    (art / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ evil }}"}))
    err = one_line_error(sedpa("card", art))
    assert "'tokenizer_config.json'" in err and "does not list" in err
    assert "tokenizer_config.json" not in json.loads((art / "manifest.json").read_text())["files"]
    (art / "tokenizer_config.json").unlink()
    (art / ".gitattributes").write_text("*.safetensors filter=lfs\n")  # what a pulled Hub snapshot holds
    assert sedpa("card", art).exit_code == 0
    files = verify_manifest(art)["files"]
    assert ".gitattributes" not in files and set(files) == set(json.loads((artifact / "manifest.json").read_text())["files"])


def test_card_yaml_round_trips_through_pyyaml_safe_dump(artifact):
    meta = _meta((artifact / CARD_FILE).read_text())
    assert yaml.safe_load(yaml.safe_dump(meta)) == meta


def test_card_leads_its_results_with_the_tradeoff_table(artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    niah = tmp_path / "niah.json"
    ppl = tmp_path / "ppl.json"
    write_result(niah, make_result("niah", model="m", device="cpu", settings={}, rows=[],
                                   summary={"full": {"accuracy": 1.0, "exact": 1.0}, "duo": {"accuracy": 0.9, "exact": 0.8}}))
    write_result(ppl, make_result("ppl", model="m", device="cpu", settings={}, rows=[],
                                  summary={"full": {"ppl": 10.0}, "duo": {"ppl": 10.5}}))
    update_card(art, [niah, ppl])
    text = (art / CARD_FILE).read_text()
    results = text[text.index("## Measured results"):]
    assert results.index("### Accuracy and efficiency per mode") < results.index("results/niah.json")
    assert "| duo |" in results
