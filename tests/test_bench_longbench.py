"""`sedpa bench longbench` on small LongBench-format files written here: each metric through the whole
runner on known answers, the prompts and middle truncation, and every bad input (missing task file,
unknown task, malformed JSONL line)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from conftest import build_tiny
from sedpa_compress.bench.longbench import parse_tasks, read_task, task_table, truncate_middle
from sedpa_compress.bench.longbench import runner as lb_runner
from sedpa_compress.cli import app
from sedpa_compress.errors import SedpaError
from sedpa_compress.models import load_model

runner = CliRunner()


def sedpa(*args):
    return runner.invoke(app, [str(a) for a in args])


def _err(r, text: str) -> None:
    assert r.exit_code == 2, r.output
    assert text in " ".join(r.output.split()), r.output
    assert "Traceback" not in r.output


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny("llama", tmp_path_factory.mktemp("lb") / "model", max_pos=1024)


def line(input_: str, context: str, answers: list[str], all_classes=None, length: int = 100) -> dict:
    return {"input": input_, "context": context, "answers": answers, "all_classes": all_classes, "length": length,
            "dataset": "x", "language": "en", "_id": input_}


# (task, examples as (marker, answers, all_classes, canned prediction), expected task score 0-100)
CASES = {
    "hotpotqa": ([("Q1", ["Paris"], None, "Paris"), ("Q2", ["London"], None, "the city of London")],
                 (100 + 50) / 2),  # "city of london" vs "london" (articles dropped): P=1/3 R=1 -> F1 1/2
    "gov_report": ([("Q1", ["the cat sat on the mat"], None, "the cat sat on the mat"),
                    ("Q2", ["a c d e"], None, "a b c d")], (100 + 75) / 2),  # LCS 3 of 4 words
    "trec": ([("Q1", ["Location"], ["Location", "Person"], "Location\nPerson"),  # first line only
              ("Q2", ["Person"], ["Location", "Person"], "Location or Person")], (100 + 50) / 2),
    "passage_retrieval_en": ([("Q1", ["Paragraph 7"], None, "Paragraph 7"),
                              ("Q2", ["Paragraph 3"], None, "Paragraph 3 or Paragraph 4")], (100 + 50) / 2),
    "passage_count": ([("Q1", ["14"], None, "14"), ("Q2", ["5"], None, "6")], 50.0),
    "lcc": ([("Q1", ["return x + 1"], None, "# comment\nreturn x + 1"), ("Q2", ["abcd"], None, "abce")],
            (100 + 75) / 2),
}


def write_cases(folder):
    canned = {}
    for task, (examples, _) in CASES.items():
        with (folder / f"{task}.jsonl").open("w") as f:
            for marker, answers, classes, pred in examples:
                # the marker goes into input and context: every task's prompt shows one of them
                f.write(json.dumps(line(f"{task}-{marker}", f"Some context {task}-{marker}.", answers, classes)) + "\n")
                canned[f"{task}-{marker}"] = pred
    return canned


def test_each_metric_through_the_runner_on_known_answers(model_dir, tmp_path, monkeypatch):
    canned = write_cases(tmp_path)
    loaded_seen = []

    def fake_generate(loaded, ids, mode, max_new_tokens, **kw):
        prompt = loaded.decode(ids)
        marker = re.search(r"[\w-]+-Q\d", prompt).group(0)
        loaded_seen.append((mode.name if mode else "full", max_new_tokens))
        return loaded.encode(canned[marker])

    monkeypatch.setattr(lb_runner, "greedy_generate", fake_generate)
    out = tmp_path / "res" / "lb.json"
    r = sedpa("bench", "longbench", "--model", model_dir, "--data-dir", tmp_path, "--tasks", ",".join(CASES),
              "-a", "full,streaming", "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["benchmark"] == "longbench" and len(res["rows"]) == 2 * 2 * len(CASES)
    for mode in ("full", "streaming"):
        for task, (_, expected) in CASES.items():
            assert res["summary"][mode]["tasks"][task] == pytest.approx(expected, abs=0.01), (mode, task)
        assert res["summary"][mode]["score"] == pytest.approx(sum(e for _, e in CASES.values()) / len(CASES), abs=0.01)
    # each task generates up to its upstream length (hotpotqa 32, gov_report 512, trec 64, lcc 64)
    assert {n for _, n in loaded_seen} == {task_table()[t]["max_new_tokens"] for t in CASES}
    assert "LongBench" in r.output and "average" in r.output

    # resume: nothing is generated again
    loaded_seen.clear()
    r = sedpa("bench", "longbench", "--model", model_dir, "--data-dir", tmp_path, "--tasks", ",".join(CASES),
              "-a", "full,streaming", "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert loaded_seen == [] and "resumed: 24 of 24" in " ".join(r.output.split())


def test_real_generation_and_middle_truncation(model_dir, tmp_path):
    ctx = "word " * 2000  # ~10k bytes: far beyond the tiny model's 1024 positions
    with (tmp_path / "hotpotqa.jsonl").open("w") as f:
        f.write(json.dumps(line("Who?", ctx, ["Paris"])) + "\n")
        f.write(json.dumps(line("Where?", "short context", ["London"])) + "\n")
    out = tmp_path / "lb.json"
    r = sedpa("bench", "longbench", "--model", model_dir, "--data-dir", tmp_path, "--tasks", "hotpotqa",
              "-a", "full,streaming", "--sink", 4, "--recent", 32, "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    assert [row["truncated"] for row in rows] == [True, False, True, False]
    assert all(row["tokens"] <= 1024 - 32 for row in rows)  # room left for the 32 answer tokens


def test_prompts_come_from_the_task_table():
    spec = task_table()["passage_retrieval_en"]
    assert "{context}" in spec["prompt"] and "{input}" in spec["prompt"] and spec["metric"] == "retrieval"
    from sedpa_compress.bench.longbench.runner import build_prompt

    p = build_prompt("lcc", {"context": "def f(x):\n    return {x}\n", "input": ""})
    assert "return {x}" in p  # braces in code stay as they are


def test_truncate_middle_keeps_both_ends(model_dir):
    loaded = load_model(str(model_dir))  # no tokenizer: one token per UTF-8 byte
    text = "A" * 60 + "B" * 900 + "C" * 60
    cut, truncated = truncate_middle(loaded, text, 100)
    assert truncated and cut == "A" * 50 + "C" * 50
    same, truncated = truncate_middle(loaded, "short", 100)
    assert same == "short" and not truncated


def test_bad_inputs(model_dir, tmp_path):
    (tmp_path / "hotpotqa.jsonl").write_text(json.dumps(line("q", "c", ["a"])) + "\n{broken\n")
    with pytest.raises(SedpaError, match=r"hotpotqa.jsonl:2: not valid JSON"):
        read_task(tmp_path, "hotpotqa")
    (tmp_path / "trec.jsonl").write_text(json.dumps(line("q", "c", ["a"])) + "\n" + json.dumps({"input": "q"}) + "\n")
    with pytest.raises(SedpaError, match=r"trec.jsonl:2: missing field context, answers"):
        read_task(tmp_path, "trec")
    (tmp_path / "lcc.jsonl").write_text(json.dumps(line("q", "c", "not a list")) + "\n")
    with pytest.raises(SedpaError, match=r"lcc.jsonl:1: `answers` must be a list"):
        read_task(tmp_path, "lcc")
    (tmp_path / "samsum.jsonl").write_text("\n\n")
    with pytest.raises(SedpaError, match="holds no examples"):
        read_task(tmp_path, "samsum")
    with pytest.raises(SedpaError, match="unknown LongBench task nope"):
        parse_tasks("hotpotqa,nope")
    assert parse_tasks(None) == parse_tasks("english") and "lsht" in parse_tasks("all")

    # through the CLI: every file is checked before the model loads; exit 2 with one line
    _err(sedpa("bench", "longbench", "--model", model_dir, "--data-dir", tmp_path, "--tasks", "hotpotqa"), "hotpotqa.jsonl:2")
    _err(sedpa("bench", "longbench", "--model", model_dir, "--data-dir", tmp_path, "--tasks", "qasper"),
         "qasper.jsonl; download LongBench's data.zip")
    _err(sedpa("bench", "longbench", "--model", model_dir, "--data-dir", tmp_path, "--tasks", "bogus"),
         "unknown LongBench task bogus")
    (tmp_path / "musique.jsonl").write_text(json.dumps(line("q", "c", ["a"])) + "\n")
    _err(sedpa("bench", "longbench", "--model", model_dir, "--data-dir", tmp_path, "--tasks", "musique", "-a", "full",
               "--max-length", 4096), "1024-token limit")
