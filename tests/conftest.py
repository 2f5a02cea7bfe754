"""Shared fixtures: tiny random models of each supported family, saved as Hugging Face directories."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_FAMILIES = ("llama", "llama-mha", "mistral", "qwen2")


def tiny_config(family: str, *, layers: int = 2, vocab: int = 320, max_pos: int = 2048):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=max_pos, rope_theta=10000.0,
                  tie_word_embeddings=False)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "llama-mha":
        return LlamaConfig(**{**common, "num_key_value_heads": 4})
    if family == "mistral":
        return MistralConfig(**{**common, "sliding_window": None})
    if family == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(family)


def build_tiny(family: str, path: Path, *, seed: int = 0, **kw) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **kw))
    with torch.no_grad():  # random init is tiny; scale so activations are not degenerate
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
            elif "bias" in name:
                p.normal_(0, 0.02)
    model.save_pretrained(path)
    return path


def invoke_cli(*args):
    """`sedpa ARGS...` in-process (typer's CliRunner), arguments stringified."""
    from typer.testing import CliRunner

    from sedpa_compress.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(result, text: str) -> None:
    """A one-line refusal: exit 2, `text` in the output (line wrapping ignored), no traceback."""
    assert result.exit_code == 2, result.output
    assert text in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: the test machine's 2 cores are shared, and several threads on tiny
    matmuls only contend (torchrun's workers run so too: OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=TINY_FAMILIES)
def tiny_model_dir(request, tmp_path_factory) -> Path:
    return build_tiny(request.param, tmp_path_factory.mktemp(request.param) / "model")


@pytest.fixture
def tiny_llama_dir(tmp_path_factory) -> Path:
    return build_tiny("llama", tmp_path_factory.mktemp("llama") / "model")


def build_head_dim_128_llama(path: Path) -> Path:
    """A small Llama with the real head_dim (128) and GQA group (4), weights bf16-representable (so an fp32
    reference sees the numbers a bf16 run does), saved to `path`: the GPU tests' model and the logits probe's."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(hidden_size=1024, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=2, head_dim=128, vocab_size=512, max_position_embeddings=8192,
                      rope_theta=500000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn_like(p).mul(0.02).bfloat16().float())
    model.save_pretrained(path)
    return path


def huge_batch_stride(t: torch.Tensor) -> torch.Tensor:
    """`t` [1, h, n, d] as a view whose batch stride is past int32 (2^31 + 128 elements), as a retrieval cache of
    4 heads x 4.2M positions has: no memory beyond `t`'s, since the one batch row never steps over it."""
    return t.as_strided(t.shape, (2**31 + 128, *t.stride()[1:]))


def huge_head_stride(t: torch.Tensor) -> torch.Tensor:
    """`t` [1, h, n, d] copied into a view whose head stride is 2^30 elements, as a cache of 8.4M positions has,
    starting 2^31 elements into a zeroed buffer: heads 2 and up lie 2^31+ elements past the view's start, and an
    offset computed in int32 wraps back into the buffer's zeros instead of faulting (a wrong answer, not a
    crashed CUDA context). Batch stride 2^30 (one batch row: any stride under 2^31 keeps every argument int32).
    4 heads take 5.4G elements: on a GPU only."""
    _, h, n, d = t.shape
    head = 2**30
    buf = torch.zeros(2**31 + (h - 1) * head + n * d, dtype=t.dtype, device=t.device)
    view = buf.as_strided(t.shape, (head, head, d, 1), storage_offset=2**31)
    view.copy_(t)
    return view


def random_pattern(geometry, *, ratio: float = 0.5, seed: int = 0, sink: int = 4, recent: int = 16):
    from sedpa_compress.heads.pattern import HeadPattern

    g = torch.Generator().manual_seed(seed)
    gates = torch.rand(geometry.num_layers, geometry.num_kv_heads, generator=g).tolist()
    return HeadPattern.from_gates(gates, sink=sink, recent=recent, retrieval_ratio=ratio, model="test")


def tiny_llama_with_pattern(tmp: Path) -> Path:
    """A tiny Llama with a 1024-token limit at tmp/model and a random head pattern (sink 4, recent 16)
    at tmp/p.pattern.json, as the benchmark tests run them; returns the model's folder."""
    from sedpa_compress.models import load_model

    model = build_tiny("llama", tmp / "model", max_pos=1024)
    random_pattern(load_model(str(model)).geometry).save(tmp / "p.pattern.json")
    return model


def count_generate_calls(monkeypatch) -> list:
    """Patches `sedpa bench niah`'s greedy decoding to count its calls (one per cell computed, none for a cell read
    back from the cache); returns the list each call appends to."""
    from sedpa_compress.bench import niah as niah_mod

    calls: list = []
    real = niah_mod.greedy_generate

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(niah_mod, "greedy_generate", counting)
    return calls


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on the GPU machine: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
