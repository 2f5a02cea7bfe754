"""What every accuracy benchmark shares: parsing lengths and depths, choosing the model each
`--attention` mode runs on, and greedy generation / token scoring on the reference path."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sedpa_compress.errors import SedpaError
from sedpa_compress.models.forward_args import ForwardArgs
from sedpa_compress.models.loaded import HF_WEIGHT_FILES, INT8_FILE, count_parameters
from sedpa_compress.models.loader import LoadedModel, shipped_pattern_path
from sedpa_compress.runtime.generate import runs_fast
from sedpa_compress.runtime.reference import AttentionMode, using_mode

LOWRANK_MODES = ("sedpa-s", "sedpa-w")  # need an artifact whose streaming heads are low-rank
DECODE_SPARSE_MODES = ("tidal",)  # modes whose decode step differs from a masked prefill
DEFAULT_CHUNK = 4096  # prefill chunk: bounds the [tq, tk] masks of the reference path

# ---------------------------------------------------------------------------------------- parsing

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_size(text: str, flag: str = "--lengths") -> int:
    """`4096`, `4k` (= 4096), `1.5k`, `1m` -> tokens."""
    m = _SIZE.match(text)
    if not m:
        raise SedpaError(f"{flag} {text!r}: pass token counts such as 4096 or 4k")
    mult = {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    return int(round(float(m.group(1)) * mult))


def parse_lengths(spec: str) -> list[int]:
    """`1k:32k:8` (8 lengths evenly spaced from 1k to 32k, as the NIAH papers sweep) or `1k,4k,16k`."""
    spec = spec.strip()
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) != 3:
            raise SedpaError(f"--lengths {spec!r}: use FIRST:LAST:COUNT such as 1k:32k:8, or a list such as 1k,4k")
        lo, hi = parse_size(parts[0]), parse_size(parts[1])
        try:
            n = int(parts[2])
        except ValueError:
            raise SedpaError(f"--lengths {spec!r}: COUNT must be an integer, e.g. 1k:32k:8") from None
        if n < 1 or lo < 1 or hi < lo:
            raise SedpaError(f"--lengths {spec!r}: need 1 <= START <= END and COUNT >= 1")
        values = [lo] if n == 1 else [round(lo + (hi - lo) * i / (n - 1)) for i in range(n)]
    else:
        values = [parse_size(v) for v in spec.split(",") if v.strip()]
    if not values or min(values) < 16:
        raise SedpaError(f"--lengths {spec!r}: pass lengths of at least 16 tokens")
    return sorted(set(values))


def parse_depths(spec: str) -> list[float]:
    """`10` -> 10 depths evenly spaced over 0..100 %; `0.1,0.5,0.9` or `10%,50%` -> those depths."""
    spec = spec.strip()
    if re.fullmatch(r"\d+", spec):
        n = int(spec)
        if n < 1:
            raise SedpaError("--depths 0: pass a count >= 1 or a list of fractions such as 0.1,0.5,0.9")
        return [0.5] if n == 1 else [round(i / (n - 1), 4) for i in range(n)]
    out = []
    for v in spec.split(","):
        v = v.strip()
        if not v:
            continue
        try:
            d = float(v[:-1]) / 100 if v.endswith("%") else float(v)
        except ValueError:
            raise SedpaError(f"--depths {spec!r}: pass a count (10) or fractions such as 0.1,0.5,0.9") from None
        if not 0 <= d <= 1:
            raise SedpaError(f"--depths {spec!r}: depths must lie in [0, 1] (or 0%..100%)")
        out.append(round(d, 4))
    if not out:
        raise SedpaError(f"--depths {spec!r}: pass a count (10) or fractions such as 0.1,0.5,0.9")
    return sorted(set(out))


def cap_lengths(lengths: list[int], limit: int | None, reserve: int) -> tuple[list[int], list[int]]:
    """Lengths that fit the model's position limit (leaving `reserve` tokens to generate), and the
    ones that did not. A sweep that ends beyond the limit gets the limit itself as its last length."""
    if not limit:
        return lengths, []
    top = limit - reserve
    if top < 16:
        raise SedpaError(f"the model's {limit}-token limit leaves no room for a context: nothing to benchmark")
    kept = [n for n in lengths if n <= top]
    dropped = [n for n in lengths if n > top]
    if dropped and top not in kept:
        kept.append(top)
    return sorted(kept), dropped


def lengths_for_model(spec: str, limit: int | None, reserve: int) -> tuple[list[int], str | None]:
    """`--lengths` for a model with a `limit`-token position limit, keeping `reserve` tokens to answer.

    A sweep FIRST:LAST:COUNT whose LAST is beyond the limit is spread over FIRST..limit instead (same
    COUNT, an even heatmap); listed lengths beyond it are dropped and replaced by the limit. Either
    way the second value says what changed (None when nothing did)."""
    lengths = parse_lengths(spec)
    if not limit or max(lengths) <= limit - reserve:
        return lengths, None
    top = limit - reserve
    parts = spec.strip().split(":")
    if len(parts) == 3 and parse_size(parts[0]) <= top:
        capped = parse_lengths(f"{parse_size(parts[0])}:{top}:{parts[2]}")
        return capped, (f"--lengths {spec} ends beyond the model's {limit}-token limit (minus {reserve} to answer): "
                        f"swept {parse_size(parts[0])}..{top} instead")
    kept, dropped = cap_lengths(lengths, limit, reserve)
    return kept, (f"--lengths {', '.join(map(str, dropped))} exceed the model's {limit}-token limit "
                  f"(minus {reserve} to answer): ran up to {max(kept)} instead")


# --------------------------------------------------------------------------- models behind modes


@dataclass
class BenchModel:
    """One `--attention` row: the mode object and the model it runs on."""

    name: str
    loaded: LoadedModel
    mode: AttentionMode | None
    settings: dict[str, Any] = field(default_factory=dict)  # what identifies this row in caches and JSON


def file_digest(path: Path | None) -> str | None:
    if path is None:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def model_identity(loaded: LoadedModel) -> dict[str, Any]:
    """Enough to tell two models apart in a cache key (name, where it came from, its config), and how many
    parameters it stores (the benchmarks' reports show them per mode)."""
    ident: dict[str, Any] = {"name": loaded.name, "source": loaded.source, "revision": loaded.revision,
                             "dtype": str(next(loaded.model.parameters()).dtype),
                             "parameters": count_parameters(loaded.model)}
    if loaded.path is not None:
        ident["path"] = str(Path(loaded.path).resolve())
        cfg = Path(loaded.path) / "config.json"
        ident["config"] = file_digest(cfg) if cfg.is_file() else None
        for weights in (*HF_WEIGHT_FILES, INT8_FILE):
            w = Path(loaded.path) / weights
            if w.is_file():  # size + mtime: cheap, and changes whenever the weights are rewritten
                st = w.stat()
                ident["weights"] = f"{st.st_size}-{int(st.st_mtime)}"
                break
    if loaded.artifact is not None:
        ident["artifact"] = {k: loaded.artifact.get(k) for k in ("ranks", "window", "sink", "recent")
                             if k in loaded.artifact}
    return ident


def build_bench_models(
    base: LoadedModel,
    modes: list[str],
    *,
    compressed: LoadedModel | None = None,
    pattern: Path | None = None,
    sink: int | None = None,
    recent: int | None = None,
    window: int | None = None,
    top_k: int | None = None,
    selection_layers: tuple[int, ...] | None = None,
) -> list[BenchModel]:
    """The model and mode of every `--attention` name.

    full / streaming / duo / tidal run on `base` (the model given by --model). sedpa-s / sedpa-w need
    low-rank streaming heads: they run on `compressed` (--compressed DIR), or on `base` itself when
    --model is an artifact. duo's pattern: --pattern, else the one --model carries, else the
    compressed artifact's. sedpa-*'s pattern: the artifact's own (its low-rank heads are that
    pattern's streaming heads), else --pattern.
    """
    from sedpa_compress.heads.pattern import HeadPattern
    from sedpa_compress.runtime.modes import build_mode

    def load_pattern(loaded: LoadedModel, path: Path | None) -> tuple[HeadPattern | None, Path | None]:
        if path is None:
            return None, None
        return HeadPattern.load(path, loaded.geometry), path

    lowrank = compressed if compressed is not None else (base if base.artifact is not None else None)
    if compressed is not None and compressed.artifact is None:
        raise SedpaError(f"--compressed {compressed.path}: not a sedpa artifact (no `sedpa` block in config.json); "
                         "make one with `sedpa compress --model M --out DIR`")
    if compressed is not None and compressed.geometry != base.geometry:
        raise SedpaError(f"--compressed {compressed.path} has another geometry than --model {base.name}: "
                         "pass the artifact compressed from this model")
    base_pat_path = pattern or shipped_pattern_path(base) or (shipped_pattern_path(compressed) if compressed else None)
    rows: list[BenchModel] = []
    for name in modes:
        loaded = base
        pat, pat_path = None, None
        if name in LOWRANK_MODES:
            if lowrank is None:
                raise SedpaError(f"--attention {name} runs on compressed weights: pass --compressed DIR (an artifact "
                                 "from `sedpa compress`) or an artifact as --model; full/streaming/duo/tidal stay on --model")
            loaded = lowrank
            pat, pat_path = load_pattern(loaded, shipped_pattern_path(loaded) or pattern)
            if pat is None:
                raise SedpaError(f"--attention {name}: the artifact {loaded.path} carries no sedpa_pattern.json; pass --pattern P")
        elif name in ("duo", "streaming", "tidal"):  # tidal: the pattern's retrieval layer re-selects
            pat, pat_path = load_pattern(base, base_pat_path)
            if name == "duo" and pat is None:
                raise SedpaError("--attention duo needs a head pattern: pass --pattern P.pattern.json (from "
                                 "`sedpa identify-heads`), a model that ships one, or --compressed DIR")
        art_window = loaded.artifact.get("window") if loaded.artifact else None
        w = window if window is not None else art_window
        options: dict[str, Any] = {}
        if name == "tidal":
            options["num_layers"] = loaded.geometry.num_layers
            if top_k is not None:
                options["top_k"] = top_k
            if selection_layers is not None:
                options["selection_layers"] = selection_layers
        mode = build_mode(name, pattern=pat, sink=sink, recent=recent, window=w if name == "sedpa-w" else None,
                          **options)
        # which code computes this mode's cells (`greedy_generate` / `token_nll` pick the same way); the
        # label used to name the reference path even where the fast runtime ran (the H200 runs of 2026-11-29)
        path = ("fast runtime" if runs_fast(loaded) else
                {"full": "model sdpa", "tidal": "model sdpa prefill, reference decode"}.get(name, "reference"))
        settings: dict[str, Any] = {"mode": name, "model": model_identity(loaded), "path": path}
        for attr in ("sink", "recent", "window", "top_k", "dense_layers"):
            if getattr(mode, attr, None) is not None:
                settings[attr] = getattr(mode, attr)
        if name == "tidal":
            settings["selection_layers"] = list(mode.selections())
            settings["selection_source"] = mode.selection_source
        if pat is not None and name != "streaming":  # streaming takes only sink/recent from the pattern
            settings["pattern"] = str(pat_path)
            settings["pattern_sha"] = file_digest(pat_path)
            settings["retrieval_heads"] = int(sum(sum(r) for r in pat.mask))
            settings["kv_heads"] = pat.num_layers * pat.num_kv_heads
        rows.append(BenchModel(name=name, loaded=loaded, mode=None if name == "full" else mode, settings=settings))
    return rows


def cell_identity(settings: dict[str, Any]) -> dict[str, Any]:
    """What a cached cell depends on: a mode's settings without where its pattern file lies (its
    sha256 stays), so the same pattern copied elsewhere still finds its finished cells."""
    return {k: v for k, v in settings.items() if k != "pattern"}


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able settings (what a cached cell was computed with)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------ provenance

# The package sources a benchmark's numbers depend on (paths under sedpa_compress/; a folder means
# every .py in it; other files by name). A cell computed by other code is another cell: its cache
# line is never reused.
_SHARED_CODE = ("bench/common.py", "bench/cache.py", "runtime/", "models/", "svd/factored.py",
                "artifact/reader.py", "heads/pattern.py", "errors.py")
BENCH_CODE: dict[str, tuple[str, ...]] = {
    "niah": _SHARED_CODE + ("bench/niah.py", "data/needles.py", "data/text.py"),
    "ppl": _SHARED_CODE + ("bench/ppl.py", "data/text.py", "calibration/sources.py"),
    "longbench": _SHARED_CODE + ("bench/longbench/", "bench/longbench/tasks.json"),
    "efficiency": _SHARED_CODE + ("bench/efficiency.py",),
}
# What each benchmark's metrics are; bump a version when a definition changes.
BENCH_METRICS: dict[str, dict[str, str]] = {
    "niah": {"accuracy": "data.needles.answer_found: the value as a whole value in the first line of the answer",
             "exact": "data.needles.score_answer: the answer starts with the value", "score": "partial character match",
             "version": "2"},
    "ppl": {"ppl": "exp(mean token NLL over every window)", "tail_ppl": "the same over each window's last tokens",
            "version": "1"},
    "longbench": {"score": "bench.longbench.metrics (upstream definitions)", "version": "1"},
    "efficiency": {"version": "2"},
}
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def code_digest(paths: tuple[str, ...], root: Path | None = None) -> str:
    """sha256 over the named package sources (relative path + bytes, in a fixed order)."""
    root = Path(root) if root is not None else _PACKAGE_ROOT
    files: set[Path] = set()
    for p in paths:
        target = root / p
        if p.endswith("/"):
            files.update(target.rglob("*.py") if target.is_dir() else [])
        elif target.is_file():
            files.add(target)
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def provenance(benchmark: str, **inputs: Any) -> dict[str, Any]:
    """What a benchmark's cells were computed with besides their settings: the code (a digest of the
    package sources it runs), the library versions, its metric definitions, and `inputs` (digests of
    the text, templates, ... it read). Part of every cache fingerprint and of the result's settings."""
    import transformers

    from sedpa_compress import __version__

    return {"code": code_digest(BENCH_CODE.get(benchmark, _SHARED_CODE)), "sedpa": __version__,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "metrics": BENCH_METRICS.get(benchmark, {}), **inputs}


def bench_fingerprint(benchmark: str, mode_settings: dict[str, Any], common: dict[str, Any],
                      prov: dict[str, Any] | None = None) -> str:
    """The cache fingerprint of one mode's cells: its settings, the benchmark's settings, and the
    provenance (code, versions, metrics, input digests), so cells from older code are recomputed."""
    return fingerprint(benchmark, cell_identity(mode_settings), common, prov or provenance(benchmark))


# ------------------------------------------------------------------ generation and token scoring


def _eos_ids(loaded: LoadedModel, extra: list[int] | None = None) -> set[int]:
    ids: set[int] = set(extra or [])
    tok = loaded.tokenizer
    eos = getattr(tok, "eos_token_id", None) if tok is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, list):
        ids.update(eos)
    return ids


