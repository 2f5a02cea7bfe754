"""sedpa-tiny: the trainer (data determinism, exact resume, CLI) and the shipped model (a retrieval
regression guard on fixed 1K-token examples; the real benchmark is bench/results/tiny_acceptance.json)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sedpa_compress.data.needles import make_needle_example
from sedpa_compress.data.text import load_haystack
from sedpa_compress.errors import SedpaError
from sedpa_compress.models.loader import EMBEDDED_DIR
from sedpa_compress.tiny.config import load_config
from sedpa_compress.tiny.train import train

SHIPPED = EMBEDDED_DIR / "sedpa-tiny"
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"
SMALL = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
             tokens_per_step=2048, curriculum=[{"until": 1.0, "lengths": {256: 1, 512: 1}}], num_workers=0,
             warmup_steps=2, checkpoint_every=2, log_every=1, eval_contexts=[512], eval_depths=2,
             eval_samples_per_depth=1)


def test_recipe_rejects_unknown_fields_and_bad_lengths(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("train_tiny:\n  hidden_sise: 64\n")
    with pytest.raises(SedpaError, match="hidden_sise"):
        load_config(bad)
    with pytest.raises(SedpaError, match="multiple of 64"):
        load_config(RECIPE, tokens_per_step=1000)
    import yaml

    for field, text in (("curriculum", '[{"until": 1.0, "lengths": {512:1}}]'), ("value_weights", "{digits:1}"),
                        ("haystack_mix", "{text:0.4, filler: 0.6}")):
        with pytest.raises(SedpaError, match="without a space after the colon"):  # YAML 1.1's base-60 `512:1`
            load_config(RECIPE, **{field: yaml.safe_load(text)})


def test_schedule_span_continues_one_long_schedule_across_runs():
    """A run split into device calls (schedule_span [0, 0.5] then [0.5, 1]) follows one cosine learning rate and one
    length curriculum: the second call starts where the first ended, warming its fresh optimizer up to that rate;
    the whole run's schedule is the default span's. A span outside [0, 1] or empty is refused."""
    from sedpa_compress.tiny.data import sequence_length
    from sedpa_compress.tiny.train import lr_at

    whole = load_config(RECIPE, warmup_steps=4)
    first = load_config(RECIPE, warmup_steps=4, schedule_span=[0.0, 0.5])
    second = load_config(RECIPE, warmup_steps=4, schedule_span=[0.5, 1.0])
    assert second.schedule_span == (0.5, 1.0)
    for p in (0.0, 0.3, 0.7, 1.0):
        assert lr_at(first, 100, p) == pytest.approx(lr_at(whole, 100, p / 2))
        assert lr_at(second, 100, p) == pytest.approx(lr_at(whole, 100, 0.5 + p / 2))
    assert lr_at(first, 100, 1.0) == pytest.approx(lr_at(second, 100, 0.0))  # no jump between the calls
    mid = lr_at(whole, 100, 0.5)
    assert whole.lr * whole.min_lr_ratio < mid < whole.lr
    assert [lr_at(second, s, 0.0) for s in range(4)] == pytest.approx([mid * (s + 1) / 4 for s in range(4)])
    # the curriculum too: the second call draws the lengths of the long schedule's second half
    for p in (0.1, 0.6, 0.95):
        for seed in range(5):
            assert (sequence_length(second, p, random.Random(seed))
                    == sequence_length(whole, 0.5 + p / 2, random.Random(seed)))
    # each call draws its own batches (its steps count from 0 again)
    assert len({whole.data_seed, first.data_seed, second.data_seed}) == 2 and whole.data_seed == first.data_seed
    for bad in ([0.5, 0.5], [-0.1, 0.5], [0.2, 1.5], [0.1]):
        with pytest.raises(SedpaError, match="schedule_span"):
            load_config(RECIPE, schedule_span=bad)


def test_compile_model_trains_the_same_weights_as_eager(tmp_path):
    """TinyTrainConfig.compile_model: the model under torch.compile (dynamic shapes, both curriculum lengths through
    one compiled model) takes the same 3 steps as eager, to fp32 rounding (the exported weights are bf16)."""
    weights = []
    for compiled in (False, True):
        cfg = load_config(RECIPE, steps=3, compile_model=compiled, **SMALL)
        out = train(cfg, tmp_path / str(compiled), device="cpu", eval_at_end=False, log=lambda s: None)
        weights.append(load_file(str(out / "model.safetensors")))
    for k in weights[0]:
        assert torch.allclose(weights[0][k].float(), weights[1][k].float(), atol=1e-3, rtol=1e-2), k


def test_resume_continues_bit_for_bit(tmp_path):
    """4 steps in one go == 2 steps, then --resume for 2 more: same weights, same history."""
    cfg = load_config(RECIPE, steps=4, **SMALL)
    once = train(cfg, tmp_path / "once", device="cpu", eval_at_end=False, log=lambda s: None)
    half = load_config(RECIPE, steps=2, **SMALL)
    train(half, tmp_path / "twice", device="cpu", eval_at_end=False, log=lambda s: None)
    twice = train(cfg, tmp_path / "twice", resume=True, device="cpu", eval_at_end=False, log=lambda s: None)
    a, b = load_file(str(once / "model.safetensors")), load_file(str(twice / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (once.parent / "checkpoint" / "state.json").read_text().count('"step"') == \
        (twice.parent / "checkpoint" / "state.json").read_text().count('"step"')


def test_the_attention_kernel_is_a_recipe_choice_refused_off_cuda(tmp_path):
    """TinyTrainConfig.attention_backend: a known SDPA kernel or an error naming the choices (the memory-efficient
    kernel only without grouped K/V heads, which it cannot take); a CUDA kernel asked
    of a CPU run is refused before anything is written, and "auto" leaves PyTorch's choice (a null context)."""
    from sedpa_compress.tiny.train import attention_kernel

    with pytest.raises(SedpaError, match="attention_backend 'fast'.*auto, flash, cudnn, efficient"):
        load_config(RECIPE, attention_backend="fast")
    with pytest.raises(SedpaError, match="efficient takes no grouped K/V heads.*use auto, flash or cudnn"):
        load_config(RECIPE, attention_backend="efficient")  # num_kv_heads 4 < num_heads 8
    cfg = load_config(RECIPE, steps=2, attention_backend="cudnn", **SMALL)
    with pytest.raises(SedpaError, match="attention_backend cudnn is a CUDA kernel.*attention_backend=auto"):
        train(cfg, tmp_path / "run", device="cpu", eval_at_end=False, log=lambda s: None)
    assert not (tmp_path / "run").exists()
    with attention_kernel("auto"):
        assert torch.nn.functional.scaled_dot_product_attention(*torch.randn(3, 1, 1, 4, 8)).shape == (1, 1, 4, 8)


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    cfg = load_config(RECIPE, steps=2, **SMALL)
    with pytest.raises(SedpaError, match="no checkpoint"):
        train(cfg, tmp_path / "run", resume=True, device="cpu", eval_at_end=False, log=lambda s: None)


def test_batches_depend_only_on_the_step():
    from sedpa_compress.tiny.data import TinyData
    from sedpa_compress.tiny.tokenizer import load_hf_tokenizer  # noqa: F401  (import check)
    from tokenizers import Tokenizer

    cfg = load_config(RECIPE, **SMALL)
    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    data = TinyData(cfg, tok)
    a, b = data[(7, 256)], data[(7, 256)]
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.answer_mask, b.answer_mask)
    assert a.answer_mask.any() and not torch.equal(a.input_ids, data[(8, 256)].input_ids)


def test_question_text_loss_false_leaves_only_the_answers_as_targets_after_the_haystack():
    """question_text_loss: with it (every stage to 23) the question and answer-prefix tokens after the haystack
    count in the text loss; without it nothing after the haystack is a text target but the needle sentences before,
    and the answers and the tokens themselves are the same."""
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    kw = {**SMALL, "needle_fraction": 1.0, "copy_fraction": 0.0, "tokens_per_step": 2048}
    with_q = TinyData(load_config(RECIPE, **kw), tok)[(3, 1024)]
    without_q = TinyData(load_config(RECIPE, **kw, question_text_loss=False), tok)[(3, 1024)]
    assert torch.equal(with_q.input_ids, without_q.input_ids)
    assert torch.equal(with_q.answer_mask, without_q.answer_mask)
    for b in range(with_q.input_ids.shape[0]):
        ans = with_q.answer_mask[b]
        first = int(ans.nonzero()[0])  # the tail starts before the first answer; its question is text in one only
        tail = slice(first - 4, first)
        assert with_q.text_mask[b, tail].all() and not without_q.text_mask[b, tail].any()
        assert not (without_q.text_mask[b] & ans).any()
        assert without_q.text_mask[b].sum() < with_q.text_mask[b].sum()


def test_haystack_text_loss_trains_the_lm_on_running_text_haystacks_only():
    """haystack_text_loss: the haystack of a retrieval sequence becomes a text target where it is running text, never
    where it is filler, random words or shuffled sentences; the tokens, the answers and everything else are the
    same batch (the random stream does not move)."""
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    kw = {**SMALL, "needle_fraction": 1.0, "copy_fraction": 0.0, "tokens_per_step": 4096}
    for mix, learnt in (({"text": 1.0}, True), ({"filler": 0.3, "words": 0.3, "shuffled": 0.4}, False)):
        off = TinyData(load_config(RECIPE, **kw, haystack_mix=mix), tok)[(5, 1024)]
        on = TinyData(load_config(RECIPE, **kw, haystack_mix=mix, haystack_text_loss=True), tok)[(5, 1024)]
        assert torch.equal(off.input_ids, on.input_ids) and torch.equal(off.answer_mask, on.answer_mask)
        assert not (on.text_mask & on.answer_mask).any() and (off.text_mask <= on.text_mask).all()
        if learnt:  # most of a 1K sequence is haystack: now nearly all of it is a target
            assert on.text_mask.float().mean() > 0.8 > off.text_mask.float().mean() + 0.3
        else:
            assert torch.equal(off.text_mask, on.text_mask)


def test_phrase_values_in_training_come_from_the_training_text():
    """value_weights with phrase: the training needles' phrase values are spans of the training text (the recipe's),
    never the held-out pool the acceptance draws from."""
    from sedpa_compress.data.wordings import heldout_phrases
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    text = ("The keeper of the lighthouse walked along the rocky shore every evening. " * 3 +
            "Nobody remembered why the old bridge had been painted bright yellow.\n\n") * 40
    cfg = load_config(RECIPE, **{**SMALL, "value_weights": {"phrase": 1.0}})
    data = TinyData(cfg, tok, text=text)
    assert data.templates.phrases and all(p in text for p in data.templates.phrases)
    values = {data.templates.sample_value(random.Random(i)) for i in range(50)}
    assert all(" " in v and v in text for v in values) and not values & set(heldout_phrases())


def test_evaluate_takes_one_value_format_and_refuses_an_unknown_one():
    from sedpa_compress.data.needles import HELDOUT_TEMPLATES
    from sedpa_compress.data.wordings import VALUE_FORMATS
    from sedpa_compress.tiny.evaluate import heldout_templates

    assert heldout_templates("default") is HELDOUT_TEMPLATES
    assert heldout_templates("phrase").value_weights == tuple(float(f == "phrase") for f in VALUE_FORMATS)
    with pytest.raises(SedpaError, match="--values 'sentence'"):
        heldout_templates("sentence")


