"""The fast runtime's transformer: a compact Llama/Mistral/Qwen2 decoder that takes its weights from
a `LoadedModel` and runs one `--attention` mode with static caches (after gpt-fast's model.py).

At build time each layer's KV heads are reordered so that heads sharing a cache kind are
contiguous (retrieval heads first, then streaming heads): every path is then one batched
operation over a slice, and the low-rank streaming projections are one down-GEMM for q/k/v plus
their up-GEMMs. q/k/v rows, their biases and o_proj's input columns follow the reorder, so the
layer computes the same function as the original.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models.loader import LoadedModel
from sedpa_compress.runtime import kernels
from sedpa_compress.runtime.fallback import FirstCallFallback
from sedpa_compress.runtime.cache import (HeadGroup, LayerCache, append_kv, check_kv_dtype, ring_positions, ring_slot,
                                          ring_write_plan)
from sedpa_compress.runtime.modes.table import DEFAULTS, PATTERN_MODES, check_mode
from sedpa_compress.runtime.modes.tidal import tidal_selection_layers


LOWRANK_POLICIES = ("auto", "factored", "dense")
# What one extra kernel costs a batch-1 decode step, in bytes of HBM traffic it could have streamed
# instead: ~4 us at ~4 TB/s. Measured in an early `sedpa bench efficiency` run, before the fused kernels: sedpa-w at
# rank ratio 0.85 decoded ~0.9 ms slower than duo at 8K with about eight more kernels per layer x 32
# layers (~3.5 us each), while its factors saved ~1% of the bytes.
KERNEL_COST_BYTES = 16 << 20
EXTRA_KERNELS_PER_FACTORED_PROJECTION = 2  # the up GEMM and the concatenation (q/k/v) or second GEMM (o)


@dataclass
class RuntimeSpec:
    """Which attention the runtime runs, with every setting it needs."""

    mode: str = "full"
    pattern: HeadPattern | None = None
    sink: int = DEFAULTS.sink
    recent: int = DEFAULTS.recent
    window: int | None = None  # sedpa-w: retrieval heads see sink + last `window` tokens
    top_k: int = DEFAULTS.top_k  # tidal: positions kept per KV head by the token-selection layers
    dense_layers: int = DEFAULTS.dense_layers  # tidal: the first layers run full attention
    selection_layers: tuple[int, ...] | None = None  # tidal: None = (dense_layers, round(13/32 * L))
    # sedpa modes: where streaming heads run their low-rank factors. "auto": only where the factors save
    # more bytes per decode step than their extra kernels cost (elsewhere the factors are multiplied back
    # into dense rows at build time); "factored": always; "dense": never.
    lowrank: str = "auto"
    kv_dtype: str = "bf16"  # the caches: "bf16" (the compute dtype) or "fp8" (e4m3, a scale per token and head)

    def check(self, num_layers: int) -> None:
        check_mode(self.mode)
        if self.lowrank not in LOWRANK_POLICIES:
            raise SedpaError(f"low-rank policy {self.lowrank!r}: choose one of {', '.join(LOWRANK_POLICIES)}")
        check_kv_dtype(self.kv_dtype)
        if self.sink < 0 or self.recent < 1:
            raise SedpaError(f"--sink {self.sink} / --recent {self.recent}: need sink >= 0 and recent >= 1")
        if self.mode in PATTERN_MODES and self.pattern is None:
            raise SedpaError(f"--attention {self.mode} needs a head pattern: pass --pattern P.pattern.json "
                             "or an artifact that carries one")
        if self.mode == "sedpa-w":
            if self.window is None:
                raise SedpaError("--attention sedpa-w needs --window W (e.g. 8192)")
            if self.window < self.recent:
                raise SedpaError(f"--window {self.window} is smaller than --recent {self.recent}: "
                                 "the window must cover the recent tokens")
        if self.mode == "tidal":
            if self.top_k < 1:
                raise SedpaError(f"--top-k {self.top_k}: pass at least 1")
            bad = [s for s in self.tidal_selection_layers(num_layers) if not 0 <= s < num_layers]
            if bad or self.dense_layers > num_layers:
                raise SedpaError(f"tidal layers {bad or self.dense_layers} outside the model's {num_layers} layers")

    def tidal_selection_layers(self, num_layers: int) -> tuple[int, ...]:
        return tidal_selection_layers(num_layers, self.dense_layers, self.selection_layers)

    def groups(self, layer: int, num_kv_heads: int) -> list[HeadGroup]:
        """This layer's head groups in reordered order (retrieval first)."""
        all_heads = tuple(range(num_kv_heads))
        if self.mode in ("full", "tidal"):
            return [HeadGroup("full", all_heads)]
        if self.mode == "streaming":
            return [HeadGroup("ring", all_heads, self.recent)]
        mask = self.pattern.mask[layer]
        retr = tuple(h for h in all_heads if mask[h])
        stream = tuple(h for h in all_heads if not mask[h])
        out = []
        if retr:
            out.append(HeadGroup("ring", retr, self.window) if self.mode == "sedpa-w" else HeadGroup("full", retr))
        if stream:
            out.append(HeadGroup("ring", stream, self.recent))
        return out


# --------------------------------------------------------------------------- weights

def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _add_rms_norm(x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor, eps: float):
    """Residual add and the next norm in one pass: (x + delta, norm(x + delta))."""
    x = x + delta
    return x, _rms_norm(x, w, eps)


def _add2_rms_norm(x: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor, w: torch.Tensor, eps: float):
    """The same with two deltas (o_proj's dense and low-rank parts): one kernel, not an extra add."""
    x = x + d1 + d2
    return x, _rms_norm(x, w, eps)


