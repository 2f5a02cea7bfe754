"""sedpa-tiny's architecture (a Llama config) and export to a Hugging Face model directory."""

from __future__ import annotations

import json
import re
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


_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def count_layers(state: dict[str, torch.Tensor]) -> int:
    """How many decoder layers a state dict holds (its model.layers.<i>. indices)."""
    return len({m.group(1) for m in map(_LAYER.match, state) if m})


def grow_layers(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """A model's weights with `num_layers` decoder layers instead of fewer, computing the same function: each new
    layer is a copy of the layer before it with its attention output (o_proj) and MLP output (down_proj) zeroed, so
    it adds nothing to the residual stream until training moves those weights (a block expansion, as LLaMA Pro
    grows a model). The new layers are spread evenly between the old ones; embeddings, the final norm and the
    head pass through. More layers give the retrieval circuit more steps to match a question it has not seen
    the wording of to the needle."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    rest: dict[str, torch.Tensor] = {}
    for name, w in state.items():
        m = _LAYER.match(name)
        if m:
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = w
        else:
            rest[name] = w
    have = len(layers)
    if num_layers < have:
        raise SedpaError(f"the weights have {have} layers and the recipe {num_layers}: --init-from grows a model, "
                         "it does not drop layers (set num_layers to at least the model's)")
    extra = num_layers - have
    # the k-th new layer goes after old layer round((k+1) * have / (extra+1)) - 1: evenly spread
    after = [max(0, round((k + 1) * have / (extra + 1)) - 1) for k in range(extra)]
    order: list[tuple[int, bool]] = []  # (old layer copied, is new)
    for i in range(have):
        order.append((i, False))
        order += [(i, True)] * after.count(i)
    out = dict(rest)
    for j, (i, new) in enumerate(order):
        for part, w in layers[i].items():
            zero = new and part in ("self_attn.o_proj.weight", "mlp.down_proj.weight")
            out[f"model.layers.{j}.{part}"] = torch.zeros_like(w) if zero else w.clone()
    return out


def narrow_mlp(state: dict[str, torch.Tensor], intermediate_size: int) -> dict[str, torch.Tensor]:
    """A model's weights with `intermediate_size` MLP channels a layer instead of more: each layer keeps the channels
    whose gate, up and down weights have the largest product of norms (the channels that move the residual stream
    most), in their order. Not the same function: a fine-tune recovers what the dropped channels did. With
    `grow_layers` it trades MLP width for depth within the same size budget."""
    out = dict(state)
    for name, gate in state.items():
        if not name.endswith("mlp.gate_proj.weight"):
            continue
        prefix = name[: -len("gate_proj.weight")]
        up, down = state[prefix + "up_proj.weight"], state[prefix + "down_proj.weight"]
        have = gate.shape[0]
        if intermediate_size > have:
            raise SedpaError(f"{name}: {have} MLP channels cannot widen to {intermediate_size}: --init-from only "
                             "narrows the MLP (set intermediate_size to at most the model's)")
        if intermediate_size == have:
            continue
        score = gate.float().norm(dim=1) * up.float().norm(dim=1) * down.float().norm(dim=0)
        keep = score.topk(intermediate_size).indices.sort().values
        out[prefix + "gate_proj.weight"], out[prefix + "up_proj.weight"] = gate[keep].clone(), up[keep].clone()
        out[prefix + "down_proj.weight"] = down[:, keep].clone()
    return out


def widen_mlp(state: dict[str, torch.Tensor], intermediate_size: int, seed: int = 0,
              std: float = 0.02) -> dict[str, torch.Tensor]:
    """A model's weights with `intermediate_size` MLP channels a layer instead of fewer, computing the same function:
    each new channel's gate and up rows are drawn like a fresh layer's (normal, `std`) and its down-projection column
    is zero, so it adds nothing until training moves it (the inverse of `narrow_mlp`; with int8 storage,
    `models.int8`, the budget holds about twice the parameters). Seeded: the same weights grow the same way."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(state)
    for name in sorted(state):
        if not name.endswith("mlp.gate_proj.weight"):
            continue
        prefix = name[: -len("gate_proj.weight")]
        gate, up, down = state[name], state[prefix + "up_proj.weight"], state[prefix + "down_proj.weight"]
        have, hidden = gate.shape
        if intermediate_size < have:
            raise SedpaError(f"{name}: {have} MLP channels cannot widen to {intermediate_size}: pass a larger "
                             "intermediate_size (narrow_mlp narrows)")
        extra = intermediate_size - have
        if not extra:
            continue
        new_rows = [torch.randn(extra, hidden, generator=gen).mul_(std).to(gate.dtype) for _ in range(2)]
        out[name] = torch.cat([gate, new_rows[0]])
        out[prefix + "up_proj.weight"] = torch.cat([up, new_rows[1]])
        out[prefix + "down_proj.weight"] = torch.cat([down, down.new_zeros(down.shape[0], extra)], dim=1)
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