def test_long_sequences_carry_more_needles_and_questions_when_the_recipe_asks():
    """needles_per_4k / queries_per_4k: a long retrieval sequence carries more questions (answers to learn
    from), a short one keeps max_needles / max_queries; without them every length keeps the caps."""
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    plain = load_config(RECIPE, **SMALL)
    assert plain.needle_caps(8192) == (plain.max_needles, plain.max_queries)
    cfg = load_config(RECIPE, **{**SMALL, "needles_per_4k": 8, "queries_per_4k": 4, "needle_fraction": 1.0,
                                 "copy_fraction": 0.0, "tokens_per_step": 8192})
    assert cfg.needle_caps(1024) == (cfg.max_needles, cfg.max_queries) and cfg.needle_caps(8192) == (16, 8)
    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))

    def answers(c) -> float:  # answer spans per sequence over 40 batches of one 8K-token sequence
        data, spans, seqs = TinyData(c, tok), 0, 0
        for step in range(40):
            mask = data[(step, 8192)].answer_mask
            spans += int((mask[:, 1:] & ~mask[:, :-1]).sum())
            seqs += mask.shape[0]
        return spans / seqs

    base = load_config(RECIPE, **{**SMALL, "needle_fraction": 1.0, "copy_fraction": 0.0, "tokens_per_step": 8192})
    assert answers(cfg) > 1.5 * answers(base)
    with pytest.raises(SedpaError, match="needles_per_4k"):
        load_config(None, needles_per_4k=-1)


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoTokenizer, LlamaForCausalLM

    if not (SHIPPED / "model.safetensors").is_file():
        pytest.fail(f"the embedded model is missing at {SHIPPED}")
    tok = AutoTokenizer.from_pretrained(str(SHIPPED))
    model = LlamaForCausalLM.from_pretrained(str(SHIPPED), dtype=torch.float32).eval()
    return model, tok


def test_shipped_model_is_small_and_documented():
    size = sum(p.stat().st_size for p in SHIPPED.glob("*.safetensors"))
    assert size <= 45_000_000  # the budget (tiny.ship refuses more)
    card = (SHIPPED / "README.md").read_text()
    assert "sedpa train-tiny" in card and "loss_curve.png" in card
    assert (SHIPPED / "loss_curve.png").is_file()


def test_shipped_model_retrieves_on_fixed_1k_examples(shipped):
    """A regression guard: six fixed 1K-token needle prompts at depths 0..1 of held-out text, in the
    wordings sedpa-tiny was trained on (held-out wordings are the benchmark's job, and the model is
    weaker there: see bench/results/tiny_acceptance_h100.json). Greedy decoding writes each value;
    streaming attention (sink 16 + recent 64) cannot see the mid-context needles."""
    from sedpa_compress.data.needles import TRAIN_TEMPLATES, answer_found
    from sedpa_compress.tiny.evaluate import greedy_answer

    model, tok = shipped
    hay = load_haystack(None, min_chars=20000)
    found = {"full": 0, "streaming": 0}
    for i, depth in enumerate((0.0, 0.2, 0.4, 0.6, 0.8, 1.0)):
        ex = make_needle_example(tok, hay, 1024, [depth], random.Random(100 + i), templates=TRAIN_TEMPLATES)
        ids = tok(ex.prompt)["input_ids"]
        for mode in found:
            if mode == "streaming" and depth in (0.0, 1.0):
                continue  # the sink or the recent window holds these needles
            text = tok.decode(greedy_answer(model, ids, len(ex.answer) + 3, mode))
            found[mode] += answer_found(text, ex.answer)
    assert found["full"] >= 5, found
    assert found["streaming"] <= 1, found


def test_cli_train_tiny_help_and_bad_override():
    from typer.testing import CliRunner

    from sedpa_compress.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["train-tiny", "--help"])
    assert res.exit_code == 0 and "--resume" in res.output
    res = runner.invoke(app, ["train-tiny", "--override", "no-equals-sign"])
    assert res.exit_code == 2


def test_generated_word_syllables_and_free_codes_reach_the_training_needles():
    """Stage 10's data: invented-word values from generated syllables (not the family's 14), codes of no
    fixed shape, and more than half the values starting with a letter."""
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    words = TinyData(load_config(RECIPE, **{**SMALL, "generated_word_syllables": True, "value_weights": {"word": 1.0}}),
                     tok).templates
    plain = TinyData(load_config(RECIPE, **{**SMALL, "value_weights": {"word": 1.0}}), tok).templates
    assert len(words.value_syllables) > 500 and not plain.value_syllables
    many = {words.sample_value(random.Random(i)) for i in range(300)}
    few = {plain.sample_value(random.Random(i)) for i in range(300)}
    assert len(many) > 280 and len(many) > len(few) + 20
    stage10 = load_config(Path("recipes/tiny-stage10.yaml"))
    assert stage10.generated_word_syllables and stage10.value_weights["free_code"] > 0
    rng = random.Random(0)
    family = TinyData(load_config(Path("recipes/tiny-stage10.yaml"), **SMALL), tok).templates
    values = [family.sample_value(rng) for _ in range(2000)]
    assert sum(v[0].isalpha() for v in values) / len(values) > 0.5
    real = [v for v in values if v.lower() in set(family.words)]
    assert 0.04 < len(real) / len(values) < 0.15  # 40% of the 20% word values
    with pytest.raises(SedpaError, match="corpus_word_values"):
        load_config(None, corpus_word_values=1.5)


def test_wording_random_verbs_sets_the_share_of_random_joining_words():
    """Stage 12's data: the words between attribute and value (and in procedural answer prefixes) are random
    corpus words `wording_random_verbs` of the time instead of a listed verb, so a held-out joining phrase
    ("carries the", "stands at") is one more unseen word, not a broken pattern."""
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))

    def listed_share(share):
        fam = TinyData(load_config(RECIPE, **{**SMALL, "corpus_words": 500, "wording_wild": 1.0,
                                              "wording_random_verbs": share}), tok).templates
        rng = random.Random(0)
        return sum(fam._verb(rng) in fam.phrasing.verbs for _ in range(1000)) / 1000

    assert listed_share(0.0) == 1.0 and listed_share(1.0) < 0.15 and 0.4 < listed_share(0.5) < 0.65
    stage12 = load_config(Path("recipes/tiny-stage12.yaml"))
    assert stage12.wording_random_verbs == 0.5 and stage12.generated_key_syllables
    # invented keys and attributes from the generated syllables, not the family's 14
    fam = TinyData(load_config(RECIPE, **{**SMALL, "generated_key_syllables": True}), tok).templates
    plain = TinyData(load_config(RECIPE, **SMALL), tok).templates
    rng_a, rng_b = random.Random(4), random.Random(4)
    assert len({fam.pseudo_word(rng_a) for _ in range(300)}) > len({plain.pseudo_word(rng_b) for _ in range(300)}) + 30
    assert len(fam.key_syllables) > 500 and not plain.key_syllables
    with pytest.raises(SedpaError, match="wording_random_verbs"):
        load_config(None, wording_random_verbs=2.0)


def test_wording_verb_particles_end_some_random_joining_words_and_change_nothing_when_off():
    """Stage 13's data: 4 in 10 random joining words end with a particle ("lantern on 4821"), because stage 12
    copied the word after the key ("stands") where a held-out needle put its value after "stands at"; no particle
    is a word right before a held-out value (check_disjoint), and a family without particles draws exactly what
    it drew before (the shipped model's fixed examples and earlier stages' batches are unchanged)."""
    import dataclasses

    from sedpa_compress.data.wordings import HELDOUT_WORDINGS, TRAIN_WORDINGS, VERB_PARTICLES, check_disjoint
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    wide = {"corpus_words": 500, "wording_wild": 1.0, "wording_random_verbs": 1.0, "wording_verb_particles": True}
    fam = TinyData(load_config(RECIPE, **{**SMALL, **wide}), tok).templates
    rng = random.Random(0)
    ends = [fam._verb(rng).split()[-1] for _ in range(2000)]
    assert 0.3 < sum(e in VERB_PARTICLES for e in ends) / len(ends) < 0.5
    assert check_disjoint(fam, HELDOUT_WORDINGS) == []
    assert check_disjoint(dataclasses.replace(fam, verb_particles=("at",)), HELDOUT_WORDINGS)
    off = dataclasses.replace(TRAIN_WORDINGS, random_verb_share=1.0)
    a, b = random.Random(3), random.Random(3)
    same = dataclasses.replace(off, verb_particles=())
    assert [off._verb(a) for _ in range(200)] == [same._verb(b) for _ in range(200)]
    assert load_config(Path("recipes/tiny-stage13.yaml")).wording_verb_particles


def test_wording_echo_prefixes_restate_the_needle_up_to_its_value_and_change_nothing_when_off():
    """Stage 14's data: some answer prefixes echo the needle's sentence up to its value ("Dr. Patel can be paged
    at" -> " 4821"), so the value follows whatever words a prefix ends with (stages 10-13 wrote more words after
    an everyday prefix ending in a verb: bench/results/tiny_user_wordings_cpu.json). The share is drawn only when
    set, so a family without echoes draws exactly what it drew before; a bad share is refused."""
    import dataclasses

    from sedpa_compress.data.wordings import TRAIN_WORDINGS
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    fam = TinyData(load_config(RECIPE, **{**SMALL, "corpus_words": 500, "wording_echo_prefixes": 0.5}), tok).templates
    assert fam.echo_prefix_share == 0.5
    rng = random.Random(1)
    echoed = 0
    for _ in range(400):
        needle = fam.sample_needles(rng, 1)[0]
        tail, answer = fam.render_tail(needle, rng)
        assert answer in (" " + needle.value, needle.value) and not tail.endswith(" ")
        before = needle.sentence[:needle.sentence.find(needle.value)].rstrip()
        echoed += bool(before) and tail.endswith(before)
    assert 0.35 < echoed / 400 < 0.6  # half the prefixes, less the sentences that open with their value
    a, b = random.Random(5), random.Random(5)
    off = dataclasses.replace(TRAIN_WORDINGS, echo_prefix_share=0.0)
    needles = TRAIN_WORDINGS.sample_needles(random.Random(2), 50)
    assert [TRAIN_WORDINGS.render_tail(n, a) for n in needles] == [off.render_tail(n, b) for n in needles]
    with pytest.raises(SedpaError, match="wording_echo_prefixes"):
        load_config(None, wording_echo_prefixes=1.5)


def test_recipe_value_weights_and_edge_depths_are_checked():
    from sedpa_compress.tiny.config import load_config

    cfg = load_config(Path("recipes/tiny-stage7.yaml"))
    assert cfg.value_weights["code"] == 0.30 and cfg.edge_depth_fraction == 0.25
    with pytest.raises(SedpaError, match="value_weights"):
        load_config(None, value_weights={"hex": 1.0})
    with pytest.raises(SedpaError, match="edge_depth_fraction"):
        load_config(None, edge_depth_fraction=1.5)


