"""`sedpa bench efficiency`: prefill time, compile time, decode latency, KV bytes and peak memory per
mode and context on the fast CUDA runtime, next to the plain transformers paths measured in the same
run (`transformers-eager`: a DynamicCache and eager decoding; `transformers-static-compile`: a
StaticCache and a torch.compile'd decode step, the strongest plain path). Every row carries its own
floors: `floor_ms`, the bytes a decode step must read over the measured copy bandwidth, and
`prefill_floor_s`, the prefill's FLOPs (`prefill_flops`: dense or low-rank projections, full or
banded attention) over the measured bf16 matmul rate. `--max-context` instead finds the longest
context each mode decodes on this GPU.

How each row was measured is its `method` (described in `settings.methods`): the sedpa rows warm up
on their own runner with exactly the shapes they then time, so compilation is `compile_s` and never
inside `prefill_s` (`prefill_compiles` counts any compilation that still happened inside the timed
prefill; expected 0).

Runs on an artifact (`--model out/X-sedpa`: its pattern and factors), on a model with a pattern
(`--pattern P.pattern.json`, uneven retrieval heads per layer as trained), or on a random-weight
geometry (`--config llama-3-8b --random-weights`) with a synthetic pattern (random gates binarised at
`--retrieval-ratio`) and random low-rank factors at the rank `--rank-ratio` implies; timing does not
depend on the values, and the JSON settings say which.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from sedpa_compress.bench.results import make_result, write_result
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models.forward_args import ForwardArgs
from sedpa_compress.runtime import memory
from sedpa_compress.runtime.cache import check_kv_dtype, kv_bytes_per_value
from sedpa_compress.runtime.model import LOWRANK_POLICIES, FastModel, RuntimeSpec
from sedpa_compress.runtime.modes.table import MODE_NAMES as MODES, PATTERN_MODES
from sedpa_compress.runtime.runner import Runner

PEERS = ("transformers-eager", "transformers-static-compile")  # plain transformers rows, same contexts
DEFAULT_SINK, DEFAULT_RECENT, DEFAULT_WINDOW = 64, 256, 8192  # when neither the flags nor a pattern say
DEFAULT_RETRIEVAL_RATIO = 0.5  # synthetic patterns only
EAGER_WARMUP_TOKENS = 128  # the transformers-eager row's untimed warm-up prompt


@dataclass
class EfficiencyConfig:
    model: str | None = None
    config: str | None = None
    random_weights: bool = False
    pattern: Path | None = None
    contexts: list[int] = field(default_factory=lambda: [8192, 32768, 65536, 131072])
    modes: list[str] = field(default_factory=lambda: ["full", "duo", "sedpa-w", "tidal"])
    retrieval_ratio: float | None = None  # None: the pattern's own mask (a synthetic pattern: 0.5)
    rank_ratio: float = 0.85
    lowrank: str = "auto"  # sedpa modes: the runtime's low-rank policy (RuntimeSpec.lowrank)
    kv_dtype: str = "bf16"  # the runtime's caches: bf16 or fp8 (e4m3, a scale per token and head)
    sink: int | None = None  # None: the pattern's (no pattern: 64)
    recent: int | None = None  # None: the pattern's (no pattern: 256)
    window: int | None = None  # None: the artifact's, else 8192
    top_k: int = 2048
    decode_tokens: int = 64
    warmup_tokens: int = 8
    chunk: int = 8192
    peers: list[str] = field(default_factory=lambda: list(PEERS))
    reference_max: int = 65536  # peer rows up to this context; above it a skipped row says why (0: no peer rows)
    compile_mode: str | None = None  # transformers-static-compile: None = "reduce-overhead" on CUDA, backend "eager" on CPU
    max_context: bool = False
    time_budget_s: float | None = None  # stop starting new rows after this long
    out: Path = Path("bench/results/efficiency.json")
    seed: int = 0
    device: str = "cuda"  # "cpu": a dry run of the plumbing on tiny models (numbers meaningless)
    dtype: str | None = None  # None: bfloat16 on CUDA (the goals' setting), float32 for CPU dry runs
    memory_budget_gib: float | None = None  # caches + workspace limit (default: what the GPU has free)
    command: str | None = None

    def validate(self) -> EfficiencyConfig:
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise SedpaError(f"unknown --attention {','.join(bad)}: choose from {','.join(MODES)}")
        bad = [p for p in self.peers if p not in PEERS]
        if bad:
            raise SedpaError(f"unknown --peers {','.join(bad)}: choose from {','.join(PEERS)} or none")
        if self.window is not None and self.recent is not None and self.window < self.recent:
            raise SedpaError(f"--window {self.window} is smaller than --recent {self.recent}: the window must cover "
                             "the recent tokens")
        if self.retrieval_ratio is not None and not 0 < self.retrieval_ratio <= 1:
            raise SedpaError(f"--retrieval-ratio {self.retrieval_ratio} must be in (0, 1]")
        if not 0 < self.rank_ratio <= 1:
            raise SedpaError(f"--rank-ratio {self.rank_ratio} must be in (0, 1]")
        if self.lowrank not in LOWRANK_POLICIES:
            raise SedpaError(f"--lowrank {self.lowrank!r}: choose one of {', '.join(LOWRANK_POLICIES)}")
        check_kv_dtype(self.kv_dtype)
        for flag, value in (("--sink", self.sink), ("--recent", self.recent), ("--window", self.window)):
            if value is not None and value < (0 if flag == "--sink" else 1):
                raise SedpaError(f"{flag} {value}: pass a {'non-negative' if flag == '--sink' else 'positive'} number of tokens")
        if self.decode_tokens < 1 or self.chunk < 1:
            raise SedpaError("--decode-tokens and --chunk must be positive")
        return self


def parse_contexts(value: str) -> list[int]:
    """"8k,32k,64k,128k,1.5m" -> [8192, 32768, 65536, 131072, 1572864]."""
    out = []
    for part in value.split(","):
        part = part.strip().lower()
        if not part:
            continue
        mult = {"k": 1024, "m": 1024 * 1024}.get(part[-1], 1)
        try:
            n = int(float(part[:-1] if mult > 1 else part) * mult)
        except ValueError:
            raise SedpaError(f"--contexts {value!r}: use sizes like 8k,32k,131072") from None
        if n < 1:
            raise SedpaError(f"--contexts: {part} is not a positive size")
        out.append(n)
    if not out:
        raise SedpaError("--contexts is empty: pass e.g. 8k,32k,64k,128k")
    return out


def parse_peers(value: str) -> list[str]:
    """`--peers transformers-eager,transformers-static-compile` (or `none`) -> the peer rows to measure."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if names in ([], ["none"]):
        return []
    bad = [n for n in names if n not in PEERS]
    if bad:
        raise SedpaError(f"unknown --peers {','.join(bad)}: choose from {','.join(PEERS)} or none")
    return list(dict.fromkeys(names))