def _next_token(logits: torch.Tensor, produced: int, stops: set[int], min_new_tokens: int) -> int:
    """The greedy token; stop tokens cannot win before `min_new_tokens` tokens (HF's min_length)."""
    if produced < min_new_tokens and stops:
        logits = logits.clone()
        logits[sorted(stops)] = float("-inf")
    return int(logits.argmax())


def attention(model, mode: AttentionMode | None):
    """The context a forward runs in: `mode` on the reference path, or for None (full attention) the
    model's own causal SDPA, the same function without explicit [tq, tk] masks (about 3x faster on
    the CPU, where masked SDPA falls back to the math kernel)."""
    return contextlib.nullcontext(model) if mode is None else using_mode(model, mode)


def prefill_mode(mode: AttentionMode | None) -> AttentionMode | None:
    """The mode a prefill runs: tidal prefills with full attention (sparse only while decoding)."""
    return None if mode is not None and getattr(mode, "name", None) in DECODE_SPARSE_MODES else mode


@dataclass
class PromptCache:
    """The KV cache of the last prompt one mode ran, so that the next prompt sharing its first tokens
    prefills only the rest. NIAH asks the same haystack with the needle at each depth: taken deepest
    first, each prompt shares everything before its needle with the previous one. Every mode's
    attention is causal, so a prefix's keys and values do not depend on what follows them."""

    ids: list[int] = field(default_factory=list)
    cache: Any = None
    reused_tokens: int = 0

    def take(self, ids: list[int]):
        """(a cache holding the longest common prefix with `ids`, its length); a fresh cache if none."""
        from transformers import DynamicCache

        n = 0
        for a, b in zip(self.ids, ids[:-1]):  # the last prompt token is always run: its logits are needed
            if a != b:
                break
            n += 1
        cache, self.cache, self.ids = self.cache, None, []
        layers = getattr(cache, "layers", None)
        if n == 0 or not layers or not all(hasattr(layer, "keys") for layer in layers):
            return DynamicCache(), 0
        for layer in layers:  # keep the first n positions (DynamicCache.crop's signature varies by version)
            layer.keys, layer.values = layer.keys[..., :n, :], layer.values[..., :n, :]
        self.reused_tokens += n
        return cache, n

    def keep(self, ids: list[int], cache) -> None:
        self.ids, self.cache = ids[: cache.get_seq_length()], cache


