"""`sedpa bench niah`: needle in a haystack, every `--attention` mode on the same prompts.

As the seeds run it: haystack text (the bundled held-out text by default) cut to each context
length, one needle sentence stating a random key's random value inserted at each depth (every cell
its own key and value), the question at the end, a greedy answer of the answer's tokens + 24
(`data.needles.ANSWER_SLACK`: room for a full-sentence first line). Each
cell is scored as public long-context benchmarks score it, `accuracy`: the value appears as a whole
value in the first line of the answer (RULER's string match, "It is 4821" counts), and by `exact`:
the answer starts with the value; `score` is the partial character match. The raw `output` is kept.
Needle and question wordings are the held-out templates (never seen by sedpa-tiny or the gate
training), or the user's own (`--needle`, `--question`, `--answer`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sedpa_compress.bench.cache import CellCache
from sedpa_compress.bench.common import (
    DEFAULT_CHUNK,
    BenchModel,
    ProgressFn,
    PromptCache,
    bench_fingerprint,
    greedy_generate,
    provenance,
    text_digest,
)
from sedpa_compress.data.needles import ANSWER_SLACK
from sedpa_compress.data.wordings import DEFAULT_VALUE_WEIGHTS, VALUE_FORMATS, value_format
from sedpa_compress.errors import SedpaError
from sedpa_compress.models.loader import LoadedModel

VALUE_SLOT = "{value}"
VALUE_CHOICES = ("default", "mixed", *(f for f in VALUE_FORMATS if f != "free_code"))


def value_weights(values: str) -> tuple[float, ...] | None:
    """Weights over VALUE_FORMATS for `--values` (None: the templates' own values)."""
    if values == "default":
        return None
    if values == "mixed":
        return DEFAULT_VALUE_WEIGHTS
    return tuple(float(f == values) for f in VALUE_FORMATS)


@dataclass
class NiahConfig:
    lengths: list[int] = field(default_factory=lambda: [1024, 2048, 4096])
    depths: list[float] = field(default_factory=lambda: [round(i / 9, 4) for i in range(10)])
    samples: int = 1  # prompts per (length, depth); each has its own key, value and haystack offset
    seed: int = 0
    haystack: str | None = None  # a UTF-8 text file; None: the bundled held-out text
    needle: str | None = None  # the user's needle sentence, with {value} or a literal --answer in it
    question: str | None = None
    answer: str | None = None
    answer_prefix: str = "Answer:"
    max_new_tokens: int | None = None  # None: the answer's tokens + ANSWER_SLACK (room for a first line)
    # the shape of the hidden values: "default" (the held-out family's mix; with --needle, plain digits), "mixed"
    # (that mix for --needle too), or one of data.wordings.VALUE_FORMATS but free_code (every value a code, say)
    values: str = "default"
    chunk: int = DEFAULT_CHUNK

    def validate(self) -> NiahConfig:
        if not self.lengths:
            raise SedpaError("--lengths is empty: pass e.g. 1k:32k:8")
        if not self.depths or any(not 0 <= d <= 1 for d in self.depths):
            raise SedpaError(f"--depths {self.depths}: pass fractions in [0, 1]")
        if self.samples < 1:
            raise SedpaError(f"--samples {self.samples}: pass at least 1")
        if self.chunk < 1:
            raise SedpaError(f"--chunk {self.chunk}: pass a positive prefill chunk size")
        if self.values not in VALUE_CHOICES:
            raise SedpaError(f"--values {self.values!r}: pass one of {', '.join(VALUE_CHOICES)}")
        if self.needle is None:
            if self.question is not None or self.answer is not None:
                raise SedpaError("--question/--answer go with --needle TEXT: pass the needle sentence too")
            return self
        if not self.needle.strip():
            raise SedpaError("--needle is empty: pass a sentence such as 'The code of the blue door is {value}.'")
        if not self.question or not self.question.strip():
            raise SedpaError("--needle needs --question TEXT: the question asked at the end of the haystack")
        if VALUE_SLOT in self.needle:
            if self.answer is not None:
                raise SedpaError("--answer is for a needle without {value}: drop --answer (the value is drawn per prompt) "
                                 "or write the value into --needle")
        else:
            if not self.answer:
                raise SedpaError("--needle has no {value} slot: put {value} where the random value goes, "
                                 "or pass --answer TEXT naming the answer the needle states")
            if self.answer not in self.needle:
                raise SedpaError(f"--answer {self.answer!r} does not appear in --needle: the needle must state the answer")
        return self


def user_templates(cfg: NiahConfig):
    """The user's needle and question as a one-wording template set (braces escaped, {value} kept)."""
    from sedpa_compress.data.needles import HELDOUT_TEMPLATES, NeedleTemplates

    def esc(text: str) -> str:
        return text.replace("{", "{{").replace("}", "}}")

    frame = esc(cfg.needle).replace(esc(VALUE_SLOT), VALUE_SLOT)
    return NeedleTemplates(name="user", keys=("user",), attributes=("user",), needle_frames=(frame,),
                           question_frames=((esc(cfg.question), esc(cfg.answer_prefix)),),
                           value_digits=HELDOUT_TEMPLATES.value_digits, value_weights=value_weights(cfg.values))


class _ByteTokenizer:
    """Random-weight presets have no tokenizer: count the same UTF-8 bytes LoadedModel.encode uses."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [b % self.vocab for b in text.encode("utf-8")]


def tokenizer_of(loaded: LoadedModel):
    return loaded.tokenizer or _ByteTokenizer(loaded.model.config.vocab_size)


def cell_templates(cfg: NiahConfig):
    """The needle and question wordings this run draws from: the held-out set, or the user's."""
    from sedpa_compress.data.needles import HELDOUT_TEMPLATES

    if cfg.needle is not None:
        return user_templates(cfg)
    weights = value_weights(cfg.values)
    return HELDOUT_TEMPLATES if weights is None else dataclasses.replace(HELDOUT_TEMPLATES, value_weights=weights)


def make_example(loaded: LoadedModel, haystack: str, cfg: NiahConfig, length: int, depth: float, sample: int):
    """The prompt of one cell (length, depth, sample).

    Every cell hides its own needle: key and value are drawn from (seed, length, depth, sample), so
    no two depths of a column share a value and one lucky or unlucky value cannot pass or fail a whole
    column. The haystack (where it starts in the text) and the question wording are drawn from
    (seed, length, sample) alone, so the depths of one (length, sample) share the text before their
    needles, which the deepest-first prompt reuse of `run_niah` exploits. Every mode, rerun and
    resumed run sees the same prompt. A literal `--needle` without {value} states one answer for
    every cell (the user chose it)."""
    from sedpa_compress.data.needles import Needle, make_needle_example

    hay_rng = random.Random(f"niah-{cfg.seed}-{length}-{sample}")
    needle_rng = random.Random(f"niah-needle-{cfg.seed}-{length}-{depth:.4f}-{sample}")
    templates = cell_templates(cfg)
    if cfg.needle is not None and VALUE_SLOT not in cfg.needle:
        needle = Needle(key="user", value=cfg.answer, sentence=cfg.needle, attribute="user")
    else:
        needle = templates.sample_needles(needle_rng, 1)[0]
    return make_needle_example(tokenizer_of(loaded), haystack, length, [depth], hay_rng, templates=templates,
                               needle=needle)


def check_fits(loaded: LoadedModel, haystack: str, cfg: NiahConfig) -> None:
    """The needle, question and answer prefix must leave room for haystack in the shortest context:
    build that context's prompt and refuse when it came out longer than asked (no haystack fits)."""
    shortest = min(cfg.lengths)
    ex = make_example(loaded, haystack, cfg, shortest, 0.5, 0)
    if ex.context_tokens > shortest:
        what, fix = (("--needle and --question", "or a shorter --needle/--question") if cfg.needle
                     else ("the needle sentence and question", "(a few hundred tokens at least)"))
        raise SedpaError(f"{what} take {ex.context_tokens} tokens but the shortest --lengths is {shortest}: "
                         f"pass longer contexts with --lengths {fix}")


def cell_key(length: int, depth: float, sample: int) -> str:
    return f"{length}|{depth:.4f}|{sample}"


@dataclass
class NiahInputs:
    """What every mode of a run reads: the haystack text and the provenance its cells are cached under."""

    haystack: str
    provenance: dict[str, Any]


def prepare_niah(base: LoadedModel, cfg: NiahConfig) -> NiahInputs:
    """Load the haystack, check the needle fits the shortest context, and digest what the cells depend
    on besides their settings: the code, the needle templates and the haystack text."""
    from sedpa_compress.data.text import load_haystack

    cfg.validate()
    # The bundled held-out text is extended with the train split when a long context needs more; a
    # user's haystack shorter than the context is repeated (make_needle_example wraps), as the seeds do.
    haystack = load_haystack(Path(cfg.haystack) if cfg.haystack else None,
                             min_chars=0 if cfg.haystack else max(cfg.lengths) * 6)
    check_fits(base, haystack, cfg)
    prov = provenance("niah", templates=text_digest(repr(cell_templates(cfg))), text=text_digest(haystack))
    return NiahInputs(haystack=haystack, provenance=prov)


def run_niah(models: list[BenchModel], cfg: NiahConfig, cache: CellCache | None = None,
             progress: ProgressFn | None = None, prepared: NiahInputs | None = None,
             ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Score every (mode, length, depth, sample) cell; return (rows, summary). Cells found in `cache`
    (same mode settings, benchmark settings and provenance) are not recomputed; their rows say
    `cached: true`."""
    cfg.validate()
    cache = cache if cache is not None else CellCache(None)
    base = models[0].loaded
    prepared = prepared or prepare_niah(base, cfg)
    haystack = prepared.haystack
    common = {k: v for k, v in asdict(cfg).items() if k not in ("lengths", "depths", "samples", "chunk")}
    examples: dict[str, Any] = {}

    def example(length: int, depth: float, sample: int):
        key = cell_key(length, depth, sample)
        if key not in examples:
            examples[key] = make_example(base, haystack, cfg, length, depth, sample)
        return examples[key]

    rows: list[dict[str, Any]] = []
    for m, bm in enumerate(models):
        fp = bench_fingerprint("niah", bm.settings, common, prepared.provenance)
        # Deepest needle first: each prompt shares the haystack text before its needle with the last
        # one (same haystack, another needle), and prefills only from there on.
        reuse = PromptCache()
        for length in cfg.lengths:
            for sample in range(cfg.samples):
                for depth in sorted(cfg.depths, reverse=True):
                    key = cell_key(length, depth, sample)
                    row = cache.get(fp, key)
                    if row is None:
                        ex = example(length, depth, sample)
                        row = _score_cell(bm, ex, cfg, reuse)
                        row.update(mode=bm.name, context=length, depth=depth, sample=sample)
                        cache.put(fp, key, row)
                    rows.append((m, length, depth, sample, _ordered(row)))
                    if progress:
                        progress(bm.name)
        del reuse  # one mode's KV cache alive at a time
    rows.sort(key=lambda r: r[:4])
    out = [r[4] for r in rows]
    return out, summarize(out)


def _score_cell(bm: BenchModel, ex, cfg: NiahConfig, reuse: PromptCache | None = None) -> dict[str, Any]:
    from sedpa_compress.data.needles import answer_found, score_answer

    loaded = bm.loaded
    ids = loaded.encode(ex.prompt)
    answer_tokens = len(tokenizer_of(loaded).encode(" " + ex.answer, add_special_tokens=False))
    max_new = cfg.max_new_tokens or answer_tokens + ANSWER_SLACK
    before = reuse.reused_tokens if reuse is not None else 0
    t0 = time.perf_counter()
    out = greedy_generate(loaded, ids, bm.mode, max_new, chunk=cfg.chunk, reuse=reuse)
    wall = time.perf_counter() - t0  # of this cell's own work: a reused prefix is not timed again
    text = loaded.decode(out)
    exact, partial = score_answer(text, ex.answer)
    return {"tokens": len(ids), "accuracy": answer_found(text, ex.answer), "exact": exact,
            "score": round(partial, 4), "answer": ex.answer, "output": text, "new_tokens": len(out),
            "wall_s": round(wall, 3), "reused_tokens": (reuse.reused_tokens - before) if reuse is not None else 0}


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    first = ("mode", "context", "depth", "sample", "tokens", "accuracy", "exact", "score")
    return {**{k: row[k] for k in first if k in row}, **{k: v for k, v in row.items() if k not in first}}


def _mean(values) -> float:
    return round(float(np.mean(list(values))), 4)


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per mode: mean `accuracy` (string match in the first line), `exact` (the answer starts with the
    value) and `score` (partial), each of the first two also per context length and per depth
    (`by_context`/`by_depth` are accuracy, `exact_by_context`/`exact_by_depth` exact), and accuracy per
    kind of value (`by_value_format`: digits, grouped, thousands, code, word)."""
    out: dict[str, dict[str, Any]] = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        lengths = sorted({r["context"] for r in mine})
        depths = sorted({r["depth"] for r in mine})
        s: dict[str, Any] = {"accuracy": _mean(r["accuracy"] for r in mine),
                             "exact": _mean(r["exact"] for r in mine),
                             "score": _mean(r["score"] for r in mine), "n": len(mine)}
        for metric, prefix in (("accuracy", ""), ("exact", "exact_")):
            s[prefix + "by_context"] = {str(n): _mean(r[metric] for r in mine if r["context"] == n)
                                        for n in lengths}
            s[prefix + "by_depth"] = {f"{d:g}": _mean(r[metric] for r in mine if r["depth"] == d)
                                      for d in depths}
        if all("answer" in r for r in mine):  # which kinds of value the mode misses (codes, words, digits...)
            kinds = [value_format(r["answer"]) for r in mine]
            s["by_value_format"] = {f: _mean(r["accuracy"] for r, k in zip(mine, kinds) if k == f)
                                    for f in sorted(set(kinds))}
        s["cached"] = sum(1 for r in mine if r.get("cached"))
        s["wall_s"] = round(float(sum(r.get("wall_s", 0.0) for r in mine)), 2)
        out[mode] = s
    return out