def test_value_formats_by_length_band_from_an_acceptance_json():
    """bench/scripts/tiny_acceptance_formats.py: each format's hits per band of contexts, from the JSON's cells."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("formats", "bench/scripts/tiny_acceptance_formats.py")
    formats = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(formats)
    cell = lambda value, output: {"value": value, "output": output}  # noqa: E731
    result = {"rows": [{"mode": "full", "context": 1024, "cells": [cell("48213", " 48213"), cell("AX7-22B", " AX")]},
                       {"mode": "full", "context": 16384, "cells": [cell("AX7-22B", " AX7-22B")]},
                       {"mode": "streaming", "context": 16384, "cells": [cell("AX7-22B", " no")]}]}
    assert formats.by_context(result) == {
        "0K-8K": {"code": {"accuracy": 0.0, "cells": 1}, "digits": {"accuracy": 1.0, "cells": 1}},
        ">8K": {"code": {"accuracy": 1.0, "cells": 1}}}
    # paired against another stage: the same needle at the same cell counts; a different needle does not
    def stage(outputs, needles=("n1", "n2", "n3")):
        return {"rows": [{"mode": "full", "context": 1024, "depth": 0.0,
                          "cells": [{"needle": n, "value": "48213", "output": o} for n, o in zip(needles, outputs)]}]}
    base = stage([" 48213", " 48213", " no"])
    assert formats.paired(base, stage([" no", " 48213", " 48213"])) == {"cells": 3, "gained": 1, "lost": 1, "p": 1.0}
    assert formats.paired(base, stage([" no", " no", " no"], ("n1", "n2", "other")))["cells"] == 2
    assert formats.paired(stage([" no"] * 3), stage([" 48213"] * 3))["p"] == 0.25  # 3 of 3: 2 x 1/8
    # misses by what the answer holds: part of the value, another number, or prose; a hit is no miss
    misses = {"rows": [{"mode": "full", "context": 1024, "cells": [
        cell("N66-P6", " 66-P6\n"), cell("48213", " 5,207"), cell("48213", " and when I go"), cell("48213", " 48213")]}]}
    assert formats.miss_kinds(misses) == {"partial": 1, "other value": 1, "prose": 1}


def test_acceptance_summary_scores_each_value_format_at_each_length():
    from sedpa_compress.tiny.evaluate import summarise

    cell = lambda value, output: {"value": value, "output": output}  # noqa: E731
    rows = [{"mode": m, "context": c, "accuracy": a, "exact": a, "cells": [cell("AX7-22B", " AX7-22B" if a else " no")]}
            for m, c, a in (("full", 1024, 1.0), ("full", 4096, 0.0), ("full", 4096, 1.0), ("streaming", 1024, 0.0))]
    s = summarise(rows, [1024, 4096, 8192])
    assert s["full"]["accuracy_by_context"] == {"1024": 1.0, "4096": 0.5} and s["full"]["accuracy"] == 2 / 3
    assert s["full"]["accuracy_by_value_format_by_context"] == {"1024": {"code": {"accuracy": 1.0, "cells": 1}},
                                                                 "4096": {"code": {"accuracy": 0.5, "cells": 2}}}
    assert s["streaming"]["accuracy_by_context"] == {"1024": 0.0}


def test_acceptance_scores_each_value_format():
    """The acceptance JSON says which kinds of value the model fails to copy (string match per format)."""
    from sedpa_compress.tiny.evaluate import accuracy_by_value_format

    cell = lambda value, output: {"value": value, "output": output}  # noqa: E731
    rows = [{"cells": [cell("48213", " 48213\n"), cell("AX7-22B", " 4821\n")]},
            {"cells": [cell("Wenrasga", " Wenrasga."), cell("AX7-22B", " AX7-22B"), cell("71,204", "\n71,204")]}]
    assert accuracy_by_value_format(rows) == {"code": {"accuracy": 0.5, "cells": 2}, "digits": {"accuracy": 1.0, "cells": 1},
                                              "thousands": {"accuracy": 1.0, "cells": 1},
                                              "word": {"accuracy": 1.0, "cells": 1}}


def test_acceptance_scores_action_needles_apart_from_attribute_needles():
    """Cells say whether their needle linked key and value by an action ("X remains stationed at 4821"); the summary
    scores the two kinds apart (older JSONs' cells, without a kind, are attribute needles)."""
    from sedpa_compress.tiny.evaluate import summarise

    cells = [{"value": "4821", "output": " 4821", "kind": "action"}, {"value": "77", "output": " no", "kind": "action"},
             {"value": "5", "output": " 5"}]
    s = summarise([{"mode": "full", "context": 1024, "accuracy": 2 / 3, "exact": 2 / 3, "cells": cells}], [1024])
    assert s["full"]["accuracy_by_needle_kind"] == {"action": {"accuracy": 0.5, "cells": 2},
                                                    "attribute": {"accuracy": 1.0, "cells": 1}}


def test_each_data_parallel_process_draws_its_own_batches():
    """TinyData's stream 0 is the one-process stream; another stream (a torchrun rank) draws other batches."""
    from tokenizers import Tokenizer

    from sedpa_compress.tiny.data import TinyData

    cfg = load_config(RECIPE, **SMALL)
    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    one, zero, other = TinyData(cfg, tok), TinyData(cfg, tok, stream=0), TinyData(cfg, tok, stream=1)
    assert torch.equal(one[(5, 256)].input_ids, zero[(5, 256)].input_ids)
    assert not torch.equal(one[(5, 256)].input_ids, other[(5, 256)].input_ids)


def test_train_tiny_under_torchrun_averages_two_processes_gradients(tmp_path):
    """`torchrun --nproc-per-node 2 -m sedpa_compress train-tiny` (gloo on the CPU): process 0 writes the model
    and says 2 processes, whose weights are equal at the end; the other process's batches reach the update
    (the weights differ from one process's run of the same steps, whose batches are process 0's)."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    from sedpa_compress.tiny.config import config_to_dict

    root = Path(__file__).resolve().parents[1]
    recipe = tmp_path / "small.yaml"
    recipe.write_text(yaml.safe_dump({"train_tiny": config_to_dict(load_config(RECIPE, steps=3, **SMALL))}))
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    args = ["train-tiny", "--recipe", str(recipe), "--device", "cpu", "--no-eval"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "sedpa_compress", *args, "--out", str(tmp_path / "two")],
                         env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "x 2 processes" in two.stdout and two.stdout.count("exported") == 1
    one = subprocess.run([sys.executable, "-m", "sedpa_compress", *args, "--out", str(tmp_path / "one")],
                         env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    info = json.loads((tmp_path / "two" / "model" / "training.json").read_text())
    assert info["processes"] == 2 and info["tokens_per_step_all_processes"] == 2 * SMALL["tokens_per_step"]
    assert info["replicas_equal"] is True  # both processes ended with the same weights
    a = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)


def test_init_weights_false_takes_the_init_models_tokenizer_and_fresh_weights(tmp_path):
    """`init_weights: false` (stage 22, a from-scratch run that keeps the shipped tokenizer): --init-from gives the
    tokenizer and no weights, and the run records so; with the default the same init's weights are loaded. Only the
    first call of a split run may start fresh: a later span with init_weights false is refused with the fix."""
    import shutil

    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer

    from sedpa_compress.tiny.model import build_model
    from sedpa_compress.tiny.train import TOKENIZER_FILES, train

    init = tmp_path / "init"
    init.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy2(SHIPPED / name, init / name)
    base = build_model(load_config(RECIPE, **SMALL))
    save_file({k: torch.full_like(v, 0.5).contiguous() for k, v in base.state_dict().items() if k != "lm_head.weight"},
              str(init / "model.safetensors"))
    kw = {**SMALL, "steps": 1, "lr": 1e-9, "warmup_steps": 1}
    outs = {}
    for fresh in (True, False):
        run = tmp_path / ("fresh" if fresh else "init_weights")
        cfg = load_config(RECIPE, **kw, init_weights=not fresh)
        model_dir = train(cfg, run, init_from=init, device="cpu", eval_at_end=False, log=lambda *_: None)
        outs[fresh] = load_file(str(model_dir / "model.safetensors"))
        info = json.loads((model_dir / "training.json").read_text())
        assert ("tokenizer only" in info["init_from"]) == fresh
        assert (Tokenizer.from_file(str(model_dir / "tokenizer.json")).get_vocab()
                == Tokenizer.from_file(str(SHIPPED / "tokenizer.json")).get_vocab())
    w = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(outs[False][w].float(), torch.full_like(outs[False][w].float(), 0.5), atol=1e-3)
    assert outs[True][w].float().std() > 0.01  # a fresh init, not the init model's constant
    load_config(RECIPE, init_weights=False, schedule_span=[0.0, 0.14])
    with pytest.raises(SedpaError, match="init_weights=true"):
        load_config(RECIPE, init_weights=False, schedule_span=[0.14, 0.46])


def test_init_from_a_model_with_fewer_kv_heads_grows_it_into_the_same_function(tmp_path):
    """--init-from a 1-KV-head model into a 2-KV-head recipe: each KV head's rows are copied into its query
    group's new heads, so the grown model's logits equal the original's before any step; a count that does not
    grow evenly is refused with the fix."""
    from safetensors.torch import save_file

    from sedpa_compress.tiny.model import build_model
    from sedpa_compress.tiny.train import load_weights

    small = load_config(RECIPE, **{**SMALL, "num_kv_heads": 1})
    grown_cfg = load_config(RECIPE, **SMALL)  # 2 KV heads
    old = build_model(small).eval()
    torch.nn.init.normal_(old.model.layers[0].self_attn.k_proj.weight, std=0.5)  # keys that matter
    state = {k: v for k, v in old.state_dict().items() if k != "lm_head.weight"}
    (tmp_path / "old").mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "old" / "model.safetensors"))
    grown = build_model(grown_cfg).eval()
    logs = []
    load_weights(grown, tmp_path / "old", grow=True, log=logs.append)
    k_rows = (m.model.layers[0].self_attn.k_proj.weight.shape[0] for m in (grown, old))
    assert next(k_rows) == 2 * next(k_rows)
    ids = torch.randint(3, small.vocab_size, (2, 48))
    with torch.no_grad():
        torch.testing.assert_close(grown(ids).logits, old(ids).logits, rtol=1e-5, atol=1e-5)
    assert "grew" in logs[0] and "1 KV heads a layer into 2" in logs[0]
    with pytest.raises(SedpaError, match="does not match"):  # without grow (a resume): refused as before
        load_weights(build_model(grown_cfg), tmp_path / "old")
    three = load_config(RECIPE, **{**SMALL, "num_heads": 6, "num_kv_heads": 3, "hidden_size": 96})
    big_old = build_model(load_config(RECIPE, **{**SMALL, "num_heads": 6, "num_kv_heads": 2, "hidden_size": 96}))
    (tmp_path / "two").mkdir()
    save_file({k: v.contiguous() for k, v in big_old.state_dict().items() if k != "lm_head.weight"},
              str(tmp_path / "two" / "model.safetensors"))
    with pytest.raises(SedpaError, match="grow to a multiple"):
        load_weights(build_model(three), tmp_path / "two", grow=True)


def test_init_from_a_shallower_model_grows_layers_into_the_same_function_and_narrows_a_wider_mlp(tmp_path):
    """--init-from a 2-layer model into a 4-layer recipe: the new layers are copies with zeroed output projections,
    so the logits are the original's before any step, spread between the old layers; a recipe with a narrower MLP
    keeps each layer's strongest channels; fewer layers or a wider MLP are refused with the fix."""
    from safetensors.torch import save_file

    from sedpa_compress.tiny.model import build_model, grow_layers, narrow_mlp
    from sedpa_compress.tiny.train import load_weights

    old = build_model(load_config(RECIPE, **SMALL)).eval()  # 2 layers, MLP 128
    for p in old.parameters():  # weights far from init, so a dropped or misplaced layer would show
        torch.nn.init.normal_(p, std=0.2)
    state = {k: v.detach().clone() for k, v in old.state_dict().items() if k != "lm_head.weight"}
    (tmp_path / "old").mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "old" / "model.safetensors"))
    deep = build_model(load_config(RECIPE, **{**SMALL, "num_layers": 4})).eval()
    logs = []
    load_weights(deep, tmp_path / "old", grow=True, log=logs.append)
    ids = torch.randint(3, old.config.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(deep(ids).logits, old(ids).logits, rtol=1e-4, atol=1e-4)
    assert any("2 layers into 4" in line for line in logs)
    grown = grow_layers(state, 5)  # old layers 0 and 1 keep their order; three copies spread after them
    zero = [i for i in range(5) if not grown[f"model.layers.{i}.self_attn.o_proj.weight"].any()]
    assert zero == [1, 3, 4] or zero == [1, 2, 4], zero
    assert not grown["model.layers.1.mlp.down_proj.weight"].any()
    assert torch.equal(grown["model.layers.1.self_attn.q_proj.weight"], state["model.layers.0.self_attn.q_proj.weight"])
    with pytest.raises(SedpaError, match="does not drop layers"):
        grow_layers(state, 1)

    narrow = narrow_mlp(state, 96)
    gate, up = state["model.layers.0.mlp.gate_proj.weight"], state["model.layers.0.mlp.up_proj.weight"]
    down = state["model.layers.0.mlp.down_proj.weight"]
    score = gate.norm(dim=1) * up.norm(dim=1) * down.norm(dim=0)
    kept = score.topk(96).indices.sort().values
    assert torch.equal(narrow["model.layers.0.mlp.down_proj.weight"], down[:, kept])
    assert narrow["model.layers.1.mlp.gate_proj.weight"].shape == (96, SMALL["hidden_size"])
    thin = build_model(load_config(RECIPE, **{**SMALL, "num_layers": 3, "intermediate_size": 96}))
    logs = []
    load_weights(thin, tmp_path / "old", grow=True, log=logs.append)  # grown and narrowed in one step
    assert thin.model.layers[2].mlp.up_proj.weight.shape[0] == 96 and any("from 128 to 96" in line for line in logs)
    with pytest.raises(SedpaError, match="only narrows"):
        narrow_mlp(state, 160)


def test_init_from_widens_a_narrower_mlp_into_the_same_function_and_starts_from_int8_weights(tmp_path):
    """--init-from a model with MLP 128 into a recipe with 192 (and more layers): new channels' gate and up rows are
    drawn, seeded, and their down-projection columns are zero, so the logits are the original's before any step
    (the size lever: with int8 storage the budget holds about twice the parameters). A folder stored as int8
    (models.int8) starts from the weights it restores to: the logits of the bf16 roundtrip."""
    from safetensors.torch import save_file

    from sedpa_compress.models import int8
    from sedpa_compress.tiny.model import build_model, widen_mlp
    from sedpa_compress.tiny.train import load_weights

    old = build_model(load_config(RECIPE, **SMALL)).eval()  # 2 layers, MLP 128
    for p in old.parameters():
        torch.nn.init.normal_(p, std=0.2)
    state = {k: v.detach().clone() for k, v in old.state_dict().items() if k != "lm_head.weight"}
    (tmp_path / "old").mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "old" / "model.safetensors"))
    (tmp_path / "old" / "config.json").write_text("{}")
    wide = build_model(load_config(RECIPE, **{**SMALL, "num_layers": 3, "intermediate_size": 192})).eval()
    logs = []
    load_weights(wide, tmp_path / "old", grow=True, log=logs.append)
    ids = torch.randint(3, old.config.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(wide(ids).logits, old(ids).logits, rtol=1e-4, atol=1e-4)
    assert any("from 128 to 192" in line and "widened" in line for line in logs)
    grown = widen_mlp(state, 192)
    down = grown["model.layers.0.mlp.down_proj.weight"]
    assert down.shape == (SMALL["hidden_size"], 192) and not down[:, 128:].any()
    assert torch.equal(down[:, :128], state["model.layers.0.mlp.down_proj.weight"])
    new_gate = grown["model.layers.1.mlp.gate_proj.weight"][128:]
    assert new_gate.std().item() == pytest.approx(0.02, rel=0.2) and new_gate.any()
    assert torch.equal(widen_mlp(state, 192)["model.layers.1.mlp.up_proj.weight"], grown["model.layers.1.mlp.up_proj.weight"])
    with pytest.raises(SedpaError, match="cannot widen to 96"):
        widen_mlp(state, 96)

    q = int8.quantize_folder(tmp_path / "old", tmp_path / "q")
    same = build_model(load_config(RECIPE, **SMALL)).eval()
    load_weights(same, q, grow=True)
    restored = int8.load_int8_state_dict(q / int8.INT8_FILE, torch.float32)
    for name, t in same.state_dict().items():
        if name in restored:
            assert torch.equal(t, restored[name]), name


def _one_commit_repo(tmp_path):
    """A git repository with one commit (a README), and a `git(*args)` that runs in it and returns its stdout: where
    tiny.checkpoints keeps a stage."""
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (repo / "README.md").write_text("x\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "init")
    return repo, git


def test_a_kept_checkpoint_lives_in_history_not_in_the_tree_and_restores(tmp_path):
    """tiny.checkpoints: `keep` commits a stage's weights and removes them in the next commit (the tree a device
    call carries stays small, the blob stays in history), recording it in the ledger; `restore` writes a model
    folder whose weights are the kept bytes. Staged changes, a kept name again, an unknown name and another
    tokenizer are refused."""
    from safetensors.torch import save_file

    from sedpa_compress.tiny import checkpoints

    repo, git = _one_commit_repo(tmp_path)
    stage = tmp_path / "run" / "model"
    stage.mkdir(parents=True)
    save_file({"w": torch.arange(12, dtype=torch.float32).reshape(3, 4)}, str(stage / "model.safetensors"))
    (stage / "config.json").write_text('{"num_key_value_heads": 4}')
    (stage / "tokenizer.json").write_text('{"tok": 1}')
    entry = checkpoints.keep(stage, "stage16", repo=repo, note="a test", source="shipped")
    assert entry["config"] == {"num_key_value_heads": 4} and entry["from"] == "shipped"
    assert not (repo / entry["path"]).exists()
    assert git("ls-tree", "HEAD", "--name-only", "-r").split() == ["README.md", "recipes/tiny-checkpoints.json"]
    assert git("rev-parse", f"HEAD~1:{entry['path']}") == entry["blob"]
    assert git("status", "--porcelain") == ""
    out = checkpoints.restore("stage16", tmp_path / "init", repo=repo, tokenizer_from=stage)
    assert (out / "model.safetensors").read_bytes() == (stage / "model.safetensors").read_bytes()
    assert json.loads((out / "config.json").read_text()) == {"num_key_value_heads": 4}
    assert (out / "tokenizer.json").read_text() == '{"tok": 1}'
    with pytest.raises(SedpaError, match="already kept"):
        checkpoints.keep(stage, "stage16", repo=repo)
    with pytest.raises(SedpaError, match="no checkpoint 'stage9'"):
        checkpoints.restore("stage9", tmp_path / "x", repo=repo, tokenizer_from=stage)
    with pytest.raises(SedpaError, match="tokenizer"):
        checkpoints.restore("stage16", tmp_path / "y", repo=repo)  # the shipped tokenizer is not this one
    (repo / "README.md").write_text("y\n")
    git("add", "README.md")
    with pytest.raises(SedpaError, match="staged changes"):
        checkpoints.keep(stage, "stage17", repo=repo)


def test_a_stage_stored_as_int8_is_kept_and_restores_as_int8(tmp_path):
    """The size lever's stages (twice the parameters, stored as int8: recipes/tiny-stage23.yaml) are kept and restored
    like any other, so a run of that size can continue in a later session: `keep` takes a folder whose weights are
    model.int8.safetensors and `restore` writes them back under that name, where every loader and --init-from read
    them. A folder with neither weights file is refused."""
    from sedpa_compress.models import int8
    from sedpa_compress.tiny import checkpoints

    repo, git = _one_commit_repo(tmp_path)
    stage = tmp_path / "run" / "model_int8"
    stage.mkdir(parents=True)
    from safetensors.torch import save_file
    tensors, meta = int8.quantize_state_dict({"w": torch.randn(3, 4, dtype=torch.bfloat16)})
    save_file(tensors, str(stage / int8.INT8_FILE), metadata=meta)
    (stage / "config.json").write_text('{"num_hidden_layers": 12}')
    (stage / "tokenizer.json").write_text('{"tok": 1}')
    entry = checkpoints.keep(stage, "stage23", repo=repo, source="soup21")
    assert entry["weights_file"] == int8.INT8_FILE and entry["path"].endswith(".int8.safetensors")
    out = checkpoints.restore("stage23", tmp_path / "init", repo=repo, tokenizer_from=stage)
    assert (out / int8.INT8_FILE).read_bytes() == (stage / int8.INT8_FILE).read_bytes()
    assert not (out / "model.safetensors").exists()
    assert torch.equal(int8.load_int8_state_dict(out / int8.INT8_FILE)["w"],
                       int8.load_int8_state_dict(stage / int8.INT8_FILE)["w"])
    (stage / int8.INT8_FILE).unlink()
    with pytest.raises(SedpaError, match="no model.safetensors"):
        checkpoints.keep(stage, "stage24", repo=repo)


def test_a_runs_card_says_its_data_mix_corpus_and_longest_context(tmp_path):
    """A run's own card (tiny.card, written beside its model): text, copy and retrieval shares that add up (stage 22:
    15 / 15 / 70, where the card said 30% text), the corpus when the recipe has one, and its longest training context
    (the card said 16K for every run)."""
    from sedpa_compress.tiny.card import write_card

    info = json.loads((Path(__file__).resolve().parents[1] / "bench" / "results"
                       / "tiny_stage22-1_training_h200.json").read_text())
    write_card(tmp_path, info, [], None)
    card = (tmp_path / "README.md").read_text()
    assert "- data: 15% plain text sequences" in card and "15% copy practice" in card and "70% retrieval" in card
    assert f"and the train split of the corpus `{info['config']['corpus']}`" in card and "(up to 32K tokens)" in card


def test_ship_continues_the_shipped_card_with_a_run_split_across_calls(tmp_path):
    """The embedded folder is assembled from the shipped stages, the earlier calls of a split run (their committed
    training JSONs and loss curves) and the last call's model folder: one card row a call, with its processes, its
    tokens a step over every process and its schedule span; a JSON without its loss curve, or a JSON as the last
    stage, is refused before anything is written."""
    import shutil

    from sedpa_compress.tiny.ship import MODEL_FILES, ship

    results = Path(__file__).resolve().parents[1] / "bench" / "results"
    call = tmp_path / "tiny_stage16-1_training_h200.json"
    shutil.copy2(results / call.name, call)
    shutil.copy2(results / "tiny_stage16-1_loss_curve_h200.png", tmp_path / "tiny_stage16-1_loss_curve_h200.png")
    last = tmp_path / "model"
    last.mkdir()
    for name in (*MODEL_FILES, "loss_curve.png"):
        shutil.copy2(SHIPPED / name, last / name)
    info = json.loads(call.read_text())
    info["config"]["schedule_span"] = [0.1667, 0.3333]
    (last / "training.json").write_text(json.dumps(info))

    dest = ship([str(SHIPPED), f"{call}@abc1234", f"{last}@def5678"], tmp_path / "out", None, None)
    card = (dest / "README.md").read_text()
    is_run_row = lambda line: line.startswith("| ") and "`sedpa train-tiny" in line  # noqa: E731
    base = sum(map(is_run_row, (SHIPPED / "README.md").read_text().splitlines()))  # the shipped card's run rows
    n0 = len(json.loads((SHIPPED / "training.json").read_text())["stages"])
    rows = [line for line in card.splitlines() if is_run_row(line)]
    assert len(rows) == base + 2  # the shipped stages' rows and the two calls
    assert "| abc1234 | 2 × NVIDIA H200 |" in rows[base] and "× 131072 |" in rows[base] and "span 0–0.1667" in rows[base]
    assert "| def5678 |" in rows[base + 1] and "span 0.1667–0.3333" in rows[base + 1]
    assert len(json.loads((dest / "training.json").read_text())["stages"]) == n0 + 2
    assert (dest / "model.safetensors").read_bytes() == (last / "model.safetensors").read_bytes()

    (tmp_path / "tiny_stage16-1_loss_curve_h200.png").unlink()
    with pytest.raises(SedpaError, match="no loss curve"):
        ship([f"{call}@abc1234", str(last)], tmp_path / "out2", None, None)
    with pytest.raises(SedpaError, match="must be the model/ folder"):
        ship([str(SHIPPED), str(results / "tiny_stage16-1_training_h200.json")], tmp_path / "out3", None, None)
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()
    assert f"Stages {n0 + 1}–{n0 + 2} are 2 device calls of one run (`recipes/tiny-stage16.yaml`, span 0–0.3333" in card
    assert f"Stage {n0 + 1} grew the model from 2 to 4 KV heads" in card

    deeper = json.loads((last / "training.json").read_text())  # a stage grown in depth, its MLP narrowed
    shipped_cfg = json.loads((SHIPPED / "config.json").read_text())  # grown and narrowed from whatever ships
    layers, mlp = shipped_cfg["num_hidden_layers"], shipped_cfg["intermediate_size"]
    deeper["config"].update(num_layers=layers + 2, intermediate_size=mlp - 192, schedule_span=None)
    (last / "training.json").write_text(json.dumps(deeper))
    card = (ship([str(SHIPPED), str(last)], tmp_path / "out4", None, None) / "README.md").read_text()
    assert f"Stage {n0 + 1} grew the model from {layers} to {layers + 2} layers" in card
    assert f"narrowed the MLP from {mlp} to {mlp - 192}" in card
    with open(last / "model.safetensors", "ab") as f:  # over the size budget: refused, nothing written
        f.truncate(45_000_001)
    with pytest.raises(SedpaError, match="over the embedded model's 45 MB budget.*store it as int8"):
        ship([str(SHIPPED), str(last)], tmp_path / "out5", None, None)
    assert not (tmp_path / "out5").exists()


def test_ship_lists_an_averaged_stage_after_its_runs_and_no_split_run_for_a_whole_schedule(tmp_path):
    """The candidate after stage 21: stages 21 and 21b (each continued stage 20) averaged by tiny.checkpoints average.
    Shipped after the shipped stages as [21, 21b, average]: the runs' rows, then one row for the average with its
    command, a sentence that says which stages it averages, and where value_space and the corpus came in; a stage
    whose span is its whole schedule ([0, 1]) is no "device call of one run". Shipping the average without its runs
    before it is refused, nothing written."""
    import shutil

    from sedpa_compress.tiny.ship import MODEL_FILES, ship

    results = Path(__file__).resolve().parents[1] / "bench" / "results"
    specs = []
    for stage in ("stage21", "stage21b"):
        for kind, ext in (("training", "json"), ("loss_curve", "png")):
            shutil.copy2(results / f"tiny_{stage}_{kind}_h200.{ext}", tmp_path / f"tiny_{stage}_{kind}_h200.{ext}")
        specs.append(f"{tmp_path / f'tiny_{stage}_training_h200.json'}@798e9f9")
    soup = tmp_path / "soup"
    soup.mkdir()
    for name in MODEL_FILES:
        shutil.copy2(SHIPPED / name, soup / name)
    command = "python -m sedpa_compress.tiny.checkpoints average runs/stage21/model runs/stage21b/model --to runs/soup21"
    (soup / "training.json").write_text(json.dumps({"averaged": 2, "command": command, "runs": []}))
    dest = ship([str(SHIPPED), *specs, f"{soup}@934a2da"], tmp_path / "out", None, None)
    card = (dest / "README.md").read_text()
    rows = [line for line in card.splitlines() if line.startswith("| ") and "`" in line and "|---" not in line]
    # counted from what ships (n0 stages), so the test holds whichever stage ships next
    shipped = json.loads((SHIPPED / "training.json").read_text())["stages"]
    n0 = len(shipped)
    assert len(rows) == n0 + 3 and rows[-1].startswith(f"| {n0 + 3} | `{command}` | 934a2da |")
    assert f"stages {n0 + 1}–{n0 + 2} averaged" in rows[-1]
    assert f"Stage {n0 + 3} is the uniform average of the weights of stages {n0 + 1}–{n0 + 2}" in card
    assert f"2 runs that each continued stage {n0} " in card
    # where value_space, the corpus and the 10 layers came in: the first stage, shipped or new, that has them
    configs = [st["config"] for st in shipped] + [json.loads((tmp_path / f"tiny_{s}_training_h200.json").read_text())
                                                   ["config"] for s in ("stage21", "stage21b")]
    first = {f: 1 + next(k for k, c in enumerate(configs) if c.get(f)) for f in ("value_space", "corpus")}
    grown = 1 + next(k for k, c in enumerate(configs) if c["num_layers"] == 10)
    assert f"From stage {first['value_space']} on: the tokenizer's value_space form" in card
    assert f"From stage {first['corpus']} on: a training corpus" in card
    assert card.count("on: the tokenizer's value_space form") == 1 and card.count("on: a training corpus") == 1
    assert f"Stage {grown} grew the model from 8 to 10 layers" in card and "device calls of one run" not in card
    assert "schedule span 0–1" not in card and "10 layers" in card and "a number or a code" in card
    assert json.loads((dest / "training.json").read_text())["stages"][-1]["averaged"] == 2
    with pytest.raises(SedpaError, match="averages 2 runs"):
        ship([str(SHIPPED), specs[1], str(soup)], tmp_path / "out2", None, None)
    assert not (tmp_path / "out2").exists()


def test_ship_card_names_no_device_scratch_path_and_the_acceptance_as_a_reader_reruns_it(tmp_path):
    """Stages run by gpu_tiny_round.sh recorded commands with the device call's mktemp folder (`/tmp/tmp.X/corpus`,
    `/tmp/tmp.X/init_checkpoint`): the card writes that folder `$W/` and says what it held. The acceptance that
    measured exactly the shipped weights (its weights_sha256) is shown without the device's `--model` folder and
    with `--out` the JSON the card was built from; one that measured other weights keeps its command. Re-shipping
    the shipped folder alone keeps its weights and tokenizer."""
    from sedpa_compress.artifact.manifest import sha256_file
    from sedpa_compress.tiny.ship import eval_command, portable_command, ship

    assert portable_command("x --out /tmp/tmp.an8X15cOvW/run --override corpus=/tmp/tmp.an8X15cOvW/corpus") == \
        "x --out $W/run --override corpus=$W/corpus"
    acceptance = Path(__file__).resolve().parents[1] / "bench" / "results" / "tiny_soup21_acceptance_h200.json"
    result = json.loads(acceptance.read_text())
    shipped_sha = sha256_file(SHIPPED / "model.safetensors")
    assert result["weights_sha256"] == shipped_sha  # the card's table measured the weights that ship
    shown = eval_command(result, shipped_sha, Path("bench/results/a.json"))
    assert "--model" not in shown and shown.endswith("--out bench/results/a.json") and "--contexts 1024," in shown
    assert eval_command(result, "0" * 64, Path("bench/results/a.json")) == result["command"]
    dest = ship([str(SHIPPED)], tmp_path / "out", acceptance, None)
    card = (dest / "README.md").read_text()
    assert "/tmp/tmp." not in card and "/root/out" not in card
    if "$W/" in card:
        assert "`$W` in a command is the scratch folder of the device call that ran it" in card
    assert f"--out {acceptance}`" in card
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (dest / name).read_bytes() == (SHIPPED / name).read_bytes()


def test_ship_card_shows_accuracy_by_kind_of_value_and_acceptances_of_one_kind(tmp_path, monkeypatch):
    """The card splits the acceptance by kind of value and shows each --values-eval (tiny.evaluate --values phrase on
    the same weights) beside it; a JSON of the held-out mix, or of other weights, is refused there, and so is one
    without --eval; the shipped card is what ship renders."""
    from sedpa_compress.tiny.ship import ship

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the card names the JSONs as the shipping command did
    results = Path("bench/results")
    acceptance, phrases = results / "tiny_soup21_acceptance_h200.json", results / "tiny_soup21_phrase_values_1k4k_cpu.json"
    pattern = Path("recipes/patterns/sedpa-tiny.pattern.json")
    dest = ship([str(SHIPPED)], tmp_path / "out", acceptance, pattern, [phrases])
    card = (dest / "README.md").read_text()
    assert "By kind of value (full attention, every length): codes (AX7-22B) 0.83 (36 cells)" in card
    assert "invented words (Velomar) 0.11 (9 cells)" in card
    assert "Values of one kind only, phrases (4-10 words of text), measured on cpu with `python -m " \
           "sedpa_compress.tiny.evaluate --values phrase" in card and "full attention 1K 0.00, 4K 0.00" in card
    assert card == (SHIPPED / "README.md").read_text()
    with pytest.raises(SedpaError, match="not an acceptance with one kind of value"):
        ship([str(SHIPPED)], tmp_path / "out2", acceptance, None, [acceptance])
    with pytest.raises(SedpaError, match="--values-eval goes with --eval"):
        ship([str(SHIPPED)], tmp_path / "out3", None, None, [phrases])
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_ship_takes_a_model_folder_stored_as_int8_and_its_card_says_so(tmp_path):
    """A stage's folder converted by `python -m sedpa_compress.models.int8 quantize` ships as it is: the int8 weights
    (counted against the 45 MB budget in place of bf16's), no model.safetensors, a card that says how the weights are
    stored and how to get a folder plain transformers loads; sedpa's loader loads the shipped folder."""
    from sedpa_compress.models import int8
    from sedpa_compress.models.loader import load_model
    from sedpa_compress.tiny.ship import MODEL_FILES, model_files, ship

    q = int8.quantize_folder(SHIPPED, tmp_path / "q")
    assert model_files(SHIPPED) == MODEL_FILES and int8.INT8_FILE in model_files(q)
    dest = ship([str(q)], tmp_path / "out", None, None)
    assert (dest / int8.INT8_FILE).read_bytes() == (q / int8.INT8_FILE).read_bytes()
    assert not (dest / "model.safetensors").exists()
    card = (dest / "README.md").read_text()
    assert "row-wise int8" in card and "python -m sedpa_compress.models.int8 dequantize" in card
    assert "bf16 safetensors" not in card
    loaded = load_model(str(dest))
    assert loaded.model.config.num_hidden_layers == json.loads((SHIPPED / "config.json").read_text())["num_hidden_layers"]
    with open(q / int8.INT8_FILE, "ab") as f:  # over budget even as int8: refused without the int8 hint
        f.truncate(45_000_001)
    with pytest.raises(SedpaError, match=r"over the embedded model's 45 MB budget .*narrower MLP\)$"):
        ship([str(q)], tmp_path / "out2", None, None)
    assert not (tmp_path / "out2").exists()


def test_wording_actions_add_action_needles_asked_through_their_action_and_change_nothing_when_off():
    """Stage 16b's data: a share of needle groups link key and value by an action with no attribute noun ("Tokyo is
    usually booked under 4821"), asked back through the action and a noun the needle leaves out ("What number is
    Tokyo booked under?"); with one key and several needles, each needle has its own action (the action must be
    matched). The held-out family has actions of its own on a quarter of its needles, none shared (check_disjoint
    flags one that is), and a family without action needles draws exactly what it drew before."""
    import dataclasses

    from sedpa_compress.data.wordings import HELDOUT_WORDINGS, TRAIN_WORDINGS, check_disjoint
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    data = TinyData(load_config(RECIPE, **{**SMALL, "corpus_words": 500, "wording_actions": 0.5,
                                           "same_key_fraction": 0.5}), tok)
    fam = data.templates
    rng = random.Random(0)
    groups = [fam.sample_needles(rng, 3) for _ in range(400)]
    acted = [g for g in groups if g[0].action]
    assert 0.4 < len(acted) / len(groups) < 0.6 and all(len({n.action for n in g}) == 1 for g in acted)
    for g in acted[:50]:
        pp, prep = g[0].action
        value = g[0].value
        assert f"{pp} {prep} {value}" in g[0].sentence
        assert g[0].attribute not in g[0].sentence.split()  # the noun is the question's alone
        tail, answer = fam.render_tail(g[0], rng)
        assert pp in tail and answer.strip() == g[0].value
    def actions_of(sentence: str) -> set:
        return {a for a in fam.phrasing.actions if f" {a[0]} {a[1]} " in f" {sentence} " or f"be {a[0]}." in sentence}

    one_action = several_actions = 0
    for i in range(300):
        n, texts = data._needle_spec(random.Random(i), 4096)
        found = [actions_of(t) for t in texts[:n]]
        if n > 1 and all(found):
            several = len(set().union(*found)) == n  # one key, an action each (the same-key path)
            several_actions += several
            one_action += len(set().union(*found)) == 1
    assert one_action and several_actions
    held = [HELDOUT_WORDINGS.sample_needles(random.Random(i), 1)[0] for i in range(400)]
    assert 0.18 < sum(n.action is not None for n in held) / len(held) < 0.32
    assert check_disjoint(fam, HELDOUT_WORDINGS) == []
    leaky = dataclasses.replace(fam.phrasing, actions=fam.phrasing.actions + (("lodged", "near"),))
    assert check_disjoint(dataclasses.replace(fam, phrasing=leaky), HELDOUT_WORDINGS)
    a, b = random.Random(5), random.Random(5)
    bare = dataclasses.replace(TRAIN_WORDINGS, phrasing=dataclasses.replace(TRAIN_WORDINGS.phrasing, actions=()))
    assert [n.sentence for _ in range(100) for n in TRAIN_WORDINGS.sample_needles(a, 2)] == \
        [n.sentence for _ in range(100) for n in bare.sample_needles(b, 2)]
    assert load_config(Path("recipes/tiny-stage16b.yaml")).wording_actions == 0.25


def test_a_same_key_action_group_never_asks_for_more_needles_than_there_are_actions():
    """Stage 16b's first device call hung before step 1: at 32K a sequence draws up to 32 needles, and a same-key
    group of action needles asked `distinct` for 32 different actions out of 25, forever. The group is now cut
    to the actions there are, and `distinct` raises instead of looping when its pool runs dry."""
    from sedpa_compress.data.needles import distinct
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    with pytest.raises(ValueError, match="pool is smaller"):
        distinct(lambda: "same", 2, tries=50)
    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    cfg = load_config(Path("recipes/tiny-stage16b.yaml"),
                      **{**SMALL, "wording_actions": 1.0, "same_key_fraction": 1.0, "max_needles": 60})
    data = TinyData(cfg, tok)
    n_actions = len(data.templates.phrasing.actions)
    counts = [data._needle_spec(random.Random(i), 8192)[0] for i in range(60)]
    assert max(counts) == n_actions and min(counts) >= 1


def test_a_training_corpus_joins_the_bundled_text_and_travels_through_history(tmp_path):
    """Every stage to 16b memorised its 1.7M bundled tokens (train perplexity ~1.2, held-out 150-550): a recipe's
    `corpus` folder adds its train split (every 20th paragraph held out, as in the bundled text) to the text
    batches are drawn from. tiny.corpus packs such a folder reproducibly, keeps it in history (out of the tree a
    device call carries) and restores it whole; a missing corpus or an unknown name is a one-line error."""
    import subprocess

    from sedpa_compress.data.text import HELDOUT_EVERY, load_corpus_text
    from sedpa_compress.tiny import corpus
    from sedpa_compress.tiny.data import TinyData, training_text
    from tokenizers import Tokenizer

    folder = tmp_path / "corpus"
    folder.mkdir()
    paras = [f"Paragraph {i} says the zeppelin hangar opens at dawn near harbour {i}." for i in range(2 * HELDOUT_EVERY)]
    (folder / "zeppelins.txt").write_text("\n\n".join(paras) + "\n")
    (folder / "SOURCES.md").write_text("| file | source |\n")
    held = load_corpus_text(folder, "heldout").split("\n\n")
    assert held == [paras[HELDOUT_EVERY - 1], paras[2 * HELDOUT_EVERY - 1]]
    assert held[0] not in load_corpus_text(folder, "train")
    cfg = load_config(RECIPE, **{**SMALL, "corpus": str(folder)})
    text = training_text(cfg)
    assert paras[0] in text and held[0] not in text and text.startswith(training_text(load_config(RECIPE, **SMALL)))
    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    data = TinyData(cfg, tok)
    last = tok.encode(paras[-2], add_special_tokens=False).ids + tok.encode("\n\n", add_special_tokens=False).ids
    assert data.corpus[-len(last):].tolist() == last  # the corpus's last train paragraph ends the token stream
    with pytest.raises(SedpaError, match="has no .txt files: build one"):
        TinyData(load_config(RECIPE, **{**SMALL, "corpus": str(tmp_path / "nowhere")}), tok)

    a, b = tmp_path / "a.tar.xz", tmp_path / "b.tar.xz"
    assert corpus.pack(folder, a) == ["SOURCES.md", "zeppelins.txt"]
    corpus.pack(folder, b)
    assert a.read_bytes() == b.read_bytes()  # the same corpus, the same blob

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (("init", "-q"), ("config", "user.email", "t@example.com"), ("config", "user.name", "t")):
        git(*args)
    (repo / "README.md").write_text("x\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "init")
    entry = corpus.keep(folder, "zeppelins-v1", repo=repo, note="a test")
    assert entry["files"] == ["SOURCES.md", "zeppelins.txt"] and entry["text_bytes"] > 0
    assert git("ls-tree", "HEAD", "--name-only", "-r").split() == ["README.md", "recipes/tiny-corpora.json"]
    assert git("rev-parse", f"HEAD~1:{entry['path']}") == entry["blob"]
    out = corpus.restore("zeppelins-v1", tmp_path / "restored", repo=repo)
    assert sorted(p.name for p in out.iterdir()) == ["SOURCES.md", "zeppelins.txt"]
    assert (out / "zeppelins.txt").read_text() == (folder / "zeppelins.txt").read_text()
    with pytest.raises(SedpaError, match="already kept"):
        corpus.keep(folder, "zeppelins-v1", repo=repo)
    with pytest.raises(SedpaError, match="no corpus 'wiki'"):
        corpus.restore("wiki", tmp_path / "x", repo=repo)


def test_acceptance_cuts_its_haystacks_from_a_text_file_when_given_one(shipped, tmp_path):
    """tiny.evaluate --haystack: the haystacks come from a text no stage trained on (the bundled held-out split is
    KJV and Python docs), the JSON names the file, and the perplexity on it is reported beside the bundled one;
    a file too short for the longest context is refused with the length it needs."""
    from sedpa_compress.data.text import load_bundled_text
    from sedpa_compress.tiny.evaluate import evaluate

    model, tok = shipped
    paras = load_bundled_text("heldout").split("\n\n")[:400]
    hay = tmp_path / "mine.txt"
    hay.write_text("\n\n".join(reversed(paras)))
    out = evaluate(model, tok, model_name="sedpa-tiny", contexts=[512], depths=2, samples=1, sink=16, recent=64,
                   command="test", ppl_tokens=2048, haystack=hay, text_samples=False, log=lambda *a: None)
    assert out["settings"]["haystack"] == str(hay)
    assert out["summary"]["full"]["ppl_haystack"] > 1 and out["summary"]["streaming"]["ppl_haystack"] > 1
    assert out["summary"]["full"]["ppl"] > 1 and out["text_samples"] == []
    short = tmp_path / "short.txt"
    short.write_text("Too short a text.")
    with pytest.raises(SedpaError, match="characters but"):
        evaluate(model, tok, model_name="sedpa-tiny", contexts=[512], depths=2, samples=1, sink=16, recent=64,
                 command="test", ppl_tokens=2048, haystack=short, text_samples=False, log=lambda *a: None)


def test_subject_needles_put_the_value_first_and_are_asked_through_the_action_and_the_things_noun():
    """wording_subjects: a share of action needle groups name a thing by its value, before the verb, and link it to
    the key ("Crate 4821 was sent to Lisbon"), asked "Which crate was sent to Lisbon?" (stage 16b, trained on
    value-last actions alone, answered the key: "The order was Lisbon"). Same-key groups give each needle its own
    action; the held-out family has subject frames and nouns of its own on half its action needles, disjoint from
    training's; the kind is scored apart; a family without them draws as before; the share needs action needles."""
    import dataclasses

    from sedpa_compress.data.wordings import HELDOUT_WORDINGS, TRAIN_WORDINGS, check_disjoint
    from sedpa_compress.tiny.data import TinyData
    from sedpa_compress.tiny.evaluate import accuracy_by_needle_kind
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    data = TinyData(load_config(RECIPE, **{**SMALL, "corpus_words": 500, "wording_actions": 1.0,
                                           "wording_subjects": 0.5, "same_key_fraction": 0.5}), tok)
    fam = data.templates
    rng = random.Random(0)
    groups = [fam.sample_needles(rng, 3) for _ in range(400)]
    subjects = [g for g in groups if g[0].subject]
    assert 0.4 < len(subjects) / len(groups) < 0.6
    for g in subjects[:60]:
        n = g[0]
        pp, prep = n.action
        assert n.kind == "subject" and n.attribute in fam.phrasing.subject_nouns
        assert n.sentence.index(n.value) < n.sentence.index(f"{pp} {prep} {n.key}")  # value first, key last
        tail, answer = fam.render_tail(n, rng)
        assert f"{pp} {prep} {n.key}" in tail and n.attribute in tail.lower() and answer.strip() == n.value
        assert len({m.attribute for m in g}) == 1 and len({m.key for m in g}) == 3
    def actions_of(sentence: str) -> set:
        return {a for a in fam.phrasing.actions if f" {a[0]} {a[1]} " in f" {sentence} "}

    same_key_subjects = 0  # one noun, one key, an action each: the action must be matched
    for i in range(400):
        n, texts = data._needle_spec(random.Random(i), 4096)
        nouns = [{w for w in fam.phrasing.subject_nouns if f" {w} " in f" {t.lower()} "} for t in texts[:n]]
        found = [actions_of(t) for t in texts[:n]]
        if n > 1 and all(nouns) and len(set.intersection(*nouns)) == 1 and all(found):
            same_key_subjects += len(set().union(*found)) == n
    assert same_key_subjects
    held = [HELDOUT_WORDINGS.sample_needles(random.Random(i), 1)[0] for i in range(800)]
    assert 0.08 < sum(n.subject for n in held) / len(held) < 0.18
    assert all(n.attribute in HELDOUT_WORDINGS.phrasing.subject_nouns for n in held if n.subject)
    assert check_disjoint(fam, HELDOUT_WORDINGS) == []
    leaky = dataclasses.replace(fam.phrasing, subject_nouns=fam.phrasing.subject_nouns + ("voucher",))
    assert check_disjoint(dataclasses.replace(fam, phrasing=leaky), HELDOUT_WORDINGS)
    a, b = random.Random(5), random.Random(5)
    acting = dataclasses.replace(TRAIN_WORDINGS, action_share=0.5)
    bare = dataclasses.replace(acting, phrasing=dataclasses.replace(acting.phrasing, subject_cores=()))
    assert [n.sentence for _ in range(100) for n in dataclasses.replace(acting, subject_share=0.0).sample_needles(a, 2)] \
        == [n.sentence for _ in range(100) for n in bare.sample_needles(b, 2)]
    rows = [{"cells": [{"kind": "subject", "value": "4821", "output": " 4821"},
                       {"kind": "action", "value": "77", "output": " 12"}, {"value": "5", "output": " 5"}]}]
    assert accuracy_by_needle_kind(rows) == {"action": {"accuracy": 0.0, "cells": 1},
                                             "attribute": {"accuracy": 1.0, "cells": 1},
                                             "subject": {"accuracy": 1.0, "cells": 1}}
    with pytest.raises(SedpaError, match="set wording_actions too"):
        load_config(RECIPE, **{**SMALL, "wording_subjects": 0.5})


def test_insert_words_slips_words_between_words_but_never_inside_a_kept_phrase_nor_first_or_last():
    from sedpa_compress.data.wordings import insert_words

    for seed in range(200):
        out = insert_words("The code of the blue door is", ("lamp",), 2, random.Random(seed),
                           ["the blue door", "code"], last=False)
        words = out.split()
        assert len(words) == 9 and words.count("lamp") == 2
        assert words[0] == "The" and words[-1] == "is" and "the blue door" in out and "code" in words
        assert [w for w in words if w != "lamp"] == "The code of the blue door is".split()
    ends = {insert_words("Name the tag of Oslo.", ("lamp",), 1, random.Random(s), ["Oslo."]).split()[-1]
            for s in range(100)}
    assert ends == {"lamp", "Oslo."}  # after the last word too, where allowed
    assert insert_words("Reply:", ("lamp",), 2, random.Random(0), last=False) == "Reply:"  # no gap: unchanged


def test_wording_noise_slips_random_words_into_questions_and_prefixes_never_into_key_attribute_or_needle():
    """wording_noise: stages 17-18 answered held-out prefixes one word off a trained one ("The recorded vault
    reference is") with prose. A share of training tails get random corpus words in question and answer prefix
    (and half of them a sentence of random words after the question); the needle, the key and attribute the
    question names and the answer stay as they are; the words are the family's (the held-out family's are not
    among them); the share lies in [0, 1]."""
    import dataclasses

    from sedpa_compress.data.wordings import HELDOUT_WORDINGS, family_words
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    noisy = TinyData(load_config(RECIPE, **{**SMALL, "corpus_words": 500, "wording_noise": 1.0}), tok).templates
    clean = dataclasses.replace(noisy, noise_share=0.0)
    assert not set(noisy.words) & family_words(HELDOUT_WORDINGS)
    changed = 0
    for seed in range(300):
        needle = clean.sample_needles(random.Random(seed), 1)[0]
        tail, answer = noisy.render_tail(needle, random.Random(seed))
        plain, plain_answer = clean.render_tail(needle, random.Random(seed))
        assert answer == plain_answer and answer.strip() == needle.value
        assert needle.key.lower() in tail.lower()
        if needle.attribute and needle.attribute.lower() in plain.lower():
            assert needle.attribute.lower() in tail.lower()
        added = len(tail.split()) - len(plain.split())
        changed += tail != plain
        assert added >= 1 or tail == plain  # one or two words in the question, in the prefix, maybe a sentence
    assert changed > 250
    with pytest.raises(SedpaError, match="wording_noise"):
        load_config(RECIPE, **{**SMALL, "wording_noise": 1.5})


def test_wording_needle_noise_slips_words_into_needles_never_inside_key_attribute_action_nor_beside_the_value():
    """wording_needle_noise: held-out needle frames cost the shipped model 11 points at 1K. A share of training needle
    statements get one or two random words slipped in; key, attribute, action and value stay whole, and the words
    right before and after the value are the statement's own (a random word there could be read as the value)."""
    import dataclasses

    from sedpa_compress.data.wordings import insert_words
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    assert insert_words("the code of Oslo is 4821", ("LAMP",), 3, random.Random(0), ["Oslo", "code"],
                        apart=["4821"]).split()[-2:] == ["is", "4821"]
    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    data = TinyData(load_config(RECIPE, **{**SMALL, "corpus_words": 500, "wording_needle_noise": 1.0,
                                           "wording_actions": 0.5}), tok)
    bare = dataclasses.replace(data.templates.phrasing, lead_ins=("",), trailers=("",))
    noisy = dataclasses.replace(data.templates, phrasing=bare)
    clean = dataclasses.replace(noisy, needle_noise_share=0.0)
    actions = 0
    for seed in range(300):
        n = noisy.sample_needles(random.Random(seed), 1)[0]
        c = clean.sample_needles(random.Random(seed), 1)[0]
        assert (n.key, n.value, n.attribute, n.action) == (c.key, c.value, c.attribute, c.action)
        got, want = n.sentence.rstrip(".").split(), c.sentence.rstrip(".").split()
        assert 1 <= len(got) - len(want) <= 2
        it = iter(got)
        assert all(w in it for w in want)  # the statement's own words, in order, with one or two more
        for phrase in [n.key, n.attribute] + ([" ".join(n.action)] if n.action else []):
            if phrase.lower() in c.sentence.lower():  # an action needle's noun is only in its question
                assert phrase.lower() in n.sentence.lower()
        i, j = got.index(next(w for w in got if n.value in w)), want.index(next(w for w in want if n.value in w))
        assert got[i - 1:i + 2] == want[j - 1:j + 2]
        actions += n.action is not None
    assert actions > 100
    with pytest.raises(SedpaError, match="wording_needle_noise"):
        load_config(RECIPE, **{**SMALL, "wording_needle_noise": -0.1})


def test_acceptance_scores_an_answer_that_echoes_the_question_before_its_value(monkeypatch):
    """`accuracy` is the value anywhere in the answer's first line, so the decode must leave room for a
    full-sentence answer ("The vault code of Belfast is 58-303-67"): a model that answers that way is found."""
    from transformers import AutoTokenizer

    from sedpa_compress.tiny import evaluate as ev

    tok = AutoTokenizer.from_pretrained(SHIPPED)
    asked = []
    real_example = ev.make_needle_example

    def remember(*a, **kw):
        asked.append(real_example(*a, **kw))
        return asked[-1]

    def echo(model, prompts, new_tokens, mode, *a, stop, **kw):  # what a model answering in a sentence writes
        ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        assert stop(ids(" 4821\n")) and not stop(ids("\n 4821"))  # decoding ends with the first line, not before
        out = []
        for prompt, budget in zip(prompts, new_tokens):
            ex = next(e for e in asked if ids(e.prompt) == prompt[1:])
            needle = ex.needles[ex.query_index]
            text = f" The {needle.attribute or 'value'} of {needle.key} is {ex.answer}.\n\nMore text."
            out.append(ids(text)[:budget])
        return out

    monkeypatch.setattr(ev, "make_needle_example", remember)
    monkeypatch.setattr(ev, "greedy_answers", echo)
    rows = ev.needle_rows(None, tok, [1024], depths=4, samples=5, modes=("full",), log=lambda *_: None)
    cells = [c for r in rows for c in r["cells"]]
    assert len(cells) == 20 and all(r["accuracy"] == 1.0 for r in rows), [c["output"] for c in cells]
    assert all(r["exact"] == 0.0 for r in rows)  # exact still asks the answer to start with the value


def test_greedy_answer_stops_once_the_first_line_is_written():
    from transformers import LlamaConfig, LlamaForCausalLM

    from sedpa_compress.tiny.evaluate import greedy_answer

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    ids = list(range(3, 20))
    free = greedy_answer(model, ids, 6, "full")
    assert len(free) == 6
    assert greedy_answer(model, ids, 6, "full", stop=lambda out: len(out) >= 2) == free[:2]


def test_needle_attention_reads_the_last_positions_weights_on_the_needle(shipped):
    """bench/scripts/tiny_needle_attention.py: the last prompt position's weights sum to one over the prompt in every
    head, the needle's tokens are the needle sentence's, and where the shipped model finds a value (training
    wordings, 1K) its best head looks at that needle; the summary splits found from missed cells."""
    import importlib.util

    from sedpa_compress.data.needles import TRAIN_TEMPLATES

    spec = importlib.util.spec_from_file_location("attention", "bench/scripts/tiny_needle_attention.py")
    attention = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(attention)
    assert attention.token_span([(0, 0), (0, 3), (3, 4), (4, 9), (9, 12)], 3, 9) == [2, 3]  # specials have no chars
    model, tok = shipped
    hay = load_haystack(None, min_chars=20000)
    ex = make_needle_example(tok, hay, 1024, [0.5], random.Random(7), templates=TRAIN_TEMPLATES)
    ids = tok(ex.prompt)["input_ids"]
    weights, logits = attention.last_position_attention(model, ids)
    assert logits.shape == (model.config.vocab_size,)
    assert weights.shape[:2] == (model.config.num_hidden_layers, model.config.num_attention_heads)
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:2]), atol=1e-4)
    row = attention.cell_row(model, tok, ex, 1024, 0.5, 0)
    assert row["found"] == 1.0 and row["value_tokens"] >= 1 and row["needle_tokens"] > row["value_tokens"]
    assert row["best_head_needle_mass"] > 0.5, row["best_head_needle_mass"]
    assert row["first_token_rank"] == 1 and row["top_token"] == row["first_token"]  # greedy found it: it led
    missed = {**row, "found": 0.0, "best_head_needle_mass": 0.1}
    s = attention.summarise([row, missed])
    assert (s["found"], s["missed"], s["missed_with_best_head_on_needle_over_half"]) == (1, 1, 0)
    assert [m["value"] for m in s["missed_with_best_head_on_value_over_0.9"]] == \
        ([ex.answer] if row["best_head_value_mass"] > 0.9 else [])
    assert s["best_head_needle_mass_median"] == {"found": row["best_head_needle_mass"], "missed": 0.1}