@torch.inference_mode()
def greedy_generate(loaded: LoadedModel, ids: list[int], mode: AttentionMode | None, max_new_tokens: int, *,
                    chunk: int = DEFAULT_CHUNK, stop_ids: list[int] | None = None,
                    reuse: PromptCache | None = None, min_new_tokens: int = 0) -> list[int]:
    """Greedy continuation of `ids` with `mode`: chunked prefill, then one token at a time (so tidal's
    sparse decode runs). Stops at EOS or any of `stop_ids`, which cannot be chosen before
    `min_new_tokens` tokens (HF's min_length). On CUDA this is the fast runtime (`runs_fast`), the code
    `sedpa generate` runs; elsewhere the reference path, where `reuse` (one per mode) skips
    prefilling the prefix shared with the previous prompt."""
    from transformers import DynamicCache

    stops = _eos_ids(loaded, stop_ids)
    if runs_fast(loaded):
        return _fast_greedy(loaded, ids, mode, max_new_tokens, chunk, stops, min_new_tokens)
    model = loaded.model
    args = ForwardArgs(model)
    x = torch.tensor([ids], device=loaded.device)
    out: list[int] = []
    cache, start = reuse.take(ids) if reuse is not None else (DynamicCache(), 0)
    logits = None
    with attention(model, prefill_mode(mode)):
        for s in range(start, x.shape[1], chunk):
            logits = model(input_ids=x[:, s:s + chunk], logits_to_keep=1, **args(cache)).logits
    with attention(model, mode):
        for _ in range(max_new_tokens):
            tok = _next_token(logits[0, -1], len(out), stops, min_new_tokens)
            out.append(tok)
            if tok in stops or len(out) >= max_new_tokens:
                break
            logits = model(input_ids=torch.tensor([[tok]], device=x.device), **args(cache)).logits
    if reuse is not None:
        reuse.keep(ids + out, cache)
    return out


