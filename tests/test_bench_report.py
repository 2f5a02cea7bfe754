"""`sedpa bench report` (issue 12): the SEDPA paper's trade-off table from small hand-made niah / ppl /
efficiency JSONs, the PNG beside it, and the one-line refusals."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sedpa_compress.bench.report import efficiency_context, load_results, tradeoff_markdown, tradeoff_rows, write_report
from sedpa_compress.cli import app
from sedpa_compress.errors import SedpaError

GIB = 2**30


def _result(bench, rows, summary, settings=None, model="org/m"):
    return {"benchmark": bench, "model": model, "device": "NVIDIA H100 80GB HBM3", "command": f"sedpa bench {bench}",
            "git_commit": "0123456789abcdef", "created": "2025-01-01T00:00:00+00:00", "settings": settings or {},
            "rows": rows, "summary": summary}


def _eff_row(mode, ctx, decode_ms, kv, peak, params, method="sedpa-runtime"):
    return {"mode": mode, "context": ctx, "method": method, "prefill_s": 1.0, "decode_ms": decode_ms, "kv_bytes": kv,
            "peak_bytes": peak, "params": params, "floor_ms": 1.0, "floor_ratio": decode_ms}


@pytest.fixture
def files(tmp_path):
    niah = _result("niah", [], {"full": {"accuracy": 0.98, "exact": 0.9}, "duo": {"accuracy": 0.97, "exact": 0.95},
                                "sedpa-w": {"accuracy": 0.955, "exact": 0.9}})
    ppl = _result("ppl", [], {"full": {"ppl": 5.1234}, "duo": {"ppl": 5.2}, "sedpa-w": {"ppl": 5.31}})
    eff_rows = [
        _eff_row("full", 32768, 8.28, 4 * GIB, 30 * GIB, 8_030_000_000),
        _eff_row("full", 131072, 12.55, 16 * GIB, 42 * GIB, 8_030_000_000),
        _eff_row("duo", 32768, 7.9, 2 * GIB, 28 * GIB, 8_030_000_000),
        _eff_row("duo", 131072, 10.0, 8 * GIB, 34 * GIB, 8_030_000_000),
        _eff_row("sedpa-w", 32768, 6.5, GIB // 2, 27 * GIB, 7_100_000_000),
        _eff_row("sedpa-w", 131072, 6.6, GIB // 2, 27 * GIB, 7_100_000_000),
        _eff_row("transformers-static-compile", 32768, 11.0, 4 * GIB, 33 * GIB, 8_030_000_000,
                 method="transformers-static-compile"),
        {"mode": "transformers-static-compile", "context": 131072, "method": "transformers-static-compile",
         "skipped": "context above --reference-max 65536"},
    ]
    eff = _result("efficiency", eff_rows, {"full": {}}, model="llama-3-8b")
    paths = []
    for name, res in (("niah.json", niah), ("ppl.json", ppl), ("eff.json", eff)):
        (tmp_path / name).write_text(json.dumps(res))
        paths.append(tmp_path / name)
    return paths


def test_table_from_hand_made_results(files):
    md = tradeoff_markdown(files)
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| mode"))
    assert header == ("| mode | NIAH accuracy | NIAH exact | ppl | decode ms @ 128K | KV cache | peak memory | "
                      "parameters |")
    body = [line for line in lines if line.startswith("| ") and "---" not in line]
    table = {line.split(" | ")[0][2:]: line for line in body}
    assert len(body) == len(table) == 5  # the header and one row per mode
    # the longest context every runtime mode measured (the peer stopped at 32K)
    assert table["full"] == "| full | 98.0% | 90.0% | 5.123 | 12.55 | 16.00 GiB | 42.00 GiB | 8.03B |"
    assert table["sedpa-w"] == "| sedpa-w | 95.5% | 90.0% | 5.310 | 6.60 | 0.50 GiB | 27.00 GiB | 7.10B |"
    assert table["transformers-static-compile"].startswith("| transformers-static-compile | – | – | – | – | – | – | 8.03B")
    assert list(table) == ["mode", "full", "duo", "sedpa-w", "transformers-static-compile"]  # modes in their order
    assert "no decode row at 131072 tokens (context above --reference-max 65536)" in md
    assert "different models (llama-3-8b, org/m)" in md and "`eff.json`" in md and "0123456789" in md

    at32 = tradeoff_markdown(files, context=32768, heading=False)
    assert not at32.startswith("###") and "decode ms @ 32K" in at32
    assert "| transformers-static-compile | – | – | – | 11.00 | 4.00 GiB | 33.00 GiB | 8.03B |" in at32


def test_columns_follow_the_files_given(files):
    md = tradeoff_markdown(files[:2])  # niah + ppl only: no efficiency columns
    assert "decode ms" not in md and "| full | 98.0% | 90.0% | 5.123 |" in md
    rows, ctx = tradeoff_rows(load_results(files[2:]))
    assert ctx == 131072 and [r.mode for r in rows][:3] == ["full", "duo", "sedpa-w"]
    assert efficiency_context({"rows": []}) is None


def test_report_cli_writes_markdown_and_png(files, tmp_path):
    out = tmp_path / "rep" / "report.md"
    r = CliRunner().invoke(app, ["bench", "report", *map(str, files), "--context", "32k", "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "decode ms @ 32K" in text and "![accuracy against decode latency](report.png)" in text
    assert out.with_suffix(".png").stat().st_size > 1000
    md, png = write_report(files[:2], tmp_path / "r2.md")  # no efficiency: a table, no plot
    assert md.is_file() and png is None


def test_report_refusals(files, tmp_path):
    (tmp_path / "probe.json").write_text(json.dumps(_result("probe", [], {})))
    (tmp_path / "bad.json").write_text("{oops")
    for paths, msg in (([files[0], files[0]], "two niah results"),
                       ([tmp_path / "probe.json"], "'probe' result"),
                       ([tmp_path / "bad.json"], "not valid JSON"),
                       ([tmp_path / "none.json"], "does not exist"),
                       ([], "no results given")):
        with pytest.raises(SedpaError, match=msg):
            tradeoff_markdown(paths)
    r = CliRunner().invoke(app, ["bench", "report", str(tmp_path / "bad.json")])
    assert r.exit_code == 2 and "not valid JSON" in r.output and "Traceback" not in r.output


def test_model_card_carries_the_tradeoff_table(files):
    """`sedpa card` (artifact/card.py) puts the same table at the top of its measured results."""
    from sedpa_compress.bench.report import tradeoff_from_results

    loaded = [(f"results/{p.name}", json.loads(p.read_text())) for p in files]
    table = tradeoff_from_results(loaded)
    assert table == tradeoff_markdown(files)  # the same rows and notes as `sedpa bench report`
    assert "| mode |" in table and "| duo |" in table and "| sedpa-w |" in table
    assert tradeoff_from_results(loaded[:1]) is None  # one benchmark kind: no trade-off to show
    assert tradeoff_from_results(loaded + loaded[:1]) is None  # two niah files: ambiguous, left out


def test_parameters_are_the_stored_weights_where_the_accuracy_run_recorded_them(files, tmp_path):
    """The SEDPA paper's parameter column: what each mode's weights hold as stored (the base model for full and
    duo, the artifact with factored streaming projections for sedpa-w), from the niah JSON's model identity,
    over the efficiency run's runtime count (which multiplies factors back on small models); modes without a
    record keep the runtime's."""
    niah = json.loads(files[0].read_text())
    niah["settings"] = {"modes": {"full": {"model": {"name": "m", "parameters": 8_030_000_000}},
                                  "sedpa-w": {"model": {"name": "m", "parameters": 6_500_000_000}}}}
    (tmp_path / "niah2.json").write_text(json.dumps(niah))
    md = tradeoff_markdown([tmp_path / "niah2.json", *files[1:]])
    table = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    assert table["sedpa-w"].endswith("| 6.50B |") and table["full"].endswith("| 8.03B |")
    assert table["duo"].endswith("| 8.03B |")  # no record: the runtime's count
    assert "as the mode's weights are stored" in md


def test_model_identity_counts_stored_parameters(tmp_path):
    """bench JSONs record each mode's stored parameter count (tied embeddings once)."""
    from conftest import build_tiny

    from sedpa_compress.bench.common import model_identity
    from sedpa_compress.models import load_model

    loaded = load_model(str(build_tiny("llama", tmp_path / "m", layers=2)), dtype="float32")
    unique = {id(p): p for p in loaded.model.parameters()}.values()
    assert model_identity(loaded)["parameters"] == sum(p.numel() for p in unique) > 0