def synthetic_pattern(geometry, *, ratio: float, sink: int, recent: int, seed: int = 0) -> HeadPattern:
    g = torch.Generator().manual_seed(seed)
    gates = torch.rand(geometry.num_layers, geometry.num_kv_heads, generator=g).tolist()
    return HeadPattern.from_gates(gates, sink=sink, recent=recent, retrieval_ratio=ratio, model="synthetic",
                                  training={"synthetic": "random gates for timing; not a trained pattern"})


# ------------------------------------------------------------------------------ settings per mode

@dataclass
class Patterns:
    """The head pattern each pattern mode runs with, and where it came from."""

    duo: HeadPattern
    sedpa: HeadPattern
    sources: dict[str, str]

    def for_mode(self, mode: str) -> HeadPattern | None:
        if mode in ("sedpa-s", "sedpa-w"):
            return self.sedpa
        if mode == "tidal":  # a trained pattern names its retrieval layer, tidal's re-selection layer
            return self.duo if self.duo is not None and self.duo.model != "synthetic" else None
        return self.duo if mode in ("duo", "streaming") else None  # streaming takes only sink/recent from it


def resolve_patterns(cfg: EfficiencyConfig, loaded) -> Patterns:
    """duo: --pattern, else the pattern the model carries, else a synthetic one. sedpa-s/sedpa-w on an
    artifact: the artifact's own pattern (its low-rank heads are that pattern's streaming heads);
    otherwise the same pattern as duo (with synthetic factors for its streaming heads). A pattern
    keeps its own mask (uneven retrieval heads per layer, as trained) unless --retrieval-ratio is
    passed, which re-binarises its gates at that ratio."""
    from sedpa_compress.models.loader import shipped_pattern_path

    geo = loaded.geometry
    carried = shipped_pattern_path(loaded)

    def rebinarised(p: HeadPattern) -> HeadPattern:
        return p.with_ratio(cfg.retrieval_ratio) if cfg.retrieval_ratio is not None else p

    ratio_note = f", re-binarised at --retrieval-ratio {cfg.retrieval_ratio}" if cfg.retrieval_ratio is not None else \
        ", its own mask"
    if cfg.pattern is not None:
        duo, duo_src = rebinarised(HeadPattern.load(cfg.pattern, geo)), f"--pattern {cfg.pattern}{ratio_note}"
    elif carried is not None:
        duo, duo_src = rebinarised(HeadPattern.load(carried, geo)), f"carried by the model ({carried.name}){ratio_note}"
    else:
        ratio = cfg.retrieval_ratio if cfg.retrieval_ratio is not None else DEFAULT_RETRIEVAL_RATIO
        duo = synthetic_pattern(geo, ratio=ratio, sink=cfg.sink if cfg.sink is not None else DEFAULT_SINK,
                                recent=cfg.recent if cfg.recent is not None else DEFAULT_RECENT, seed=cfg.seed)
        duo_src = f"synthetic (random gates binarised at retrieval ratio {ratio}; timing only)"
    if loaded.artifact is not None and carried is not None:
        sedpa, sedpa_src = HeadPattern.load(carried, geo), f"the artifact's own {carried.name} (its factors' pattern)"
    else:
        sedpa, sedpa_src = duo, duo_src
    return Patterns(duo=duo, sedpa=sedpa, sources={"duo": duo_src, "sedpa": sedpa_src})


def resolve_window(cfg: EfficiencyConfig, loaded) -> int:
    art = (loaded.artifact or {}).get("window")
    return cfg.window if cfg.window is not None else int(art) if art else DEFAULT_WINDOW


def runtime_spec(cfg: EfficiencyConfig, mode: str, pattern: HeadPattern | None, window: int) -> RuntimeSpec:
    """The runtime settings of one mode: sink/recent from the flags when given, else from the mode's
    pattern (the ones it was identified with), else the defaults."""
    def pick(flag: int | None, attr: str, default: int) -> int:
        if flag is not None:
            return flag
        return getattr(pattern, attr) if pattern is not None else default

    sink, recent = pick(cfg.sink, "sink", DEFAULT_SINK), pick(cfg.recent, "recent", DEFAULT_RECENT)
    if mode == "sedpa-w" and window < recent:
        raise SedpaError(f"--window {window} is smaller than --recent {recent} (the pattern's recent when --recent "
                         "is not given): pass a larger --window")
    selection = None
    if mode == "tidal" and pattern is not None:
        from sedpa_compress.runtime.modes.tidal import pattern_selection_layers

        selection = pattern_selection_layers(pattern.gates)  # None: the depth's default
    return RuntimeSpec(mode=mode, pattern=pattern if mode in PATTERN_MODES else None, sink=sink, recent=recent,
                       window=window if mode == "sedpa-w" else None, top_k=cfg.top_k, lowrank=cfg.lowrank,
                       kv_dtype=cfg.kv_dtype, selection_layers=selection)


def spec_summary(spec: RuntimeSpec) -> dict[str, Any]:
    """The settings a mode actually ran with (only those that apply to it)."""
    out: dict[str, Any] = {}
    if spec.mode in ("streaming",) + PATTERN_MODES:
        out.update(sink=spec.sink, recent=spec.recent)
    if spec.mode == "sedpa-w":
        out["window"] = spec.window
    if spec.mode in ("sedpa-s", "sedpa-w"):
        out["lowrank"] = spec.lowrank
    if spec.mode == "tidal":
        out["top_k"] = spec.top_k
        out["selection_layers"] = list(spec.selection_layers) if spec.selection_layers else "model depth (13/32)"
    return out


# ------------------------------------------------------------------------------------ FLOP model

@dataclass(frozen=True)
class AttnGroup:
    """KV heads of one layer that attend alike during prefill: `full` (causal over every earlier
    token) or `band` (the first `sink` tokens and the last `band` tokens, the query included)."""

    kind: str
    kv_heads: int
    band: int = 0


@dataclass(frozen=True)
class LayerShape:
    linear_params: int  # weights every token multiplies: projections (dense rows or low-rank factors) + MLP
    groups: tuple[AttnGroup, ...]


@dataclass(frozen=True)
class PrefillShape:
    layers: tuple[LayerShape, ...]
    q_per_kv: int  # query heads per KV head (GQA group)
    head_dim: int
    sink: int
    hidden: int
    vocab: int


def causal_pairs(n: int) -> int:
    """(query, key) pairs of causal attention over n tokens: 1 + 2 + ... + n."""
    return n * (n + 1) // 2


