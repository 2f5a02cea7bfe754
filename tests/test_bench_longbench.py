"""`sedpa bench longbench` on small LongBench-format files written here: each metric through the whole
runner on known answers, the prompts and middle truncation, and every bad input (missing task file,
unknown task, malformed JSONL line)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import assert_refused, build_tiny, invoke_cli
from sedpa_compress.bench.longbench import parse_tasks, read_task, task_table, truncate_middle
from sedpa_compress.bench.longbench import runner as lb_runner
from sedpa_compress.errors import SedpaError
from sedpa_compress.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

sedpa, _err = invoke_cli, assert_refused


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


# ------------------------------------------------------------------ upstream parity: truncation, prompts, stops


@pytest.fixture(scope="module")
def tiny_with_tokenizer():
    """The embedded sedpa-tiny: a real tokenizer with a BOS (<|bos|> = 0) and eos (<|eos|> = 1)."""
    return load_model(None, device="cpu")


def test_truncation_counts_the_bos_as_upstream(tiny_with_tokenizer):
    loaded = tiny_with_tokenizer
    tok = loaded.tokenizer
    prompt = " ".join(f"w{i}" for i in range(400))
    content = tok(prompt, add_special_tokens=False)["input_ids"]
    assert loaded.encode(prompt) == [tok.bos_token_id] + content  # counted with the BOS, as upstream tokenizes
    for max_length in (101, 100, 64):
        cut, truncated = truncate_middle(loaded, prompt, max_length)
        half = int(max_length / 2)
        # the first half holds the BOS (dropped when decoded), so one content token fewer than the last half
        assert truncated and cut == tok.decode(content[:half - 1]) + tok.decode(content[-half:])
    exact = tok.decode(content[:99])  # 99 content tokens + BOS = 100: not cut
    assert truncate_middle(loaded, exact, 100) == (exact, False)


def _stub(name: str, max_pos: int, artifact=None):
    from sedpa_compress.models.families import AttentionGeometry
    from sedpa_compress.models.loader import LoadedModel

    return LoadedModel(model=None, tokenizer=None, name=name, source="hub", family=None, artifact=artifact,
                       geometry=AttentionGeometry(2, 4, 2, 16, 64, max_pos))


def test_one_max_length_per_model_as_upstream():
    from sedpa_compress.bench.longbench import upstream_max_length

    # upstream's table (THUDM and DuoAttention model2maxlen.json) by Hub name, whatever the limit says
    assert upstream_max_length(_stub("gradientai/Llama-3-8B-Instruct-Gradient-1048k", 1048576))[0] == 1047500
    assert upstream_max_length(_stub("meta-llama/Llama-3.1-8B-Instruct", 131072))[0] == 127500
    assert upstream_max_length(_stub("/models/Mistral-7B-Instruct-v0.2", 32768))[0] == 31500
    assert upstream_max_length(_stub("meta-llama/Llama-2-7b-chat-hf", 4096))[0] == 3500
    art = _stub("out/x-sedpa", 32768, artifact={"base_model": "togethercomputer/Llama-2-7B-32K-Instruct"})
    assert upstream_max_length(art)[0] == 31500
    # others: upstream's convention, thousands of positions minus 500
    assert [upstream_max_length(_stub("org/other", n))[0] for n in (32768, 16384, 8192, 4096, 131072, 1024)] == \
        [31500, 15500, 7500, 3500, 130500, 500]
    assert upstream_max_length(_stub("org/small", 512))[0] == 256
    with pytest.raises(SedpaError, match="no max_position_embeddings.*pass --max-length N"):
        upstream_max_length(_stub("org/nolimit", 0))  # no silent 16-token budget


def test_chat_template_gives_one_bos(tiny_with_tokenizer):
    from sedpa_compress.bench.longbench.runner import encode_prompt

    loaded = tiny_with_tokenizer
    tok = loaded.tokenizer
    before = tok.chat_template
    tok.chat_template = "{{ bos_token }}{% for m in messages %}[user]{{ m['content'] }}{% endfor %}[assistant]"
    try:
        ids = encode_prompt(loaded, "hello world", chat=True)
    finally:
        tok.chat_template = before
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "[user]hello world[assistant]"
    assert encode_prompt(loaded, "hello world", chat=False) == loaded.encode("hello world")


def test_stop_token_ids():
    from transformers import GenerationConfig

    from sedpa_compress.models.stop_tokens import stop_token_ids

    class Tok:
        eos_token_id = 128001

    # Llama-3-Instruct: tokenizer eos <|end_of_text|>, generation_config adds <|eot_id|>
    assert stop_token_ids(Tok(), GenerationConfig(eos_token_id=[128001, 128009])) == [128001, 128009]
    assert stop_token_ids(Tok(), {"eos_token_id": 128009}) == [128001, 128009]
    assert stop_token_ids(Tok(), None) == [128001]
    assert stop_token_ids(None, {"eos_token_id": [2, 2, 7]}) == [2, 7]
    assert stop_token_ids(None, None) == []


def test_generation_stops_at_generation_configs_eos_list(tmp_path, monkeypatch):
    model_dir = build_tiny("llama", tmp_path / "m", max_pos=1024)
    (model_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [5, 7], "bos_token_id": 0}))
    for task in ("hotpotqa", "samsum"):
        (tmp_path / f"{task}.jsonl").write_text(json.dumps(line("q", "c", ["a"])) + "\n")
    seen = {}

    def fake_generate(loaded, ids, mode, max_new_tokens, *, stop_ids=None, min_new_tokens=0, **kw):
        seen[max_new_tokens] = (sorted(stop_ids), min_new_tokens)
        return []

    monkeypatch.setattr(lb_runner, "greedy_generate", fake_generate)
    r = sedpa("bench", "longbench", "--model", model_dir, "--data-dir", tmp_path, "--tasks", "hotpotqa", "-a", "full",
              "--out", tmp_path / "o.json", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert seen[32] == ([5, 7], 0)


def test_samsum_stops_at_newline_after_one_token(tiny_with_tokenizer):
    from sedpa_compress.bench.longbench.runner import stop_ids_for

    stops, min_new = stop_ids_for(tiny_with_tokenizer, "samsum")
    assert stops == [1, 201] and min_new == 1  # eos, "\n"; never an empty answer
    assert stop_ids_for(tiny_with_tokenizer, "trec") == ([1], 0)


def test_min_new_tokens_masks_the_stops(model_dir):
    from sedpa_compress.bench.common import greedy_generate

    loaded = load_model(str(model_dir))
    ids = [3, 14, 15, 92, 65]
    first = greedy_generate(loaded, ids, None, 4)[0]
    assert greedy_generate(loaded, ids, None, 4, stop_ids=[first]) == [first]  # stops at once
    held = greedy_generate(loaded, ids, None, 4, stop_ids=[first], min_new_tokens=1)
    assert held[0] != first and len(held) >= 1


def test_data_zip_and_hf_dataset_layouts(model_dir, tmp_path, monkeypatch):
    import zipfile

    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    canned = write_cases(tmp_path)  # <task>.jsonl for every CASES task
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as zf:  # LongBench's data.zip: data/<task>.jsonl
        for task in CASES:
            zf.write(tmp_path / f"{task}.jsonl", f"data/{task}.jsonl")
    hf = tmp_path / "LongBench"  # a dataset in LongBench's Hub layout: one config per task, split test
    card = ["---", "configs:"]
    for task in CASES:
        (hf / task).mkdir(parents=True)
        (hf / task / "test.jsonl").write_text((tmp_path / f"{task}.jsonl").read_text())
        card += [f"- config_name: {task}", "  data_files:", "  - split: test", f"    path: {task}/test.jsonl"]
    (hf / "README.md").write_text("\n".join(card + ["---", ""]))

    def fake_generate(loaded, ids, mode, max_new_tokens, **kw):
        return loaded.encode(canned[re.search(r"[\w-]+-Q\d", loaded.decode(ids)).group(0)])

    monkeypatch.setattr(lb_runner, "greedy_generate", fake_generate)
    results = []
    for source in (["--data-dir", tmp_path / "data.zip"], ["--dataset", hf]):
        out = tmp_path / f"lb{len(results)}.json"
        r = sedpa("bench", "longbench", "--model", model_dir, *source, "--tasks", ",".join(CASES), "-a", "full",
                  "--out", out, "--device", "cpu")
        assert r.exit_code == 0, r.output
        results.append(json.loads(out.read_text()))
    for res in results:
        for task, (_, expected) in CASES.items():
            assert res["summary"]["full"]["tasks"][task] == pytest.approx(expected, abs=0.01), task
    assert results[1]["settings"]["data"].endswith("(Hugging Face dataset)")

    # errors say what to do
    _err(sedpa("bench", "longbench", "--model", model_dir, "--tasks", "hotpotqa"), "give exactly one of --data-dir")
    _err(sedpa("bench", "longbench", "--model", model_dir, "--dataset", hf, "--tasks", "qasper"),
         "has no config 'qasper'")
    script = tmp_path / "ScriptBench"
    script.mkdir()
    (script / "ScriptBench.py").write_text("import datasets\n")
    _err(sedpa("bench", "longbench", "--model", model_dir, "--dataset", script, "--tasks", "hotpotqa"),
         "loading-script dataset")
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # the [data] extra not installed
    _err(sedpa("bench", "longbench", "--model", model_dir, "--dataset", "THUDM/LongBench", "--tasks", "hotpotqa"),
         "needs the Hugging Face `datasets` package: pip install 'sedpa-compress[data]'")
    (tmp_path / "notzip.zip").write_text("x")
    _err(sedpa("bench", "longbench", "--model", model_dir, "--data-dir", tmp_path / "notzip.zip", "--tasks", "hotpotqa"),
         "is a file but not a zip archive")


# ------------------------------------------------------------------ metrics: upstream values, hand-computed


def test_rouge_l_is_the_rouge_packages_summary_level_f():
    from sedpa_compress.bench.longbench.metrics import rouge_score

    f = lambda p, r: 2 * p * r / (p + r + 1e-8)  # noqa: E731 - the package's F
    # split at ".": hyp sentences "The cat sat" / "The dog ran"; union of LCS words {cat, sat};
    # distinct words 5 on each side (case-sensitive: "The" is not "the")
    assert rouge_score("The cat sat. The dog ran", "the cat sat on the mat") == pytest.approx(f(2 / 5, 2 / 5), abs=1e-12)
    # each side's words counted once: "a a a" has one word
    assert rouge_score("a a a", "a") == pytest.approx(f(1, 1), abs=1e-12)
    # the union LCS over the hypothesis's sentences (the ROUGE note's example): {w1, w2, w3, w5}
    assert rouge_score("w1 w2 w6 w7 w8. w1 w3 w8 w9 w5", "w1 w2 w3 w4 w5") == pytest.approx(f(4 / 8, 4 / 5), abs=1e-12)
    assert rouge_score("Paris", "paris") == 0.0  # case-sensitive
    assert rouge_score("...", "a b") == 0.0 and rouge_score("a", "") == 0.0  # no sentence: upstream's 0


def test_classification_keeps_upstreams_removal_while_iterating():
    from sedpa_compress.bench.longbench.metrics import classification_score

    classes = ["Loc", "Location", "Location City"]
    # matches [Loc, Location, Location City]; removing "Loc" while iterating skips "Location", so it
    # stays: two matches, score 1/2 (a plain filter would give 1)
    assert classification_score("Location City", "Location City", all_classes=classes) == 0.5
    assert classification_score("Location", "Location City", all_classes=["Location", "Location City"]) == 0.0


def test_count_and_code_similarity_as_upstream():
    from sedpa_compress.bench.longbench.metrics import code_sim_score, count_score

    assert count_score("14 or 15", "14") == 0.5
    assert code_sim_score("", "") == 1.0 and code_sim_score("", "x = 1") == 0.0  # fuzz.ratio's special cases
    assert code_sim_score("# note\n```\nreturn x+1", "return x + 1") == 0.91  # 2*10/22 = 90.9% -> 91
