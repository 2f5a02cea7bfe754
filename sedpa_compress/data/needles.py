"""Synthetic needle-in-a-haystack examples: key→value facts hidden at chosen depths of real text.

Two wording families ship (`data/wordings.py`): `TRAIN_TEMPLATES` (what sedpa-tiny and the head gates
are trained on) and `HELDOUT_TEMPLATES` (what benchmarks measure). They are compositional generators
that share no needle wording, question wording, answer prefix, attribute phrase or key, so a benchmark
on the held-out family measures retrieval, not memorised phrasing. `NeedleTemplates` is a fixed list of
frames (a user's own `--needle/--question`).
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sedpa_compress.errors import SedpaError


@dataclass(frozen=True)
class Needle:
    """One fact: `sentence` states that `key`'s `attribute` is `value`."""

    key: str
    value: str
    sentence: str
    attribute: str = ""
    # an action needle links key and value by a verb and preposition, with no attribute noun ("Ms. Ito can be phoned
    # on {value}"): (past participle, preposition); `attribute` is then the noun a question asks with ("number")
    action: tuple[str, str] | None = None
    # a subject needle is an action needle whose value names the thing acted on, before the verb ("Crate 4821 was
    # sent to Lisbon"): `key` is what the action points at, `attribute` the thing's noun ("crate")
    subject: bool = False

    @property
    def kind(self) -> str:
        """attribute, action or subject: how the needle links key and value (the acceptance scores each apart)."""
        return "subject" if self.subject else "action" if self.action else "attribute"


@dataclass
class NeedleExample:
    """A prompt whose greedy continuation should be `answer` (the queried needle's value)."""

    prompt: str
    answer: str
    needles: list[Needle]
    depths: list[float]
    context_tokens: int  # tokens in `prompt` (no special tokens)
    needle_char_spans: list[tuple[int, int]]  # where each needle's sentence sits in `prompt`
    query_index: int = 0
    question: str = ""


@dataclass(frozen=True)
class NeedleTemplates:
    """Wordings and vocabularies for needles and questions.

    `needle_frames` use {key}, {attr}, {value}; `question_frames` are (question, answer prefix) pairs
    using {key} and {attr}. Values are decimal numbers of `value_digits` (min, max) digits.
    `pseudo_keys` adds invented words (e.g. "Velomar") to the key vocabulary.
    """

    name: str
    keys: tuple[str, ...]
    attributes: tuple[str, ...]
    needle_frames: tuple[str, ...]
    question_frames: tuple[tuple[str, str], ...]
    value_digits: tuple[int, int] = (4, 7)
    pseudo_keys: bool = False
    # over data.wordings.VALUE_FORMATS: values of those shapes (codes, invented words...) instead of plain digits
    value_weights: tuple[float, ...] | None = None

    def sample_key(self, rng: random.Random) -> str:
        if self.pseudo_keys and rng.random() < 0.5:
            return pseudo_word(rng)
        return rng.choice(self.keys)

    def sample_value(self, rng: random.Random) -> str:
        if self.value_weights is not None:
            from sedpa_compress.data.wordings import generated_syllables, sample_value

            return sample_value(rng, generated_syllables(), self.value_digits, self.value_weights)
        n = rng.randint(*self.value_digits)
        return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))

    def sample_needles(self, rng: random.Random, num: int, attribute: str | None = None) -> list[Needle]:
        """`num` needles with distinct keys and values; all share one attribute (so keys must be matched)."""
        attr = attribute or rng.choice(self.attributes)
        keys = distinct(lambda: self.sample_key(rng), num)
        values = distinct(lambda: self.sample_value(rng), num)
        return [self.render_needle(k, v, attr, rng) for k, v in zip(keys, values)]

    def render_needle(self, key: str, value: str, attr: str, rng: random.Random) -> Needle:
        frame = rng.choice(self.needle_frames)
        return Needle(key=key, value=value, sentence=_fill(frame, key=key, attr=attr, value=value), attribute=attr)

    def render_question(self, needle: Needle, rng: random.Random) -> tuple[str, str]:
        """(question, answer prefix) asking for `needle`'s value."""
        q, a = rng.choice(self.question_frames)
        attr = needle.attribute or rng.choice(self.attributes)
        return _fill(q, key=needle.key, attr=attr), _fill(a, key=needle.key, attr=attr)

    def render_tail(self, needle: Needle, rng: random.Random) -> tuple[str, str]:
        """(the text after the haystack: question and answer prefix, the answer the model should write)."""
        question, prefix = self.render_question(needle, rng)
        return "\n\n" + question + "\n" + prefix, " " + needle.value