def band_pairs(n: int, sink: int, band: int) -> int:
    """(query, key) pairs when query i sees keys p <= i with p < sink or i - p < band: the last
    min(i + 1, band) tokens plus the sink tokens before them."""
    recent = causal_pairs(n) if n <= band else causal_pairs(band) + (n - band) * band
    m = n - band  # queries i >= band see min(sink, i + 1 - band) sink tokens besides their band
    sinks = 0 if m <= 0 else causal_pairs(m) if m <= sink else causal_pairs(sink) + (m - sink) * sink
    return recent + sinks


def prefill_flops(shape: PrefillShape, n: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of prefilling n tokens: every layer's linear weights for every
    token, attention (QK^T and PV: 4 * head_dim per query head and visible key), and the logits of the
    last token. Chunking does not change it (a chunk attends to the cache before it)."""
    total = 2 * shape.hidden * shape.vocab
    for layer in shape.layers:
        total += 2 * n * layer.linear_params
        for g in layer.groups:
            pairs = causal_pairs(n) if g.kind == "full" else band_pairs(n, shape.sink, g.band)
            total += 4 * shape.head_dim * g.kv_heads * shape.q_per_kv * pairs
    return total


def prefill_shape_of_runtime(fast: FastModel) -> PrefillShape:
    """The sedpa runtime's prefill as it runs: its layer weights (low-rank factors as stored) and head groups."""
    layers = []
    for layer in fast.layers:
        mats = [layer.qkv_in, layer.o_dense, layer.o_down, layer.o_up, layer.gate_up, layer.down]
        if layer.lowrank is not None:
            mats += list(layer.lowrank.ups)
        params = sum(t.numel() for t in mats if t is not None)
        groups = tuple(AttnGroup("full" if g.kind == "full" else "band", g.size, g.band) for g in layer.groups)
        layers.append(LayerShape(params, groups))
    return PrefillShape(tuple(layers), fast.group, fast.d, fast.spec.sink, fast.hidden, fast.vocab)


def prefill_shape_of_transformers(loaded) -> PrefillShape:
    """A transformers model's prefill: every 2-D weight of each decoder layer, full causal attention."""
    geo = loaded.geometry
    hf_layers = loaded.family.layers(loaded.model)
    layers = tuple(LayerShape(sum(p.numel() for p in layer.parameters() if p.dim() == 2),
                              (AttnGroup("full", geo.num_kv_heads),)) for layer in hf_layers)
    return PrefillShape(layers, geo.group_size, geo.head_dim, 0, geo.hidden_size, loaded.model.config.vocab_size)


# --------------------------------------------------------------------------------- measurements

class _Timer:
    """Elapsed milliseconds of a region: CUDA events on the GPU (no host sync inside the loop),
    perf_counter elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.s, self.e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self.s.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self.e.record()
        else:
            self.t1 = time.perf_counter()

    def ms(self) -> float:
        return self.s.elapsed_time(self.e) if self.cuda else (self.t1 - self.t0) * 1e3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, reps: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read and written."""
    if device.type != "cuda":
        nbytes, reps = 1 << 26, 3
    a = torch.empty(nbytes, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    timer = _Timer(device)
    _sync(device)
    timer.start()
    for _ in range(reps):
        b.copy_(a)
    timer.stop()
    _sync(device)
    bw = 2 * nbytes * reps / (timer.ms() / 1e3)
    del a, b
    _free(device)
    return bw


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 10) -> float:
    """Dense matmul throughput in FLOP/s ([n, n] @ [n, n], 2 n^3 FLOPs each): what a prefill floor divides by."""
    if device.type != "cuda":
        n, reps = 512, 3
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    timer = _Timer(device)
    _sync(device)
    timer.start()
    for _ in range(reps):
        a @ b
    timer.stop()
    _sync(device)
    rate = 2 * n ** 3 * reps / (timer.ms() / 1e3)
    del a, b
    _free(device)
    return rate


def kv_bytes_read(model: FastModel, context: int) -> int:
    """KV bytes one decode step reads at `context` cached tokens."""
    spec, d = model.spec, model.d
    e = kv_bytes_per_value(spec.kv_dtype, d, model.dtype.itemsize)  # fp8: one byte + the scale's share
    total = 0
    for li, layer in enumerate(model.layers):
        for grp in layer.groups:
            n = context if grp.kind == "full" else min(context, spec.sink + grp.band)
            if spec.mode == "tidal" and li > model.tidal_first and li not in model.tidal_select:
                n = min(n, spec.top_k)
            total += 2 * grp.size * n * d * e
    return int(total)


def runtime_params(fast: FastModel) -> int:
    """Parameters the runtime holds (tied embeddings and views of one tensor counted once)."""
    seen, total = set(), 0
    for t in [fast.embed, fast.final_norm, fast.lm_head] + [w for layer in fast.layers for w in layer.weight_tensors()]:
        key = (t.data_ptr(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel()
    return total


def compile_count() -> int:
    """Graphs torch.compile has built in this process (FlexAttention kernels, block masks, fused ops...)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - every supported torch has it
        return 0
    return int(counters["stats"].get("unique_graphs", 0))


def chunk_lengths(context: int, chunk: int) -> list[int]:
    """The distinct chunk lengths a chunked prefill of `context` tokens runs: the first chunk's, and
    the last one's when the context is not a multiple of the chunk. FlexAttention kernels and block
    masks are compiled per shape, so these are the shapes a warm-up must run."""
    first = min(chunk, context)
    last = context % chunk if context > chunk else first
    return [first] + ([last] if last and last != first else [])


def warm_up_prefills(context: int, chunk: int, past_block: int | None = None) -> list[int]:
    """The prompt lengths a row's warm-up prefills so that its timed prefill meets no new shape: one
    prompt long enough for a full chunk against every past-block shape the cuDNN chunk attention
    runs (kernels.PAST_BLOCK: the past in blocks, so a block and its remainders), and the ragged last
    chunk alone where the context has one that this prompt did not run."""
    from sedpa_compress.runtime import kernels

    first = min(context, (past_block or kernels.PAST_BLOCK) + chunk)
    lengths = [first]
    last = chunk_lengths(context, chunk)[1:]
    if last and first != context:
        lengths += last
    return lengths


def decode_stats(ms: list[float]) -> dict[str, float]:
    """The median step time and the spread of the steps around it (10th / 90th percentile, ms): two modes
    whose medians differ by less than their spreads are not told apart by one run."""
    ms = sorted(ms)
    pick = lambda q: ms[min(len(ms) - 1, max(0, round(q * (len(ms) - 1))))]  # noqa: E731
    return {"decode_ms": round(statistics.median(ms), 3), "decode_ms_p10": round(pick(0.1), 3),
            "decode_ms_p90": round(pick(0.9), 3)}


def _decode_ms(runner: Runner, warmup: int, tokens: int) -> dict[str, float]:
    """decode_stats of `tokens` timed steps after `warmup` untimed ones."""
    dev = runner.model.device
    tok = torch.zeros(runner.batch, dtype=torch.long, device=dev)
    for _ in range(warmup):
        runner.decode(tok)
    timers = []
    for _ in range(tokens):
        t = _Timer(dev)
        t.start()
        runner.decode(tok)
        t.stop()
        timers.append(t)
    _sync(dev)
    return decode_stats([t.ms() for t in timers])


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else None


# ------------------------------------------------------------------------------ how rows are measured

METHODS = ("sedpa-runtime", "transformers-eager", "transformers-static-compile", "max-context")


def peer_decode_tokens(kind: str, cfg: EfficiencyConfig) -> int:
    """transformers-eager is slow per token: a quarter of --decode-tokens (at least 8) keep the run short."""
    return max(8, cfg.decode_tokens // 4) if kind == "transformers-eager" else cfg.decode_tokens


def static_warmup_tokens(cfg: EfficiencyConfig) -> int:
    return max(3, cfg.warmup_tokens)  # reduce-overhead records its CUDA graph on the second or third call


def method_text(kind: str, cfg: EfficiencyConfig, device_type: str) -> str:
    """How a row of this kind was measured, as it was (the settings' `methods`)."""
    cuda = device_type == "cuda"
    timer = "CUDA events" if cuda else "perf_counter"
    if kind == "sedpa-runtime":
        steps = "CUDA-graph replays" if cuda else "eager steps (no CUDA graphs on the CPU)"
        return (f"sedpa runtime: first an untimed warm-up on the row's own runner (same max_len, chunk {cfg.chunk} and "
                "ring sizes): prefills that run each chunk length and each past-block shape of the full heads' "
                "attention the timed prefill runs (efficiency.warm_up_prefills), then decode steps"
                f"{' that capture the CUDA graph' if cuda else ''}; its wall time is compile_s. Then the timed chunked "
                "prefill of random token ids (wall clock with synchronize; prefill_compiles counts compilations "
                f"inside it, expected 0) and decode: median of {cfg.decode_tokens} {steps} ({timer}) after "
                f"{cfg.warmup_tokens} untimed ones (decode_ms_p10 / _p90: the steps' spread).")
    if kind == "transformers-eager":
        import transformers

        return (f"plain transformers {transformers.__version__} (sdpa attention), the model as loaded: an untimed "
                f"{EAGER_WARMUP_TOKENS}-token prompt and 2 decode steps first (compile_s: nothing is compiled, it is "
                "lazy initialisation), then a one-shot prefill into a DynamicCache (wall clock with synchronize) and "
                f"eager decoding one token at a time: median of {peer_decode_tokens(kind, cfg)} steps ({timer}) after "
                f"{cfg.warmup_tokens // 2} untimed ones.")
    if kind == "transformers-static-compile":
        import transformers

        how = (f"torch.compile(mode={cfg.compile_mode or 'reduce-overhead'!r}, fullgraph=True; CUDA graphs; a row "
               "with fullgraph: false needed graph breaks)" if cuda else
               f"torch.compile(backend={cfg.compile_mode or 'eager'!r}) (CPU dry run: traced, not code-generated)")
        return (f"plain transformers {transformers.__version__} (sdpa attention), the model as loaded: a StaticCache "
                f"sized to the row (context + decode tokens); the prefill runs eagerly in chunks of {cfg.chunk} into "
                f"it (timed, wall clock with synchronize); the decode step is {how}: compilation, graph recording and "
                f"{static_warmup_tokens(cfg)} warm-up steps are compile_s; then median of "
                f"{peer_decode_tokens(kind, cfg)} compiled steps ({timer}).")
    if kind == "max-context":
        return ("longest context per mode: the memory plan's estimate, verified by allocating the caches at that "
                "length and decoding: the cache is filled with random K/V (no prefill: one of a million tokens would "
                f"take minutes), decode median of max(4, {cfg.decode_tokens} // 4) steps after {cfg.warmup_tokens} "
                "warm-up ones; 5% less on each failure.")
    raise ValueError(f"unknown row kind {kind!r}: one of {', '.join(METHODS)}")


# -------------------------------------------------------------------------------------- the run

def run_efficiency(cfg: EfficiencyConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every mode and context in one run, then the peer rows; the JSON is rewritten after every row,
    so a run stopped by a wall-clock limit still leaves what it measured."""
    cfg.validate()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SedpaError("sedpa bench efficiency measures the CUDA runtime: run it on a machine with an NVIDIA GPU "
                         "(--device cpu only dry-runs the plumbing)")
    from sedpa_compress.bench.common import provenance
    from sedpa_compress.models import load_model

    t_start = time.perf_counter()
    dev = torch.device(cfg.device)
    if cfg.dtype is None:
        cfg.dtype = "bfloat16" if dev.type == "cuda" else "float32"
    loaded = load_model(cfg.model, config=cfg.config, random_weights=cfg.random_weights, dtype=cfg.dtype,
                        device=cfg.device, seed=cfg.seed)
    patterns = resolve_patterns(cfg, loaded)
    window = resolve_window(cfg, loaded)
    specs = {mode: runtime_spec(cfg, mode, patterns.for_mode(mode), window) for mode in cfg.modes}  # refuse early
    factored = loaded.artifact is not None
    rank_ratio = None if factored else cfg.rank_ratio
    bw = copy_bandwidth(dev)
    rate = matmul_rate(dev, loaded.model.dtype)
    progress(f"copy bandwidth {bw / 1e12:.2f} TB/s (read + write), {loaded.model.dtype} matmul {rate / 1e12:.0f} TFLOP/s")
    kinds = ["max-context"] if cfg.max_context else ["sedpa-runtime"] + [p for p in cfg.peers if cfg.reference_max]
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "command"},
                "window_resolved": window,
                "modes_resolved": {m: spec_summary(s) for m, s in specs.items()},
                "pattern_sources": patterns.sources,
                "retrieval_heads": {"duo": sum(map(sum, patterns.duo.mask)), "sedpa": sum(map(sum, patterns.sedpa.mask)),
                                    "kv_heads": patterns.duo.num_layers * patterns.duo.num_kv_heads},
                "low_rank": "the artifact's factors" if factored else
                f"synthetic random factors at rank ratio {cfg.rank_ratio} (timing does not depend on the values)",
                "copy_bandwidth_Bps": bw, "matmul_Fps": rate, "batch": 1, "torch": torch.__version__,
                "floor": "decode: bytes read per decode step (weights except the embedding table + the KV the mode "
                         "must read at the context: ring heads their sink + band, tidal's sparse layers top-k, peers "
                         "the whole context) / copy bandwidth",
                "prefill_floor": "prefill FLOPs (bench.efficiency.prefill_flops: projections as stored, dense or "
                                 "low-rank; causal or banded attention) / the measured matmul rate",
                "methods": {k: method_text(k, cfg, dev.type) for k in kinds},
                "provenance": provenance("efficiency")}
    if dev.type != "cuda":
        settings["dry_run"] = "CPU: plumbing only, the numbers mean nothing"

    def over_budget() -> bool:
        return cfg.time_budget_s is not None and time.perf_counter() - t_start > cfg.time_budget_s

    rows: list[dict[str, Any]] = []
    name = loaded.name

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        _write(cfg, name, settings, rows, final=False)

    if cfg.max_context:
        _max_context_rows(cfg, loaded, specs, rank_ratio, progress, over_budget, emit)
        loaded = None
    else:
        for mode in cfg.modes:
            _mode_rows(cfg, loaded, mode, specs[mode], rank_ratio, bw, rate, progress, over_budget, emit)
        if cfg.reference_max:  # last: the slowest per token, and they back no goal
            for kind in cfg.peers:
                _peer_rows(cfg, loaded, kind, bw, rate, progress, over_budget, emit)
    settings["wall_s"] = round(time.perf_counter() - t_start, 1)
    return _write(cfg, name, settings, rows, final=True)


def _write(cfg: EfficiencyConfig, model: str, settings: dict, rows: list[dict[str, Any]], *, final: bool) -> dict:
    summary = _summary(rows, cfg.max_context)
    extra = {} if cfg.max_context else {"goals": goals(rows)}
    result = make_result("efficiency", model=model, settings=settings, rows=rows, summary=summary,
                         device=None if cfg.device == "cuda" else "cpu", command=cfg.command,
                         complete=final, **extra)
    write_result(cfg.out, result)
    if final and not cfg.max_context:
        plot(result, cfg.out.with_suffix(".png"))
    return result


def _budget(cfg: EfficiencyConfig) -> int | None:
    return None if cfg.memory_budget_gib is None else int(cfg.memory_budget_gib * memory.GIB)


def _floors(row: dict[str, Any], weights_read: int, kv_read: int, flops: int, bw: float, rate: float) -> None:
    """Add each floor and the measured time's ratio to it."""
    floor_ms = (weights_read + kv_read) / bw * 1e3
    floor_s = flops / rate
    row.update(floor_ms=round(floor_ms, 3), floor_ratio=round(row["decode_ms"] / floor_ms, 3),
               prefill_flops=flops, prefill_floor_s=round(floor_s, 5),
               prefill_floor_ratio=round(row["prefill_s"] / floor_s, 3) if floor_s > 0 else None,
               kv_read_bytes=kv_read, weight_read_bytes=weights_read, tokens_per_s=round(1e3 / row["decode_ms"], 2))


def warm_up_row(runner: Runner, context: int, decode_steps: int = 2) -> float:
    """Run once, untimed, every shape the timed row will run on this runner: prefills covering each
    chunk length of a `context`-token chunked prefill (FlexAttention and its block masks compile per
    chunk length and ring size, both fixed by this runner) and each past-block shape of the cuDNN chunk
    attention (`warm_up_prefills`; cuDNN plans one per shape), and decode steps (the CUDA graph is captured on
    the first). Returns its wall seconds (the row's compile_s); leaves the runner reset, graph kept."""
    dev = runner.model.device
    _sync(dev)
    t0 = time.perf_counter()
    for n in warm_up_prefills(context, runner.chunk):
        runner.reset()
        runner.prefill(torch.zeros(runner.batch, n, dtype=torch.long, device=dev))
    tok = torch.zeros(runner.batch, dtype=torch.long, device=dev)
    for _ in range(decode_steps):
        runner.decode(tok)
    _sync(dev)
    runner.reset()
    return time.perf_counter() - t0


def _mode_rows(cfg, loaded, mode, spec, rank_ratio, bw, rate, progress, over_budget, emit) -> None:
    dev = torch.device(cfg.device)
    fast = FastModel(loaded, spec, synthetic_rank_ratio=rank_ratio if mode in ("sedpa-s", "sedpa-w") else None,
                     seed=cfg.seed)
    weights_read = fast.bytes_read_per_token()
    params = runtime_params(fast)
    shape = prefill_shape_of_runtime(fast)
    for ctx in cfg.contexts:
        if over_budget():
            emit({"mode": mode, "context": ctx, "method": "sedpa-runtime", "skipped": "time budget"})
            continue
        _free(dev)
        _reset_peak(dev)
        max_len = ctx + cfg.warmup_tokens + cfg.decode_tokens + 8
        try:
            runner = Runner(fast, max_len=max_len, chunk=cfg.chunk, memory_budget=_budget(cfg))
        except SedpaError as err:
            emit({"mode": mode, "context": ctx, "method": "sedpa-runtime", "skipped": str(err)})
            progress(f"{mode} @ {ctx}: {err}")
            continue
        try:
            compile_s = warm_up_row(runner, ctx)
            gen = torch.Generator(device=dev).manual_seed(cfg.seed)
            ids = torch.randint(0, fast.vocab, (1, ctx), device=dev, generator=gen)
            before = compile_count()
            _sync(dev)
            t0 = time.perf_counter()
            runner.prefill(ids)
            _sync(dev)
            prefill_s = time.perf_counter() - t0
            compiles = compile_count() - before
            stats = _decode_ms(runner, cfg.warmup_tokens, cfg.decode_tokens)
            decode_ms = stats["decode_ms"]
        except torch.OutOfMemoryError as err:  # the plan said it fits; report, do not crash the run
            runner = None  # drop the caches before freeing
            _free(dev)
            emit({"mode": mode, "context": ctx, "method": "sedpa-runtime",
                  "skipped": f"out of memory: {str(err).splitlines()[0]}"})
            progress(f"{mode} @ {ctx}: out of memory")
            continue
        row: dict[str, Any] = {"mode": mode, "context": ctx, "method": "sedpa-runtime", "prefill_s": round(prefill_s, 4),
                               "compile_s": round(compile_s, 3), "prefill_compiles": compiles,
                               **stats, "decode_tokens_measured": cfg.decode_tokens,
                               "kv_bytes": memory.cache_bytes(fast, batch=1, max_len=ctx), "peak_bytes": _peak(dev),
                               "params": params}
        if fast.notes:  # what the build decided (e.g. factors multiplied back into dense rows)
            row["runtime_notes"] = list(fast.notes)
        _floors(row, weights_read, kv_bytes_read(fast, ctx), prefill_flops(shape, ctx), bw, rate)
        if compiles:
            row["warning"] = (f"{compiles} graph(s) compiled inside the timed prefill: prefill_s includes compilation "
                              "(a shape the warm-up did not run)")
        emit(row)
        progress(f"{mode:9s} {ctx:>8d}  prefill {prefill_s:7.2f} s (floor {row['prefill_floor_s']:.2f}, compile "
                 f"{compile_s:.1f} s)  decode {decode_ms:7.2f} ms  floor {row['floor_ms']:6.2f} ms "
                 f"(x{row['floor_ratio']:.2f})  kv {row['kv_bytes'] / 2**30:6.2f} GiB")
        del runner, ids
    del fast
    _free(dev)


# ------------------------------------------------------------------------------- plain transformers

def _static_cache(model, max_len: int):
    from transformers import StaticCache

    try:
        return StaticCache(config=model.config, max_cache_len=max_len)
    except TypeError:  # transformers 4.x: batch, device and dtype up front
        return StaticCache(config=model.config, max_batch_size=1, max_cache_len=max_len, device=model.device,
                           dtype=model.dtype)


def _dynamic_cache():
    from transformers import DynamicCache

    return DynamicCache()


def _kv_bytes_full(geo, tokens: int, itemsize: int) -> int:
    return 2 * geo.num_layers * geo.num_kv_heads * geo.head_dim * tokens * itemsize


def _peer_rows(cfg, loaded, kind, bw, rate, progress, over_budget, emit) -> None:
    """One peer's rows over the same contexts; a context above --reference-max, a time budget spent,
    an out-of-memory or a failed compile is a row saying so, never a silent gap."""
    dev = torch.device(cfg.device)
    model = loaded.model
    emb = model.get_input_embeddings().weight
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
    params = sum(p.numel() for p in model.parameters())
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) - (0 if tied else emb.numel() * emb.element_size())
    shape = prefill_shape_of_transformers(loaded)
    geo = loaded.geometry
    measure = _eager_row if kind == "transformers-eager" else _static_compile_row
    for ctx in cfg.contexts:
        base = {"mode": kind, "context": ctx, "method": kind}
        if ctx > cfg.reference_max:
            emit({**base, "skipped": f"context above --reference-max {cfg.reference_max} (plain transformers is slow "
                                     "and large there): pass a larger --reference-max to measure it"})
            continue
        if over_budget():
            emit({**base, "skipped": "time budget"})
            continue
        _free(dev)
        _reset_peak(dev)
        try:
            row = measure(cfg, loaded, ctx)
        except torch.OutOfMemoryError as err:
            _free(dev)
            emit({**base, "skipped": f"out of memory: {str(err).splitlines()[0][:160]}"})
            progress(f"{kind} @ {ctx}: out of memory")
            continue
        except _CompileFailed as err:
            _free(dev)
            emit({**base, "skipped": f"torch.compile failed: {err}"})
            progress(f"{kind} @ {ctx}: torch.compile failed: {err}")
            continue
        row = {**base, **row, "peak_bytes": _peak(dev), "params": params}
        _floors(row, weights, _kv_bytes_full(geo, ctx, emb.element_size()), prefill_flops(shape, ctx), bw, rate)
        emit(row)
        progress(f"{kind:9s} {ctx:>8d}  prefill {row['prefill_s']:7.2f} s (floor {row['prefill_floor_s']:.2f}, compile "
                 f"{row['compile_s']:.1f} s)  decode {row['decode_ms']:7.2f} ms  floor {row['floor_ms']:6.2f} ms")
        _free(dev)


class _CompileFailed(Exception):
    pass


@torch.inference_mode()
def _eager_row(cfg, loaded, ctx: int) -> dict[str, Any]:
    """transformers-eager: one-shot prefill into a DynamicCache, eager decode one token at a time."""
    dev = torch.device(cfg.device)
    model = loaded.model
    vocab = model.config.vocab_size
    args = ForwardArgs(model)
    t0 = time.perf_counter()  # lazy initialisation (cuBLAS handles, kernel loading) is not the prefill's
    warm = _dynamic_cache()
    model(torch.zeros(1, min(EAGER_WARMUP_TOKENS, ctx), dtype=torch.long, device=dev), logits_to_keep=1, **args(warm))
    for _ in range(2):
        model(torch.zeros(1, 1, dtype=torch.long, device=dev), **args(warm))
    del warm
    _sync(dev)
    compile_s = time.perf_counter() - t0
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    ids = torch.randint(0, vocab, (1, ctx), device=dev, generator=gen)
    cache = _dynamic_cache()
    kw = args(cache)
    _sync(dev)
    t0 = time.perf_counter()
    model(ids, logits_to_keep=1, **kw)
    _sync(dev)
    prefill_s = time.perf_counter() - t0
    tok = torch.zeros(1, 1, dtype=torch.long, device=dev)
    n = peer_decode_tokens("transformers-eager", cfg)
    timers = []
    for i in range(cfg.warmup_tokens // 2 + n):
        t = _Timer(dev)
        t.start()
        model(tok, **kw)
        t.stop()
        if i >= cfg.warmup_tokens // 2:
            timers.append(t)
    _sync(dev)
    del cache
    return {"prefill_s": round(prefill_s, 4), "compile_s": round(compile_s, 3), **decode_stats([t.ms() for t in timers]),
            "decode_tokens_measured": n, "kv_bytes": _kv_bytes_full(loaded.geometry, ctx, model.dtype.itemsize)}


@torch.inference_mode()
def _static_compile_row(cfg, loaded, ctx: int) -> dict[str, Any]:
    """transformers-static-compile: a StaticCache sized to the row, an eager chunked prefill into it,
    then a torch.compile'd decode step (reduce-overhead: CUDA graphs) timed after its warm-up."""
    dev = torch.device(cfg.device)
    model = loaded.model
    vocab = model.config.vocab_size
    args = ForwardArgs(model)
    n = peer_decode_tokens("transformers-static-compile", cfg)
    warm_steps = static_warmup_tokens(cfg)
    max_len = ctx + warm_steps + n + 8
    cache = _static_cache(model, max_len)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    ids = torch.randint(0, vocab, (1, ctx), device=dev, generator=gen)
    # an untimed first chunk's worth of lazy initialisation on a scratch cache (kernels, cuBLAS handles)
    scratch = _static_cache(model, min(cfg.chunk, ctx) + 1)
    t_init = time.perf_counter()
    model(ids[:, :min(cfg.chunk, ctx)], logits_to_keep=1, **args(scratch, torch.arange(min(cfg.chunk, ctx), device=dev)))
    del scratch
    _sync(dev)
    init_s = time.perf_counter() - t_init
    t0 = time.perf_counter()
    for s in range(0, ctx, cfg.chunk):
        e = min(ctx, s + cfg.chunk)
        model(ids[:, s:e], logits_to_keep=1, **args(cache, torch.arange(s, e, device=dev)))
    _sync(dev)
    prefill_s = time.perf_counter() - t0

    tok = torch.zeros(1, 1, dtype=torch.long, device=dev)
    pos = torch.full((1,), ctx, dtype=torch.long, device=dev)

    cache_name, with_position = args.cache_name, args.cache_position

    def step(tok, pos):
        kw = {cache_name: cache, "use_cache": True, "position_ids": pos[None]}
        if with_position:
            kw["cache_position"] = pos
        return model(tok, **kw).logits

    cuda = dev.type == "cuda"
    mode = cfg.compile_mode or ("reduce-overhead" if cuda else "eager")
    fullgraph, note = True, None
    t0 = time.perf_counter()
    for attempt in (True, False):
        opts = dict(mode=mode) if cuda else dict(backend=mode)
        compiled = torch.compile(step, fullgraph=attempt, dynamic=False, **opts)
        try:
            for _ in range(warm_steps):
                if cuda:
                    torch.compiler.cudagraph_mark_step_begin()
                compiled(tok, pos)
                pos.add_(1)
            break
        except Exception as err:  # noqa: BLE001 - dynamo/inductor raise many types; the row records it
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            if not attempt:
                raise _CompileFailed(first) from None
            fullgraph, note = False, f"fullgraph=True failed ({first}); measured with graph breaks"
            torch._dynamo.reset()
            pos.fill_(ctx)
            cache = _static_cache(model, max_len)  # the failed attempt may have written into it: prefill again
            for s in range(0, ctx, cfg.chunk):
                e = min(ctx, s + cfg.chunk)
                model(ids[:, s:e], logits_to_keep=1, **args(cache, torch.arange(s, e, device=dev)))
    _sync(dev)
    compile_s = time.perf_counter() - t0 + init_s
    timers = []
    for _ in range(n):
        t = _Timer(dev)
        if cuda:
            torch.compiler.cudagraph_mark_step_begin()
        t.start()
        compiled(tok, pos)
        t.stop()
        pos.add_(1)
        timers.append(t)
    _sync(dev)
    del compiled, cache
    torch._dynamo.reset()  # frees the CUDA-graph pool before the next row
    row = {"prefill_s": round(prefill_s, 4), "compile_s": round(compile_s, 3), **decode_stats([t.ms() for t in timers]),
           "decode_tokens_measured": n, "kv_bytes": _kv_bytes_full(loaded.geometry, max_len, model.dtype.itemsize),
           "fullgraph": fullgraph, "compile_mode": mode}
    if note:
        row["note"] = note
    return row


# -------------------------------------------------------------------------------- max context

def _max_context_rows(cfg, loaded, specs, rank_ratio, progress, over_budget, emit):
    """Per mode: the estimate from the memory plan, then a verification that allocates that much and
    decodes a few tokens (the cache filled with random K/V: a real prefill of a million tokens would
    take minutes). Only the runtime's weights stay resident (`consume`), as in `sedpa generate`."""
    from sedpa_compress.models import load_model

    dev = torch.device(cfg.device)
    for mode in cfg.modes:
        if over_budget():
            emit({"mode": mode, "method": "max-context", "skipped": "time budget"})
            continue
        if loaded is None:  # the previous mode consumed the weights: load them again
            loaded = load_model(cfg.model, config=cfg.config, random_weights=cfg.random_weights, dtype=cfg.dtype,
                                device=cfg.device, seed=cfg.seed)
        fast = FastModel(loaded, specs[mode], consume=True,
                         synthetic_rank_ratio=rank_ratio if mode in ("sedpa-s", "sedpa-w") else None, seed=cfg.seed)
        loaded = None
        _free(dev)
        budget = _budget(cfg)
        free = budget if budget is not None else memory.free_device_bytes(dev)
        estimate = memory.max_context(fast, chunk=cfg.chunk, free_bytes=free)
        bounded = estimate < (1 << 30)
        n = estimate if bounded else max(cfg.contexts)
        row: dict[str, Any] = {"mode": mode, "method": "max-context", "max_context_estimate": estimate if bounded else None,
                               "free_bytes_at_start": free, "weight_bytes": fast.weight_bytes(),
                               "params": runtime_params(fast)}
        steps = max(4, cfg.decode_tokens // 4)
        for _attempt in range(4):
            runner = None
            try:
                _reset_peak(dev)
                runner = Runner(fast, max_len=n, chunk=cfg.chunk, memory_budget=budget)
                runner.fill_synthetic(n - steps - cfg.warmup_tokens)
                decode_ms = _decode_ms(runner, cfg.warmup_tokens, steps)["decode_ms"]
                row.update(max_context=n, verified=True, decode_ms=round(decode_ms, 3), kv_bytes=runner.kv_bytes(),
                           peak_bytes=_peak(dev), unbounded=not bounded, decode_tokens_measured=steps)
                break
            except (torch.OutOfMemoryError, SedpaError) as err:
                progress(f"{mode} at {n}: {type(err).__name__}; trying 5% less")
                n = int(n * 0.95)
            finally:
                del runner
                _free(dev)
        else:
            row.update(max_context=None, verified=False)
        emit(row)
        progress(f"{mode:9s} max context {row.get('max_context')} (estimate {estimate if bounded else 'unbounded'})")
        del fast
        _free(dev)


# ------------------------------------------------------------------------------------ summary

def _summary(rows: list[dict[str, Any]], max_context: bool) -> dict[str, dict[str, Any]]:
    done = [r for r in rows if "skipped" not in r]
    if max_context:
        return {r["mode"]: {"max_context": r.get("max_context"), "decode_ms": r.get("decode_ms")} for r in done}
    summary: dict[str, dict[str, Any]] = {}
    full = {r["context"]: r for r in done if r["mode"] == "full"}
    for mode in dict.fromkeys(r["mode"] for r in done):
        mine = [r for r in done if r["mode"] == mode]
        top = max(mine, key=lambda r: r["context"])
        s: dict[str, Any] = {"method": top.get("method"), "context": top["context"], "decode_ms": top["decode_ms"],
                             "prefill_s": top["prefill_s"], "compile_s": top.get("compile_s"),
                             "kv_bytes": top["kv_bytes"], "peak_bytes": top.get("peak_bytes"), "params": top.get("params"),
                             "floor_ms": top["floor_ms"], "floor_ratio": top["floor_ratio"],
                             "prefill_floor_s": top.get("prefill_floor_s"),
                             "prefill_floor_ratio": top.get("prefill_floor_ratio")}
        ref = full.get(top["context"])
        if ref is not None and mode != "full":
            s["decode_speedup_vs_full"] = round(ref["decode_ms"] / top["decode_ms"], 3)
            s["prefill_speedup_vs_full"] = round(ref["prefill_s"] / top["prefill_s"], 3)
            s["kv_ratio_vs_full"] = round(top["kv_bytes"] / ref["kv_bytes"], 4)
        s["by_context"] = {str(r["context"]): {"decode_ms": r["decode_ms"], "prefill_s": r["prefill_s"],
                                                "compile_s": r.get("compile_s"), "floor_ratio": r["floor_ratio"],
                                                "prefill_floor_ratio": r.get("prefill_floor_ratio")} for r in mine}
        summary[mode] = s
    skipped = [r for r in rows if "skipped" in r]
    for r in skipped:
        summary.setdefault(r["mode"], {}).setdefault("skipped", {})[str(r.get("context"))] = r["skipped"]
    return summary


K128, K32 = 131072, 32768
# (mode, context or None = every measured context, metric, the row it is compared with, op, target):
# issue 12's goals, Llama-3-8B geometry, 50% retrieval heads, rank ratio 0.85, one H200
GOALS = {
    "full_decode_floor_ratio_128k": ("full", K128, "floor_ratio", None, "<=", 1.15),
    "full_decode_floor_ratio_32k": ("full", K32, "floor_ratio", None, "<=", 1.25),
    "full_vs_static_compile_128k": ("full", K128, "decode_speedup", "transformers-static-compile", ">=", 5.0),
    "duo_decode_speedup_128k": ("duo", K128, "decode_speedup", "full", ">=", 1.3),
    "sedpa-s_never_slower_than_duo": ("sedpa-s", None, "decode_speedup", "duo", ">=", 1.0),
    "sedpa-w_decode_speedup_128k": ("sedpa-w", K128, "decode_speedup", "full", ">=", 1.8),
    "sedpa-w_decode_floor_ratio_128k": ("sedpa-w", K128, "floor_ratio", None, "<=", 1.2),
    "sedpa-w_vs_duo_decode_128k": ("sedpa-w", K128, "decode_speedup", "duo", ">=", 1.1),
    "sedpa-w_vs_duo_kv_128k": ("sedpa-w", K128, "kv_ratio", "duo", "<", 1.0),
    "sedpa-w_vs_duo_peak_128k": ("sedpa-w", K128, "peak_ratio", "duo", "<", 1.0),
    "tidal_decode_speedup_128k": ("tidal", K128, "decode_speedup", "full", ">=", 1.5),
    "sedpa-w_prefill_speedup_128k": ("sedpa-w", K128, "prefill_speedup", "full", ">=", 4.0),
    "duo_prefill_speedup_128k": ("duo", K128, "prefill_speedup", "full", ">=", 1.5),
}


def _goal_value(metric: str, row: dict[str, Any], ref: dict[str, Any] | None) -> float | None:
    if metric == "floor_ratio":
        return row.get("floor_ratio")
    if ref is None:
        return None
    pairs = {"decode_speedup": ("decode_ms", True), "prefill_speedup": ("prefill_s", True),
             "kv_ratio": ("kv_bytes", False), "peak_ratio": ("peak_bytes", False)}
    key, inverse = pairs[metric]
    a, b = row.get(key), ref.get(key)
    if not a or not b:
        return None
    return b / a if inverse else a / b


def goals(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each goal with its measured value (None where the rows were not measured) and whether it is met.
    A goal over every context takes its worst measured context."""
    done = {(r["mode"], r["context"]): r for r in rows if "skipped" not in r and "context" in r}
    out = {}
    for name, (mode, ctx, metric, against, op, target) in GOALS.items():
        contexts = [ctx] if ctx is not None else sorted({c for m, c in done if m == mode})
        values = []
        for c in contexts:
            row = done.get((mode, c))
            if row is not None:
                v = _goal_value(metric, row, done.get((against, c)) if against else None)
                if v is not None:
                    values.append((v, c))
        value = None
        if values:
            worst = min if op.startswith(">") else max
            value, at = worst(values)
        met = None if value is None else {"<=": value <= target, "<": value < target, ">=": value >= target}[op]
        out[name] = {"value": None if value is None else round(value, 4), "target": f"{op} {target}", "met": met,
                     **({"vs": against} if against else {}), **({"worst_context": at} if values and ctx is None else {})}
        if values and metric == "decode_speedup":  # how far the steps of either row spread (p90 - p10) / median
            spreads = [(r["decode_ms_p90"] - r["decode_ms_p10"]) / r["decode_ms"] for r in
                       (done.get((mode, at)), done.get((against, at))) if r and "decode_ms_p90" in r]
            if spreads:
                out[name]["step_spread_pct"] = round(100 * max(spreads), 2)
                if met is False:  # a miss smaller than the steps' own spread is not a measured difference
                    short = 100 * abs(target - value) / target
                    out[name]["miss_within_step_spread"] = short < 100 * max(spreads)
            pair = [done.get((mode, at)), done.get((against, at))]
            if all(r and r.get("weight_read_bytes") and "kv_read_bytes" in r for r in pair):
                # two rows that read the same bytes a step (sedpa-s where no factor saves any: duo's dense rows)
                # run the same work, so their difference is the machine's noise
                out[name]["same_bytes_read"] = all(pair[0][k] == pair[1][k] for k in ("weight_read_bytes",
                                                                                      "kv_read_bytes"))
    return out


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Decode latency (dashed: each row's bandwidth floor) and prefill time (dashed: its FLOP floor)
    against context, every measured mode and peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sedpa_compress.atomic import atomic_write_figure

    rows = [r for r in result["rows"] if "skipped" not in r and "decode_ms" in r and "context" in r]
    if not rows:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["context"])
        xs = [r["context"] for r in mine]
        line, = ax1.plot(xs, [r["decode_ms"] for r in mine], marker="o", label=mode)
        ax1.plot(xs, [r["floor_ms"] for r in mine], ls="--", color=line.get_color(), alpha=0.6)
        ax2.plot(xs, [r["prefill_s"] for r in mine], marker="o", label=mode, color=line.get_color())
        floors = [(r["context"], r["prefill_floor_s"]) for r in mine if r.get("prefill_floor_s")]
        if floors:
            ax2.plot(*zip(*floors), ls="--", color=line.get_color(), alpha=0.6)
    for ax, title, unit in ((ax1, "decode latency (dashed: bandwidth floor)", "ms / token"),
                            (ax2, "prefill (dashed: FLOP floor)", "s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    fig.suptitle(f"{result['model']} on {result['device']}")
    fig.tight_layout()
    return atomic_write_figure(Path(path), fig, dpi=120)