@torch.inference_mode()
def token_nll(loaded: LoadedModel, ids: list[int], mode: AttentionMode | None, *, chunk: int = DEFAULT_CHUNK,
              decode_tail: int = 0) -> torch.Tensor:
    """Next-token negative log-likelihoods [len(ids) - 1] of `ids` with `mode` installed.

    The first tokens are scored by a chunked prefill; the last `decode_tail` tokens are fed one at a
    time (the decode path), which is where modes such as tidal differ from a masked prefill. On CUDA
    the fast runtime computes them (`runs_fast`), elsewhere the reference path.
    """
    from transformers import DynamicCache

    if runs_fast(loaded):
        return _fast_nll(loaded, ids, mode, chunk, decode_tail)

    model = loaded.model
    args = ForwardArgs(model)
    x = torch.tensor([ids], device=loaded.device)
    n = x.shape[1]
    split = max(1, n - decode_tail)
    nll: list[torch.Tensor] = []
    cache = DynamicCache()
    last = None
    with attention(model, prefill_mode(mode)):
        for s in range(0, split, chunk):
            e = min(split, s + chunk)
            logits = model(input_ids=x[:, s:e], **args(cache)).logits[0].float()
            if last is not None:  # the previous chunk's last logit predicts this chunk's first token
                nll.append(F.cross_entropy(last[None], x[0, s:s + 1]).reshape(1))
            if e - s > 1:
                nll.append(F.cross_entropy(logits[:-1], x[0, s + 1:e], reduction="none"))
            last = logits[-1]
    with attention(model, mode):
        for t in range(split, n):
            nll.append(F.cross_entropy(last[None], x[0, t:t + 1]).reshape(1))
            if t + 1 < n:
                last = model(input_ids=x[:, t:t + 1], **args(cache)).logits[0, -1].float()
    return torch.cat(nll).cpu() if nll else torch.zeros(0)