def _rope_qk(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """One decode token's RoPE: q [b, 1, hq, d], k [b, 1, hkv, d] -> [b, hq, d], [b, hkv, d]."""
    return (q * cos + _rotate_half(q) * sin)[:, 0], (k * cos + _rotate_half(k) * sin)[:, 0]


def _rope_append(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 slots: list[torch.Tensor], k_caches: list[torch.Tensor], v_caches: list[torch.Tensor],
                 k_scales: list[torch.Tensor | None], v_scales: list[torch.Tensor | None],
                 sizes: tuple[int, ...]) -> torch.Tensor:
    """One decode token's RoPE, and its K/V written into every head group's cache at that group's
    slot (fp8 caches: quantized on the way). One function so that the decode step compiles it into a
    kernel or two (FastModel.enable_fusion) instead of RoPE plus two copies (or a dozen quantizing ops)
    per group. q [b, 1, hq, d], k/v [b, 1, hkv, d] -> q [b, hq, d]."""
    q, k = _rope_qk(q, k, cos, sin)
    v = v[:, 0]
    h0 = 0
    for i, n in enumerate(sizes):
        append_kv(k_caches[i], v_caches[i], k_scales[i], v_scales[i], slots[i], k[:, h0:h0 + n, None],
                  v[:, h0:h0 + n, None])
        h0 += n
    return q


def _rope_append_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                        slots: list[torch.Tensor], k_caches: list[torch.Tensor], v_caches: list[torch.Tensor],
                        k_scales: list[torch.Tensor | None], v_scales: list[torch.Tensor | None],
                        sizes: tuple[int, ...]) -> torch.Tensor:
    """`_rope_append` as one Triton launch (at most two head groups; fp8 caches quantized on the way)."""
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    return kernels.rope_append(q, k, v, cos, sin, slots, k_caches, v_caches, k_scales, v_scales)


