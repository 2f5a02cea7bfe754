"""The wording families that sedpa-tiny trains on and is judged with (data/wordings.py)."""

from __future__ import annotations

import random
import re

from sedpa_compress.data.needles import HELDOUT_TEMPLATES, TRAIN_TEMPLATES, make_needle_example
from sedpa_compress.data.text import load_haystack
from sedpa_compress.data.wordings import HELDOUT_WORDINGS, TRAIN_WORDINGS, TRAIN_WORDINGS_COMPACT, check_disjoint


def test_the_families_share_no_wording():
    assert TRAIN_TEMPLATES is TRAIN_WORDINGS and HELDOUT_TEMPLATES is HELDOUT_WORDINGS
    assert check_disjoint() == []
    assert check_disjoint(TRAIN_WORDINGS_COMPACT, HELDOUT_WORDINGS) == []


def test_values_come_in_every_format_and_needles_state_them():
    rng = random.Random(0)
    kinds = set()
    for _ in range(600):
        n = TRAIN_WORDINGS.sample_needles(rng, 1)[0]
        assert n.value in n.sentence and n.key.lower() in n.sentence.lower() and len(n.value) <= 9
        v = n.value
        kinds.add("digits" if v.isdigit() else "grouped" if re.fullmatch(r"[\d-]+", v) else
                  "thousands" if re.fullmatch(r"[\d,]+", v) else "word" if v.isalpha() else "code")
    assert kinds == {"digits", "grouped", "thousands", "code", "word"}


def test_questions_range_from_bare_to_echoing_answer_prefixes():
    rng = random.Random(1)
    prefixes, bare, same_line = set(), 0, 0
    for _ in range(800):
        n = TRAIN_WORDINGS.sample_needles(rng, 1)[0]
        tail, answer = TRAIN_WORDINGS.render_tail(n, rng)
        if answer == n.value:  # no answer prefix: the value starts its own line
            bare += 1
            assert tail.endswith("\n")
        else:
            assert answer == " " + n.value
            prefixes.add(tail.rsplit("\n", 1)[-1])
            same_line += "\n" not in tail.strip("\n")
    assert bare > 10 and same_line > 10 and len(prefixes) > 300
    assert any(p.endswith("Answer:") for p in prefixes) and any(" is" in p for p in prefixes)


def test_heldout_examples_fit_their_context_and_are_reproducible():
    from transformers import AutoTokenizer

    from sedpa_compress.models.loader import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    hay = load_haystack(None, min_chars=20000)
    for i, depth in enumerate((0.0, 0.5, 1.0)):
        a = make_needle_example(tok, hay, 1024, [depth], random.Random(i))
        b = make_needle_example(tok, hay, 1024, [depth], random.Random(i))
        assert a.prompt == b.prompt and a.context_tokens <= 1024 and a.answer in a.prompt
        assert a.needles[0].sentence in a.prompt


def test_corpus_words_widen_the_training_family_and_keep_the_heldout_family_held_out():
    from sedpa_compress.data.text import load_bundled_text
    from sedpa_compress.data.wordings import family_words

    wide = TRAIN_WORDINGS.with_corpus_words(load_bundled_text("train"), 3000, wild=0.6, exclude=HELDOUT_WORDINGS)
    assert len(wide.words) > 20 * len(TRAIN_WORDINGS.words) and wide.phrasing.wild == 0.6
    assert not set(wide.words) & (family_words(HELDOUT_WORDINGS) - set(TRAIN_WORDINGS.words))
    assert check_disjoint(wide, HELDOUT_WORDINGS) == []
    rng = random.Random(3)
    joined = 0
    for _ in range(400):
        n = wide.sample_needles(rng, 1)[0]
        tail, answer = wide.render_tail(n, rng)
        assert n.value in n.sentence and n.key.lower() in tail.lower() and answer.strip() == n.value
        joined += not any(f" {v} " in n.sentence for v in wide.phrasing.verbs)
    assert joined > 20  # some needles join attribute and value with random words, no verb


def test_value_weights_change_the_mix_of_value_formats():
    import dataclasses

    def codes(family) -> float:
        rng = random.Random(5)
        vals = [family.sample_value(rng) for _ in range(2000)]
        return sum(bool(re.search(r"[A-Z]", v)) and bool(re.search(r"\d", v)) for v in vals) / len(vals)

    default = codes(TRAIN_WORDINGS)
    more = codes(dataclasses.replace(TRAIN_WORDINGS, value_weights=(0.2, 0.1, 0.1, 0.6, 0.0)))
    assert 0.14 < default < 0.22 and 0.54 < more < 0.66