def distinct(draw: Callable[[], Any], n: int, *, tries: int = 1000) -> list[Any]:
    """`n` different results of `draw()`, in the order drawn (keys or values of one example must differ).

    Raises after `tries` draws in a row that found nothing new: a pool smaller than `n` would loop forever."""
    out: list[Any] = []
    misses = 0
    while len(out) < n:
        x = draw()
        if x in out:
            misses += 1
            if misses >= tries:
                raise ValueError(f"distinct: {tries} draws in a row found no new item after {len(out)} of {n}: "
                                 "the pool is smaller than the number asked for")
            continue
        out.append(x)
        misses = 0
    return out


def _fill(frame: str, **kw: str) -> str:
    text = frame.format(**kw)
    return text[:1].upper() + text[1:]


_SYLLABLES = ("ba", "ko", "ri", "tan", "mel", "zu", "dor", "vi", "lek", "sa", "mun", "tro", "pel", "quin",
              "ga", "ho", "ny", "ras", "fel", "ti", "bor", "wen", "ca", "lo", "mir", "dus", "ve", "ka")


def pseudo_word(rng: random.Random) -> str:
    """An invented capitalised word of 2-3 syllables (a key no text contains)."""
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")


def sentence_boundaries(text: str) -> list[int]:
    """Character offsets where a sentence (or paragraph) starts, always including 0 and len(text)."""
    cuts = {0, len(text)}
    cuts.update(m.end() for m in _SENTENCE_END.finditer(text))
    return sorted(cuts)


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(_encode(tokenizer, text))