def _rope_prefill(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """A chunk's RoPE: q [b, t, hq, d], k [b, t, hkv, d], cos/sin [1, t, 1, d]."""
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


# The prefill's own entry points to the glue: torch.compile caches compiled code on a function's code object,
# so the decode step's static-shape compilations (_rms_norm, ...) and the prefill's dynamic ones must not share one.
def _prefill_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return _rms_norm(x, w, eps)


def _prefill_add_norm(x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor, eps: float):
    return _add_rms_norm(x, delta, w, eps)


def _prefill_silu_mul(gate_up: torch.Tensor, interleaved: bool = False) -> torch.Tensor:
    return _silu_mul(gate_up, interleaved)


def _silu_mul(gate_up: torch.Tensor, interleaved: bool = False) -> torch.Tensor:
    """silu(gate) * up for gate_up's output: [gate; up] in halves, or `interleaved` (gate_0, up_0, gate_1, ...:
    kernels.GATE_UP_INTERLEAVED)."""
    gate, up = gate_up.unflatten(-1, (-1, 2)).unbind(-1) if interleaved else gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


@dataclass
class LowRank:
    """Streaming heads' q/k/v rows as factors: z = down @ x for the factored parts at once, then per
    part up @ z. A part the weights keep dense (a slice at break-even stays dense) has no up (None)."""

    down: torch.Tensor  # [rq + rk + rv, hidden] (the factored parts' ranks only)
    ups: list[torch.Tensor | None]  # q, k, v: [rows, r] or None

    @property
    def ranks(self) -> list[int]:
        return [u.shape[1] for u in self.ups if u is not None]


class FastLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.groups: list[HeadGroup] = []
        # per projection (q, k, v, o): how many KV heads (reordered, leading) run dense; the rest low-rank
        self.n_dense: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.qkv_in: torch.Tensor | None = None  # [q_dense; k_dense; v_dense; low-rank down]: one GEMM
        self.qkv_dense: torch.Tensor | None = None  # view: rows [q_dense, k_dense, v_dense]
        self.qkv_bias: torch.Tensor | None = None  # [q_all, k_all, v_all] reordered
        self.lowrank: LowRank | None = None
        self.o_dense: torch.Tensor | None = None  # [hidden, n_dense*G*D]
        self.o_down: torch.Tensor | None = None  # [r, n_low*G*D]
        self.o_up: torch.Tensor | None = None  # [hidden, r]
        self.gate_up: torch.Tensor | None = None
        self.down: torch.Tensor | None = None
        self.attn_norm: torch.Tensor | None = None
        self.mlp_norm: torch.Tensor | None = None
        self.norms_folded = False  # kernels.FOLD_NORM_WEIGHTS: the norms' weights are in qkv_in / gate_up (ones here)
        self.gate_up_interleaved = False  # kernels.GATE_UP_INTERLEAVED: gate_up's rows gate_0, up_0, gate_1, ...

    def weight_tensors(self) -> list[torch.Tensor]:
        ts = [self.qkv_dense, self.qkv_bias, self.o_dense, self.o_down, self.o_up, self.gate_up, self.down,
              self.attn_norm, self.mlp_norm]
        if self.lowrank is not None:
            ts += [self.lowrank.down, *self.lowrank.ups]
        return [t for t in ts if t is not None]

    @property
    def has_lowrank(self) -> bool:
        return self.lowrank is not None or self.o_down is not None


class FastModel(nn.Module):
    """Weights + geometry + the per-layer head groups of one mode; caches live in `Caches`."""

    def __init__(self, loaded: LoadedModel, spec: RuntimeSpec, *, consume: bool = False,
                 synthetic_rank_ratio: float | None = None, seed: int = 0) -> None:
        super().__init__()
        geo = loaded.geometry
        spec.check(geo.num_layers)
        if spec.pattern is not None:
            spec.pattern.validate_for(geo)
        hf = loaded.model
        cfg = hf.config
        self.spec = spec
        self.geometry = geo
        self.num_layers, self.hq, self.hkv, self.d = geo.num_layers, geo.num_heads, geo.num_kv_heads, geo.head_dim
        self.group = geo.group_size
        self.hidden = geo.hidden_size
        self.eps = float(getattr(cfg, "rms_norm_eps", 1e-6))
        self.scale = self.d ** -0.5
        self.vocab = cfg.vocab_size
        self.name = loaded.name
        rot = hf.model.rotary_emb
        self.register_buffer("inv_freq", rot.inv_freq.detach().float().clone(), persistent=False)
        self.rope_scaling = float(getattr(rot, "attention_scaling", 1.0))
        self.embed = hf.model.embed_tokens.weight.detach()
        self.final_norm = hf.model.norm.weight.detach()
        self.lm_head = hf.lm_head.weight.detach()
        self.tidal_select = set(spec.tidal_selection_layers(self.num_layers)) if spec.mode == "tidal" else set()
        self.tidal_first = min(self.tidal_select) if self.tidal_select else self.num_layers
        # synthetic factors are drawn where the weights live: 8B-sized factor sets are slow on a CPU
        gen = torch.Generator(device=self.embed.device).manual_seed(seed)
        self._fused = False
        self._norm, self._add_norm, self._silu_mul = _rms_norm, _add_rms_norm, _silu_mul
        self._add2_norm = _add2_rms_norm
        self._rope_append = _rope_append  # RoPE + the caches' writes of a decode step (compiled on CUDA)
        self._tidal_scores = _tidal_scores  # a selection layer's scores (compiled on CUDA)
        self._linear = F.linear  # the attention projections (one token on CUDA: kernels.decode_linear)
        # a prefill chunk's glue, compiled for any chunk length on CUDA (enable_fusion)
        self._p_norm, self._p_add_norm = _prefill_norm, _prefill_add_norm
        self._p_rope, self._p_silu_mul = _rope_prefill, _prefill_silu_mul
        self.layers: list[FastLayer] = []
        self.notes: list[str] = []  # what the build had to decide (printed by the commands)
        self.bench_runner = None  # the benchmarks' reusable Runner for this model (bench.common._bench_runner)
        hf_layers = loaded.family.layers(hf)
        self._lowrank_dense = self._lowrank_total = 0  # projections with factors, and those run dense
        for i in range(self.num_layers):
            groups, low_heads = self._layer_plan(i, hf_layers[i], synthetic_rank_ratio)
            self.layers.append(self._build_layer(hf_layers[i], groups, low_heads, synthetic_rank_ratio, gen))
            if consume:  # free the transformers copy as we go: an 8B model must not exist twice
                hf_layers[i] = nn.Identity()
        self.tied = self.lm_head.data_ptr() == self.embed.data_ptr()
        if self._lowrank_dense:
            why = ("--lowrank dense" if spec.lowrank == "dense" else
                   "their factors would save less bandwidth per decode step than their extra kernels cost")
            self.notes.append(f"{self._lowrank_dense} of {self._lowrank_total} low-rank projections run as dense rows "
                              f"(the factors multiplied back): {why}; `lowrank='factored'` keeps them factored")

    def _layer_plan(self, layer: int, hf_layer: nn.Module,
                    rank_ratio: float | None) -> tuple[list[HeadGroup], tuple[int, int, int, int]]:
        """This layer's head groups, and per projection (q, k, v, o) how many trailing heads run
        low-rank. In sedpa modes those are the streaming heads the weights factored (compression
        factors each projection's streaming rows or columns as one slice, and keeps a slice dense when
        factoring would not save parameters, so q may be factored where k is not), or every streaming
        head with synthetic factors (`rank_ratio`, timing runs). A streaming head without factors runs
        its dense rows, said in `notes` (an exact identity factorisation would read more bytes)."""
        groups = self.spec.groups(layer, self.hkv)
        none = (0, 0, 0, 0)
        if self.spec.mode not in ("sedpa-s", "sedpa-w") or not groups or groups[-1].kind != "ring":
            return groups, none
        stream = groups[-1]
        if rank_ratio is not None:
            return groups, self._lowrank_policy(layer, hf_layer, (stream.size,) * 4, rank_ratio)
        factored = _factored_heads(hf_layer.self_attn, self.hkv, self.group, self.d)
        anywhere = set().union(*factored)
        low = tuple(h for h in stream.heads if h in anywhere)
        dense = tuple(h for h in stream.heads if h not in anywhere)
        if dense:
            self.notes.append(f"layer {layer}: streaming KV head(s) {list(dense)} have no low-rank factors in these "
                              "weights (a pattern other than the one they were compressed with): they run dense")
        per_proj = tuple(len(low) if set(low) <= f else 0 for f in factored)
        partial = [n for n, f, k in zip("qkvo", factored, per_proj) if not k and f & set(low)]
        if partial:
            self.notes.append(f"layer {layer}: {','.join(partial)}_proj factors only some of the low-rank heads "
                              "(another pattern than the weights'): that projection runs dense")
        groups = groups[:-1] + [HeadGroup(stream.kind, dense + low, stream.band)]  # low-rank heads last
        return groups, self._lowrank_policy(layer, hf_layer, per_proj, None)

    def _lowrank_policy(self, layer: int, hf_layer: nn.Module, n_low: tuple[int, ...],
                        rank_ratio: float | None) -> tuple[int, int, int, int]:
        """`n_low` with the projections whose factors do not pay set to 0 (they then run dense rows, the
        factors multiplied back). A factored projection reads (rows + cols) x rank values instead of
        rows x cols, and costs two more kernels per step; at batch 1 a kernel costs about
        KERNEL_COST_BYTES of streaming, so factors pay only where they save more than that."""
        policy = self.spec.lowrank
        if policy == "factored" or not any(n_low):
            return tuple(n_low)
        if policy == "dense":
            out = (0, 0, 0, 0)
        else:
            attn = hf_layer.self_attn
            widths = (self.group * self.d, self.d, self.d, self.group * self.d)
            out = []
            for name, width, n in zip(("q_proj", "k_proj", "v_proj", "o_proj"), widths, n_low):
                if not n:
                    out.append(0)
                    continue
                proj = getattr(attn, name)
                rows = n * width  # the factored slice: rows of q/k/v, input columns of o
                rank = proj.down.shape[0] if _is_dual(proj) else synthetic_rank(rows, self.hidden, rank_ratio or 1.0)
                saved = (rows * self.hidden - (rows + self.hidden) * rank) * self.embed.element_size()
                pays = saved > EXTRA_KERNELS_PER_FACTORED_PROJECTION * KERNEL_COST_BYTES
                out.append(n if pays else 0)
            out = tuple(out)
        self._lowrank_dense += sum(1 for a, b in zip(n_low, out) if a and not b)
        self._lowrank_total += sum(1 for a in n_low if a)
        return out

    # ---- building one layer
    def _build_layer(self, hf_layer: nn.Module, groups: list[HeadGroup], n_low: tuple[int, int, int, int],
                     rank_ratio: float | None, gen: torch.Generator) -> FastLayer:
        attn, mlp = hf_layer.self_attn, hf_layer.mlp
        d, g = self.d, self.group
        order = [h for grp in groups for h in grp.heads]
        q_rows = torch.tensor([h * g * d + j for h in order for j in range(g * d)])
        kv_rows = torch.tensor([h * d + j for h in order for j in range(d)])
        layer = FastLayer()
        layer.groups = groups
        layer.n_dense = tuple(self.hkv - n for n in n_low)
        projs = (attn.q_proj, attn.k_proj, attn.v_proj)
        rows = (q_rows, kv_rows, kv_rows)
        widths = (g * d, d, d)
        dense_parts, low_parts = [], []
        for proj, r, w, n_d in zip(projs, rows, widths, layer.n_dense):
            dense_parts.append(_rows_of(proj, r[:n_d * w]))
            low_parts.append(_lowrank_rows(proj, r[n_d * w:], rank_ratio, gen) if n_d < self.hkv else None)
        downs = [p[0] for p in low_parts if p is not None]
        # the dense rows and the low-rank down factors read the same input: one GEMM for both
        layer.qkv_in = torch.cat(dense_parts + downs, 0).contiguous()
        n_rows = sum(t.shape[0] for t in dense_parts)
        layer.qkv_dense = layer.qkv_in[:n_rows]
        if downs:
            layer.lowrank = LowRank(down=layer.qkv_in[n_rows:],
                                    ups=[p[1].contiguous() if p is not None else None for p in low_parts])
        biases = [_bias_of(p, r) for p, r in zip(projs, rows)]
        if all(b is not None for b in biases):
            layer.qkv_bias = torch.cat(biases).contiguous()
        o = attn.o_proj
        no_d = layer.n_dense[3] * g * d
        layer.o_dense = _cols_of(o, q_rows[:no_d]).contiguous()
        if layer.n_dense[3] < self.hkv:
            layer.o_down, layer.o_up = _lowrank_cols(o, q_rows[no_d:], rank_ratio, gen)
        if getattr(o, "bias", None) is not None:
            raise SedpaError("o_proj with a bias is not supported by the fast runtime")
        gate, up = mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach()
        layer.gate_up_interleaved = kernels.GATE_UP_INTERLEAVED
        # [gate; up], or row by row (gate_i, up_i) so that the SwiGLU-epilogue GEMV reads one tile a program
        layer.gate_up = (torch.stack([gate, up], 1).flatten(0, 1) if layer.gate_up_interleaved
                         else torch.cat([gate, up], 0)).contiguous()
        layer.down = mlp.down_proj.weight.detach()
        layer.attn_norm = hf_layer.input_layernorm.weight.detach()
        layer.mlp_norm = hf_layer.post_attention_layernorm.weight.detach()
        if kernels.FOLD_NORM_WEIGHTS:  # W diag(w): qkv_in and gate_up are this layer's own copies (cat)
            layer.qkv_in.mul_(layer.attn_norm)  # qkv_dense and the low-rank down factors are views of it
            layer.gate_up.mul_(layer.mlp_norm)
            layer.attn_norm, layer.mlp_norm = torch.ones_like(layer.attn_norm), torch.ones_like(layer.mlp_norm)
            layer.norms_folded = True
        return layer

    # ---- sizes
    def weight_bytes(self) -> int:
        seen, total = set(), 0
        for t in [self.embed, self.final_norm, self.lm_head] + [w for l in self.layers for w in l.weight_tensors()]:
            key = (t.data_ptr(), tuple(t.shape))  # tied embeddings count once; views of qkv_in each once
            if key in seen:
                continue
            seen.add(key)
            total += t.numel() * t.element_size()
        return total

    def bytes_read_per_token(self) -> int:
        """Weights a decode step streams: everything but the embedding table (one row of it)."""
        emb = self.embed.numel() * self.embed.element_size()
        return self.weight_bytes() - (0 if self.tied else emb)

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def _flex_prefill(self) -> bool:
        return self.device.type == "cuda" and self.dtype in (torch.float16, torch.bfloat16) and kernels.USE_FLEX

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    # ---- math shared by prefill and decode
    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return ((emb.cos() * self.rope_scaling).to(self.dtype), (emb.sin() * self.rope_scaling).to(self.dtype))

    def qkv(self, layer: FastLayer, h: torch.Tensor | None, x: torch.Tensor | None = None,
            ss: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h [b, t, hidden] -> q [b, t, hq, d], k/v [b, t, hkv, d] in reordered head order. With h None (one
        decode token, kernels.FUSED_GLUE): the residual stream x and its sum of squares `ss`, the attention norm
        applied inside the projection's GEMV."""
        if h is None:
            b, t = x.shape[:2]
            y = kernels.gemv_fused(x, layer.qkv_in, norm_weight=None if layer.norms_folded else layer.attn_norm,
                                   norm_ss=ss, eps=self.eps,
                                   **kernels.gemv_norm_launch()).view(b, t, -1)
        else:
            b, t = h.shape[:2]
            y = self._linear(h, layer.qkv_in)
        d, g = self.d, self.group
        nq, nk, nv, _ = layer.n_dense
        n_rows = layer.qkv_dense.shape[0]
        q, k, v = y[..., :n_rows].split([nq * g * d, nk * d, nv * d], dim=-1)
        if layer.lowrank is not None:
            lr = layer.lowrank
            z = iter(y[..., n_rows:].split(lr.ranks, dim=-1))
            parts = [x if up is None else torch.cat([x, F.linear(next(z), up)], -1) for x, up in zip((q, k, v), lr.ups)]
            q, k, v = parts
        if layer.qkv_bias is not None:
            bq, bk, bv = layer.qkv_bias.split([self.hq * d, self.hkv * d, self.hkv * d])
            q, k, v = q + bq, k + bk, v + bv
        return q.view(b, t, self.hq, d), k.view(b, t, self.hkv, d), v.reshape(b, t, self.hkv, d)

    def out_proj(self, layer: FastLayer, a: torch.Tensor) -> torch.Tensor:
        """a [b, t, hq*d] (reordered heads) -> [b, t, hidden]."""
        parts = self.out_parts(layer, a)
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def out_parts(self, layer: FastLayer, a: torch.Tensor) -> list[torch.Tensor]:
        """o_proj's contributions: the dense columns' and/or the low-rank columns' (summed by the caller)."""
        if layer.o_down is None:
            return [self._linear(a, layer.o_dense)]
        n = layer.n_dense[3] * self.group * self.d
        low = F.linear(F.linear(a[..., n:], layer.o_down), layer.o_up)
        return [low] if n == 0 else [self._linear(a[..., :n], layer.o_dense), low]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(_rms_norm(x, self.final_norm, self.eps), self.lm_head)

    # ---- prefill of one chunk (eager; host knows the positions)
    def prefill_chunk(self, ids: torch.Tensor, start: int, caches: list[LayerCache],
                      pad_to: int | None = None, keep_all: bool = False) -> torch.Tensor:
        """ids [b, t] at positions [start, start+t): fills the caches, returns the last token's hidden
        state [b, 1, hidden] (every token's with `keep_all`; before the final norm).
        `pad_to`: ring heads' FlexAttention runs on chunks padded to this many queries (the runner's
        chunk), so every chunk of a prompt has one shape per band and the kernel compiles once."""
        b, t = ids.shape
        end = start + t
        dev = ids.device
        pos = torch.arange(start, end, device=dev)
        pad = max(0, (pad_to or t) - t) if self._flex_prefill else 0
        pos_padded = F.pad(pos, (0, pad), value=-1) if pad else pos
        cos, sin = self.rope(pos)
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
        ring_pos: dict[int, torch.Tensor] = {}
        plans: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        masks: dict[int, object] = {}
        x = F.embedding(ids, self.embed)
        h = self._p_norm(x, self.layers[0].attn_norm, self.eps)
        for li, (layer, cache) in enumerate(zip(self.layers, caches)):
            q, k, v = self.qkv(layer, h)
            q, k = self._p_rope(q, k, cos, sin)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [b, h, t, d]
            outs, h0 = [], 0
            for gi, grp in enumerate(layer.groups):
                h1 = h0 + grp.size
                qg = q[:, h0 * self.group:h1 * self.group]
                kg, vg = k[:, h0:h1], v[:, h0:h1]
                ck = cache.k[gi]
                if grp.kind == "full":
                    cache.write_span(gi, start, end, kg, vg)
                    if cache.quantized:  # dequantized a block of the past at a time, never all of it
                        outs.append(kernels.causal_chunk_attention_read(
                            qg, lambda s0, s1, gi=gi, cache=cache: cache.read_span(gi, s0, s1), start, self.group,
                            self.scale))
                    else:
                        past_k, past_v = cache.read(gi, end)
                        outs.append(kernels.causal_chunk_attention(qg, past_k, past_v, start, self.scale))
                else:
                    band = grp.band
                    if band not in ring_pos:  # per chunk and band, shared by every layer
                        ring_pos[band] = torch.cat([ring_positions(start, cache.sink, band)[:ck.shape[2]],
                                                    torch.arange(start, end), torch.full((pad,), -1)]).to(dev)
                        offs, slots = ring_write_plan(start, end, cache.sink, band)
                        plans[band] = (offs.to(dev), slots.to(dev))
                        if self._flex_prefill:
                            masks[band] = kernels.band_block_mask(pos_padded, ring_pos[band], cache.sink, band)
                    ring_k, ring_v = cache.read(gi)
                    keys = torch.cat([ring_k, kg], 2)
                    vals = torch.cat([ring_v, vg], 2)
                    outs.append(kernels.band_chunk_attention(qg, keys, vals, pos_padded, ring_pos[band], cache.sink,
                                                             band, self.scale, block_mask=masks.get(band)))
                    offs, slots = plans[band]
                    cache.write(gi, slots, kg.index_select(2, offs), vg.index_select(2, offs))
                h0 = h1
            if len(outs) > 1:
                # each group's heads copied once into the [b, t, heads, d] layout o_proj reads (a cat and then a
                # transpose copied them twice)
                a = torch.empty(b, t, self.hq, self.d, dtype=outs[0].dtype, device=dev)
                h0 = 0
                for o in outs:
                    a[:, :, h0:h0 + o.shape[1]].copy_(o.transpose(1, 2))
                    h0 += o.shape[1]
                a = a.view(b, t, self.hq * self.d)
            else:  # a view where attention left its output in the queries' [b, t, h, d] layout (cuDNN does)
                a = outs[0].transpose(1, 2).reshape(b, t, self.hq * self.d)
            x, h = self._p_add_norm(x, self.out_proj(layer, a), layer.mlp_norm, self.eps)
            m = F.linear(self._p_silu_mul(F.linear(h, layer.gate_up), layer.gate_up_interleaved), layer.down)
            if li + 1 < self.num_layers:  # the residual add and the next layer's norm in one pass
                x, h = self._p_add_norm(x, m, self.layers[li + 1].attn_norm, self.eps)
            else:
                x = x + m
        return x if keep_all else x[:, -1:]

    # ---- one decode step (graph-capturable: no host syncs, positions on the device)
    def enable_fusion(self) -> None:
        """Compile the decode step's pointwise glue (norms, residual adds, SwiGLU, and RoPE with the
        caches' writes, fp8 quantization included) into single kernels. At batch 1 a step is ~1000 tiny
        kernels otherwise, and their launch gaps, not the bytes, would dominate. Attention stays the split-K
        kernel; RoPE and the caches' writes are one Triton launch (`kernels.rope_append`, fp8 caches quantized
        in it), where the compiled function ran one kernel per cache written and more to quantize. One token's
        qkv and o projections take a Triton GEMV (`kernels.decode_linear`), the MLP's GEMMs stay cuBLAS. A
        prefill chunk's glue (norms, residual adds, RoPE, SwiGLU) is compiled too, once for any chunk length."""
        if self.device.type != "cuda" or self._fused:
            return
        opts = dict(dynamic=False, fullgraph=True)
        self._norm = torch.compile(_rms_norm, **opts)
        self._add_norm = torch.compile(_add_rms_norm, **opts)
        self._add2_norm = torch.compile(_add2_rms_norm, **opts)
        # one compiled graph per distinct head split of a layer (uneven retrieval heads per layer give up to
        # num_kv_heads + 1 of them): room for them all rather than the default eight
        import torch._dynamo.config as dynamo_config

        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo_config, name):
                setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64))
        self._silu_mul = torch.compile(_silu_mul, **opts)
        self._rope_append = FirstCallFallback(torch.compile(_rope_append, **opts), _rope_append, self.notes,
                                               "RoPE + cache writes")
        if kernels.rope_append_fits(self.d, max(len(layer.groups) for layer in self.layers)):
            # one launch a layer instead of the compiled function's ~6 (more with fp8 quantization); should this
            # Triton build refuse it, the compiled function takes over
            self._rope_append = FirstCallFallback(_rope_append_kernel, self._rope_append, self.notes,
                                                   "RoPE + cache writes", instead="by the compiled function",
                                                   failed="the one-launch Triton kernel")
        # one decode token's qkv and o projections: a one-pass Triton GEMV, no cuBLAS split-K reduce
        self._linear = kernels.decode_linear if kernels.HAS_TRITON else F.linear
        self.compile_prefill_glue()
        if self.spec.mode == "tidal":
            self._tidal_scores = FirstCallFallback(torch.compile(_tidal_scores, **opts), _tidal_scores, self.notes,
                                                    "TidalDecode selection scores")
        self._fused = True

    def compile_prefill_glue(self) -> None:
        """A prefill chunk's norms, residual adds, RoPE and SwiGLU as one compiled kernel each instead of ~6 eager
        passes over [t, hidden] (the norm's fp32 copies) or [t, heads, d] (bench/results/prefill_profile_duo_128k_h200.txt:
        ~100 ms of a 725 ms chunk were elementwise kernels). `dynamic`: one compile serves every chunk length."""
        dyn = dict(dynamic=True, fullgraph=True)
        for name, fn, what in (("_p_norm", _prefill_norm, "prefill RMSNorm"), ("_p_add_norm", _prefill_add_norm,
                               "prefill residual add + RMSNorm"), ("_p_rope", _rope_prefill, "prefill RoPE"),
                               ("_p_silu_mul", _prefill_silu_mul, "prefill SwiGLU")):
            setattr(self, name, FirstCallFallback(torch.compile(fn, **dyn), fn, self.notes, what))

    def decode_step(self, token: torch.Tensor, pos: torch.Tensor, caches: list[LayerCache],
                    state: DecodeState) -> torch.Tensor:
        """token [b] at position `pos` ([1] int64 on the device) -> logits [b, vocab] (fp32)."""
        b = token.shape[0]
        d, g = self.d, self.group
        cos, sin = self.rope(pos)
        x = F.embedding(token[:, None], self.embed)  # [b, 1, hidden]
        length = pos + 1
        rings: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # band -> (slot, valid count)
        h = self._norm(x, self.layers[0].attn_norm, self.eps)
        glue = state.glue_ss if self._fused and kernels.FUSED_GLUE and b == 1 else None
        if glue is not None:
            glue.zero_()  # the sums of squares the projections add into this step
        ss = None  # the residual stream's sum of squares, when the last layer's down GEMV left h to the next qkv
        for li, (layer, cache) in enumerate(zip(self.layers, caches)):
            q, k, v = self.qkv(layer, h, x, ss)
            slots = []
            for gi, grp in enumerate(layer.groups):
                if grp.kind == "full":
                    slots.append(pos)
                    continue
                if grp.band not in rings:
                    rings[grp.band] = (ring_slot(pos, cache.sink, grp.band),
                                       torch.clamp(length, max=cache.k[gi].shape[2]))
                slots.append(rings[grp.band][0])
            q = self._rope_append(q, k, v, cos, sin, slots, cache.k, cache.v, cache.k_scale, cache.v_scale,
                                  tuple(grp.size for grp in layer.groups))  # [b, hq, d]
            qg = q.view(b, self.hkv, g, d)
            out = state.attn_out  # [b, hkv, g, d]
            lengths = [length if grp.kind == "full" else rings[grp.band][1] for grp in layer.groups]
            if _one_launch(self.spec, layer):  # both groups in one launch pair
                kernels.decode_attention_groups(
                    qg, [(cache.k[gi], cache.v[gi], lengths[gi], *cache.scales(gi)) for gi in range(2)], self.scale,
                    workspace=state.workspaces[(li, "layer")], out=out)
            else:
                h0 = 0
                for gi, grp in enumerate(layer.groups):
                    h1 = h0 + grp.size
                    ck, cv = cache.k[gi], cache.v[gi]
                    ks, vs = cache.scales(gi)  # fp8 caches: the kernel dequantizes as it reads
                    ws = state.workspaces[(li, gi)]
                    if grp.kind == "full":
                        self._full_decode(li, qg[:, h0:h1], ck, cv, length, ws, out[:, h0:h1], state, ks, vs)
                    else:
                        kernels.decode_attention(qg[:, h0:h1], ck, cv, lengths[gi], self.scale, workspace=ws,
                                                 out=out[:, h0:h1], k_scale=ks, v_scale=vs)
                    h0 = h1
            a = out.reshape(b, 1, self.hq * d)
            if glue is not None and layer.o_down is None:
                x, ss = self._fused_mlp(layer, a, x, glue[2 * li:2 * li + 2])
                h = self._norm(x, self.final_norm, self.eps) if li + 1 == self.num_layers else None
                continue
            parts, ss = self.out_parts(layer, a), None
            if len(parts) == 1:
                x, h = self._add_norm(x, parts[0], layer.mlp_norm, self.eps)
            else:
                x, h = self._add2_norm(x, parts[0], parts[1], layer.mlp_norm, self.eps)
            m = F.linear(self._silu_mul(F.linear(h, layer.gate_up), layer.gate_up_interleaved), layer.down)
            nxt = self.layers[li + 1].attn_norm if li + 1 < self.num_layers else self.final_norm
            x, h = self._add_norm(x, m, nxt, self.eps)
        return F.linear(h[:, 0], self.lm_head).float()

    def _fused_mlp(self, layer: FastLayer, a: torch.Tensor, x: torch.Tensor,
                   ss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """kernels.FUSED_GLUE: o_proj, the MLP norm, gate_up, SwiGLU, down and both residual adds of one decode
        token in three GEMV launches (the unfused step takes six to seven: two norms, SwiGLU, and cuBLAS's
        split-K reduces). o's and down's GEMVs add their output's sum of squares into ss[0] and ss[1], which
        the next GEMV's norm reads. a [1, 1, hq*d], x [1, 1, hidden] -> (the new x, the sum of squares that the
        next layer's qkv normalises with)."""
        launch, shape = kernels.GEMV_LAUNCH, x.shape
        x = kernels.gemv_fused(a, layer.o_dense, residual=x, ss_out=ss[0:1], **launch)
        # SwiGLU in gate_up's GEMV (kernels.SWIGLU_EPILOGUE: down reads the activation as it is; always with
        # interleaved rows, which down's SwiGLU does not read) or in down's
        pairs = layer.gate_up_interleaved
        epilogue = kernels.SWIGLU_EPILOGUE or pairs
        mid = kernels.gemv_fused(x, layer.gate_up, norm_weight=None if layer.norms_folded else layer.mlp_norm,
                                 norm_ss=ss[0:1], eps=self.eps, swiglu_out=epilogue, swiglu_pairs=pairs,
                                 **(kernels.gemv_epilogue_launch(pairs) if epilogue else kernels.gemv_norm_launch()))
        x = kernels.gemv_fused(mid, layer.down, swiglu=not epilogue, residual=x, ss_out=ss[1:2], **launch)
        return x.view(shape), ss[1:2]

    def _full_decode(self, li: int, q, k, v, length, ws, out, state: DecodeState, k_scale=None, v_scale=None) -> None:
        fp8 = dict(k_scale=k_scale, v_scale=v_scale)  # fp8 caches: the kernels read the bytes and their scales
        if self.spec.mode != "tidal" or li < self.tidal_first:
            kernels.decode_attention(q, k, v, length, self.scale, workspace=ws, out=out, **fp8)
            return
        if li in self.tidal_select:  # the same full attention as every dense layer, then select
            kernels.decode_attention(q, k, v, length, self.scale, workspace=ws, out=out, **fp8)
            tidal_select(q, k, length, self.scale, self.spec.top_k, state.index, state.n_sel, scores=self._tidal_scores,
                         k_scale=k_scale)
        else:
            kernels.decode_attention(q, k, v, state.n_sel, self.scale, index=state.index, workspace=ws, out=out,
                                     **fp8)


def _tidal_scores(logits: torch.Tensor, length: torch.Tensor, scale: float) -> torch.Tensor:
    """Selection scores from a selection layer's raw logits [b, hkv, g, t] (the cache's dtype): attention
    probability over [0, length) summed over the group's query heads, fp32, -1 where invalid. One compiled
    function on CUDA (a reduction and a pointwise kernel instead of ~7 eager passes over t)."""
    t = logits.shape[-1]
    valid = torch.arange(t, device=logits.device) < length
    x = (logits.float() * scale).masked_fill(~valid, float("-inf"))
    return torch.softmax(x, dim=-1).sum(dim=2).masked_fill(~valid, -1.0)  # [b, hkv, t]


def tidal_select(q: torch.Tensor, k: torch.Tensor, length: torch.Tensor, scale: float, top_k: int,
                 index_out: torch.Tensor, n_sel_out: torch.Tensor, scores=_tidal_scores,
                 k_scale: torch.Tensor | None = None) -> None:
    """A token-selection layer's choice: for every KV head, the top-k positions of [0, length) by
    attention probability summed over the query heads of its group. The logits come out of one GEMM
    in the cache's dtype, as in the paper's reference code (an fp32 copy of a 128K-token K would
    triple the selection layer's bytes); softmax and sums are fp32. The positions persist
    over the following layers (TidalDecode's premise), head by head. Writes them to `index_out`
    [b, hkv, k] and min(k, length) to `n_sel_out`. q [b, hkv, g, d]; k [b, hkv, t, d]; with `k_scale`
    [b, hkv, t], k is fp8 e4m3 bits: one Triton launch on CUDA (`kernels.fp8_selection_logits`), else
    `fp8_logits`."""
    t = k.shape[2]
    if k_scale is None:
        logits = torch.matmul(q, k.transpose(-1, -2))
    elif kernels.HAS_TRITON and q.is_cuda:
        logits = kernels.fp8_selection_logits(q, k, k_scale, length)
    else:
        logits = fp8_logits(q, k, k_scale)
    score = scores(logits, length, scale)  # [b, hkv, t]
    kk = index_out.shape[-1]
    index_out.copy_(torch.topk(score, min(kk, t), dim=-1).indices if kk <= t else
                    F.pad(torch.topk(score, t, dim=-1).indices, (0, kk - t)))
    n_sel_out.copy_(torch.clamp(length, max=min(top_k, t)))


def fp8_logits(q: torch.Tensor, k_bits: torch.Tensor, k_scale: torch.Tensor) -> torch.Tensor:
    """q [b, hkv, g, d] against fp8 keys (e4m3 bits [b, hkv, t, d], scales [b, hkv, t]) -> logits [b, hkv, g, t]
    in q's dtype: the keys converted one PAST_BLOCK of positions at a time (never a copy of the whole cache,
    as the prefill reads fp8 caches), each block's GEMM in q's dtype, the per-token scales on the logits."""
    t, block = k_bits.shape[2], kernels.PAST_BLOCK
    parts = []
    for s0 in range(0, t, block):
        kb = k_bits[:, :, s0:s0 + block].view(torch.float8_e4m3fn).to(q.dtype)
        parts.append(torch.matmul(q, kb.transpose(-1, -2)) * k_scale[:, :, None, s0:s0 + block].to(q.dtype))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


@dataclass
class DecodeState:
    """Per-step scratch that must have fixed addresses across CUDA-graph replays."""

    attn_out: torch.Tensor
    # (layer, group) or (layer, "layer") for the two-group launch -> split-K scratch
    workspaces: dict[tuple[int, int | str], kernels.DecodeWorkspace | None] = field(default_factory=dict)
    index: torch.Tensor | None = None  # tidal: [b, hkv, top_k] selected positions per KV head
    n_sel: torch.Tensor | None = None  # tidal: [1] how many of them are valid
    glue_ss: torch.Tensor | None = None  # kernels.FUSED_GLUE: [2 * layers] sums of squares of the residual stream
    # (int64 fixed point while kernels.SS_UNITS is set)


def make_caches(model: FastModel, *, batch: int, max_len: int) -> list[LayerCache]:
    return [LayerCache(layer.groups, batch=batch, max_len=max_len, sink=model.spec.sink, head_dim=model.d,
                       dtype=model.dtype, device=model.device, kv_dtype=model.spec.kv_dtype) for layer in model.layers]


def _one_launch(spec: RuntimeSpec, layer: FastLayer) -> bool:
    """Whether the decode step runs this layer's two head groups in one attention launch pair."""
    return len(layer.groups) == 2 and spec.mode != "tidal"


def make_state(model: FastModel, caches: list[LayerCache], batch: int) -> DecodeState:
    dev = model.device
    state = DecodeState(attn_out=torch.zeros(batch, model.hkv, model.group, model.d, dtype=model.dtype, device=dev),
                        glue_ss=torch.zeros(2 * model.num_layers, device=dev,
                                            dtype=torch.int64 if kernels.SS_UNITS else torch.float32))
    use_triton = kernels.HAS_TRITON and dev.type == "cuda"
    for li, (layer, cache) in enumerate(zip(model.layers, caches)):
        if _one_launch(model.spec, layer):  # decode_attention_groups: one workspace for the whole layer
            keys = max(k.shape[2] for k in cache.k)
            busy = sum(grp.size for grp, k in zip(layer.groups, cache.k) if k.shape[2] == keys)
            state.workspaces[(li, "layer")] = (
                kernels.DecodeWorkspace(batch, model.hkv, model.group, model.d, keys, dev, busy_heads=busy,
                                        kv_dtype=model.spec.kv_dtype, group_keys=tuple(k.shape[2] for k in cache.k))
                if use_triton else None)
            continue
        for gi, grp in enumerate(layer.groups):
            keys = cache.k[gi].shape[2]
            if model.spec.mode == "tidal" and li > model.tidal_first and li not in model.tidal_select:
                keys = min(keys, model.spec.top_k)
            state.workspaces[(li, gi)] = (kernels.DecodeWorkspace(batch, grp.size, model.group, model.d, keys, dev,
                                                                  kv_dtype=model.spec.kv_dtype) if use_triton else None)
    if model.spec.mode == "tidal":
        state.index = torch.zeros(batch, model.hkv, model.spec.top_k, dtype=torch.long, device=dev)
        state.n_sel = torch.zeros(1, dtype=torch.long, device=dev)
    return state


# --------------------------------------------------------------------------- weight extraction

def _is_dual(m: nn.Module) -> bool:
    return m.__class__.__name__ == "DualPathLinear"


def _factored_heads(attn: nn.Module, hkv: int, group: int, d: int) -> tuple[set[int], set[int], set[int], set[int]]:
    """Per projection (q, k, v, o): the KV heads whose rows (o_proj: columns) it holds as low-rank factors."""
    out = []
    for name, width in (("q_proj", group * d), ("k_proj", d), ("v_proj", d), ("o_proj", group * d)):
        proj = getattr(attn, name)
        idx = set(proj.lowrank_index.tolist()) if _is_dual(proj) else set()
        out.append({h for h in range(hkv) if idx and all(r in idx for r in range(h * width, (h + 1) * width))})
    return tuple(out)


def _rows_of(proj: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    if rows.numel() == 0:
        w = proj.weight if not _is_dual(proj) else proj.down
        return w.new_zeros(0, proj.in_features)
    if not _is_dual(proj):
        return proj.weight.detach().index_select(0, rows.to(proj.weight.device))
    pos = _positions_in(proj.dense_index, rows)
    if pos is not None:
        return proj.dense_weight.detach().index_select(0, pos)
    return proj.dense_equivalent().detach().index_select(0, rows.to(proj.down.device))


def _cols_of(proj: nn.Module, cols: torch.Tensor) -> torch.Tensor:
    if not _is_dual(proj):
        return proj.weight.detach().index_select(1, cols.to(proj.weight.device))
    pos = _positions_in(proj.dense_index, cols)
    if pos is not None:
        return proj.dense_weight.detach().index_select(1, pos)
    return proj.dense_equivalent().detach().index_select(1, cols.to(proj.down.device))


def _bias_of(proj: nn.Module, rows: torch.Tensor) -> torch.Tensor | None:
    bias = getattr(proj, "bias", None)
    return None if bias is None else bias.detach().index_select(0, rows.to(bias.device))


def _positions_in(index: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor | None:
    """Where each of `wanted` sits in `index`, or None if some are missing."""
    lookup = {int(v): i for i, v in enumerate(index.tolist())}
    try:
        return torch.tensor([lookup[int(w)] for w in wanted.tolist()], dtype=torch.long, device=index.device)
    except KeyError:
        return None


def synthetic_rank(n_out: int, n_in: int, rank_ratio: float) -> int:
    """The rank that keeps `rank_ratio` of an [n_out, n_in] block's parameters."""
    return max(1, int(math.floor(rank_ratio * n_out * n_in / (n_out + n_in))))


def _random_factors(n_out: int, n_in: int, rank: int, like: torch.Tensor, gen: torch.Generator):
    # Timing-only factors (random-weight benchmarks): the values do not change the speed.
    up = (torch.randn(n_out, rank, generator=gen, device=gen.device) * rank ** -0.5).to(like.dtype).to(like.device)
    down = (torch.randn(rank, n_in, generator=gen, device=gen.device) * n_in ** -0.5).to(like.dtype).to(like.device)
    return down, up


def _lowrank_rows(proj: nn.Module, rows: torch.Tensor, rank_ratio: float | None, gen: torch.Generator):
    """(down [r, in], up [len(rows), r]) for these output rows."""
    if _is_dual(proj):  # the artifact's own factors (with --scope all, a subset of their rows)
        pos = _positions_in(proj.lowrank_index, rows)
        if pos is not None:
            return proj.down.detach(), proj.up.detach().index_select(0, pos)
    if rank_ratio is None:  # _layer_plan only puts factored heads on the low-rank path
        raise AssertionError("low-rank rows asked for a head the artifact did not factor")
    w = _rows_of(proj, rows)
    return _random_factors(rows.numel(), w.shape[1], synthetic_rank(rows.numel(), w.shape[1], rank_ratio), w, gen)


def _lowrank_cols(proj: nn.Module, cols: torch.Tensor, rank_ratio: float | None, gen: torch.Generator):
    """(down [r, len(cols)], up [out, r]) for these input columns."""
    if _is_dual(proj):  # the artifact's own factors (with --scope all, a subset of their columns)
        pos = _positions_in(proj.lowrank_index, cols)
        if pos is not None:
            return proj.down.detach().index_select(1, pos).contiguous(), proj.up.detach()
    if rank_ratio is None:  # _layer_plan only puts factored heads on the low-rank path
        raise AssertionError("low-rank columns asked for a head the artifact did not factor")
    w = _cols_of(proj, cols)
    return _random_factors(w.shape[0], cols.numel(), synthetic_rank(w.shape[0], cols.numel(), rank_ratio), w, gen)
