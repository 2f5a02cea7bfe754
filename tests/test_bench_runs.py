"""`sedpa bench niah | ppl` on a tiny random model: every mode side by side, the JSON and heatmaps they
leave, resuming from the cell cache, and every bad input of issue 6. (A random model retrieves
nothing, so these tests check the machinery; the numbers come from sedpa-tiny, bench/results/.)"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import build_tiny, count_generate_calls, tiny_llama_with_pattern
from sedpa_compress.bench.cache import CellCache, cells_path
from sedpa_compress.bench.common import build_bench_models
from sedpa_compress.bench.heatmap import niah_matrix, plot_niah_heatmap
from sedpa_compress.bench.niah import NiahConfig, make_example, run_niah
from sedpa_compress.bench.ppl import PplConfig, run_ppl
from sedpa_compress.cli import app
from sedpa_compress.errors import SedpaError
from sedpa_compress.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()
ALL_MODES = "full,streaming,duo,sedpa-s,sedpa-w,tidal"


def sedpa(*args):
    return runner.invoke(app, [str(a) for a in args])


def _err(r, text: str) -> None:
    assert r.exit_code == 2, r.output
    assert text in r.output, r.output
    assert "Traceback" not in r.output




@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny Llama (1024-token limit), a head pattern, and the artifact compressed from them."""
    tmp = tmp_path_factory.mktemp("bench")
    model = tiny_llama_with_pattern(tmp)
    loaded = load_model(str(model))
    r = sedpa("compress", "--model", model, "--pattern", tmp / "p.pattern.json", "--tokens", 1024, "--seq-len", 128,
              "--no-ppl", "--rank-ratio", 0.85, "--out", tmp / "art")
    assert r.exit_code == 0, r.output
    return tmp, model, loaded


