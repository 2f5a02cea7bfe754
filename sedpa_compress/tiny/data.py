"""Training batches for sedpa-tiny: plain shipped text and synthetic retrieval sequences, built in
token space. Batch `step` depends only on (seed, schedule_span, step), so a resumed run sees exactly the same data."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from sedpa_compress.data.needles import HELDOUT_TEMPLATES, TRAIN_TEMPLATES, NeedleTemplates, distinct
from sedpa_compress.data.text import load_bundled_text, load_corpus_text
from sedpa_compress.errors import SedpaError
from sedpa_compress.tiny.config import TinyTrainConfig
from sedpa_compress.tiny.tokenizer import BOS

_SENTENCE_END_CHARS = (".", "!", "?", "Ċ")


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L] int64
    answer_mask: torch.Tensor  # [B, L] bool: this token is part of a retrieved answer value
    text_mask: torch.Tensor  # [B, L] bool: this token counts in the text loss
    length: int


def sequence_length(cfg: TinyTrainConfig, progress: float, rng: random.Random) -> int:
    """A sequence length drawn from the curriculum entry that covers `progress` (0..1 of this run), placed in the
    long schedule by the run's schedule_span."""
    frac = cfg.schedule_progress(progress)
    for entry in cfg.curriculum:
        if frac < entry["until"] or entry is cfg.curriculum[-1]:
            lengths = [int(k) for k in entry["lengths"]]
            weights = [float(v) for v in entry["lengths"].values()]
            return rng.choices(lengths, weights)[0]
    raise AssertionError("unreachable")


def training_text(cfg: TinyTrainConfig) -> str:
    """The train split of the bundled text, and of the recipe's corpus folder when it names one."""
    text = load_bundled_text("train")
    return text + "\n\n" + load_corpus_text(Path(cfg.corpus), "train") if cfg.corpus else text


