"""sedpa-tiny's architecture (a Llama config) and export to a Hugging Face model directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sedpa_compress.errors import SedpaError
from sedpa_compress.tiny.config import TinyTrainConfig
from sedpa_compress.tiny.tokenizer import BOS, EOS, PAD


def llama_config(cfg: TinyTrainConfig, tokenizer_vocab: dict[str, int] | None = None):
    from transformers import LlamaConfig

    vocab = tokenizer_vocab or {}
    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_word_embeddings,
        rms_norm_eps=1e-5,
        bos_token_id=vocab.get(BOS, 0),
        eos_token_id=vocab.get(EOS, 1),
        pad_token_id=vocab.get(PAD, 2),
        attention_bias=False,
        mlp_bias=False,
    )
    config._attn_implementation = "sdpa"
    return config


def build_model(cfg: TinyTrainConfig, tokenizer_vocab: dict[str, int] | None = None) -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(llama_config(cfg, tokenizer_vocab))
    return model


def grow_kv_heads(state: dict[str, torch.Tensor], num_kv_heads: int, head_dim: int) -> dict[str, torch.Tensor]:
    """A model's weights with `num_kv_heads` KV heads a layer instead of fewer: each KV head's key and value rows
    repeated for the heads that take its place. Under GQA query head j reads KV head j // (heads / kv_heads), so
    with every old head copied into the new heads of its query group the model computes exactly what it did;
    training then lets the copies part (more KV heads: more context each query group can read apart, and finer
    retrieval/streaming choices for head identification, in the same layers). Other tensors pass through."""
    out = dict(state)
    for name, w in state.items():
        if not (name.endswith("self_attn.k_proj.weight") or name.endswith("self_attn.v_proj.weight")):
            continue
        have = w.shape[0] // head_dim
        if have == num_kv_heads:
            continue
        if w.shape[0] % head_dim or num_kv_heads % have:
            raise SedpaError(f"{name}: {w.shape[0]} rows are not {have} KV heads of {head_dim} that grow evenly "
                             f"into {num_kv_heads}: grow to a multiple of the model's KV heads")
        out[name] = w.view(have, head_dim, -1).repeat_interleave(num_kv_heads // have, dim=0).reshape(-1, w.shape[1])
    return out


def export_hf(model: torch.nn.Module, tokenizer_dir: Path, out_dir: Path, dtype: torch.dtype = torch.bfloat16,
              max_shard_bytes: int | None = None) -> None:
    """Write config.json, generation_config.json, model.safetensors (optionally in shards with an index),
    and the tokenizer files into `out_dir`."""
    from transformers import GenerationConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    config.dtype = dtype
    config.save_pretrained(out_dir)
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id, do_sample=False, max_new_tokens=32).save_pretrained(out_dir)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    write_safetensors(state, out_dir, max_shard_bytes)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out_dir / name).write_bytes((Path(tokenizer_dir) / name).read_bytes())


def write_safetensors(state: dict[str, torch.Tensor], out_dir: Path, max_shard_bytes: int | None) -> None:
    meta = {"format": "pt"}
    total = sum(t.numel() * t.element_size() for t in state.values())
    if not max_shard_bytes or total <= max_shard_bytes:
        save_file(state, str(out_dir / "model.safetensors"), metadata=meta)
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(state):
        nbytes = state[k].numel() * state[k].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = state[k]
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out_dir / name), metadata=meta)
        weight_map.update({k: name for k in shard})
    (out_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")


def merge_shards(model_dir: Path) -> None:
    """Replace model-*-of-*.safetensors + index with one model.safetensors (for the shipped folder)."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if not index.is_file():
        return
    names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    state: dict[str, torch.Tensor] = {}
    for name in names:
        state.update(load_file(str(model_dir / name)))
    save_file(state, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    for name in names:
        (model_dir / name).unlink()
    index.unlink()
