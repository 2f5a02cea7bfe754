"""Text generation with any attention mode: on CUDA the fast runtime (`runtime/runner.py`: static
caches, chunked prefill, CUDA-graph decode); elsewhere the reference path (transformers' generate
with the mode installed), which defines the same numerics."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from sedpa_compress.errors import SedpaError
from sedpa_compress.models.loader import LoadedModel
from sedpa_compress.runtime.reference import AttentionMode, using_mode


@dataclass
class GenerateConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    runtime: str = "auto"  # auto: the fast runtime on CUDA, the reference path elsewhere | fast | reference
    consume: bool = False  # let the fast runtime free the transformers layers (one generation per load)


@dataclass
class GenerateResult:
    text: str
    prompt_tokens: int
    new_tokens: int
    prefill_s: float
    decode_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s > 0 else float("nan")


def generate_text(loaded: LoadedModel, prompt: str, mode: AttentionMode | None,
                  cfg: GenerateConfig = GenerateConfig()) -> GenerateResult:
    if cfg.max_new_tokens < 1:
        raise SedpaError(f"--max-new-tokens {cfg.max_new_tokens}: pass at least 1")
    if cfg.temperature < 0 or not 0 < cfg.top_p <= 1:
        raise SedpaError("--temperature must be >= 0 and --top-p in (0, 1]")
    ids = loaded.encode(prompt)
    if not ids:
        raise SedpaError("the prompt is empty: pass --prompt TEXT or a non-empty --prompt-file")
    limit = loaded.geometry.max_position_embeddings
    if limit and len(ids) + cfg.max_new_tokens > limit:
        raise SedpaError(f"prompt ({len(ids)} tokens) + --max-new-tokens {cfg.max_new_tokens} exceeds the model's "
                         f"{limit}-token limit: shorten the prompt")
    if cfg.runtime not in ("auto", "fast", "reference"):
        raise SedpaError(f"runtime {cfg.runtime!r}: choose auto, fast or reference")
    if cfg.runtime == "reference" and loaded.kv_dtype == "fp8":
        raise SedpaError("--kv-dtype fp8 caches exist only in the fast runtime: drop --runtime reference")
    if cfg.runtime == "fast" or (cfg.runtime == "auto" and runs_fast(loaded)):
        return _generate_fast(loaded, ids, mode, cfg)
    _bind(mode, loaded)
    input_ids = torch.tensor([ids], device=loaded.device)
    torch.manual_seed(cfg.seed)
    sample = cfg.temperature > 0
    gen_kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=sample, pad_token_id=_pad_id(loaded))
    if sample:
        gen_kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or None)
    model = loaded.model
    clock = _TokenClock()
    with torch.inference_mode(), using_mode(model, mode):
        model(input_ids[:, :1])  # warm the kernels so prefill time is not start-up time
        t1 = time.perf_counter()
        model(input_ids)
        prefill = time.perf_counter() - t1
        out = model.generate(input_ids, stopping_criteria=[clock], **gen_kwargs)
    new = out[0, input_ids.shape[1]:].tolist()
    return GenerateResult(text=loaded.decode(new), prompt_tokens=len(ids), new_tokens=len(new),
                          prefill_s=prefill, decode_s=clock.decode_s(len(new)))


class _TokenClock:
    """A stopping criterion that never stops: it notes when each new token is ready, so the decode time is
    measured between the first and the last token (not estimated as generate's time less a separate
    prefill, which a busy machine can make negative)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def decode_s(self, new_tokens: int) -> float:
        """Seconds per `new_tokens` at the rate of tokens 2..n (0 when fewer than two were timed: no rate)."""
        if len(self.times) < 2 or new_tokens < 2:
            return 0.0
        return (self.times[-1] - self.times[0]) * new_tokens / (len(self.times) - 1)


def runs_fast(loaded: LoadedModel) -> bool:
    """Whether `generate` (runtime auto) and the benchmarks run the fast runtime: on CUDA, and with
    fp8 KV caches, which only it has (its eager path runs on the CPU); elsewhere the reference path,
    the oracle the tests compare the fast runtime with."""
    return loaded.device.type == "cuda" or loaded.kv_dtype == "fp8"


def fast_model(loaded: LoadedModel, spec, *, consume: bool = False):
    """The fast runtime's model of `loaded` for `spec`. Its one owner is the LoadedModel
    (`loaded.fast`): built on first use, reused while the spec is the same, replaced (the old one
    freed first) for another spec, so at most one exists next to the transformers weights. With
    `consume`, the transformers layers are freed as the fast model takes their weights (an 8B model
    then exists once); no other spec can be built afterwards."""
    from sedpa_compress.runtime.model import FastModel

    held = loaded.fast
    if held is not None and held.spec == spec:
        return held
    if loaded.consumed:
        raise SedpaError(f"the model's weights were handed to the fast runtime for --attention {held.spec.mode}: "
                         "load the model again to run another mode")
    loaded.fast = None  # free the previous fast model before building the next
    if held is not None:
        del held
        if loaded.device.type == "cuda":
            torch.cuda.empty_cache()
    loaded.fast = FastModel(loaded, spec, consume=consume)
    loaded.consumed = consume
    return loaded.fast


def _generate_fast(loaded: LoadedModel, ids: list[int], mode: AttentionMode | None,
                   cfg: GenerateConfig) -> GenerateResult:
    from sedpa_compress.models.stop_tokens import model_stop_token_ids
    from sedpa_compress.runtime.runner import Runner, Sampling, run_generation, spec_for_mode

    fast = fast_model(loaded, spec_for_mode(mode, loaded.geometry.num_layers, loaded.kv_dtype), consume=cfg.consume)
    runner = Runner(fast, max_len=len(ids) + cfg.max_new_tokens)
    res = run_generation(runner, ids, cfg.max_new_tokens, Sampling(cfg.temperature, cfg.top_p, cfg.top_k),
                         seed=cfg.seed, stop_ids=set(model_stop_token_ids(loaded)))
    return GenerateResult(text=loaded.decode(res.tokens), prompt_tokens=len(ids), new_tokens=len(res.tokens),
                          prefill_s=res.prefill_s, decode_s=res.decode_s)


def _bind(mode: AttentionMode | None, loaded: LoadedModel) -> None:
    """Modes whose defaults depend on the depth (tidal's re-selection layer) learn it here."""
    if mode is not None and hasattr(mode, "num_layers"):
        mode.num_layers = loaded.geometry.num_layers


def _pad_id(loaded: LoadedModel) -> int:
    tok = loaded.tokenizer
    if tok is not None:
        for attr in ("pad_token_id", "eos_token_id"):
            v = getattr(tok, attr, None)
            if v is not None:
                return v
    return 0
