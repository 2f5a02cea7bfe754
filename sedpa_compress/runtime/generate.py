"""Text generation with any attention mode (reference path: transformers' generate with the mode installed)."""

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
    input_ids = torch.tensor([ids], device=loaded.device)
    torch.manual_seed(cfg.seed)
    sample = cfg.temperature > 0
    gen_kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=sample, pad_token_id=_pad_id(loaded))
    if sample:
        gen_kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or None)
    model = loaded.model
    with torch.inference_mode(), using_mode(model, mode):
        t0 = time.perf_counter()
        model(input_ids[:, :1])  # warm the kernels so prefill time is not start-up time
        t1 = time.perf_counter()
        model(input_ids)
        prefill = time.perf_counter() - t1
        t2 = time.perf_counter()
        out = model.generate(input_ids, **gen_kwargs)
        total = time.perf_counter() - t2
    del t0
    new = out[0, input_ids.shape[1]:].tolist()
    return GenerateResult(text=loaded.decode(new), prompt_tokens=len(ids), new_tokens=len(new),
                          prefill_s=prefill, decode_s=max(total - prefill, 1e-9))


def _pad_id(loaded: LoadedModel) -> int:
    tok = loaded.tokenizer
    if tok is not None:
        for attr in ("pad_token_id", "eos_token_id"):
            v = getattr(tok, attr, None)
            if v is not None:
                return v
    return 0