def test_value_space_opens_every_value_holding_a_digit_with_the_bare_space_and_leaves_text_alone():
    """tiny.tokenizer's value_space form of the shipped tokenizer: after an answer prefix, every sampled value that
    holds a digit (letter-first codes included) opens with the bare "Ġ" a number opens with, and decodes back to
    itself; prose without digits tokenizes as before; the edit is idempotent and byte-stable."""
    from tokenizers import Tokenizer

    from sedpa_compress.data.wordings import VALUE_FORMATS, generated_syllables, sample_value
    from sedpa_compress.tiny.tokenizer import has_value_space, pre_tokenizer, with_value_space, without_value_space

    shipped_json = json.loads((SHIPPED / "tokenizer.json").read_text(encoding="utf-8"))
    plain_json = without_value_space(shipped_json)  # whichever form ships, the plain one is what stages 1-6 used
    plain = Tokenizer.from_str(json.dumps(plain_json))
    spaced = Tokenizer.from_str(json.dumps(with_value_space(plain_json)))
    assert not has_value_space(plain_json) and has_value_space(with_value_space(plain_json))
    assert with_value_space(with_value_space(plain_json)) == with_value_space(plain_json)
    assert without_value_space(with_value_space(plain_json)) == plain_json  # the two forms are inverses
    assert with_value_space(plain_json) == with_value_space(shipped_json)
    rng = random.Random(0)
    syllables = generated_syllables()
    letter_first, letter_first_plain_bare = 0, 0
    seen = set()
    for i in range(600):
        fmt = VALUE_FORMATS[i % len(VALUE_FORMATS)]
        value = sample_value(rng, syllables, weights=tuple(float(f == fmt) for f in VALUE_FORMATS))
        text = f"Answer: {value}"
        head = len(spaced.encode("Answer:", add_special_tokens=False).ids)
        ids = spaced.encode(text, add_special_tokens=False).ids
        assert spaced.decode(ids) == text
        if any(c.isdigit() for c in value):
            seen.add(fmt)
            assert spaced.id_to_token(ids[head]) == "Ġ", (value, [spaced.id_to_token(t) for t in ids])
            if value[0].isalpha():
                letter_first += 1
                letter_first_plain_bare += plain.id_to_token(plain.encode(text, add_special_tokens=False).ids[head]) == "Ġ"
    assert {"digits", "grouped", "thousands", "code", "free_code"} <= seen
    # what value_space changes: the plain tokenizer merged the space into nearly every letter-first value
    assert letter_first > 100 and letter_first_plain_bare < 0.05 * letter_first
    prose = "The river runs north, past the old mill and the three bridges; nobody there keeps a clock."
    assert spaced.encode(prose).ids == plain.encode(prose).ids
    pt = Tokenizer.from_str(json.dumps(plain_json))
    pt.pre_tokenizer = pre_tokenizer(value_space=True)  # the trainer's own form: the same tokens
    assert pt.encode("Code XK-4821, pin b7q2 and 48,213.").ids == spaced.encode("Code XK-4821, pin b7q2 and 48,213.").ids