def _encode(tokenizer: Any, text: str) -> list[int]:
    if callable(getattr(tokenizer, "encode", None)):
        try:
            return list(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:  # a plain encode(text) (e.g. a tokenizers.Tokenizer or a test stub)
            out = tokenizer.encode(text)
            return list(getattr(out, "ids", out))
    raise SedpaError("the tokenizer has no encode(): pass a transformers tokenizer")


def _prefix_within(tokenizer: Any, text: str, budget: int) -> int:
    """Largest sentence-boundary char offset whose prefix of `text` has at most `budget` tokens."""
    cuts = sentence_boundaries(text)
    hi = len(cuts) - 1
    if getattr(tokenizer, "is_fast", False):  # one pass with offsets gives a close upper bound
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) > budget:
            hi = max(0, bisect.bisect_right(cuts, offsets[budget][0]) - 1)
    lo = 0
    if hi > 0 and count_tokens(tokenizer, text[: cuts[hi]]) <= budget:
        return cuts[hi]
    while lo < hi:  # binary search over boundaries; token counts grow with the prefix
        mid = (lo + hi + 1) // 2
        if count_tokens(tokenizer, text[: cuts[mid]]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return cuts[lo]


def make_needle_example(
    tokenizer: Any,
    haystack: str,
    context_tokens: int,
    depths: Sequence[float],
    rng: random.Random,
    templates: NeedleTemplates | None = None,
    num_needles: int = 1,
    query_index: int | None = None,
    needle: Needle | None = None,
) -> NeedleExample:
    """A prompt of about `context_tokens` tokens: haystack text cut at sentence boundaries, one needle
    sentence at each depth (0 = start, 1 = just before the question), then the question and an
    answer prefix. The greedy continuation should be " " + the queried needle's value.

    `depths` gives one depth per needle (a single depth is reused for all). `needle` replaces the
    queried needle (others are sampled). The haystack starts at a random sentence of `haystack`
    (wrapping around), so different `rng` states give different text.
    """
    templates = HELDOUT_TEMPLATES if templates is None else templates
    if num_needles < 1:
        raise SedpaError(f"num_needles={num_needles}: pass at least 1")
    if not depths:
        raise SedpaError("depths is empty: pass at least one depth in [0, 1]")
    if any(not 0.0 <= d <= 1.0 for d in depths):
        raise SedpaError(f"depths {list(depths)} must lie in [0, 1]")
    depth_list = [float(d) for d in depths]
    if len(depth_list) == 1:
        depth_list = depth_list * num_needles
    if len(depth_list) != num_needles:
        raise SedpaError(f"{len(depth_list)} depths for {num_needles} needles: pass one depth, or one per needle")
    qi = rng.randrange(num_needles) if query_index is None else query_index
    if not 0 <= qi < num_needles:
        raise SedpaError(f"query_index={qi} is outside 0..{num_needles - 1}")

    needles = templates.sample_needles(rng, num_needles, attribute=needle.attribute if needle else None)
    if needle is not None:
        others = [n for n in needles if n.key != needle.key and n.value != needle.value][: num_needles - 1]
        while len(others) < num_needles - 1:  # rare collision with the given needle: sample again
            extra = templates.sample_needles(rng, 1, attribute=needle.attribute or None)[0]
            if extra.key != needle.key and extra.value != needle.value and extra not in others:
                others.append(extra)
        needles = others[:qi] + [needle] + others[qi:]
    tail, _answer_text = templates.render_tail(needles[qi], rng)
    question = tail.strip()

    fixed = count_tokens(tokenizer, tail) + sum(count_tokens(tokenizer, " " + n.sentence) + 1 for n in needles)
    budget = max(0, context_tokens - fixed)

    # A window of the haystack starting at a random sentence; wrap around when it is too short.
    hay = haystack.strip()
    if not hay:
        raise SedpaError("the haystack text is empty: pass a text file with --haystack")
    starts = sentence_boundaries(hay)[:-1]
    start = rng.choice(starts) if starts else 0
    need_chars = budget * 6 + 256  # generous: ~4 chars per token in English
    window = hay[start:]
    while len(window) < need_chars and budget > 0:
        window = window + "\n\n" + hay
    window = window[:need_chars]
    window = window[: _prefix_within(tokenizer, window, budget)].rstrip() if budget > 0 else ""

    # Insert needles at sentence boundaries nearest to each depth (deepest first keeps offsets valid).
    cuts = sentence_boundaries(window) if window else [0]
    places: list[tuple[int, int]] = []  # (char offset in window, needle index)
    for i, d in enumerate(depth_list):
        target = d * len(window)
        j = bisect.bisect_left(cuts, target)
        cands = [c for c in (cuts[max(0, j - 1)], cuts[min(j, len(cuts) - 1)])]
        places.append((min(cands, key=lambda c: (abs(c - target), c)), i))
    places.sort()
    pieces: list[str] = []
    spans: list[tuple[int, int]] = [(0, 0)] * num_needles
    pos = 0
    length = 0
    for offset, i in places:
        before = window[pos:offset]
        if before and not before[-1].isspace():
            before += " "
        pieces.append(before)
        length += len(before)
        sentence = needles[i].sentence
        spans[i] = (length, length + len(sentence))
        sep = " " if offset < len(window) else ""
        pieces.append(sentence + sep)
        length += len(sentence) + len(sep)
        pos = offset
    pieces.append(window[pos:])
    body = "".join(pieces).rstrip()
    prompt = body + tail
    return NeedleExample(
        prompt=prompt,
        answer=needles[qi].value,
        needles=needles,
        depths=depth_list,
        context_tokens=count_tokens(tokenizer, prompt),
        needle_char_spans=spans,
        query_index=qi,
        question=question,
    )


def score_answer(generated: str, expected: str) -> tuple[float, float]:
    """(exact, partial): exact is 1.0 when the generation starts with the expected value (after
    whitespace) and the value is not followed by more of its kind (digits/letters); partial is the
    fraction of the expected characters matched position by position."""
    gen = generated.strip()
    exp = expected.strip()
    if not exp:
        return 0.0, 0.0
    nxt = gen[len(exp): len(exp) + 1]
    head, want = gen[:len(exp)], exp
    if value_format(exp) == "phrase":  # it may open the answer with a capital ("Eat a sandwich ..."): not another answer
        head, want = head[:1].lower() + head[1:], want[:1].lower() + want[1:]
    exact = float(head == want and not nxt.isalnum())
    partial = sum(a == b for a, b in zip(gen, exp)) / len(exp)
    return exact, partial


# Tokens decoded beyond the answer's own, in every needle benchmark (`sedpa bench niah`, sedpa-tiny's acceptance):
# `answer_found` looks for the value anywhere in the first line, so the line must have room to hold a
# full-sentence answer. "The {attr} of {key} is" before a held-out value takes 12 tokens of sedpa-tiny's tokenizer
# at the median and 19 at most (2,000 held-out needles), so 24 leaves room to end the line.
ANSWER_SLACK = 24


def answer_found(generated: str, expected: str) -> float:
    """1.0 when the expected value appears in the first line of the generation as a whole value (not
    inside a longer run of digits or letters): RULER's string-match metric for needle tasks. It forgives
    words before the value ("It is 4821"), which `score_answer`'s exact match does not."""
    exp = expected.strip()
    if not exp:
        return 0.0
    line = generated.strip().split("\n", 1)[0]
    phrase = value_format(exp) == "phrase"  # as whole words, in any case ("Eat a sandwich" answers it, as in RULER)
    pattern = r"(?<![0-9A-Za-z])" + re.escape(exp) + r"(?![0-9A-Za-z])" if exp.isalnum() or phrase else re.escape(exp)
    # digits glued to a word ("is4821") still count: only a longer number or word is a different answer
    if exp.isdigit():
        pattern = r"(?<![0-9])" + re.escape(exp) + r"(?![0-9])"
    return float(re.search(pattern, line, re.IGNORECASE if phrase else 0) is not None)


# The wording families (imported last: data/wordings.py builds on `Needle` above).
from sedpa_compress.data.wordings import HELDOUT_WORDINGS as HELDOUT_TEMPLATES  # noqa: E402, F401
from sedpa_compress.data.wordings import TRAIN_WORDINGS as TRAIN_TEMPLATES  # noqa: E402, F401
from sedpa_compress.data.wordings import value_format  # noqa: E402  (what a phrase is, for the scoring above)
