"""Synthetic multi-passkey retrieval data for gate training (DuoAttention's training task).

Every example is exactly `context_tokens` tokens long: haystack text with N passkey sentences
(`data.wordings.TRAIN_WORDINGS_COMPACT`: the training family without its optional clauses, so
DuoAttention's 10 passkeys fit from 1K tokens; one attribute, N keys) inserted at random depths, then one question
per passkey, in shuffled order, each followed by its answer. The gated model is distilled against the
original one at the positions whose hidden states predict the answer values (`loss_positions`: the
last token of each answer prefix and every value token but the last), so the heads whose streaming
version changes the answers are the ones that must keep the full context. Scoring the value tokens'
own states instead would never score the prediction of the first value token, which carries most of
the value when a tokenizer packs several digits into one token (Llama-3's). The layout (BOS, " " + sentence, "\n\n" + question +
"\n" + answer prefix, " " + value) is the one sedpa-tiny was trained on; the probe and benchmarks use
the held-out templates, so the gates never see the sentences they are judged with.

Examples are built from token pieces (not by re-tokenising a joined string), so each passkey's
token span is known exactly and the tests can check that it is where the example says.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sedpa_compress.data.needles import NeedleTemplates
from sedpa_compress.data.wordings import TRAIN_WORDINGS_COMPACT
from sedpa_compress.errors import SedpaError

Encode = Callable[[str], list[int]]


@dataclass(frozen=True)
class Passkey:
    key: str
    value: str
    sentence: str  # the tokens input_ids[start:end] encode " " + sentence
    start: int  # first token of its sentence in `input_ids`
    end: int  # one past its last token
    depth: float  # start / context_tokens


@dataclass
class PasskeyExample:
    input_ids: list[int]
    answer_positions: list[int]  # tokens of the answer values
    passkeys: list[Passkey]  # in the order they appear in the text
    asked: list[int]  # indices into `passkeys`, in the order the questions ask for them
    context_tokens: int = field(init=False)
    loss_positions: list[int] = field(init=False)  # the states that predict the answer tokens (p - 1 each)

    def __post_init__(self) -> None:
        self.context_tokens = len(self.input_ids)
        self.loss_positions = [p - 1 for p in self.answer_positions]


def encoder_for(loaded) -> tuple[Encode, list[int]]:
    """(encode text without special tokens, the special tokens a sequence starts with) for a LoadedModel."""
    tok = loaded.tokenizer
    if tok is None:
        vocab = loaded.model.config.vocab_size
        return (lambda s: [b % vocab for b in s.encode("utf-8")]), []
    start = list(tok("", add_special_tokens=True)["input_ids"])
    # verbose=False: the haystack is tokenised in one piece, longer than the model's limit on purpose.
    return (lambda s: list(tok(s, add_special_tokens=False, verbose=False)["input_ids"])), start


class PasskeyData:
    """Draws training examples; all randomness comes from the `rng` passed in (checkpointed by the trainer)."""

    def __init__(self, encode: Encode, haystack: str, *, context_min: int, context_max: int,
                 context_intervals: int = 50, num_passkeys: int = 10, depth_min: float = 0.05,
                 depth_max: float = 0.95, start_tokens: Sequence[int] = (), source: str = "the haystack",
                 templates: NeedleTemplates = TRAIN_WORDINGS_COMPACT) -> None:
        self.encode = encode
        self.templates = templates
        self.start_tokens = list(start_tokens)
        self.num_passkeys = num_passkeys
        self.depth_min, self.depth_max = depth_min, depth_max
        if context_intervals <= 1 or context_min == context_max:
            self.lengths = [context_max]
        else:
            step = (context_max - context_min) / (context_intervals - 1)
            self.lengths = sorted({round(context_min + i * step) for i in range(context_intervals)})
        # The largest fixed part (instruction, needles, question, answer) must fit the shortest context.
        overhead = self._overhead_bound()
        if overhead >= context_min:
            raise SedpaError(
                f"context_min {context_min} is too short for {num_passkeys} passkeys (their text takes up to "
                f"{overhead} tokens): raise context_min or lower num_passkeys")
        self.haystack_ids = _tokenize_enough(encode, haystack, context_max)
        if len(self.haystack_ids) < context_max:
            raise SedpaError(
                f"{source} has only {len(self.haystack_ids)} tokens but the recipe's context_max is {context_max}: "
                "pass a longer text file with --haystack or lower --context-max")

    def _overhead_bound(self) -> int:
        """An upper bound on the non-haystack tokens: the longest wordings, keys and values."""
        t = self.templates
        longest = lambda xs: max(xs, key=lambda x: len(self.encode(x)))  # noqa: E731
        key, attr = longest(t.keys), longest(t.attributes)
        value = "9" * t.value_digits[1]
        sentence = max(len(self.encode(" " + f.format(key=key, attr=attr, value=value))) for f in t.needle_frames)
        question = max(len(self.encode("\n\n" + q.format(key=key, attr=attr) + "\n" + a.format(key=key, attr=attr)))
                       for q, a in t.question_frames)
        per_key = sentence + question + len(self.encode(" " + value)) + 16  # + pseudo keys, capitals
        return len(self.start_tokens) + self.num_passkeys * per_key

    def sample(self, rng: random.Random) -> PasskeyExample:
        return self.make(rng, rng.choice(self.lengths))

    def make(self, rng: random.Random, context_tokens: int) -> PasskeyExample:
        n = self.num_passkeys
        needles = self.templates.sample_needles(rng, n)
        sentences = [self.encode(" " + nd.sentence) for nd in needles]
        asked = list(range(n))
        rng.shuffle(asked)  # asked in another order than inserted: answers must be looked up, not copied
        tail: list[int] = []
        answer_offsets: list[int] = []
        for i in asked:
            question, prefix = self.templates.render_question(needles[i], rng)
            tail += self.encode("\n\n" + question + "\n" + prefix)
            value = self.encode(" " + needles[i].value)
            answer_offsets += range(len(tail), len(tail) + len(value))
            tail += value
        filler_len = context_tokens - len(self.start_tokens) - sum(map(len, sentences)) - len(tail)
        if filler_len < 0:
            raise SedpaError(f"context {context_tokens} is too short for {n} passkeys: raise context_min")
        offset = rng.randrange(0, len(self.haystack_ids) - filler_len + 1)
        filler = self.haystack_ids[offset: offset + filler_len]
        # Depths (fractions of the haystack) from DuoAttention's grid; sorted so inserts go in order.
        grid = [self.depth_min + (self.depth_max - self.depth_min) * i / 999 for i in range(1000)]
        cuts = sorted(round(rng.choice(grid) * filler_len) for _ in range(n))
        ids = list(self.start_tokens)
        passkeys: list[Passkey] = []
        prev = 0
        for cut, tokens, nd in zip(cuts, sentences, needles):
            ids += filler[prev:cut]
            passkeys.append(Passkey(key=nd.key, value=nd.value, sentence=nd.sentence, start=len(ids),
                                    end=len(ids) + len(tokens), depth=len(ids) / context_tokens))
            ids += tokens
            prev = cut
        ids += filler[prev:]
        tail_start = len(ids)
        ids += tail
        assert len(ids) == context_tokens, (len(ids), context_tokens)
        return PasskeyExample(input_ids=ids, answer_positions=[tail_start + o for o in answer_offsets],
                              passkeys=passkeys, asked=asked)


def _tokenize_enough(encode: Encode, text: str, tokens_needed: int) -> list[int]:
    """Tokenise a prefix of `text` long enough for `tokens_needed` tokens (plus variety), not all of it."""
    chars = max(tokens_needed * 8, 400_000)
    while True:
        ids = encode(text[:chars])
        if len(ids) >= 2 * tokens_needed or chars >= len(text):
            return ids
        chars *= 2
