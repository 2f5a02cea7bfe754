"""Synthetic multi-passkey data: every passkey is where the example says, and the answers are last."""

from __future__ import annotations

import random

import pytest

from sedpa_compress.data.needles import TRAIN_TEMPLATES
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.synthetic import PasskeyData

HAYSTACK = " ".join(f"Sentence number {i} says nothing of interest." for i in range(3000))


def byte_encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def make_data(**kw) -> PasskeyData:
    args = dict(context_min=1500, context_max=2500, context_intervals=5, num_passkeys=3, start_tokens=[1])
    args.update(kw)
    return PasskeyData(byte_encode, HAYSTACK, **args)


@pytest.mark.parametrize("seed", range(5))
def test_passkeys_sit_where_the_example_says(seed):
    data = make_data()
    ex = data.sample(random.Random(seed))
    assert ex.context_tokens == len(ex.input_ids) in data.lengths
    assert ex.input_ids[0] == 1  # BOS-like start tokens come first
    starts = [p.start for p in ex.passkeys]
    assert starts == sorted(starts)
    for p in ex.passkeys:
        assert ex.input_ids[p.start:p.end] == byte_encode(" " + p.sentence)
        assert p.key in p.sentence and p.value in p.sentence
        assert p.depth == p.start / ex.context_tokens
        # depths come from [depth_min, depth_max] of the haystack (fixed parts shift them a little)
        assert 0.02 < p.depth < 0.95
    assert len({p.key for p in ex.passkeys}) == 3


def test_answers_are_the_asked_values_in_question_order():
    ex = make_data().sample(random.Random(3))
    text = bytes(ex.input_ids[ex.answer_positions[0]:]).decode()
    assert sorted(ex.asked) == [0, 1, 2]
    values = [ex.passkeys[i].value for i in ex.asked]
    answer_bytes = bytes(ex.input_ids[i] for i in ex.answer_positions).decode()
    assert answer_bytes == "".join(" " + v for v in values)
    assert ex.answer_positions[-1] == ex.context_tokens - 1  # the last answer ends the sequence
    assert text.endswith(values[-1])


def test_uses_the_training_templates_not_the_heldout_ones():
    ex = make_data().sample(random.Random(0))
    attrs = {p.sentence for p in ex.passkeys}
    assert any(a in s for a in TRAIN_TEMPLATES.attributes for s in attrs)


def test_same_rng_state_gives_the_same_example():
    data = make_data()
    a, b = data.sample(random.Random(7)), data.sample(random.Random(7))
    assert a.input_ids == b.input_ids and a.answer_positions == b.answer_positions


def test_haystack_too_short_is_refused():
    with pytest.raises(SedpaError, match="only .* tokens .* context_max"):
        PasskeyData(byte_encode, HAYSTACK[:2000], context_min=1500, context_max=2500, num_passkeys=2)


def test_context_too_short_for_the_passkeys_is_refused():
    with pytest.raises(SedpaError, match="too short for 8 passkeys"):
        make_data(context_min=300, context_max=2500, num_passkeys=8)


def packed_digit_encode(text: str) -> list[int]:
    """Bytes, except that digits are packed three to a token, a leading space with the first three
    (as Llama-3's tokenizer does: " 123456" -> " 123", "456")."""
    out: list[int] = []
    i = 0
    while i < len(text):
        space = text[i] == " " and i + 1 < len(text) and text[i + 1].isdigit()
        if space or text[i].isdigit():
            j = i + space
            while j < len(text) and text[j].isdigit() and j - i - space < 3:
                j += 1
            out.append(1000 + 2000 * space + int(text[i + space:j]))  # one token
            i = j
        else:
            out.extend(text[i].encode("utf-8"))
            i += 1
    return out


@pytest.mark.parametrize("encode", [byte_encode, packed_digit_encode], ids=["digit-per-token", "packed-digits"])
def test_loss_reads_the_states_that_predict_every_answer_token(encode):
    """The hidden state at position p predicts token p + 1: the distillation must score the state just
    before each value token, the last token of the answer prefix included (with packed digits the first
    value token carries most of the value)."""
    data = PasskeyData(encode, HAYSTACK, context_min=1500, context_max=2500, context_intervals=5, num_passkeys=3,
                       start_tokens=[1])
    ex = data.sample(random.Random(1))
    scored = set(ex.loss_positions)
    assert len(ex.loss_positions) == len(scored) == len(ex.answer_positions)
    for p in ex.answer_positions:
        assert p - 1 in scored  # the state that predicts answer token p
    first_values = [p for p in ex.answer_positions if p - 1 not in ex.answer_positions]
    assert len(first_values) == 3  # one answer span per asked passkey: each prefix's last state is scored