def test_a_value_space_run_switches_the_init_models_tokenizer_and_a_kept_stage_restores_it(tmp_path):
    """recipe `value_space: true` from a model with the plain tokenizer: the run's tokenizer becomes its value_space
    form (vocabulary unchanged), once; a stage kept with either form restores from the shipped tokenizer, whichever
    form ships, without --tokenizer-from (the other form is derived, not kept; stages 16-3, 18-1 and 20 were kept
    with the plain one and soup21 shipped the value_space one). A tokenizer that is neither is refused."""
    import shutil
    import subprocess

    from safetensors.torch import save_file
    from tokenizers import Tokenizer

    from sedpa_compress.tiny import checkpoints
    from sedpa_compress.tiny.config import TinyTrainConfig
    from sedpa_compress.tiny.tokenizer import has_value_space, tokenizer_forms
    from sedpa_compress.tiny.train import TOKENIZER_FILES, _ensure_tokenizer

    plain_init = tmp_path / "plain_init"  # a model folder with the shipped tokenizer's plain form
    plain_init.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy2(SHIPPED / name, plain_init / name)
    plain_bytes = tokenizer_forms(SHIPPED / "tokenizer.json")["plain"]
    (plain_init / "tokenizer.json").write_bytes(plain_bytes)
    assert not has_value_space(json.loads(plain_bytes))
    logs: list[str] = []
    run = tmp_path / "run"
    tok, tok_dir = _ensure_tokenizer(TinyTrainConfig(value_space=True), run, logs.append, init_from=plain_init)
    assert has_value_space(json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8")))
    assert tok.get_vocab() == Tokenizer.from_file(str(SHIPPED / "tokenizer.json")).get_vocab()
    assert tok.encode("is XK-4821", add_special_tokens=False).tokens == ["is", "Ġ", "X", "K", "-", "4", "8", "2", "1"]
    assert sum("switched to value_space" in m for m in logs) == 1
    _ensure_tokenizer(TinyTrainConfig(value_space=True), run, logs.append, init_from=plain_init)  # resumed: as is
    _ensure_tokenizer(TinyTrainConfig(value_space=False), run, logs.append, init_from=plain_init)  # kept: the weights' own
    assert sum("switched to value_space" in m for m in logs) == 1
    assert has_value_space(json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8")))

    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    (repo / "README.md").write_text("x\n")
    subprocess.run(["git", "add", "README.md"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=repo, check=True)
    stage = tmp_path / "stage"
    stage.mkdir()
    save_file({"w": torch.zeros(2, 2)}, str(stage / "model.safetensors"))
    (stage / "config.json").write_text("{}")
    (stage / "tokenizer.json").write_bytes((tok_dir / "tokenizer.json").read_bytes())
    checkpoints.keep(stage, "stage21", repo=repo)
    out = checkpoints.restore("stage21", tmp_path / "init", repo=repo)
    assert (out / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()
    (stage / "tokenizer.json").write_bytes(plain_bytes)  # a stage of the plain form: as stage 20 was kept
    checkpoints.keep(stage, "stage20", repo=repo)
    out = checkpoints.restore("stage20", tmp_path / "init20", repo=repo)
    assert (out / "tokenizer.json").read_bytes() == plain_bytes
    assert (out / "tokenizer_config.json").read_bytes() == (SHIPPED / "tokenizer_config.json").read_bytes()
    (stage / "tokenizer.json").write_text('{"tok": 1}')
    checkpoints.keep(stage, "stage22", repo=repo)
    with pytest.raises(SedpaError, match="neither its plain nor its value_space form"):
        checkpoints.restore("stage22", tmp_path / "other", repo=repo)
    assert not (tmp_path / "other").exists()


def test_batched_greedy_answers_are_the_one_at_a_time_answers(shipped):
    """tiny.evaluate decodes an acceptance's cells in batches (left-padded prompts of different lengths, each row
    with its own positions, sink, budget and stop): every cell's answer, in full and streaming attention, is the
    one it gets alone, on the shipped model's own needle prompts and on a random model at token level."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from sedpa_compress.tiny import evaluate as ev

    model, tok = shipped
    one = ev.needle_rows(model, tok, [384, 640], depths=3, samples=2, sink=8, recent=32, batch=1, log=lambda *_: None)
    many = ev.needle_rows(model, tok, [384, 640], depths=3, samples=2, sink=8, recent=32, batch=4, log=lambda *_: None)
    assert [c["output"] for r in many for c in r["cells"]] == [c["output"] for r in one for c in r["cells"]]
    assert many == one and [(r["mode"], r["depth"]) for r in one][:4] == [("full", 0.0), ("streaming", 0.0),
                                                                          ("full", 0.5), ("streaming", 0.5)]
    torch.manual_seed(0)
    rand = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1)).eval()
    prompts = [list(range(3, 40)), [5, 9, 11] * 30, list(range(10, 17))]
    budgets = [7, 3, 9]
    for mode in ("full", "streaming"):
        alone = [ev.greedy_answer(rand, p, n, mode, sink=4, recent=8, chunk=16) for p, n in zip(prompts, budgets)]
        together = ev.greedy_answers(rand, prompts, budgets, mode, sink=4, recent=8, chunk=16)
        assert together == alone and [len(t) for t in together] == budgets
    stop = lambda out: 13 in out  # noqa: E731  (each row ends at its own stop)
    alone = [ev.greedy_answer(rand, p, 12, "full", stop=stop) for p in prompts]
    assert ev.greedy_answers(rand, prompts, [12] * 3, "full", stop=stop) == alone


@pytest.mark.gpu
def test_batched_acceptance_on_cuda_matches_one_at_a_time(monkeypatch):
    """On CUDA the acceptance decodes 30 cells at once. In fp32 its answers are those of one cell at a time, every
    one (a padding or position bug would change them). In bf16 autocast, the mode the acceptance runs in, a batch's
    other shapes round differently and a near-tie can turn a greedy answer (3 of 40 outputs on the H200 at 798e9f9),
    so there the verdicts are compared: found in one and missed in the other in at most 2 of 40 cells."""
    from sedpa_compress.tiny import evaluate as ev

    model, tok = ev.load_model_dir(SHIPPED, "cuda")
    kw = dict(depths=5, samples=2, log=lambda *_: None)
    cells = lambda rows: [c for r in rows for c in r["cells"]]  # noqa: E731
    monkeypatch.setattr(ev, "CUDA_BF16", False)
    one = cells(ev.needle_rows(model, tok, [1024, 4096], batch=1, **kw))
    many = cells(ev.needle_rows(model, tok, [1024, 4096], batch=30, **kw))
    assert len(one) == 40 and [c["output"] for c in many] == [c["output"] for c in one]
    monkeypatch.setattr(ev, "CUDA_BF16", True)
    one = ev.needle_rows(model, tok, [1024, 4096], batch=1, **kw)
    many = ev.needle_rows(model, tok, [1024, 4096], batch=30, **kw)
    found = lambda rows: [ev.answer_found(c["output"], c["value"]) for r in rows for c in r["cells"]]  # noqa: E731
    outputs = sum(a["output"] != b["output"] for r, q in zip(one, many) for a, b in zip(r["cells"], q["cells"]))
    verdicts = sum(a != b for a, b in zip(found(one), found(many)))
    assert len(found(one)) == 40 and verdicts <= 2, (verdicts, outputs)


def test_average_is_the_mean_of_runs_of_one_shape_and_tokenizer_and_refuses_others(tmp_path, capsys):
    """`python -m sedpa_compress.tiny.checkpoints average A B --to DIR` (the soup of stages 21 and 21b): each weight is
    the mean of the runs' (in fp32, stored in their dtype), config and tokenizer are the last run's, and a training.json
    names the runs (tiny.ship's averaged stage); runs of another shape or tokenizer are refused in one line and
    nothing is written."""
    from safetensors.torch import load_file, save_file

    from sedpa_compress.tiny.checkpoints import main

    def run(name: str, fill: float, shape=(4, 2), tokenizer='{"t": 1}') -> Path:
        d = tmp_path / name
        d.mkdir()
        save_file({"w": torch.full(shape, fill, dtype=torch.bfloat16), "b": torch.arange(3.0) * fill},
                  str(d / "model.safetensors"))
        (d / "tokenizer.json").write_text(tokenizer)
        (d / "config.json").write_text(json.dumps({"name": name}))
        return d

    a, b, c = run("a", 1.0), run("b", 2.0), run("c", 4.5)
    main(["average", str(a), str(b), str(c), "--to", str(tmp_path / "soup")])
    soup = load_file(str(tmp_path / "soup" / "model.safetensors"))
    assert soup["w"].dtype == torch.bfloat16 and torch.equal(soup["w"].float(), torch.full((4, 2), 2.5))
    assert torch.equal(soup["b"], torch.arange(3.0) * 2.5)
    assert json.loads((tmp_path / "soup" / "config.json").read_text()) == {"name": "c"}
    assert json.loads((tmp_path / "soup" / "training.json").read_text())["averaged"] == 3
    assert str(tmp_path / "soup") in capsys.readouterr().out
    for other, why in ((run("wide", 1.0, shape=(4, 3)), "shapes"), (run("tok", 1.0, tokenizer='{"t": 2}'), "tokenizer")):
        with pytest.raises(SystemExit, match=why):
            main(["average", str(a), str(other), "--to", str(tmp_path / f"no_{why}")])
        assert not (tmp_path / f"no_{why}").exists()
    with pytest.raises(SystemExit, match="two or more"):
        main(["average", str(a), "--to", str(tmp_path / "one")])


def test_value_space_cli_copies_a_model_with_the_switched_tokenizer(tmp_path, capsys):
    from sedpa_compress.tiny.tokenizer import has_value_space, main

    main(["value-space", str(SHIPPED), "--to", str(tmp_path / "vs")])
    assert has_value_space(json.loads((tmp_path / "vs" / "tokenizer.json").read_text(encoding="utf-8")))
    assert (tmp_path / "vs" / "model.safetensors").read_bytes() == (SHIPPED / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit, match="already exists"):
        main(["value-space", str(SHIPPED), "--to", str(tmp_path / "vs")])
    with pytest.raises(SystemExit, match="no tokenizer.json"):
        main(["value-space", str(tmp_path), "--to", str(tmp_path / "other")])


def test_evaluate_and_ship_entry_points_refuse_bad_input_in_one_line_and_write_nothing(tmp_path):
    """`python -m sedpa_compress.tiny.evaluate --model` a folder that is not there ended in a transformers traceback
    about Hub repo ids, and `tiny.ship` with a stage that is not there in a SedpaError traceback: like the other tiny.*
    entry points, both end with one line (`error: ...`) and write nothing."""
    from sedpa_compress.tiny import evaluate, ship

    out = tmp_path / "acceptance.json"
    with pytest.raises(SystemExit, match=r"^error: .*missing.*model folder"):
        evaluate.main(["--model", str(tmp_path / "missing"), "--contexts", "512", "--out", str(out)])
    assert not out.exists()
    with pytest.raises(SystemExit, match=r"^error: .*no training\.json"):
        ship.main(["--stage", str(tmp_path / "missing"), "--dest", str(tmp_path / "dest")])
    assert not (tmp_path / "dest").exists()


def test_wording_span_tails_ask_with_running_text_and_never_hold_a_held_out_frames_three_words():
    """wording_span_tails: the held-out prefixes of everyday words ("Here you go:", "It reads") are answered with prose,
    and no training frame was ever made of such words. A share of attribute needles' tails is written with spans of the
    corpus's running text around key and attribute: the question names both, the answer is the value, no tail holds
    three words in a row of a held-out frame, no span holds a capital (a name) or a word of the held-out vocabulary,
    action needles keep their frames, and a share of 0 leaves every draw as it was."""
    import dataclasses
    import re

    from sedpa_compress.data.wordings import HELDOUT_WORDINGS, _heldout_trigrams
    from sedpa_compress.tiny.data import TinyData
    from tokenizers import Tokenizer

    assert {"here you go", "could you look", "clerk confirmed that"} <= _heldout_trigrams()
    tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    spans = TinyData(load_config(RECIPE, **{**SMALL, "corpus_words": 500, "wording_span_tails": 1.0,
                                            "wording_actions": 0.3}), tok).templates
    plain = dataclasses.replace(spans, span_tail_share=0.0)
    base = TinyData(load_config(RECIPE, **{**SMALL, "corpus_words": 500, "wording_actions": 0.3}), tok).templates
    v = HELDOUT_WORDINGS.vocab
    heldout_vocab = {w for x in v.places + v.first_names + v.modifiers + v.nouns for w in re.findall(r"[a-z]+",
                                                                                                  x.lower())}
    assert spans.tail_spans and all(s.islower() and not set(s.split()) & heldout_vocab for s in spans.tail_spans)
    changed = actions = 0
    for seed in range(300):
        needle = plain.sample_needles(random.Random(seed), 1)[0]
        tail, answer = spans.render_tail(needle, random.Random(seed))
        assert answer.strip() == needle.value
        assert plain.render_tail(needle, random.Random(seed)) == base.render_tail(needle, random.Random(seed))
        if needle.action is not None:
            actions += 1
            assert (tail, answer) == plain.render_tail(needle, random.Random(seed))
            continue
        assert needle.key.lower() in tail.lower() and needle.attribute.lower() in tail.lower()
        words = re.findall(r"[a-z']+", tail.lower())
        assert not {" ".join(words[i:i + 3]) for i in range(len(words) - 2)} & _heldout_trigrams()
        changed += (tail, answer) != plain.render_tail(needle, random.Random(seed))
    assert actions > 30 and changed > 200
    with pytest.raises(SedpaError, match="wording_span_tails"):
        load_config(RECIPE, **{**SMALL, "wording_span_tails": 2.0})
