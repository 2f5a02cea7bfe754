"""The benchmarks' pure parts on hand-made cases: LongBench metrics, NIAH scoring, parsing of
--lengths / --depths, and length capping."""

from __future__ import annotations

import math

import pytest

from sedpa_compress.bench.common import (
    cap_lengths,
    lengths_for_model,
    parse_depths,
    parse_lengths,
    parse_size,
    ppl_from_nll,
)
from sedpa_compress.bench.longbench.metrics import (
    classification_score,
    code_sim_score,
    count_score,
    edit_similarity,
    first_code_line,
    lcs_length,
    normalize_answer,
    qa_f1_score,
    qa_f1_zh_score,
    retrieval_score,
    retrieval_zh_score,
    rouge_score,
    rouge_zh_score,
    score_prediction,
)
from sedpa_compress.data.needles import score_answer
from sedpa_compress.errors import SedpaError


def test_normalize_answer_drops_case_punctuation_articles():
    assert normalize_answer("The  Eiffel Tower, in Paris!") == "eiffel tower in paris"


def test_qa_f1_known_values():
    assert qa_f1_score("Paris", "paris") == 1.0
    assert qa_f1_score("the city of Paris", "Paris") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))  # P=1/3 R=1
    assert qa_f1_score("London", "Paris") == 0.0
    assert qa_f1_score("", "Paris") == 0.0


def test_qa_f1_zh_per_character():
    assert qa_f1_zh_score("北京", "北京") == 1.0
    assert qa_f1_zh_score("北京市", "北京") == pytest.approx(0.8)  # P=2/3 R=1
    assert qa_f1_zh_score("，。", "北京") == 0.0


def test_lcs_and_rouge_l():
    assert lcs_length("a b c d".split(), "a c d e".split()) == 3
    # the `rouge` package's F: 2PR / (P + R + 1e-8), words counted once ("the" twice here)
    assert rouge_score("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1 - 5e-9, abs=1e-12)
    # LCS("a b c d", "a c d e") = 3: P = R = 3/4
    assert rouge_score("a b c d", "a c d e") == pytest.approx(0.75, abs=1e-7)
    assert rouge_score("", "a b") == 0.0
    # per character: 5 distinct on each side, LCS 今天天气 holds 3 distinct -> P = R = 3/5
    assert rouge_zh_score("今天天气很好", "今天天气不错") == pytest.approx(0.6, abs=1e-7)


def test_classification_accuracy():
    classes = ["Location", "Person", "Number", "Number of people"]
    assert classification_score("Type: Person", "Person", all_classes=classes) == 1.0
    assert classification_score("Location or Person", "Person", all_classes=classes) == 0.5
    assert classification_score("Location", "Person", all_classes=classes) == 0.0
    # "Number" is part of the true class "Number of people": it does not count against it
    assert classification_score("Number of people", "Number of people", all_classes=classes) == 1.0


def test_retrieval_and_count():
    assert retrieval_score("Paragraph 7", "Paragraph 7") == 1.0
    assert retrieval_score("Paragraph 7 or Paragraph 3", "Paragraph 7") == 0.5
    assert retrieval_score("no idea", "Paragraph 7") == 0.0
    assert retrieval_zh_score("段落12", "段落12") == 1.0
    assert count_score("There are 14 unique paragraphs", "14") == 1.0
    assert count_score("14 or 15", "14") == 0.5
    assert count_score("many", "14") == 0.0


def test_code_edit_similarity():
    assert edit_similarity("return x + 1", "return x + 1") == 1.0
    assert edit_similarity("abcd", "abce") == 0.75
    assert first_code_line("\n# comment\n```python\n    x = 1\n") == "    x = 1"
    assert code_sim_score("# note\nreturn a", "return a") == 1.0


def test_score_prediction_takes_best_answer_and_first_line():
    assert score_prediction("qa_f1", "Paris", ["London", "Paris"]) == 1.0
    # trec / triviaqa / samsum / lsht keep only the first line
    assert score_prediction("qa_f1", "\nParis\nLondon London", ["Paris"], first_line=True) == 1.0
    assert score_prediction("qa_f1", "Paris\nLondon London", ["Paris"]) < 1.0


def test_niah_score_answer():
    assert score_answer(" 482913.", "482913") == (1.0, 1.0)
    assert score_answer("4829130", "482913")[0] == 0.0  # more digits: not the value
    exact, partial = score_answer("482000", "482913")
    assert exact == 0.0 and partial == pytest.approx(0.5)


def test_parse_lengths_and_depths():
    assert parse_size("4k") == 4096 and parse_size("1.5k") == 1536 and parse_size("300") == 300
    assert parse_lengths("1k:4k:4") == [1024, 2048, 3072, 4096]
    assert parse_lengths("4k,1k,4k") == [1024, 4096]
    assert parse_depths("3") == [0.0, 0.5, 1.0]
    assert parse_depths("10%,50%,0.9") == [0.1, 0.5, 0.9]
    assert len(parse_depths("10")) == 10
    for bad in ("1k:4k", "x", "4k:1k:3", "8"):
        with pytest.raises(SedpaError):
            parse_lengths(bad)
    for bad in ("1.5", "0,2", "a"):
        with pytest.raises(SedpaError):
            parse_depths(bad)


def test_cap_lengths_says_what_it_dropped():
    kept, dropped = cap_lengths([1024, 8192, 65536], 32768, reserve=32)
    assert kept == [1024, 8192, 32736] and dropped == [65536]
    assert cap_lengths([1024], None, 32) == ([1024], [])


def test_lengths_for_model_spreads_a_sweep_up_to_the_limit():
    assert lengths_for_model("1k:4k:4", 32768, 32) == ([1024, 2048, 3072, 4096], None)
    lengths, note = lengths_for_model("1k:32k:4", 16384, 32)
    assert lengths == [1024, 6133, 11243, 16352] and "swept 1024..16352" in note  # still 4 even columns
    lengths, note = lengths_for_model("1k,64k", 16384, 32)
    assert lengths == [1024, 16352] and "65536" in note


def test_ppl_from_nll():
    assert ppl_from_nll(0.0, 10) == 1.0
    assert ppl_from_nll(10 * math.log(4), 10) == pytest.approx(4.0)
    assert math.isnan(ppl_from_nll(1.0, 0))