def test_niah_cli_every_mode_json_heatmaps_and_table(setup):
    tmp, model, _ = setup
    out = tmp / "res" / "niah.json"
    r = sedpa("bench", "niah", "--model", model, "--compressed", tmp / "art", "--pattern", tmp / "p.pattern.json",
              "-a", ALL_MODES, "--lengths", "448,512", "--depths", "3", "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    assert result["benchmark"] == "niah" and result["device"] == "cpu"
    assert result["command"] and result["created"] and result["settings"]["lengths"] == [448, 512]
    modes = ALL_MODES.split(",")
    assert len(result["rows"]) == len(modes) * 2 * 3  # every cell of every mode
    for row in result["rows"]:
        assert {"mode", "context", "depth", "accuracy", "exact", "score", "answer", "output", "tokens"} <= set(row)
        assert row["accuracy"] in (0.0, 1.0) and row["exact"] in (0.0, 1.0) and 0.0 <= row["score"] <= 1.0
        assert row["exact"] <= row["accuracy"]  # an answer that starts with the value has it in its first line
        assert "cached" not in row
    settings = result["settings"]
    assert settings["cache_hits"] == 0 and len(settings["provenance"]["code"]) == 16
    assert {"templates", "text", "torch", "transformers", "sedpa"} <= set(settings["provenance"])
    assert set(settings["metrics"]) >= {"accuracy", "exact"}
    for s in result["summary"].values():
        assert {"accuracy", "exact", "by_context", "by_depth", "exact_by_context", "exact_by_depth"} <= set(s)
    assert list(result["summary"]) == modes
    assert set(result["summary"]["duo"]["by_context"]) == {"448", "512"}
    assert result["settings"]["modes"]["sedpa-s"]["model"]["source"] == "artifact"
    assert result["settings"]["modes"]["duo"]["model"]["source"] == "local"
    for mode in modes:  # one heatmap per mode, plus the side-by-side figure
        assert (out.parent / f"niah_{mode}.png").stat().st_size > 1000
    assert (out.parent / "niah.png").is_file() and cells_path(out).is_file()
    assert "needle in a haystack" in r.output and "sedpa-w" in r.output  # the rich summary table

    # resume: a rerun finds every cell in the cache and recomputes none
    r = sedpa("bench", "niah", "--model", model, "--compressed", tmp / "art", "--pattern", tmp / "p.pattern.json",
              "-a", ALL_MODES, "--lengths", "448,512", "--depths", "3", "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "resumed: 36 of 36 cells" in " ".join(r.output.split())
    again = json.loads(out.read_text())
    assert [(x["mode"], x["context"], x["depth"], x["output"]) for x in again["rows"]] == \
        [(x["mode"], x["context"], x["depth"], x["output"]) for x in result["rows"]]
    assert again["settings"]["cache_hits"] == 36 and all(x["cached"] is True for x in again["rows"])


def test_heatmap_shape(tmp_path):
    import matplotlib.image as mpimg

    rows = [{"mode": "duo", "context": n, "depth": d, "accuracy": float(d < 0.5)}
            for n in (1024, 2048, 4096) for d in (0.0, 0.25, 0.5, 0.75, 1.0)]
    grid, lengths, depths = niah_matrix(rows, "duo")
    assert grid.shape == (5, 3)  # depths down, context lengths across, as the papers draw it
    assert lengths == [1024, 2048, 4096] and depths == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert grid[:2].min() == 1.0 and grid[2:].max() == 0.0
    png = plot_niah_heatmap(rows, "duo", tmp_path / "h.png")
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def _models(loaded, modes, **kw):
    return build_bench_models(loaded, modes, **kw)


def test_niah_resume_skips_finished_cells(setup, tmp_path, monkeypatch):
    tmp, _, loaded = setup
    models = _models(loaded, ["full", "duo"], pattern=tmp / "p.pattern.json")
    cfg = NiahConfig(lengths=[448, 512], depths=[0.0, 1.0])
    path = tmp_path / "n.cells.jsonl"
    rows, _ = run_niah(models, cfg, CellCache(path))
    assert len(rows) == 8 and len(path.read_text().splitlines()) == 8

    calls = count_generate_calls(monkeypatch)
    again, summary = run_niah(models, cfg, CellCache(path))
    assert calls == [] and [{**r, "cached": True} for r in rows] == again  # nothing recomputed, and said so
    assert summary["duo"]["cached"] == 4

    # a run killed mid-way: 3 cells lost and a torn last line; only those 3 are computed again
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    third, _ = run_niah(models, cfg, CellCache(path))
    assert len(calls) == 3 and [r["output"] for r in third] == [r["output"] for r in rows]
    assert sum(1 for r in third if r.get("cached")) == 5

    # other settings (another seed) are other cells
    calls.clear()
    run_niah(models, NiahConfig(lengths=[448, 512], depths=[0.0, 1.0], seed=1), CellCache(path))
    assert len(calls) == 8


def test_niah_depths_share_their_prefill_exactly(setup):
    """The deepest needle goes first; shallower ones reuse the KV of the text before their needle, and
    answer exactly as a prompt prefilled from scratch does."""
    from sedpa_compress.bench.common import greedy_generate
    from sedpa_compress.data.text import load_haystack

    tmp, _, loaded = setup
    models = _models(loaded, ["streaming", "duo", "tidal"], pattern=tmp / "p.pattern.json", top_k=64)
    cfg = NiahConfig(lengths=[900], depths=[0.0, 0.5, 1.0], max_new_tokens=6)
    rows, _ = run_niah(models, cfg)
    assert [r["depth"] for r in rows[:3]] == [0.0, 0.5, 1.0]  # rows sorted back by depth
    reused = {r["depth"]: r["reused_tokens"] for r in rows if r["mode"] == "duo"}
    assert reused[1.0] == 0 and reused[0.5] > 150  # the text before the middle needle was not prefilled again
    hay = load_haystack()
    for r in rows:
        bm = next(m for m in models if m.name == r["mode"])
        ex = make_example(loaded, hay, cfg, 900, r["depth"], 0)
        assert ex.answer == r["answer"]
        fresh = loaded.decode(greedy_generate(loaded, loaded.encode(ex.prompt), bm.mode, 6))
        assert r["output"] == fresh, r  # the raw output, untruncated


def test_niah_same_prompt_for_every_mode_and_user_needle(setup):
    _, _, loaded = setup
    from sedpa_compress.data.text import load_haystack

    hay = load_haystack()
    cfg = NiahConfig(lengths=[400], depths=[0.5])
    a = make_example(loaded, hay, cfg, 400, 0.5, 0)
    b = make_example(loaded, hay, cfg, 400, 0.5, 0)
    assert a.prompt == b.prompt and a.answer in a.prompt and a.context_tokens <= 400
    user = NiahConfig(lengths=[300], depths=[0.5], needle="The code of the blue door is {value}.",
                      question="What is the code of the blue door?").validate()
    ex = make_example(loaded, hay, user, 300, 0.5, 0)
    assert f"The code of the blue door is {ex.answer}." in ex.prompt
    assert ex.prompt.endswith("What is the code of the blue door?\nAnswer:")
    literal = NiahConfig(lengths=[300], depths=[0.5], needle="The best thing to do in San Francisco is eat a sandwich.",
                         question="What is the best thing to do in San Francisco?", answer="eat a sandwich").validate()
    assert make_example(loaded, hay, literal, 300, 0.5, 0).answer == "eat a sandwich"
    for bad, text in (
        (dict(needle="The code is {value}."), "--needle needs --question"),
        (dict(needle="The code is 42.", question="What is the code?"), "no {value} slot"),
        (dict(needle="The code is 42.", question="What is the code?", answer="43"), "does not appear"),
        (dict(question="What?"), "go with --needle"),
    ):
        with pytest.raises(SedpaError, match=text.replace("{", r"\{").replace("}", r"\}")):
            NiahConfig(**bad).validate()


def test_ppl_modes_side_by_side(setup, tmp_path):
    tmp, _, loaded = setup
    models = _models(loaded, ["full", "streaming", "duo", "tidal"], pattern=tmp / "p.pattern.json")
    cfg = PplConfig(seq_len=128, windows=2, decode_tail=16)
    rows, summary, source = run_ppl(models, cfg, CellCache(tmp_path / "p.cells.jsonl"))
    assert source == "bundled held-out text" and len(rows) == 8
    assert summary["full"]["tokens"] == 2 * 127 and summary["full"]["vs_full"] == 0.0
    assert summary["streaming"]["ppl"] != summary["full"]["ppl"]  # sink 4 + recent 16 of 128 tokens
    # a window that covers the whole context is full attention; so is tidal with top-k >= the context
    wide = _models(loaded, ["streaming", "tidal"], sink=4, recent=128, top_k=128)
    _, s2, _ = run_ppl(wide, cfg)
    assert s2["streaming"]["ppl"] == pytest.approx(summary["full"]["ppl"], rel=1e-4)
    assert s2["tidal"]["ppl"] == pytest.approx(summary["full"]["ppl"], rel=1e-4)


def test_full_on_the_model_own_attention_equals_the_reference_path(setup):
    from sedpa_compress.bench.common import greedy_generate, token_nll
    from sedpa_compress.runtime.modes import build_mode

    _, _, loaded = setup
    ids = list(range(1, 200))
    ref = build_mode("full")  # the reference path's full attention (explicit causal masks)
    assert torch.allclose(token_nll(loaded, ids, None, chunk=64), token_nll(loaded, ids, ref, chunk=64), atol=1e-4)
    assert greedy_generate(loaded, ids, None, 8) == greedy_generate(loaded, ids, ref, 8)


def test_ppl_cli_with_jsonl_data(setup, tmp_path):
    tmp, model, _ = setup
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": "The quick brown fox jumps over the lazy dog. " * 8}) for _ in range(3)))
    out = tmp_path / "ppl.json"
    r = sedpa("bench", "ppl", "--model", model, "--pattern", tmp / "p.pattern.json", "-a", "full,streaming,duo",
              "--data", data, "--seq-len", 256, "--windows", 2, "--decode-tail", 32, "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["benchmark"] == "ppl" and list(res["summary"]) == ["full", "streaming", "duo"]
    assert res["settings"]["windows"] == 2 and all(row["context"] == 256 for row in res["rows"])
    assert "perplexity" in r.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n{not json\n")
    _err(sedpa("bench", "ppl", "--model", model, "-a", "full", "--data", bad, "--seq-len", 64, "--out", out), "bad.jsonl:2")
    _err(sedpa("bench", "ppl", "--model", model, "-a", "full", "--data", tmp_path / "none.txt", "--out", out),
         "no such file")
    _err(sedpa("bench", "ppl", "--model", model, "-a", "full", "--seq-len", 4096, "--out", out), "1024-token limit")
    short = tmp_path / "short.txt"
    short.write_text("too short")
    _err(sedpa("bench", "ppl", "--model", model, "-a", "full", "--data", short, "--seq-len", 256, "--out", out),
         "fewer than --seq-len")


def test_niah_bad_inputs(setup, tmp_path):
    tmp, model, _ = setup
    out = tmp_path / "n.json"
    base = ("bench", "niah", "--model", model, "--out", out, "--device", "cpu")
    # beyond the model's 1024-token limit: capped to the limit, and said so
    r = sedpa(*base, "-a", "full", "--lengths", "448,4096", "--depths", "1")
    assert r.exit_code == 0, r.output
    assert "capped" in r.output and "4096" in r.output
    settings = json.loads(out.read_text())["settings"]
    assert settings["lengths"] == [448, 992] and "4096" in settings["capped"]
    _err(sedpa(*base, "-a", "full", "--lengths", "64", "--needle", "A very long needle sentence that goes on. " * 4
               + "The value is {value}.", "--question", "What is the value?"), "shortest --lengths is 64")
    _err(sedpa(*base, "-a", "full,bogus"), "unknown --attention")
    _err(sedpa(*base, "-a", "sedpa-s", "--lengths", "128"), "--compressed")
    _err(sedpa(*base, "-a", "duo", "--lengths", "128"), "needs a head pattern")
    _err(sedpa(*base, "-a", "full", "--lengths", "128", "--haystack", tmp_path / "missing.txt"), "does not exist")
    _err(sedpa(*base, "-a", "full", "--lengths", "4k:1k:3"), "START <= END")
    _err(sedpa(*base, "-a", "full", "--depths", "1.5"), "[0, 1]")
    _err(sedpa(*base, "-a", "full", "--needle", "The code is 42.", "--question", "Code?"), "no {value} slot")
    other = build_tiny("llama", tmp_path / "other", layers=3)
    _err(sedpa(*base[:-2], "--model", other, "-a", "sedpa-s", "--compressed", tmp / "art"), "another geometry")