def test_free_codes_and_generated_syllables_widen_training_values_only():
    """free_code (a training format) has weight 0 by default, so the benchmarks' values keep their random
    stream; with weight it gives codes of no fixed shape. Generated syllables leave out the held-out ones."""
    import dataclasses

    from sedpa_compress.data.wordings import DEFAULT_VALUE_WEIGHTS, VALUE_FORMATS, generated_syllables, value_format

    assert len(DEFAULT_VALUE_WEIGHTS) == len(VALUE_FORMATS) and DEFAULT_VALUE_WEIGHTS[VALUE_FORMATS.index("free_code")] == 0
    five = dataclasses.replace(HELDOUT_WORDINGS, value_weights=DEFAULT_VALUE_WEIGHTS[:5])
    a, b = random.Random(3), random.Random(3)
    assert [HELDOUT_WORDINGS.sample_value(a) for _ in range(300)] == [five.sample_value(b) for _ in range(300)]

    free = dataclasses.replace(TRAIN_WORDINGS, value_weights=(0, 0, 0, 0, 0, 1.0))
    rng = random.Random(1)
    vals = [free.sample_value(rng) for _ in range(600)]
    assert all(4 <= len(v) <= 9 and v[-1] not in "-_." for v in vals)
    assert len({len(v) for v in vals}) == 6  # 4-9 characters: no fixed shape
    assert any(re.search(r"[A-Z]", v) for v in vals) and any(re.search(r"[a-z]", v) for v in vals)
    assert sum(any(s in v for s in "-_.") for v in vals) > 60
    assert 0.55 < sum(v[0].isalpha() for v in vals) / len(vals) < 0.9

    syllables = generated_syllables(HELDOUT_WORDINGS.vocab.syllables)
    assert len(syllables) > 500 and not set(syllables) & set(HELDOUT_WORDINGS.vocab.syllables)
    assert [value_format(v) for v in ("48213", "482-339", "1,204,551", "Wenrasga", "AX7-22B", "fb_3a")] == \
        ["digits", "grouped", "thousands", "word", "code", "code"]


def test_a_needle_that_opens_with_its_value_keeps_the_value_s_case():
    """Procedural needles may open with the value ("{value} is the {attr} of {key}"); capitalising the
    sentence wrote "A48f" for the value "a48f", and training taught the model to answer with a letter it
    had not read. Every needle holds its value letter for letter."""
    import dataclasses

    from sedpa_compress.data.text import load_bundled_text

    fam = TRAIN_WORDINGS.with_corpus_words(load_bundled_text("train")[:200000], 500, wild=1.0)
    fam = dataclasses.replace(fam, value_weights=(0, 0, 0, 0, 0.5, 0.5))  # words and free codes: case matters
    rng = random.Random(7)
    needles = [fam.sample_needles(rng, 1)[0] for _ in range(3000)]
    opening = [n for n in needles if n.sentence.lower().startswith(n.value.lower())]
    assert len(opening) > 20  # the case this test is about occurs
    assert all(n.value in n.sentence for n in needles)


def test_no_attribute_repeats_a_word():
    """The held-out family's "reference" is both a modifier and a noun: "reference reference" is no wording a
    person writes (3 of the 5 such cells of stage 12's acceptance were misses), so it reads "reference"; the
    training family's procedural attributes ("{word} {word}") drop a repeat the same way."""
    from sedpa_compress.data.text import load_bundled_text

    wide = TRAIN_WORDINGS.with_corpus_words(load_bundled_text("train"), 300, wild=0.9, exclude=HELDOUT_WORDINGS)
    for family in (HELDOUT_WORDINGS, TRAIN_WORDINGS, wide):
        rng = random.Random(5)
        drawn = [family.sample_attribute(rng) for _ in range(5000)] + list(family.attributes)
        assert not [a for a in drawn if re.search(r"\b(\w+) \1\b", a)]
    assert "reference" in {HELDOUT_WORDINGS.sample_attribute(random.Random(i)) for i in range(3000)}


def test_phrase_values_are_spans_of_running_text_held_out_from_training_and_off_by_default():
    """phrase: a span of 3-10 words (the best-known needle test's answer is one: "eat a sandwich and sit in Dolores
    Park on a sunny day"). Weight 0 by default, so every other format keeps its random stream; the held-out family's
    come from the bundled held-out split and hold no span of the train split; a training family draws from the
    pool it is given."""
    import dataclasses

    from sedpa_compress.data.text import load_bundled_text
    from sedpa_compress.data.wordings import (DEFAULT_VALUE_WEIGHTS, VALUE_FORMATS, heldout_phrases, phrase_pool,
                                              value_format)

    assert DEFAULT_VALUE_WEIGHTS[VALUE_FORMATS.index("phrase")] == 0
    six = dataclasses.replace(HELDOUT_WORDINGS, value_weights=DEFAULT_VALUE_WEIGHTS[:6])
    a, b = random.Random(4), random.Random(4)
    assert [HELDOUT_WORDINGS.sample_value(a) for _ in range(2000)] == [six.sample_value(b) for _ in range(2000)]

    only = tuple(float(f == "phrase") for f in VALUE_FORMATS)
    rng = random.Random(2)
    held = [dataclasses.replace(HELDOUT_WORDINGS, value_weights=only).sample_value(rng) for _ in range(200)]
    pool = heldout_phrases()
    train_text, heldout_text = load_bundled_text("train"), load_bundled_text("heldout")
    assert set(held) <= set(pool) and len(set(held)) > 150
    for v in held:
        words = v.split()
        assert 4 <= len(words) <= 10 and value_format(v) == "phrase" and v in heldout_text and v not in train_text
        assert all(re.fullmatch(r"[A-Za-z][a-z']*", w) for w in words) and max(map(len, words)) >= 5
    assert phrase_pool(heldout_text, count=50, seed=3) == phrase_pool(heldout_text, count=50, seed=3)

    mine = ("eat a sandwich in the park", "the river runs north")
    rng = random.Random(0)
    train = dataclasses.replace(TRAIN_WORDINGS, value_weights=only, phrases=mine)
    needles = [train.sample_needles(rng, 1)[0] for _ in range(40)]
    assert {n.value for n in needles} == set(mine) and all(n.value in n.sentence for n in needles)
    tail, answer = train.render_tail(needles[0], rng)
    assert answer.strip() == needles[0].value
