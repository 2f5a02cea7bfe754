"""The model runner: static caches, chunked prefill, a decode step replayed as a CUDA graph
(after gpt-fast's generate.py), and text generation on top.

    runner = Runner.build(loaded, RuntimeSpec(mode="duo", pattern=p), max_len=32768)
    logits = runner.prefill(ids)          # ids [b, t]
    logits = runner.decode(next_token)    # one token per sequence
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from sedpa_compress.errors import SedpaError
from sedpa_compress.models.loader import LoadedModel
from sedpa_compress.runtime import kernels, memory
from sedpa_compress.runtime.cache import quantize_fp8
from sedpa_compress.runtime.model import FastModel, RuntimeSpec, make_caches, make_state

DEFAULT_CHUNK = 8192
FILL_CHUNK = 1 << 20  # fill_synthetic's slots a step into fp8 caches: ~0.5 GB of fp32 temporaries at head dim 128


class Runner:
    def __init__(self, model: FastModel, *, max_len: int, batch: int = 1, chunk: int = DEFAULT_CHUNK,
                 cuda_graph: bool = True, fuse: bool = True, memory_budget: int | None = None) -> None:
        """`memory_budget`: bytes the caches and workspace may use (default: what the GPU has free;
        on the CPU unchecked). The plan is checked before anything is allocated."""
        if max_len < 1 or chunk < 1:
            raise SedpaError(f"max_len {max_len} / chunk {chunk}: pass positive sizes")
        limit = memory.position_limit(model)
        if limit is not None and max_len > limit:
            raise SedpaError(f"a {max_len}-token context is longer than the decode kernels index ({limit} positions "
                             f"at head dim {model.d}): shorten the prompt, or use a mode without full-length caches")
        self.model = model
        self.batch, self.max_len, self.chunk = batch, max_len, chunk
        self.plan = memory.plan(model, batch=batch, max_len=max_len, chunk=min(chunk, max_len),
                                free_bytes=memory_budget)
        if not self.plan.fits:
            fit = memory.max_context(model, batch=batch, chunk=chunk, free_bytes=self.plan.free_bytes)
            where = "the GPU has" if memory_budget is None else "the memory budget is"
            raise SedpaError(
                f"a {max_len}-token context needs about {memory.describe(self.plan.needed)} for caches and "
                f"workspace but {where} {memory.describe(self.plan.free_bytes)} free: the largest context "
                f"that fits with --attention {model.spec.mode} and --kv-dtype {model.spec.kv_dtype} is {fit} tokens; "
                "shorten the prompt, lower --retrieval-ratio, use sedpa-w"
                + (", or --kv-dtype fp8" if model.spec.kv_dtype != "fp8" else ""))
        self.caches = make_caches(model, batch=batch, max_len=max_len)
        self.state = make_state(model, self.caches, batch)
        dev = model.device
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)
        self.token = torch.zeros(batch, dtype=torch.long, device=dev)
        self.length = 0
        self.use_graph = cuda_graph and dev.type == "cuda"
        if fuse:
            model.enable_fusion()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_logits: torch.Tensor | None = None
        self._sums_checked = False

    @classmethod
    def build(cls, loaded: LoadedModel, spec: RuntimeSpec, *, max_len: int, consume: bool = False,
              synthetic_rank_ratio: float | None = None, **kw) -> Runner:
        return cls(FastModel(loaded, spec, consume=consume, synthetic_rank_ratio=synthetic_rank_ratio), max_len=max_len,
                   **kw)

    def kv_bytes(self) -> int:
        return sum(c.nbytes() for c in self.caches)

    def reset(self) -> None:
        """Start a new sequence (the caches need no clearing: masks only ever read written slots)."""
        self.length = 0
        self.pos.zero_()

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [b, t] appended at the current position, in chunks; returns the last logits [b, vocab]."""
        x = None
        for _start, x in self.prefill_chunks(ids):
            pass
        return self.model.logits(x[:, -1]).float()

    @torch.inference_mode()
    def prefill_chunks(self, ids: torch.Tensor, *, hidden: bool = False):
        """Prefill `ids` [b, t] chunk by chunk, yielding (start, final hidden states [b, t_chunk, hidden])
        of each chunk (`hidden=True`; else only its last token's): perplexity reads every position."""
        b, t = ids.shape
        if b != self.batch:
            raise SedpaError(f"batch {b} != the runner's batch {self.batch}")
        if self.length + t > self.max_len:
            raise SedpaError(f"{self.length + t} tokens exceed the runner's {self.max_len}-token cache: "
                             "build it with a larger max_len")
        ids = ids.to(self.model.device)
        for s in range(0, t, self.chunk):
            x = self.model.prefill_chunk(ids[:, s:s + self.chunk], self.length, self.caches, pad_to=self.chunk,
                                         keep_all=hidden)
            self.length += min(self.chunk, t - s)
            self.pos.fill_(self.length)
            yield s, x

    @torch.inference_mode()
    def decode(self, token: torch.Tensor) -> torch.Tensor:
        """One token per sequence at the current position -> logits [b, vocab] (a view reused by the next call)."""
        if self.length >= self.max_len:
            raise SedpaError(f"the cache is full ({self.max_len} tokens): build the runner with a larger max_len")
        self.token.copy_(token.reshape(-1))
        if self.use_graph:
            if self.graph is None:
                self._capture()
            self.graph.replay()
            out = self.graph_logits
        else:
            out = self.model.decode_step(self.token, self.pos, self.caches, self.state)
        self.pos.add_(1)
        self.length += 1
        if not self._sums_checked:
            self._sums_checked = True
            self.check_glue_sums()
        return out

    def check_glue_sums(self) -> None:
        """Once, after the first decode step: the fused glue's sums of squares in int64 fixed point
        (kernels.SS_UNITS) hold 2^63 units, a sum of 5.5e11 at 2^24 units. A residual stream within 64x of that
        (or past it: a negative sum) switches this runner to fp32 sums, which cannot wrap but add in whatever order
        the GEMV programs finish, and says so in the model's notes, rather than normalise with a wrapped sum."""
        ss = self.state.glue_ss
        if ss is None or ss.dtype != torch.int64:
            return
        top, low = (int(v) for v in torch.stack([ss.max(), ss.min()]).tolist())  # one host sync, once
        if top < (1 << 63) // 64 and low >= 0:
            return
        self.state.glue_ss = torch.zeros(ss.shape, dtype=torch.float32, device=ss.device)
        self.graph = None  # captured with the int64 buffer: capture again
        self.model.notes.append(
            f"the residual stream's sum of squares reached {max(top, 0) / kernels.SS_UNITS:.3g}, near or past what the "
            "fused glue's int64 sums hold: this runner adds them in fp32 (their last bits may differ between runs)"
            + ("; the first decode step normalised with a wrapped sum" if low < 0 else ""))

    def _capture(self) -> None:
        """Warm the kernels up on a side stream (Triton compiles there), then record one step.
        Warm-up steps write the same K/V at the same position the replay writes again."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.model.decode_step(self.token, self.pos, self.caches, self.state)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.graph_logits = self.model.decode_step(self.token, self.pos, self.caches, self.state)

    @torch.inference_mode()
    def fill_synthetic(self, length: int, seed: int = 0) -> None:
        """Pretend `length` tokens were prefilled: random K/V in every slot (timing and max-context
        checks at lengths where a real prefill would take minutes). Positions become `length`."""
        if length > self.max_len:
            raise SedpaError(f"{length} > max_len {self.max_len}")
        gen = torch.Generator(device=self.model.device).manual_seed(seed)
        for cache in self.caches:
            for gi in range(len(cache.groups)):
                for t, scales in ((cache.k[gi], cache.k_scale[gi]), (cache.v[gi], cache.v_scale[gi])):
                    for i in range(t.shape[1]):  # head by head: no full-size fp32 temporary
                        if scales is None:
                            t[:, i].normal_(0, 1, generator=gen)
                            continue
                        # and FILL_CHUNK slots at a time: quantize_fp8's fp32 temporaries of one whole head
                        # (~10 GB at 7.3M positions) are what the memory plan does not count, and made the
                        # max-context run's first fp8 attempt run out of memory
                        for s in range(0, t.shape[2], FILL_CHUNK):
                            e = min(t.shape[2], s + FILL_CHUNK)
                            x = torch.empty(t[:, i, s:e].shape, dtype=self.model.dtype, device=t.device)
                            t[:, i, s:e], scales[:, i, s:e] = quantize_fp8(x.normal_(0, 1, generator=gen))
        self.length = length
        self.pos.fill_(length)


def spec_for_mode(mode, num_layers: int, kv_dtype: str = "bf16") -> RuntimeSpec:
    """The runtime settings of a reference-path mode object (`build_mode(...)`; None = full), with
    caches of `kv_dtype`. A mode object of a name the table does not know is refused, never run as
    full attention."""
    import dataclasses

    return dataclasses.replace(_spec_of(mode), kv_dtype=kv_dtype)


def _spec_of(mode) -> RuntimeSpec:
    from sedpa_compress.runtime.modes.table import PATTERN_MODES, check_mode

    if mode is None:
        return RuntimeSpec(mode="full")
    name = getattr(mode, "name", None)
    if not isinstance(name, str):
        raise SedpaError(f"{type(mode).__name__} is not an attention mode (no name): build one with "
                         "sedpa_compress.runtime.modes.build_mode")
    check_mode(name)
    if name in PATTERN_MODES:
        return RuntimeSpec(mode=name, pattern=mode.pattern, sink=mode.sink, recent=mode.recent, window=mode.window)
    if name == "streaming":
        return RuntimeSpec(mode=name, sink=mode.sink, recent=mode.recent)
    if name == "tidal":
        return RuntimeSpec(mode=name, top_k=mode.top_k, dense_layers=mode.dense_layers,
                           selection_layers=mode.selection_layers)
    return RuntimeSpec(mode=name)


@dataclass
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0


def sample(logits: torch.Tensor, cfg: Sampling, gen: torch.Generator | None = None) -> torch.Tensor:
    """[b, vocab] -> [b] token ids: greedy at temperature 0, else top-k / top-p sampling."""
    if cfg.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) > cfg.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=gen)[:, 0]


@dataclass
class RunResult:
    tokens: list[int]
    prefill_s: float
    decode_s: float


def run_generation(runner: Runner, ids: list[int], max_new_tokens: int, sampling: Sampling, *, seed: int = 0,
                   stop_ids: set[int] | None = None) -> RunResult:
    """Prefill `ids`, then decode up to `max_new_tokens` (stops after any of `stop_ids`)."""
    stop_ids = stop_ids or set()
    dev = runner.model.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    runner.reset()
    sync()
    t0 = time.perf_counter()
    logits = runner.prefill(torch.tensor([ids], device=dev))
    tok = sample(logits, sampling, gen)
    sync()
    prefill_s = time.perf_counter() - t0
    out = [int(tok[0])]
    t1 = time.perf_counter()
    while len(out) < max_new_tokens and out[-1] not in stop_ids:
        logits = runner.decode(tok)
        tok = sample(logits, sampling, gen)
        out.append(int(tok[0]))
    sync()
    return RunResult(tokens=out, prefill_s=prefill_s, decode_s=time.perf_counter() - t1)
