"""`sedpa bench niah` cells (issue 11) and the provenance of every benchmark's resume cache (issue 12):
each (length, depth, sample) hides its own key and value, both metrics are reported, and a cached
cell computed by other code, other templates or other text is never reused."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import build_tiny, count_generate_calls
from sedpa_compress.bench import common as common_mod
from sedpa_compress.bench import niah as niah_mod
from sedpa_compress.bench.cache import CellCache
from sedpa_compress.bench.common import build_bench_models, code_digest, provenance
from sedpa_compress.bench.niah import NiahConfig, make_example, prepare_niah, run_niah, summarize
from sedpa_compress.data import needles
from sedpa_compress.data.needles import answer_found, score_answer
from sedpa_compress.data.text import load_haystack
from sedpa_compress.errors import SedpaError
from sedpa_compress.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

DEPTHS = [round(i / 9, 4) for i in range(10)]




@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_model(str(build_tiny("llama", tmp_path_factory.mktemp("niah") / "model", max_pos=1024)))


def test_every_cell_of_a_length_hides_its_own_value(loaded):
    hay = load_haystack()
    cfg = NiahConfig(lengths=[900], depths=DEPTHS, samples=2)
    cells = {(d, s): make_example(loaded, hay, cfg, 900, d, s) for d in DEPTHS for s in range(2)}
    values = [ex.answer for ex in cells.values()]
    assert len(set(values)) == len(values)  # no column passes or fails on one shared value
    for ex in cells.values():
        assert ex.answer in ex.prompt and ex.needles[0].sentence in ex.prompt and ex.context_tokens <= 900
    # the same cell is the same prompt every time (every mode, every rerun)
    assert make_example(loaded, hay, cfg, 900, DEPTHS[3], 1).prompt == cells[(DEPTHS[3], 1)].prompt
    # the depths of one sample share the haystack text before their needles (what prompt reuse needs)
    deep, shallow = cells[(1.0, 0)], cells[(DEPTHS[4], 0)]
    before = shallow.prompt[: shallow.needle_char_spans[0][0]]
    assert len(before) > 200 and deep.prompt.startswith(before)
    # another sample is another haystack offset
    assert not cells[(1.0, 1)].prompt.startswith(before)


def test_user_needle_with_a_value_slot_draws_a_value_per_cell(loaded):
    hay = load_haystack()
    cfg = NiahConfig(lengths=[300], depths=[0.0, 0.5, 1.0], needle="The code of the blue door is {value}.",
                     question="What is the code of the blue door?").validate()
    exs = [make_example(loaded, hay, cfg, 300, d, 0) for d in cfg.depths]
    assert len({ex.answer for ex in exs}) == 3
    for ex in exs:
        assert f"The code of the blue door is {ex.answer}." in ex.prompt
        assert ex.prompt.endswith("What is the code of the blue door?\nAnswer:")
    literal = NiahConfig(lengths=[300], depths=[0.0, 1.0], needle="The secret is eat a sandwich.",
                         question="What is the secret?", answer="eat a sandwich").validate()
    assert {make_example(loaded, hay, literal, 300, d, 0).answer for d in literal.depths} == {"eat a sandwich"}


def test_values_sets_the_shape_of_every_hidden_value_for_user_and_held_out_needles(loaded):
    """`--values code` hides codes (letters and digits) in every cell, with --needle or the held-out family;
    `mixed` gives --needle the held-out mix; the default is unchanged; an unknown shape is refused in one line."""
    from sedpa_compress.bench.niah import VALUE_CHOICES
    from sedpa_compress.data.wordings import value_format

    hay = load_haystack()
    user = dict(needle="The code of the blue door is {value}.", question="What is the code of the blue door?")
    depths = [round(i / 19, 4) for i in range(20)]
    for kw in (user, {}):
        coded = NiahConfig(lengths=[300], depths=depths, values="code", **kw).validate()
        values = [make_example(loaded, hay, coded, 300, d, 0).answer for d in depths]
        assert {value_format(v) for v in values} == {"code"} and len(set(values)) == len(values)
        words = NiahConfig(lengths=[300], depths=depths, values="word", **kw).validate()
        assert {value_format(make_example(loaded, hay, words, 300, d, 0).answer) for d in depths} == {"word"}
    plain = NiahConfig(lengths=[300], depths=depths, **user).validate()
    assert {value_format(make_example(loaded, hay, plain, 300, d, 0).answer) for d in depths} == {"digits"}
    mixed = NiahConfig(lengths=[300], depths=depths, values="mixed", **user).validate()
    assert len({value_format(make_example(loaded, hay, mixed, 300, d, 0).answer) for d in depths}) >= 3
    held_out = NiahConfig(lengths=[300], depths=depths).validate()
    default = [make_example(loaded, hay, held_out, 300, d, 0).answer for d in depths]
    assert default == [make_example(loaded, hay, held_out, 300, d, 0).answer for d in depths]
    assert "free_code" not in VALUE_CHOICES
    with pytest.raises(SedpaError, match="--values 'uuid': pass one of default, mixed, digits.*phrase"):
        NiahConfig(values="uuid").validate()


@pytest.mark.parametrize("output, accuracy, exact", [
    ("It is 4821", 1.0, 0.0),  # words before the value: public benchmarks' string match counts it
    ("4821", 1.0, 1.0),
    (" 4821.\nMore text", 1.0, 1.0),
    ("48210", 0.0, 0.0),  # a longer number is another answer
    ("I do not know.\n4821", 0.0, 0.0),  # not in the first line
    ("\n\n4821 is the code", 1.0, 1.0),  # leading blank lines are not a first line
])
def test_accuracy_is_string_match_and_exact_is_starts_with(output, accuracy, exact):
    assert answer_found(output, "4821") == accuracy
    assert score_answer(output, "4821")[0] == exact


@pytest.mark.parametrize("output, accuracy, exact", [
    (" eat a sandwich and sit in the park.", 1.0, 1.0),
    (" Eat a sandwich and sit in the park", 1.0, 1.0),  # a capital to open the answer is no other answer
    ("The best thing is to EAT A SANDWICH AND SIT IN THE PARK", 1.0, 0.0),  # RULER's match ignores case
    (" eat a sandwich and sit in the parking lot", 0.0, 0.0),  # a longer word is another answer
    (" eat a sandwich\nand sit in the park", 0.0, 0.0),  # the whole phrase, in the first line
])
def test_a_phrase_value_is_found_as_whole_words_in_any_case(output, accuracy, exact):
    value = "eat a sandwich and sit in the park"
    assert answer_found(output, value) == accuracy
    assert score_answer(output, value)[0] == exact


def test_summary_reports_both_metrics_by_context_and_depth():
    rows = [{"mode": "duo", "context": n, "depth": d, "accuracy": acc, "exact": ex, "score": ex, "wall_s": 1.0}
            for n, d, acc, ex in [(1024, 0.0, 1.0, 1.0), (1024, 1.0, 1.0, 0.0), (2048, 0.0, 0.0, 0.0),
                                  (2048, 1.0, 1.0, 1.0)]]
    rows[0]["cached"] = True
    s = summarize(rows)["duo"]
    assert s["accuracy"] == 0.75 and s["exact"] == 0.5 and s["n"] == 4 and s["cached"] == 1
    assert s["by_context"] == {"1024": 1.0, "2048": 0.5} and s["exact_by_context"] == {"1024": 0.5, "2048": 0.5}
    assert s["by_depth"] == {"0": 0.5, "1": 1.0} and s["exact_by_depth"] == {"0": 0.5, "1": 0.5}
    assert "by_value_format" not in s  # rows without their answer
    for r, answer in zip(rows, ("48213", "AX7-22B", "Wenrasga", "92817")):
        r["answer"] = answer
    assert summarize(rows)["duo"]["by_value_format"] == {"code": 1.0, "digits": 1.0, "word": 0.0}


def test_rows_keep_the_raw_output_and_generate_past_the_answer(loaded):
    models = build_bench_models(loaded, ["full"])
    rows, summary = run_niah(models, NiahConfig(lengths=[256], depths=[0.5]))
    row = rows[0]
    answer_tokens = len(loaded.tokenizer.encode(" " + row["answer"], add_special_tokens=False)) \
        if loaded.tokenizer else len((" " + row["answer"]).encode())
    assert row["new_tokens"] == answer_tokens + niah_mod.ANSWER_SLACK  # room for a first line (no EOS here)
    assert set(summary["full"]) >= {"accuracy", "exact"}


def test_cells_from_other_code_templates_or_text_are_not_reused(loaded, tmp_path, monkeypatch):
    models = build_bench_models(loaded, ["full"])
    cfg = NiahConfig(lengths=[400], depths=[0.0, 1.0], max_new_tokens=2)
    path = tmp_path / "n.cells.jsonl"
    run_niah(models, cfg, CellCache(path))
    calls = count_generate_calls(monkeypatch)
    cache = CellCache(path)
    rows, _ = run_niah(models, cfg, cache)
    assert calls == [] and cache.hits == 2 and all(r["cached"] for r in rows)

    # another version of the code: its cells are recomputed, not merged and stamped with this commit
    real_digest = common_mod.code_digest
    monkeypatch.setattr(common_mod, "code_digest", lambda paths, root=None: "other-code")
    cache = CellCache(path)
    rows, _ = run_niah(models, cfg, cache)
    assert len(calls) == 2 and cache.hits == 0 and not any(r.get("cached") for r in rows)
    monkeypatch.setattr(common_mod, "code_digest", real_digest)

    # other needle templates (the same names, one wording changed)
    calls.clear()
    original = needles.HELDOUT_TEMPLATES
    phrasing = dataclasses.replace(original.phrasing, cores=original.phrasing.cores[:-1] + ("{key}: {attr} = {value}",))
    other = dataclasses.replace(original, phrasing=phrasing)
    monkeypatch.setattr(needles, "HELDOUT_TEMPLATES", other)
    run_niah(models, cfg, CellCache(path))
    assert len(calls) == 2
    monkeypatch.setattr(needles, "HELDOUT_TEMPLATES", original)
    calls.clear()
    run_niah(models, cfg, CellCache(path))  # back to the shipped templates: their cells are found again
    assert calls == []

    # another haystack text
    calls.clear()
    hay = tmp_path / "hay.txt"
    hay.write_text("The river ran past the mill. " * 200)
    run_niah(models, NiahConfig(lengths=[400], depths=[0.0, 1.0], max_new_tokens=2, haystack=str(hay)), CellCache(path))
    assert len(calls) == 2
    calls.clear()
    hay.write_text("The wind blew over the hill. " * 200)  # same path, other text
    run_niah(models, NiahConfig(lengths=[400], depths=[0.0, 1.0], max_new_tokens=2, haystack=str(hay)), CellCache(path))
    assert len(calls) == 2


def test_provenance_digests(tmp_path, loaded):
    root = tmp_path / "pkg"
    (root / "bench").mkdir(parents=True)
    (root / "bench" / "a.py").write_text("x = 1\n")
    (root / "b.py").write_text("y = 2\n")
    first = code_digest(("bench/", "b.py"), root)
    assert code_digest(("bench/", "b.py"), root) == first
    (root / "bench" / "a.py").write_text("x = 2\n")
    assert code_digest(("bench/", "b.py"), root) != first  # any edit of a source it runs
    (root / "bench" / "tasks.json").write_text("{}")
    with_json = code_digest(("bench/", "bench/tasks.json"), root)
    (root / "bench" / "tasks.json").write_text('{"a": 1}')
    assert code_digest(("bench/", "bench/tasks.json"), root) != with_json  # a data file named explicitly
    assert code_digest(("bench/",), root) == code_digest(("bench/",), root)
    p = provenance("niah")
    assert p["metrics"]["version"] and p["code"] != provenance("efficiency")["code"]
    prepared = prepare_niah(loaded, NiahConfig(lengths=[400], depths=[0.5]))
    assert prepared.provenance["templates"] and prepared.provenance["text"]


def test_tidal_rows_take_the_carried_pattern_s_retrieval_layer_and_say_so():
    """The embedded sedpa-tiny carries its head pattern: tidal selects at its first strong retrieval layer (3) and re-selects at 5, and the
    row's settings (what the JSON and the resume cache record) say which layers and where they came from;
    --selection-layers wins; a malformed list is refused with the fix."""
    from sedpa_compress.errors import SedpaError
    from sedpa_compress.runtime.modes.tidal import parse_selection_layers

    tiny = load_model(None, dtype="float32")
    (row,) = build_bench_models(tiny, ["tidal"])
    assert row.settings["selection_layers"] == [4, 7] and row.settings["selection_source"] == "head pattern"
    (given,) = build_bench_models(tiny, ["tidal"], selection_layers=parse_selection_layers("2,3"))
    assert given.settings["selection_layers"] == [2, 3] and given.settings["selection_source"] == "given"
    assert common_mod.cell_identity(row.settings) != common_mod.cell_identity(given.settings)
    for bad in ("", "2;5", "-1"):
        with pytest.raises(SedpaError, match="--selection-layers"):
            parse_selection_layers(bad)
