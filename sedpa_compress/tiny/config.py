"""`TinyTrainConfig`: everything `sedpa train-tiny` needs, read from recipes/tiny.yaml."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sedpa_compress.errors import SedpaError


ATTENTION_BACKENDS = ("auto", "flash", "cudnn", "efficient")


@dataclass
class TinyTrainConfig:
    # model (Llama architecture, GQA, RoPE)
    hidden_size: int = 512
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 2
    intermediate_size: int = 1024
    vocab_size: int = 4096
    # the space before every word that holds a digit is a token of its own (tiny.tokenizer.pre_tokenizer), so a
    # letter-first code ("XK-4821") opens with the bare "Ġ" as a number does. A run from a model with the plain
    # pre-tokenizer switches its tokenizer (same vocabulary and merges) and fine-tunes to it; False leaves the
    # tokenizer as found (a model's weights go with the tokenizer they were trained on)
    value_space: bool = False
    rope_theta: float = 200000.0
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = True
    # optimisation
    steps: int = 3000
    tokens_per_step: int = 131072
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    # the part of one long schedule (the cosine learning rate and the length curriculum) this run covers: a run
    # longer than one device call is split into calls that each continue from the last one's weights with their
    # own span ([0, 0.25], [0.25, 0.5], ...), so together they follow one schedule. Each call warms a fresh
    # optimizer up over warmup_steps to the span's rate.
    schedule_span: tuple[float, float] = (0.0, 1.0)
    # False: a run given --init-from takes only that model's tokenizer and starts from fresh weights (a from-scratch
    # run that keeps the shipped tokenizer, so its stages restore as every other: tiny.checkpoints). Only where the
    # schedule starts: the later calls of a split run continue the last call's weights
    init_weights: bool = True
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.95)
    answer_loss_weight: float = 1.0  # loss = mean CE(text tokens) + weight * mean CE(answer tokens)
    seed: int = 0
    # training text beyond the bundled text: a folder of .txt files (calibration/make_corpus.py builds one from
    # Debian packages; python -m sedpa_compress.tiny.corpus restores a kept one). Its train split (every 20th
    # paragraph held out, as in the bundled text) joins the bundled train split for haystacks, plain-text
    # sequences, corpus words and a fresh tokenizer. Every stage to 16b trained on the bundled 1.7M tokens alone and
    # memorised them (train perplexity 1.1-1.3, held-out 150-550: bench/results/tiny_text_fit_cpu.json)
    corpus: str | None = None
    # data mix
    needle_fraction: float = 0.6  # share of sequences that are retrieval examples
    copy_fraction: float = 0.1  # share of sequences of repeated random-token spans (copying practice)
    # also train the LM on the haystack inside retrieval sequences where it is running text (haystack_mix "text";
    # not filler, random words or shuffled sentences): the retrieval sequences are 80% of the tokens, so without it
    # the LM learns from the 10% text sequences alone (stage 26)
    haystack_text_loss: bool = False
    # the questions and answer prefixes after the haystack count in the text loss (every stage to 23). They are the
    # user's words, not the model's: trained on them, the model also learns where a listed prefix ends, and after an
    # unseen one ("Here you go:", "It reads") it went on writing prose or another training question
    # (bench/results/tiny_soup21_acceptance_h200.json). False: the only target after the haystack is the answer
    question_text_loss: bool = True
    max_needles: int = 8
    max_queries: int = 4
    # longer sequences carry more needles and questions (up to this many per 4K tokens, when that is above
    # max_needles / max_queries): a 32K sequence costs 32 1K ones in tokens, so with one question it gets a
    # thirty-second of their answers to learn from, which starves the long contexts the model fails at
    needles_per_4k: float = 0.0
    queries_per_4k: float = 0.0
    same_key_fraction: float = 0.0  # retrieval sequences whose needles share a key and differ in attribute
    # procedural wordings: widen the training family's random words with this many words of the shipped
    # text (0: the family's own list), and set the share of procedurally built slots (None: the family's)
    corpus_words: int = 0
    wording_wild: float | None = None
    # of the procedural verbs joining attribute and value (needles, answer prefixes), the share that are one or
    # two random words instead of a listed verb (None: the family's, a quarter)
    wording_random_verbs: float | None = None
    # random joining words sometimes end with a particle (data.wordings.VERB_PARTICLES: "lantern on {value}"), so a
    # value after a preposition ("stands at") is found as after a verb
    wording_verb_particles: bool = False
    # share of answer prefixes that echo the needle's sentence up to its value ("Dr. Patel can be paged at"):
    # stages trained with random joining words wrote more words after an everyday prefix ending in a verb ("The
    # order was" -> " shown 618440", bench/results/tiny_user_wordings_cpu.json); here the value follows any words
    wording_echo_prefixes: float = 0.0
    # share of needle groups that are action needles: key and value linked by a verb and preposition with no attribute
    # noun ("Ms. Ito can be phoned on {value}"), asked back through the action ("On what number can Ms. Ito be
    # phoned?"). Stages 13-16 wrote an invented word for such needles, where the attribute frames found the value
    wording_actions: float = 0.0
    # share of those action needle groups in the subject form: the value names the thing the action links to the key,
    # before the verb ("Crate 4821 was sent to Lisbon", asked "Which crate was sent to Lisbon?"). Stage 16b, trained
    # on value-last actions only, answered "Lisbon" to "Order {value} was shipped to Lisbon" 18 times of 20
    wording_subjects: float = 0.0
    # share of questions and answer prefixes with one or two random corpus words slipped in (never inside key or
    # attribute), half of them followed by a sentence of random words: stages 17-18 answered held-out prefixes one
    # word off a trained one ("The recorded vault reference is") with prose (data.wordings.insert_words)
    wording_noise: float = 0.0
    # the same for needle statements (never inside key, attribute or action, nor beside the value): held-out needle
    # frames cost the shipped model 11 points at 1K (bench/results/tiny_wording_ablation_cpu.json)
    wording_needle_noise: float = 0.0
    # share of attribute needles' questions and answer prefixes written with spans of the corpus's running text around
    # key and attribute (data.wordings.WordingFamily.span_tail_share): every frame so far was a list or a procedure of
    # content words, and the held-out prefixes of everyday words ("Here you go:", "It reads") are answered with prose
    wording_span_tails: float = 0.0
    # value formats of the training needles (weights over data.wordings.VALUE_FORMATS: digits, grouped,
    # thousands, code, word, free_code, phrase; None: the family's; phrase values are spans of the training text),
    # and the share of needles placed at the very start or end
    value_weights: dict[str, float] | None = None
    # invented-word values built from ~600 generated syllables (less the held-out family's) instead of the
    # family's 14: a model that saw words of 14 syllables copies unseen ones badly
    generated_word_syllables: bool = False
    # invented keys and attributes ("Project Zorbel", "zorbel") from the same generated syllables instead of the
    # family's 14: held-out keys and attributes are what the held-out acceptance misses most
    # (bench/results/tiny_wording_ablation*_cpu.json)
    generated_key_syllables: bool = False
    corpus_word_values: float = 0.0  # share of word values that are real words of the corpus ("pineapple")
    edge_depth_fraction: float = 0.16
    # haystack kinds in retrieval sequences: the shipped text, repeated filler sentences, random words,
    # sentences of the shipped text shuffled (retrieval must not depend on what the text is)
    haystack_mix: dict[str, float] = field(default_factory=lambda: {"text": 1.0})
    # sequence-length curriculum: (until this fraction of steps, {length: weight})
    curriculum: list[dict[str, Any]] = field(default_factory=lambda: [
        {"until": 0.2, "lengths": {256: 3, 512: 3, 1024: 2, 2048: 1}},
        {"until": 0.5, "lengths": {512: 2, 1024: 2, 2048: 2, 4096: 2, 8192: 1}},
        {"until": 1.0, "lengths": {1024: 1, 2048: 1, 4096: 2, 8192: 2, 16384: 2}},
    ])
    # bookkeeping
    checkpoint_every: int = 200
    log_every: int = 10
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit
    num_workers: int = 4
    # the scaled-dot-product attention kernel training runs on CUDA (most of a step's FLOPs at 16K-32K): auto
    # (PyTorch's choice), flash, cudnn or efficient (without grouped K/V only); auto and cudnn were fastest, flash
    # 22-26% fewer tokens/s at 16K-32K (bench/results/tiny_train_throughput_h200.json)
    attention_backend: str = "auto"
    # torch.compile the model for training, with dynamic shapes (one graph for every curriculum length and batch):
    # at width 512 the eager model runs each norm, RoPE and SwiGLU as its own small kernels; the compile's time
    # comes out of the run's budget (bench/scripts/tiny_train_throughput.py --compile times both)
    compile_model: bool = False
    # evaluation at the end
    eval_contexts: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384])
    eval_depths: int = 11
    eval_samples_per_depth: int = 2
    stream_sink: int = 16
    stream_recent: int = 64

    @property
    def data_seed(self) -> int:
        """The seed of the batch streams: `seed`, and where the run's schedule_span starts, so that the calls of a
        run split across device calls (each counting its steps from 0) draw different batches."""
        return self.seed + 104_729 * round(self.schedule_span[0] * 1_000_000)

    def schedule_progress(self, progress: float) -> float:
        """Where in the long schedule a run `progress` (0-1) of the way through its schedule_span is."""
        lo, hi = self.schedule_span
        return lo + (hi - lo) * min(1.0, max(0.0, progress))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def needle_caps(self, length: int) -> tuple[int, int]:
        """(most needles, most questions) of one retrieval sequence of `length` tokens."""
        scale = length / 4096
        needles = max(self.max_needles, round(self.needles_per_4k * scale))
        queries = max(self.max_queries, round(self.queries_per_4k * scale))
        return max(1, min(needles, length // 64)), queries

    def validate(self) -> None:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise SedpaError(
                f"hidden_size {self.hidden_size}, num_heads {self.num_heads}, num_kv_heads {self.num_kv_heads}: "
                "hidden_size must divide by num_heads and num_heads by num_kv_heads"
            )
        for entry in self.curriculum:
            if set(entry) != {"until", "lengths"} or not entry["lengths"]:
                raise SedpaError(f"curriculum entry {entry}: each needs `until` and a non-empty `lengths` map")
            for length in entry["lengths"]:
                if int(length) % 64 or self.tokens_per_step % int(length):
                    raise SedpaError(
                        f"curriculum length {length}: must be a multiple of 64 that divides tokens_per_step "
                        f"{self.tokens_per_step}"
                    )
        unknown = set(self.haystack_mix) - {"text", "filler", "words", "shuffled"}
        if unknown or not self.haystack_mix or min(self.haystack_mix.values()) < 0:
            raise SedpaError(f"haystack_mix {self.haystack_mix}: use weights >= 0 for text, filler, words, shuffled")
        if self.needle_fraction + self.copy_fraction > 1:
            raise SedpaError("needle_fraction + copy_fraction must be at most 1 (the rest is plain text)")
        if self.wording_wild is not None and not 0.0 <= self.wording_wild <= 1.0:
            raise SedpaError(f"wording_wild {self.wording_wild}: use a share between 0 and 1")
        for name in ("wording_echo_prefixes", "wording_actions", "wording_subjects", "wording_noise",
                     "wording_needle_noise", "wording_span_tails"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SedpaError(f"{name} {getattr(self, name)}: use a share between 0 and 1")
        if self.wording_subjects and not self.wording_actions:
            raise SedpaError("wording_subjects is a share of the action needles: set wording_actions too")
        if self.wording_random_verbs is not None and not 0.0 <= self.wording_random_verbs <= 1.0:
            raise SedpaError(f"wording_random_verbs {self.wording_random_verbs}: use a share between 0 and 1")
        if self.value_weights is not None:
            from sedpa_compress.data.wordings import VALUE_FORMATS

            bad = set(self.value_weights) - set(VALUE_FORMATS)
            if bad or not self.value_weights or min(self.value_weights.values()) < 0 or not sum(self.value_weights.values()):
                raise SedpaError(f"value_weights {self.value_weights}: weights >= 0 (not all 0) for "
                                 f"{', '.join(VALUE_FORMATS)}")
        if not 0.0 <= self.corpus_word_values <= 1.0:
            raise SedpaError(f"corpus_word_values {self.corpus_word_values}: use a share between 0 and 1")
        if not 0.0 <= self.edge_depth_fraction <= 1.0:
            raise SedpaError(f"edge_depth_fraction {self.edge_depth_fraction}: use a share between 0 and 1")
        if self.needles_per_4k < 0 or self.queries_per_4k < 0:
            raise SedpaError(f"needles_per_4k {self.needles_per_4k}, queries_per_4k {self.queries_per_4k}: use 0 "
                             "(max_needles / max_queries at every length) or more")
        if self.corpus_words < 0:
            raise SedpaError(f"corpus_words {self.corpus_words}: use 0 (the family's own words) or more")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise SedpaError(f"attention_backend {self.attention_backend!r}: use one of {', '.join(ATTENTION_BACKENDS)}")
        if self.attention_backend == "efficient" and self.num_kv_heads != self.num_heads:
            # PyTorch's memory-efficient kernel takes no grouped K/V: "No available kernel" at the first step on
            # the H200 (bench/results/tiny_train_throughput_h200.json)
            raise SedpaError(f"attention_backend efficient takes no grouped K/V heads (num_kv_heads {self.num_kv_heads} "
                             f"< num_heads {self.num_heads}): use auto, flash or cudnn")
        span = tuple(self.schedule_span)
        if len(span) != 2 or not 0.0 <= span[0] < span[1] <= 1.0:
            raise SedpaError(f"schedule_span {list(self.schedule_span)}: use [start, end] with 0 <= start < end <= 1, "
                             "the part of one long schedule this run covers")
        if not self.init_weights and self.schedule_span[0] > 0:
            raise SedpaError(f"init_weights false with schedule_span starting at {self.schedule_span[0]}: only the first "
                             "call of a split run starts from fresh weights; continue the last call's with "
                             "init_weights=true")
        if not self.curriculum or self.curriculum[-1]["until"] < 1.0:
            raise SedpaError("the last curriculum entry needs `until: 1.0`")


def _check_weights(name: str, weights: Any) -> None:
    """A {key: weight} map with a key and no weight is YAML 1.1 reading `{512:1}` (no space after the colon) as one
    key, 512:1, a base-60 number (30721): say so, rather than fail on float(None) or train on a length never asked."""
    if isinstance(weights, dict) and any(v is None for v in weights.values()):
        raise SedpaError(f"{name} {weights}: an entry has no weight; YAML reads `{{512:1}}` without a space after the "
                         "colon as one base-60 number: write `{512: 1}`")


def load_config(path: Path | None = None, **overrides: Any) -> TinyTrainConfig:
    """Read a recipe (YAML mapping of TinyTrainConfig fields); unknown fields are an error."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SedpaError(f"recipe {path} does not exist: pass --recipe recipes/tiny.yaml")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SedpaError(f"recipe {path} is not valid YAML ({exc}): fix the file") from None
        if not isinstance(data, dict):
            raise SedpaError(f"recipe {path} must be a mapping of settings")
        data = data.get("train_tiny", data)
    names = {f.name for f in dataclasses.fields(TinyTrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SedpaError(f"recipe {path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    for name in ("betas", "schedule_span"):
        if name in data and isinstance(data[name], (list, tuple)):
            data[name] = tuple(float(v) for v in data[name])
    for name in ("value_weights", "haystack_mix"):
        _check_weights(name, data.get(name))
    for entry in data.get("curriculum") or []:
        if isinstance(entry, dict):
            _check_weights("curriculum lengths", entry.get("lengths"))
    if "curriculum" in data:
        data["curriculum"] = [{"until": float(e["until"]), "lengths": {int(k): float(v) for k, v in e["lengths"].items()}}
                              if isinstance(e, dict) and "lengths" in e and "until" in e else e
                              for e in data["curriculum"]]
    cfg = TinyTrainConfig(**data)
    cfg.validate()
    return cfg


def config_to_dict(cfg: TinyTrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["betas"] = list(cfg.betas)
    d["schedule_span"] = list(cfg.schedule_span)
    return d