# ------------------------------------------------------------------ the fast runtime (CUDA)

def _bench_runner(loaded: LoadedModel, mode: AttentionMode | None, need: int, chunk: int):
    """A runner for `mode` with room for `need` tokens, reset for a new prompt. It lives on the fast
    model (`loaded.fast`, one at a time), so its caches and captured decode graph serve every prompt
    of the mode; a longer prompt replaces it with a larger one."""
    from sedpa_compress.runtime.generate import fast_model
    from sedpa_compress.runtime.runner import Runner, spec_for_mode

    fast = fast_model(loaded, spec_for_mode(mode, loaded.geometry.num_layers, loaded.kv_dtype))
    runner = fast.bench_runner
    if runner is None or runner.max_len < need or runner.chunk != chunk:
        fast.bench_runner = runner = None  # free the old caches first
        runner = fast.bench_runner = Runner(fast, max_len=-(-need // 1024) * 1024, chunk=chunk)
    runner.reset()
    return runner


def _fast_greedy(loaded: LoadedModel, ids: list[int], mode: AttentionMode | None, max_new_tokens: int, chunk: int,
                 stops: set[int], min_new_tokens: int) -> list[int]:
    runner = _bench_runner(loaded, mode, len(ids) + max_new_tokens, chunk)
    logits = runner.prefill(torch.tensor([ids], device=loaded.device))
    out: list[int] = []
    for _ in range(max_new_tokens):
        tok = _next_token(logits[0], len(out), stops, min_new_tokens)
        out.append(tok)
        if tok in stops or len(out) >= max_new_tokens:
            break
        logits = runner.decode(torch.tensor([tok], device=loaded.device))
    return out


def _fast_nll(loaded: LoadedModel, ids: list[int], mode: AttentionMode | None, chunk: int,
              decode_tail: int) -> torch.Tensor:
    n = len(ids)
    split = max(1, n - decode_tail)
    runner = _bench_runner(loaded, mode, n, chunk)
    fast = runner.model
    target = torch.tensor(ids, device=loaded.device)
    nll: list[torch.Tensor] = []
    last = None
    for s, h in runner.prefill_chunks(target[None, :split], hidden=True):
        for a in range(0, h.shape[1], 1024):  # [1024, vocab] fp32 logits at a time
            lg = fast.logits(h[0, a:a + 1024]).float()
            lo = s + a + 1  # these logits predict tokens [lo, lo + len)
            m = min(lg.shape[0], n - lo)
            if m > 0:
                nll.append(F.cross_entropy(lg[:m], target[lo:lo + m], reduction="none"))
            last = lg[-1]
    for t in range(split, n - 1):  # the decode tail: tokens fed one at a time
        last = runner.decode(target[t:t + 1]).float()[0]
        nll.append(F.cross_entropy(last[None], target[t + 1:t + 2]).reshape(1))
    del last
    return torch.cat(nll).cpu() if nll else torch.zeros(0)


def ppl_from_nll(total: float, count: int) -> float:
    return math.exp(total / count) if count else float("nan")


ProgressFn = Callable[[str], None]