class TinyData(torch.utils.data.Dataset):
    """`dataset[step]` is that step's Batch (index = step number, for any step)."""

    def __init__(self, cfg: TinyTrainConfig, tokenizer: Tokenizer, text: str | None = None,
                 templates: NeedleTemplates = TRAIN_TEMPLATES, stream: int = 0) -> None:
        # `stream`: which of several independent batch streams (a data-parallel process's rank); stream 0
        # is the one a single process trains on
        self.cfg = cfg
        self.stream = stream
        self.tok = tokenizer
        self.templates = templates
        self.bos = tokenizer.token_to_id(BOS)
        text = training_text(cfg) if text is None else text
        if cfg.corpus_words or cfg.wording_wild is not None:
            if not hasattr(templates, "with_corpus_words"):
                raise SedpaError("corpus_words / wording_wild need a compositional wording family "
                                 "(data/wordings.py), not fixed templates")
            templates = templates.with_corpus_words(text, cfg.corpus_words, cfg.wording_wild,
                                                    exclude=HELDOUT_TEMPLATES)
            self.templates = templates
        if cfg.value_weights is not None:
            from sedpa_compress.data.wordings import VALUE_FORMATS

            if not hasattr(templates, "value_weights"):
                raise SedpaError("value_weights needs a compositional wording family (data/wordings.py)")
            weights = tuple(float(cfg.value_weights.get(f, 0.0)) for f in VALUE_FORMATS)
            templates = self.templates = dataclasses.replace(templates, value_weights=weights)
            if cfg.value_weights.get("phrase"):  # phrase values from the training text, never the held-out split's
                from sedpa_compress.data.wordings import phrase_pool

                templates = self.templates = dataclasses.replace(templates, phrases=phrase_pool(text, count=50_000))
        generated = [slot for slot, on in (("value_syllables", cfg.generated_word_syllables),
                                           ("key_syllables", cfg.generated_key_syllables)) if on]
        if generated:  # invented words of ~600 generated syllables (less the held-out family's) instead of 14
            from sedpa_compress.data.wordings import generated_syllables

            if not hasattr(templates, "value_syllables"):
                raise SedpaError("generated_word_syllables / generated_key_syllables need a compositional wording "
                                 "family (data/wordings.py)")
            syllables = generated_syllables(exclude=HELDOUT_TEMPLATES.vocab.syllables)
            templates = self.templates = dataclasses.replace(templates, **dict.fromkeys(generated, syllables))
        if cfg.wording_random_verbs is not None:
            if not getattr(templates, "words", None):
                raise SedpaError("wording_random_verbs needs the training family's corpus words: set corpus_words")
            templates = self.templates = dataclasses.replace(templates, random_verb_share=cfg.wording_random_verbs)
        if cfg.wording_verb_particles:
            if not getattr(templates, "words", None):
                raise SedpaError("wording_verb_particles needs the training family's corpus words: set corpus_words")
            from sedpa_compress.data.wordings import VERB_PARTICLES

            templates = self.templates = dataclasses.replace(templates, verb_particles=VERB_PARTICLES)
        # shares of the compositional family's needle kinds and noise: recipe field -> WordingFamily field
        for field_name, share in (("wording_actions", "action_share"), ("wording_subjects", "subject_share"),
                                  ("wording_noise", "noise_share"), ("wording_needle_noise", "needle_noise_share"),
                                  ("wording_echo_prefixes", "echo_prefix_share")):
            if getattr(cfg, field_name):
                if not hasattr(templates, share):
                    raise SedpaError(f"{field_name} needs a compositional wording family (data/wordings.py)")
                templates = self.templates = dataclasses.replace(templates, **{share: getattr(cfg, field_name)})
        if cfg.wording_span_tails:
            from sedpa_compress.data.wordings import tail_span_pool

            if not hasattr(templates, "span_tail_share"):
                raise SedpaError("wording_span_tails needs a compositional wording family (data/wordings.py)")
            templates = self.templates = dataclasses.replace(
                templates, span_tail_share=cfg.wording_span_tails,
                tail_spans=tail_span_pool(text, exclude=HELDOUT_TEMPLATES))
        if cfg.corpus_word_values:
            if not getattr(templates, "words", None):
                raise SedpaError("corpus_word_values needs the training family's corpus words: set corpus_words")
            templates = self.templates = dataclasses.replace(templates, corpus_word_values=cfg.corpus_word_values)
        ids = [e.ids for e in tokenizer.encode_batch(text.split("\n\n"), add_special_tokens=False)]
        nl = tokenizer.encode("\n\n", add_special_tokens=False).ids
        flat: list[int] = []
        for chunk in ids:
            flat += chunk + nl
        self.corpus = np.asarray(flat, dtype=np.int64)
        vocab = tokenizer.get_vocab()
        self._is_end = np.zeros(max(vocab.values()) + 1, dtype=bool)
        for piece, i in vocab.items():
            if piece.endswith(_SENTENCE_END_CHARS):
                self._is_end[i] = True
        # token positions that start a sentence: where haystack windows begin and needles go
        self.starts = np.flatnonzero(self._is_end[self.corpus[:-1]]) + 1
        # other haystack kinds: repeated filler sentences, and random words (whole-word tokens)
        self.filler = [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(
            [" " + s for s in filler_sentences()], add_special_tokens=False)]
        self.words = np.asarray(sorted(i for p, i in vocab.items()
                                       if p.startswith("Ġ") and len(p) > 2 and p[1:].isalpha()), dtype=np.int64)
        self.period = tokenizer.token_to_id(".")

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, item: int | tuple[int, int]) -> Batch:
        """`item` is a step (its length from the step-based curriculum) or (step, length)."""
        step, length = item if isinstance(item, tuple) else (item, 0)
        rng = random.Random(self.cfg.data_seed * 1_000_003 + step + self.stream * 1_000_000_007)
        length = length or sequence_length(self.cfg, step / max(1, self.cfg.steps), rng)
        n_seq = self.cfg.tokens_per_step // length
        input_ids = np.empty((n_seq, length), dtype=np.int64)
        answer = np.zeros((n_seq, length), dtype=bool)
        text = np.zeros((n_seq, length), dtype=bool)
        kinds = []
        for _ in range(n_seq):
            r = rng.random()
            kinds.append("needle" if r < self.cfg.needle_fraction else
                         "copy" if r < self.cfg.needle_fraction + self.cfg.copy_fraction else "text")
        # all template texts of the batch are tokenized in one call (the costly part)
        specs = [self._needle_spec(rng, length) if k == "needle" else None for k in kinds]
        texts = [t for spec in specs if spec for t in spec[1]]
        enc = [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)] if texts else []
        pos = 0
        for b, kind in enumerate(kinds):
            if kind == "needle":
                n = len(specs[b][1])
                input_ids[b], answer[b], text[b] = self._needle_sequence(rng, length, specs[b], enc[pos: pos + n])
                pos += n
            elif kind == "copy":
                input_ids[b], answer[b], text[b] = self._copy_sequence(rng, length)
            else:
                input_ids[b], answer[b], text[b] = self._text_sequence(rng, length)
        return Batch(torch.from_numpy(input_ids), torch.from_numpy(answer), torch.from_numpy(text), length)

    def _window(self, rng: random.Random, n: int) -> np.ndarray:
        start = int(self.starts[rng.randrange(len(self.starts))])
        if start + n > len(self.corpus):
            start = int(self.starts[rng.randrange(max(1, np.searchsorted(self.starts, len(self.corpus) - n)))])
        return self.corpus[start: start + n]

    def _text_sequence(self, rng: random.Random, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seq = np.concatenate([[self.bos], self._window(rng, length - 1)])
        return seq, np.zeros(length, dtype=bool), np.ones(length, dtype=bool)

    def _copy_sequence(self, rng: random.Random, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Spans of random tokens, each repeated once: dense practice for copying from context."""
        nrng = np.random.default_rng(rng.getrandbits(63))
        seq = [np.asarray([self.bos])]
        mask = [np.zeros(1, dtype=bool)]
        used = 1
        while used < length:
            n = int(nrng.integers(4, 48))
            span = nrng.integers(3, self.tok.get_vocab_size(), n)
            seq += [span, span]
            mask += [np.zeros(n, dtype=bool), np.ones(n, dtype=bool)]
            used += 2 * n
        ids = np.concatenate(seq)[:length]
        second = np.concatenate(mask)[:length]  # the repeats count in the text loss; first copies are noise
        return ids, np.zeros(length, dtype=bool), second

    def _needle_spec(self, rng: random.Random, length: int) -> tuple[int, list[str]]:
        """Texts of one retrieval sequence: (n needles, [n needle sentences, then (tail, answer) pairs]).

        Usually the needles share one attribute and differ in key (the key must be matched); with
        `same_key_fraction` they share one key and differ in attribute (the attribute must be matched)."""
        cfg = self.cfg
        t = self.templates
        most_needles, most_queries = cfg.needle_caps(length)
        n_needles = rng.randint(1, most_needles)
        n_queries = rng.randint(1, min(most_queries, n_needles))
        if n_needles > 1 and rng.random() < cfg.same_key_fraction and hasattr(t, "sample_attribute"):
            key = t.sample_key(rng)
            first_action = t.sample_action(rng)
            if first_action is not None:
                # one key, different actions ("phoned on", "filed under"): the action must be matched; a long
                # sequence may draw more needles than there are actions, so the group has at most one each
                n_needles = min(n_needles, len(t.phrasing.actions))
                n_queries = min(n_queries, n_needles)
                actions = distinct(lambda: rng.choice(t.phrasing.actions), n_needles)
                subject = t.sample_subject(rng, first_action)  # "Crate 4821 was sent to Lisbon"
                noun = rng.choice(t.phrasing.subject_nouns) if subject else rng.choice(t.vocab.nouns)
                attrs = [noun] * n_needles  # the noun the question asks with
            else:
                subject = False
                actions, attrs = [None] * n_needles, distinct(lambda: t.sample_attribute(rng), n_needles)
            values = distinct(lambda: t.sample_value(rng), n_needles)
            needles = [t.render_needle(key, v, a, rng, act, subject) for v, a, act in zip(values, attrs, actions)]
        else:
            needles = t.sample_needles(rng, n_needles)
        texts = [" " + n.sentence for n in needles]
        for i in rng.sample(range(n_needles), n_queries):
            texts += list(t.render_tail(needles[i], rng))
        return n_needles, texts

    def _needle_sequence(self, rng: random.Random, length: int, spec: tuple[int, list[str]],
                         enc: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.cfg
        n_needles = spec[0]
        needle_ids, tail = enc[:n_needles], enc[n_needles:]
        tail_ids: list[int] = []
        tail_mask: list[bool] = []
        for j, piece in enumerate(tail):  # (question tail, answer) pairs: the answers are scored
            tail_ids += piece
            tail_mask += [j % 2 == 1] * len(piece)
        hay_len = length - 1 - sum(map(len, needle_ids)) - len(tail_ids)
        if hay_len < 16:  # too many needles for this length: fall back to plain text
            return self._text_sequence(rng, length)  # (never for the shipped recipe's lengths)
        hay, hay_kind = self._haystack(rng, hay_len)
        # the LM learns the haystack only where it is running text: the filler's next token is a copy, the random
        # words' is noise and the shuffled sentences' breaks are arbitrary
        hay_text = np.full(hay_len, cfg.haystack_text_loss and hay_kind == "text", dtype=bool)
        cuts = self._cuts(hay)  # sentence starts inside the window (and both ends): insertion points
        places = []
        for k in range(n_needles):
            r = rng.random()
            edge = cfg.edge_depth_fraction  # at the very start or end: the hardest and the easiest place
            depth = 0.0 if r < edge / 2 else 1.0 if r < edge else rng.random()
            places.append((int(cuts[np.abs(cuts - depth * hay_len).argmin()]), k))
        places.sort()
        parts: list[np.ndarray] = [np.asarray([self.bos])]
        text_parts: list[np.ndarray] = [np.ones(1, dtype=bool)]
        pos = 0
        for off, k in places:
            parts += [hay[pos:off], np.asarray(needle_ids[k])]
            text_parts += [hay_text[pos:off], np.ones(len(needle_ids[k]), dtype=bool)]
            pos = off
        parts += [hay[pos:], np.asarray(tail_ids)]
        # the tail's questions and prefixes are text to learn only with question_text_loss; the answers never are
        tail_text = ~np.asarray(tail_mask, dtype=bool) if cfg.question_text_loss else np.zeros(len(tail_mask), dtype=bool)
        text_parts += [hay_text[pos:], tail_text]
        seq = np.concatenate(parts).astype(np.int64)
        text = np.concatenate(text_parts)
        mask = np.zeros(length, dtype=bool)
        mask[length - len(tail_ids):] = tail_mask
        assert len(seq) == length and len(text) == length
        return seq, mask, text

    # ---- haystacks: the shipped text mostly, and text of other kinds so retrieval does not hang on it
    def _haystack(self, rng: random.Random, n: int) -> tuple[np.ndarray, str]:
        """n haystack tokens of one kind of haystack_mix, and the kind."""
        kinds = list(self.cfg.haystack_mix)
        kind = rng.choices(kinds, [float(self.cfg.haystack_mix[k]) for k in kinds])[0]
        return self._haystack_of(kind, rng, n), kind

    def _haystack_of(self, kind: str, rng: random.Random, n: int) -> np.ndarray:
        if kind == "filler":  # a few short sentences repeated (the passkey-retrieval haystack)
            pick = [self.filler[rng.randrange(len(self.filler))] for _ in range(rng.randint(1, 6))]
            unit = np.concatenate(pick)
            return np.tile(unit, n // len(unit) + 1)[:n]
        if kind == "words":  # sentences of random words: text the model has never read
            out: list[np.ndarray] = []
            used = 0
            nrng = np.random.default_rng(rng.getrandbits(63))
            while used < n:
                k = int(nrng.integers(4, 16))
                out.append(np.concatenate([self.words[nrng.integers(0, len(self.words), k)], [self.period]]))
                used += k + 1
            return np.concatenate(out)[:n]
        if kind == "shuffled":  # sentences of the shipped text in random order, paragraphs mixed
            out, used = [], 0
            while used < n:
                s = int(self.starts[rng.randrange(len(self.starts) - 1)])
                j = int(np.searchsorted(self.starts, s, side="right"))
                e = int(self.starts[j]) if j < len(self.starts) else s + 32
                piece = self.corpus[s:min(e, s + 96)]
                out.append(piece)
                used += len(piece)
            return np.concatenate(out)[:n]
        return self._window(rng, n)

    def _cuts(self, hay: np.ndarray) -> np.ndarray:
        """Offsets in `hay` where a sentence starts (always 0 and len)."""
        inner = np.flatnonzero(self._is_end[hay[:-1]]) + 1
        return np.concatenate([[0], inner, [len(hay)]])


_FILLER_SUBJECTS = ("The grass", "The sky", "The sun", "The sea", "The road", "The river", "The wind", "The house",
                    "The bread", "The snow", "The forest", "The morning", "The market", "The old man", "The cat")
_FILLER_PREDICATES = ("is green", "is blue", "is yellow", "is calm", "is long", "flows on", "blows softly",
                      "stands still", "is warm", "falls quietly", "is quiet", "comes early", "is busy",
                      "walks slowly", "sleeps")


def filler_sentences() -> list[str]:
    """Short plain sentences for repeated-filler haystacks ("The grass is green. The sky is blue.")."""
    out = [f"{s} {p}." for s in _FILLER_SUBJECTS for p in _FILLER_PREDICATES]
    return out + ["Here we go.", "There and back again.", "Nothing happens here.", "Time passes.",
                  "The day goes on and on."]


def collate_identity(batch: Batch) -> Batch:
    return batch
