"""Attention kernels of the fast runtime, each with a plain-PyTorch twin that defines its numerics.

Decode attention (one query token against a long cache) is memory-bound: the whole K/V of the
layer must stream through once. With batch 1 and a handful of KV heads, one program per head
would keep only a few SMs busy, so the Triton kernel splits every head's key range over many
programs (split-K, "flash-decoding") and merges their partial softmaxes in a second pass. Each
program loads a K/V block once for all query heads of its GQA group. The key range is
`[0, length)` read from a device tensor (so CUDA-graph replays see the current length), or the
positions listed in an index tensor (TidalDecode's sparse layers). Why our own kernel rather than
SDPA: measured on the H100 (bench/results/efficiency_llama-3-8b_decode_profile.txt), inside a 64K
full-attention decode step it reads a layer's 268 MB of K/V in 93 us, ~2.9 TB/s, the device's copy
bandwidth; SDPA alone reached 2.3-2.9 TB/s, but it cannot take the valid length from a device
tensor, so a CUDA graph would have to be captured per length.

Prefill attention over a chunk of queries: retrieval heads use cuDNN attention in parts (the chunk
against itself, causal; against the cache before it, unmasked, in PAST_BLOCK-key blocks) merged by their
log-sum-exps, or one flash call with a bottom-right causal mask where cuDNN does not run (H200:
~600 against ~350 TFLOP/s, bench/results/prefill_attention_probe.json); ring heads (streaming heads, and SEDPA-W's windowed retrieval heads) attend
to the ring (sink + band slots) plus the chunk. On CUDA that is FlexAttention with a block mask built
from the slots' positions, so only the blocks inside the sink + band actually run (a streaming head's
query block touches ~5 key blocks instead of all of them); elsewhere one masked SDPA defines it.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from sedpa_compress.runtime.fallback import FirstCallFallback

try:  # Triton ships with CUDA builds of PyTorch; the CPU reference path does not need it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

HAS_TRITON = triton is not None


# --------------------------------------------------------------------------- decode: reference

def decode_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, length: torch.Tensor,
                         scale: float, index: torch.Tensor | None = None) -> torch.Tensor:
    """q [b, hkv, g, d]; k/v [b, hkv, t, d]; length: int tensor (keys [0, length) are valid).

    With `index` ([b, hkv, n]: positions per KV head, or [b, n]: shared by every head) only the first
    `length` entries of `index` are attended (TidalDecode's sparse layers; `length` is then the
    selection's size). Returns [b, hkv, g, d] in q's dtype; fp32 softmax.
    """
    if index is not None:
        idx = index.long()
        idx = idx[:, None, :].expand(-1, k.shape[1], -1) if idx.dim() == 2 else idx
        k = torch.gather(k, 2, idx[..., None].expand(-1, -1, -1, k.shape[3]))
        v = torch.gather(v, 2, idx[..., None].expand(-1, -1, -1, v.shape[3]))
    t = k.shape[2]
    logits = torch.einsum("bhgd,bhtd->bhgt", q.float(), k.float()) * scale
    valid = torch.arange(t, device=q.device) < length.reshape(-1)[0]
    logits = logits.masked_fill(~valid, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.einsum("bhgt,bhtd->bhgd", probs, v.float()).to(q.dtype)


# --------------------------------------------------------------------------- decode: Triton

if HAS_TRITON:

    @triton.jit
    def _await_previous(GDC: tl.constexpr):
        """Programmatic dependent launch (PDL; kernels.PDL): let the next kernel of the chain be launched now
        (it waits in turn before touching anything this one writes), then wait until the previous kernel has
        finished and its writes are visible. Every chain kernel calls this before its first dependent access."""
        if GDC:
            tl.extra.cuda.gdc_launch_dependents()
            tl.extra.cuda.gdc_wait()

    @triton.jit
    def _head_base(b, h, sb, sh):
        """A (sequence, head)'s offset into a cache, in int64: Triton multiplies int32 indices by int32 strides
        in int32, which wraps once h * sh passes 2^31 (silently: the reads and writes land in another buffer)."""
        return b.to(tl.int64) * sb + h.to(tl.int64) * sh

    @triton.jit
    def _attend(q, K, V, IDX, KS, VS, b, h, start, end, skb, skh, skt, svb, svh, svt, sib, sih,
                sksb, sksh, skst, svsb, svsh, svst, G_PAD: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
                INDEXED: tl.constexpr, FP8: tl.constexpr, qk_scale):
        """One program's online softmax over keys [start, end) of KV head `h` of one cache: (acc, m, l).

        FP8 (e4m3 bits with a scale per token): both dots run in fp16, the one type e4m3 converts to in
        a single instruction per pair (going on to bf16 costs a second conversion per element, which made
        fp8 decode slower than bf16 on the H200: 11.1 against 8.8 ms at 128K). The query is scaled before
        its fp16 cast (|q| * 1/sqrt(d) stays far inside fp16's range), the key scale multiplies the fp32
        logits, and the value scales fold into the probabilities normalised by the block's largest scale
        (so p * scale stays in [0, 1], clear of fp16's subnormals) with that largest scale applied to
        the block's fp32 sum. The scales of the next block are loaded one block ahead: their loads are
        too narrow for Triton's asynchronous copies and would otherwise stall every block.

        The converted keys go into the key dot transposed, as its B operand. Two other ways lost in the whole step
        and were removed: the keys' dot in e4m3 against a two-part e4m3 query (duo fp8 +1.6%,
        bench/results/decode_launch_sweep2_h200.json) and the converted keys as the A operand with the scores
        transposed instead (+1.0% to +4.8%, decode_launch_sweep3_h200.json).

        INDEXED (tidal's sparse layers): the keys, values and, with FP8, their scales are gathered at the
        selected positions; the scales are then loaded with their block, not one block ahead.

        The head's base offsets are int64 (`_head_base`): a head stride is int32 up to 2^31 elements, and head 3
        of a 4-head retrieval cache at 5.6M+ positions lies past 2^31 elements (the longest contexts)."""
        K = K + _head_base(b, h, skb, skh)
        V = V + _head_base(b, h, svb, svh)
        if FP8:
            KS = KS + _head_base(b, h, sksb, sksh)
            VS = VS + _head_base(b, h, svsb, svsh)
        offs_d = tl.arange(0, D)
        m_i = tl.full([G_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([G_PAD], tl.float32)
        acc = tl.zeros([G_PAD, D], tl.float32)
        if FP8:
            q16 = (q.to(tl.float32) * qk_scale).to(tl.float16)
            if not INDEXED:
                offs0 = start + tl.arange(0, BLOCK_N)
                k_sc_next = tl.load(KS + offs0 * skst, mask=offs0 < end,
                                    other=0.0).to(tl.float32)
                v_sc_next = tl.load(VS + offs0 * svst, mask=offs0 < end,
                                    other=0.0).to(tl.float32)
        for n0 in range(start, end, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            valid = offs_n < end
            if INDEXED:
                pos = tl.load(IDX + b * sib + h * sih + offs_n, mask=valid, other=0)
            else:
                pos = offs_n
            if FP8:
                if INDEXED:  # the selected positions' scales, with their block
                    k_sc = tl.load(KS + pos * skst, mask=valid, other=0.0).to(tl.float32)
                    v_sc = tl.load(VS + pos * svst, mask=valid, other=0.0).to(tl.float32)
                else:
                    k_sc = k_sc_next
                    v_sc = v_sc_next
                    offs_next = offs_n + BLOCK_N
                    nxt = offs_next < end
                    k_sc_next = tl.load(KS + offs_next * skst, mask=nxt,
                                        other=0.0).to(tl.float32)
                    v_sc_next = tl.load(VS + offs_next * svst, mask=nxt,
                                        other=0.0).to(tl.float32)
                k = tl.load(K + pos[:, None] * skt + offs_d[None, :], mask=valid[:, None], other=0)
                k = k.to(tl.float8e4nv, bitcast=True).to(tl.float16)
                s = tl.dot(q16, tl.trans(k)) * k_sc[None, :]
            else:
                k = tl.load(K + pos[:, None] * skt + offs_d[None, :], mask=valid[:, None],
                            other=0.0)
                s = tl.dot(q, tl.trans(k)) * qk_scale
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if FP8:
                v = tl.load(V + pos[:, None] * svt + offs_d[None, :], mask=valid[:, None], other=0)
                v = v.to(tl.float8e4nv, bitcast=True).to(tl.float16)
                v_max = tl.max(v_sc, axis=0)
                v_max = tl.where(v_max > 0.0, v_max, 1.0)
                pv = tl.dot((p * (v_sc / v_max)[None, :]).to(tl.float16), v)
                acc = acc * alpha[:, None] + pv * v_max
            else:
                v = tl.load(V + pos[:, None] * svt + offs_d[None, :], mask=valid[:, None],
                            other=0.0)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        return acc, m_i, l_i

    @triton.jit
    def _split_range(LEN, split, SPLITS: tl.constexpr, BLOCK_N: tl.constexpr):
        # the length's key blocks dealt out evenly (split counts differ by at most one block), for any count
        # of splits, a power of two or not
        length = tl.load(LEN)
        blocks = tl.cdiv(length, BLOCK_N)
        start = (split * blocks // SPLITS) * BLOCK_N
        return start, tl.minimum(((split + 1) * blocks // SPLITS) * BLOCK_N, length)

    @triton.jit
    def _store_partial(ACC, M, L, acc, m_i, l_i, bh, split, SPLITS: tl.constexpr, G: tl.constexpr,
                       G_PAD: tl.constexpr, D: tl.constexpr):
        # only the group's G real query rows: the dot's padding rows (to 16) are never merged, and storing
        # them wrote 4x the partials (8 MB a layer for duo at 128K)
        offs_g = tl.arange(0, G_PAD)
        offs_d = tl.arange(0, D)
        base = (bh * SPLITS + split) * G_PAD
        real = offs_g < G
        tl.store(ACC + (base + offs_g[:, None]) * D + offs_d[None, :], acc, mask=real[:, None])
        tl.store(M + base + offs_g, m_i, mask=real)
        tl.store(L + base + offs_g, l_i, mask=real)

    @triton.jit
    def _load_q(Q, b, h, sqb, sqh, sqg, G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr):
        offs_g = tl.arange(0, G_PAD)
        offs_d = tl.arange(0, D)
        return tl.load(Q + b * sqb + h * sqh + offs_g[:, None] * sqg + offs_d[None, :], mask=offs_g[:, None] < G,
                       other=0.0)

    @triton.jit
    def _decode_partial(Q, K, V, LEN, IDX, ACC, M, L, KS, VS,
                        sqb, sqh, sqg, skb, skh, skt, svb, svh, svt, sib, sih, H,
                        sksb, sksh, skst, svsb, svsh, svst,
                        G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr,
                        BLOCK_N: tl.constexpr, SPLITS: tl.constexpr, INDEXED: tl.constexpr, FP8: tl.constexpr,
                        scale, GDC: tl.constexpr):
        _await_previous(GDC)
        bh = tl.program_id(0)
        split = tl.program_id(1)
        b = bh // H
        h = bh % H
        start, end = _split_range(LEN, split, SPLITS, BLOCK_N)
        q = _load_q(Q, b, h, sqb, sqh, sqg, G, G_PAD, D)
        qk_scale = scale * 1.4426950408889634  # exp2 instead of exp
        acc, m_i, l_i = _attend(q, K, V, IDX, KS, VS, b, h, start, end, skb, skh, skt, svb, svh, svt, sib, sih,
                                sksb, sksh, skst, svsb, svsh, svst, G_PAD, D, BLOCK_N, INDEXED, FP8, qk_scale)
        _store_partial(ACC, M, L, acc, m_i, l_i, bh, split, SPLITS, G, G_PAD, D)

    @triton.jit
    def _decode_partial2(Q, K1, V1, LEN1, KS1, VS1, K2, V2, LEN2, KS2, VS2, ACC, M, L,
                         sqb, sqh, sqg, s1kb, s1kh, s1kt, s1vb, s1vh, s1vt, s2kb, s2kh, s2kt, s2vb, s2vh, s2vt,
                         s1ksb, s1ksh, s1kst, s1vsb, s1vsh, s1vst, s2ksb, s2ksh, s2kst, s2vsb, s2vsh, s2vst, B, H, H1,
                         G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
                         SPLITS: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr, FP8: tl.constexpr, scale,
                         GDC: tl.constexpr, ONE_LOOP: tl.constexpr):
        """Both head groups of a layer in one launch: KV heads [0, H1) read cache 1 (e.g. full length) in S1
        splits, heads [H1, H) cache 2 (e.g. a ring) in S2, each with its own valid length. A 1-D grid of
        B * (H1 * S1 + (H - H1) * S2) programs, group 1's first (split-major, heads interleaved as a 2-D grid
        would launch them), so a short ring takes a program or two a head instead of S1 that find no keys.
        Partials are laid out [B * H, SPLITS] (SPLITS = max(S1, S2)). ONE_LOOP (kernels.TWO_GROUP_ONE_LOOP):
        the group's cache is chosen before one attention loop, instead of a loop per group."""
        _await_previous(GDC)
        pid = tl.program_id(0)
        n1 = B * H1 * S1
        in1 = pid < n1
        r = tl.where(in1, pid, pid - n1)
        heads = tl.where(in1, H1, H - H1)
        split = r // (B * heads)
        bh_g = r % (B * heads)
        b = bh_g // heads
        h = tl.where(in1, 0, H1) + bh_g % heads
        q = _load_q(Q, b, h, sqb, sqh, sqg, G, G_PAD, D)
        qk_scale = scale * 1.4426950408889634
        if ONE_LOOP:  # the group's cache chosen first, one attention loop (one set of shared-memory buffers)
            if in1:
                K, V, LEN, KS, VS, hh = K1, V1, LEN1, KS1, VS1, h
                skb, skh, skt, svb, svh, svt = s1kb, s1kh, s1kt, s1vb, s1vh, s1vt
                sksb, sksh, skst, svsb, svsh, svst = s1ksb, s1ksh, s1kst, s1vsb, s1vsh, s1vst
                start, end = _split_range(LEN1, split, S1, BLOCK_N)
            else:
                K, V, LEN, KS, VS, hh = K2, V2, LEN2, KS2, VS2, h - H1
                skb, skh, skt, svb, svh, svt = s2kb, s2kh, s2kt, s2vb, s2vh, s2vt
                sksb, sksh, skst, svsb, svsh, svst = s2ksb, s2ksh, s2kst, s2vsb, s2vsh, s2vst
                start, end = _split_range(LEN2, split, S2, BLOCK_N)
            acc, m_i, l_i = _attend(q, K, V, LEN, KS, VS, b, hh, start, end, skb, skh, skt, svb, svh, svt, 0, 0,
                                    sksb, sksh, skst, svsb, svsh, svst, G_PAD, D, BLOCK_N, False, FP8, qk_scale)
        elif h < H1:
            start, end = _split_range(LEN1, split, S1, BLOCK_N)
            acc, m_i, l_i = _attend(q, K1, V1, LEN1, KS1, VS1, b, h, start, end, s1kb, s1kh, s1kt, s1vb, s1vh, s1vt,
                                    0, 0, s1ksb, s1ksh, s1kst, s1vsb, s1vsh, s1vst, G_PAD, D, BLOCK_N, False, FP8,
                                    qk_scale)
        else:
            start, end = _split_range(LEN2, split, S2, BLOCK_N)
            acc, m_i, l_i = _attend(q, K2, V2, LEN2, KS2, VS2, b, h - H1, start, end, s2kb, s2kh, s2kt, s2vb, s2vh,
                                    s2vt, 0, 0, s2ksb, s2ksh, s2kst, s2vsb, s2vsh, s2vst, G_PAD, D, BLOCK_N, False,
                                    FP8, qk_scale)
        _store_partial(ACC, M, L, acc, m_i, l_i, b * H + h, split, SPLITS, G, G_PAD, D)

    @triton.jit
    def _merge_row(ACC, M, L, OUT, bh, b, h, g, d0, sob, soh, sog, n, G_PAD: tl.constexpr, D: tl.constexpr,
                   DB: tl.constexpr, SPLITS: tl.constexpr, SPLITS_P2: tl.constexpr, SB: tl.constexpr):
        """Columns [d0, d0 + DB) of query row g of (sequence b, KV head h): its n splits' partial softmaxes
        (rows of SPLITS, a count that need not be a power of two: the ranges run to SPLITS_P2, masked) merged
        into OUT. Every load is issued up front, SB splits at a time, so the merge waits for one round trip a
        block of SB splits (all of them with kernels.REDUCE_ONE_PASS) rather than one per block of 16 (7.2 us per
        layer on the H200). The max and denominator need every split's M/L whatever the d block: each program
        reads them all (SPLITS_P2 floats each)."""
        offs_s = tl.arange(0, SPLITS_P2)
        rows = (bh * SPLITS + offs_s) * G_PAD + g
        m = tl.load(M + rows, mask=offs_s < n, other=float("-inf"))
        l_ = tl.load(L + rows, mask=offs_s < n, other=0.0)
        m_max = tl.max(m, axis=0)
        m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
        denom = tl.sum(tl.exp2(m - m_max) * l_, axis=0)  # empty splits: m = -inf -> 0
        offs_b = tl.arange(0, SB)
        offs_d = d0 + tl.arange(0, DB)
        out = tl.zeros([DB], tl.float32)
        for s0 in tl.static_range(0, SPLITS_P2, SB):
            real = s0 + offs_b < n
            r = (bh * SPLITS + s0 + offs_b) * G_PAD + g
            a = tl.load(ACC + r[:, None] * D + offs_d[None, :], mask=real[:, None], other=0.0)
            mr = tl.load(M + r, mask=real, other=float("-inf"))
            out += tl.sum(a * tl.exp2(mr - m_max)[:, None], axis=0)
        out = out / tl.where(denom == 0.0, 1.0, denom)
        tl.store(OUT + b * sob + h * soh + g * sog + offs_d, out.to(OUT.dtype.element_ty))

    @triton.jit
    def _decode_reduce(ACC, M, L, OUT, sob, soh, sog, H, H1, G_PAD: tl.constexpr, D: tl.constexpr,
                       DB: tl.constexpr, SPLITS: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
                       SPLITS_P2: tl.constexpr, SB: tl.constexpr, GDC: tl.constexpr):
        # One program per (sequence, KV head, query head of the group, block of DB head_dim columns) merges
        # the splits' partial softmaxes (32 programs a layer reading 32 KB each at 8K-128K with one d block:
        # load latency, not bytes). Heads [0, H1) have S1 splits, the rest S2 (the two-group kernel's ring
        # heads), in rows of SPLITS.
        _await_previous(GDC)
        bh = tl.program_id(0)
        g = tl.program_id(1)
        b = bh // H
        h = bh % H
        n = tl.where(h < H1, S1, S2)
        _merge_row(ACC, M, L, OUT, bh, b, h, g, tl.program_id(2) * DB, sob, soh, sog, n, G_PAD, D, DB, SPLITS,
                   SPLITS_P2, SB)


# The two-group kernel with one attention loop: each program picks its group's cache, strides and split range
# first and runs one `_attend`, where the default compiles a loop per group under a runtime branch, and each loop
# keeps its own pipelined shared-memory buffers. Compiled for sm_90 as the JIT specialises it
# (bench/scripts/kernel_resources.py -> bench/results/decode_kernel_resources_sm90.json): bf16 at 64-key blocks,
# 2 stages, 4 warps takes 69,632 bytes of shared memory with two loops (3 programs an SM fit in 227 KB: the
# bf16-two launch's 3 programs an SM) and 38,912 with one, as the one-group kernel (5 fit), 78 registers against
# 96; fp8 65,536 -> 40,960. Duo's two-group kernel streamed at ~4.0 TB/s where full's one-group kernel reaches
# ~4.4 (docs/runtime-tuning.md, "Where the step goes"). Timed in the whole step at 128K (bench/results/decode_launch_sweep4_h200.json,
# against two loops in the same call): bf16 duo -0.8% at 3 programs an SM, -0.7% at 4, -2.7% at 5 (the
# bf16-two launch's now); fp8 duo -4.4% at its 6.
TWO_GROUP_ONE_LOOP = True


# The split merge in one pass at any split count (up to 256): above 64 splits its programs also split head_dim
# (kernels._reduce_launch), so each loads all its splits' partials at once instead of looping over blocks of 64
# (two load round trips at 65-128 splits: 6.56 us a layer for duo's 99 splits in
# bench/results/decode_profile_duo_bf16_128k_h200.txt, against 4.5-4.6 us for 64 or fewer in the fp8 profiles).
# Untimed on the GPU in the whole step yet; expected to save the second round trip at 65-256 splits (and the third
# and fourth above 128). False: the previous launch (blocks of at most 64 splits, all of head_dim).
REDUCE_ONE_PASS = True


def dot_rows(group: int) -> int:
    """A KV head's query rows as the decode kernels pad them: a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, 1 << math.ceil(math.log2(group)))


# The merge's head_dim columns a program at most (None: as _reduce_launch sizes them). The merge is latency,
# not bytes: at 64 splits or fewer, uncapped, its 32 programs a layer (one a query head) each load all 32 KB of
# their partials, 4.5-6.6 us a layer in the duo profiles (bench/results/decode_profile_duo_*_128k_h200.txt) for
# ~1.6 MB read; 16 columns a program makes that 256 programs of 4 KB each. Timed in the whole step at 128K
# (bench/results/decode_launch_sweep7_h200.json, one H200, two rows each against two defaults rows of the same
# call): sedpa-w -1.0 / -0.96%, duo -0.28 / -0.20%, full +0.24 / +0.23% against the first defaults row and
# -0.14 / -0.15% against the two rows' mean (the two defaults rows were 0.76% apart in full). A head_dim that
# 16 does not divide keeps the uncapped launch.
REDUCE_DB: int | None = 16


def _reduce_launch(splits: int, head_dim: int) -> dict:
    """The merge's block of splits (SB), of head_dim columns a program (DB, a divisor of head_dim) and warps.
    Up to 64 splits every split at once over all of head_dim (32 KB of partials for head_dim 128: 64 registers
    a thread over 8 warps); a count that is not a power of two runs to the next. Above 64, REDUCE_ONE_PASS keeps
    that 64 x 128 tile's registers with every split at once over a narrower DB (more programs, one round trip);
    without it, blocks of 64 splits in a loop over all of head_dim. REDUCE_DB caps DB (4 warps for a tile of
    2K elements or fewer)."""
    p2 = 1 << max(0, math.ceil(math.log2(splits)))
    if p2 <= 64 or not REDUCE_ONE_PASS:
        launch = dict(SPLITS_P2=p2, SB=min(p2, 64), DB=head_dim, num_warps=8 if p2 >= 64 else 4)
    else:
        launch = dict(SPLITS_P2=p2, SB=p2, DB=min(head_dim, 64 * 128 // p2), num_warps=8)
    if REDUCE_DB is not None and REDUCE_DB < launch["DB"]:
        if REDUCE_DB < 1 or REDUCE_DB & (REDUCE_DB - 1):
            raise ValueError(f"kernels.REDUCE_DB={REDUCE_DB}: use a power of two (or None)")
        if head_dim % REDUCE_DB:
            return launch  # column blocks must tile head_dim: keep the uncapped launch
        launch["DB"] = REDUCE_DB
        launch["num_warps"] = 4 if launch["SB"] * REDUCE_DB <= 2048 else launch["num_warps"]
    return launch


# The split-K partial kernel's launch per cache dtype: keys per block, warps, pipeline stages, and the
# programs per SM (132 SMs on an H100 / H200) that size its splits: more splits keep more bytes in flight,
# fewer give each program more key blocks to pipeline. All are the fastest of
# bench/scripts/decode_kernel_probe.py's grid on an H200 at 32K and 128K (bench/results/decode_kernel_probe_h200.json,
# µs a layer at 128K):
# - one group, bf16: 64-key blocks, 4 programs an SM (129 us);
# - one group, fp8: 128-key blocks and a 3-stage pipeline, 2 programs an SM (92 us; 96 at 4, 144 with bf16's launch);
# - two groups ("<dtype>-two": duo / sedpa layers, whose splits are sized for the busy heads alone): half the
#   splits of one group's rule, fp8 with 2 stages (bf16 89 -> 81 us, fp8 89 -> 68 us, 4 busy heads). In the
#   whole decode step (bench/results/decode_splits_duo_h200.json, duo at 128K) this holds for fp8 (7.49 -> 7.32 ms)
#   and for bf16 only with the nearest rounding below (7.02 ms at 4 programs an SM floored, 7.48 at 2 floored,
#   7.07 at 2 nearest; 32K: 5.42, 5.48, 5.31).
# - the two groups' programs per SM, swept in the whole duo step at 128K with the nearest rounding
#   (bench/results/decode_launch_sweep_h200.json): bf16 at 1 / 2 / 3 / 4 programs an SM 8.47 / 7.12 / 6.92 / 6.96 ms
#   (32K: 5.36 at 2, 5.33 at 3), fp8 at 3 / 4 / 6 7.19 / 7.11 / 7.15 (7.22 at 2 in decode_splits_duo_h200.json).
#   With the "exact" rounding (bench/results/decode_launch_sweep2_h200.json): bf16 at 3 / 4 6.62 / 7.03 ms,
#   fp8 at 3 / 4 / 6 6.96 / 6.89 / 6.75 ms (one row each; rows of one setting vary by about 2% between runs).
DECODE_LAUNCH: dict[str, dict[str, int]] = {
    "bf16": dict(BLOCK_N=64, num_warps=4, num_stages=2),
    "fp8": dict(BLOCK_N=128, num_warps=4, num_stages=3),
    "bf16-two": dict(BLOCK_N=64, num_warps=4, num_stages=2),
    "fp8-two": dict(BLOCK_N=128, num_warps=4, num_stages=2),
}


# Programmatic dependent launch (Hopper and later) for the decode step's Triton chain (qkv GEMV, RoPE + cache
# writes, split-K attention and merge, o GEMV): each is launched while the previous kernel ends and waits
# (griddepcontrol.wait) before touching its outputs, so launch gaps overlap the previous kernel's tail and a
# one-shot GEMV streams its weights meanwhile. Off: timed in the whole decode step on the H200 at 128K
# (bench/results/decode_launch_sweep2_h200.json, against the default launch of the same call) it gave full
# +3.6%, duo +0.6%, sedpa-w -0.7%, and with the one-shot GEMV (block_k 4096) -0.1 / -1.6 / -2.9%, where the
# one-shot GEMV alone gave -1.0 / -0.8 / -0.7%: within the 2% that rows vary between runs.
PDL = False


# The split-K merge folded into the partial kernel (the last split program of a head merging them, a ticket counter,
# one launch a layer's attention instead of two) lost in the whole step: duo at 128K 8.03 ms against 6.81
# (+18%, bench/results/decode_launch_sweep2_h200.json). Removed; the merge is its own launch (_decode_reduce).


def _pdl() -> dict:
    """The launch options and kernel flag for PDL as kernels.PDL says (read at each launch, so a CUDA graph
    captures whichever was set when it was built); never before Hopper, whose PTX has no griddepcontrol."""
    on = PDL and _hopper_or_later()
    return dict(GDC=on, launch_pdl=on)


@functools.cache
def _hopper_or_later() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9


def launch_key(kv_dtype: str, two_groups: bool = False) -> str:
    """DECODE_LAUNCH / DECODE_PROGRAMS_PER_SM key of a decode kernel: the two-group kernel's own entry where
    there is one, else its cache dtype's."""
    key = f"{kv_dtype}-two"
    return key if two_groups and key in DECODE_LAUNCH else kv_dtype


DECODE_PROGRAMS_PER_SM: dict[str, int] = {"bf16": 4, "fp8": 2, "bf16-two": 5, "fp8-two": 6}
SMS = 132


# How the programs-per-SM target becomes a split count: "nearest" power of two (in log scale), "floor", the
# largest power of two not above it, or "exact", the nearest whole number (the key blocks are dealt out evenly
# to any count: a layer's busy heads fill the target however many there are). A duo layer's busy heads vary
# (2-6 of 8 in the synthetic 50% pattern), and flooring gave 5 or 6 busy heads half the programs meant for
# them: duo at 128K, bf16, 2 programs an SM, 7.48 ms floored against 7.07 nearest
# (bench/results/decode_splits_duo_h200.json). "exact" against "nearest", duo at 128K, bf16 at 3 programs an
# SM, three pairs of rows in two calls (bench/results/decode_launch_sweep2_h200.json): 6.62 / 6.76 / 6.63
# against 6.81 / 6.80 / 6.67 ms; fp8 at 6 programs an SM with "exact" 6.75 against 6.98 at 4 "nearest". So the
# two-group kernels round exactly; the one-group kernels (full attention), not timed with it, stay "nearest".
# A single string applies to every kernel (the sweep's --rounding, tests).
SPLIT_ROUNDING: str | dict[str, str] = {"bf16": "nearest", "fp8": "nearest", "bf16-two": "exact", "fp8-two": "exact"}
SPLIT_ROUNDINGS = ("nearest", "floor", "exact")
# The fewest key blocks a split reads. It bounds the split count only for short caches: sedpa-w's 8K windows
# (8256 keys: 64 splits of two 64-key blocks for 4 busy heads) and duo at 32K. There each program is mostly
# latency and the merge reads many partials, and the one probe that timed split counts at 32K
# (bench/results/decode_kernel_probe_h200.json, two loops then) had duo's kernel at 28.1 us with 64 splits of
# 8 blocks against 31.2 with 128. Not yet timed at 8K or in the whole step: decode_split_rule.py
# --min-split-blocks.
MIN_SPLIT_BLOCKS = 2


def split_rounding(key: str) -> str:
    """The SPLIT_ROUNDING rule of a DECODE_LAUNCH key (one string: every key's)."""
    return SPLIT_ROUNDING if isinstance(SPLIT_ROUNDING, str) else SPLIT_ROUNDING.get(key, "nearest")


def num_splits(max_keys: int, heads: int, batch: int = 1, block_n: int = 64, programs_per_sm: int = 4,
               rounding: str | None = None) -> int:
    """Splits of the key range so that `heads * batch * splits` is near `programs_per_sm` on each of 132 SMs
    (rounded as `rounding` says, default the one-group bf16 kernel's SPLIT_ROUNDING), at most 256, each split
    with >= MIN_SPLIT_BLOCKS key blocks."""
    rounding = rounding or split_rounding("bf16")
    most = min(max(1, max_keys // (MIN_SPLIT_BLOCKS * block_n)), 256)
    want = programs_per_sm * SMS / max(heads * batch, 1)
    if rounding == "exact":
        return max(1, min(round(want), most))
    exp = round(math.log2(want)) if rounding == "nearest" else math.floor(math.log2(max(1, math.ceil(want))))
    return 1 << max(0, min(exp, math.floor(math.log2(most))))


class DecodeWorkspace:
    """Preallocated split-K partials for one (batch, heads, group, max_keys) shape: no allocation
    during a CUDA-graph replay."""

    def __init__(self, batch: int, heads: int, group: int, head_dim: int, max_keys: int, device,
                 busy_heads: int | None = None, kv_dtype: str = "bf16", splits: int | None = None,
                 two_groups: bool = False, group_keys: tuple[int, int] | None = None) -> None:
        # `busy_heads`: how many of the heads read `max_keys` (a two-group layer's full-length heads): the
        # splits are sized to keep the GPU busy with those alone. `splits`: an explicit count (the kernel
        # probe's sweep). `group_keys`: a two-group layer's cache lengths (implies two_groups); each group
        # gets splits in proportion, so a ring of a few hundred keys takes one program a head, not `splits`.
        if splits is not None and not 1 <= splits <= 256:
            raise ValueError(f"splits={splits}: use a count from 1 to 256")
        two_groups = two_groups or group_keys is not None
        key = launch_key(kv_dtype, two_groups)
        self.splits = splits or num_splits(max_keys, busy_heads or heads, batch, DECODE_LAUNCH[key]["BLOCK_N"],
                                           DECODE_PROGRAMS_PER_SM.get(key, DECODE_PROGRAMS_PER_SM[kv_dtype]),
                                           split_rounding(key))
        longest = max(group_keys) if group_keys else 1
        self.group_splits = tuple(min(self.splits, max(1, math.ceil(n * self.splits / longest)))
                                  for n in group_keys) if group_keys else None
        self.g_pad = dot_rows(group)
        n = batch * heads * self.splits * self.g_pad
        self.acc = torch.empty(n * head_dim, dtype=torch.float32, device=device)
        self.m = torch.empty(n, dtype=torch.float32, device=device)
        self.l = torch.empty(n, dtype=torch.float32, device=device)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, length: torch.Tensor, scale: float,
                     *, index: torch.Tensor | None = None, workspace: DecodeWorkspace | None = None,
                     out: torch.Tensor | None = None, k_scale: torch.Tensor | None = None,
                     v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Split-K decode attention on CUDA (Triton); the reference on other devices. With `k_scale` /
    `v_scale` ([b, hkv, t]) k/v are fp8 e4m3 bits (uint8) with a scale per token and head: the
    kernel reads the bytes and scales in the softmax (keys) and the probabilities (values)."""
    if not (HAS_TRITON and q.is_cuda):
        if k_scale is not None:  # the reference reads a dequantized copy (CPU tests only)
            from sedpa_compress.runtime.cache import dequantize_fp8

            k, v = dequantize_fp8(k, k_scale, q.dtype), dequantize_fp8(v, v_scale, q.dtype)
        res = decode_attention_ref(q, k, v, length, scale, index)
        if out is not None:
            out.copy_(res)
            return out
        return res
    return _triton_decode(q, k, v, length, scale, index=index, workspace=workspace, out=out, k_scale=k_scale,
                          v_scale=v_scale)


def _triton_decode(q, k, v, length, scale, *, index=None, workspace=None, out=None, k_scale=None, v_scale=None):
    """The two kernel launches (also run by the tests under TRITON_INTERPRET=1 on CPU tensors)."""
    b, h, g, d = q.shape
    ws = workspace or DecodeWorkspace(b, h, g, d, k.shape[2] if index is None else index.shape[-1], q.device,
                                      kv_dtype="fp8" if k_scale is not None else "bf16")
    out = out if out is not None else torch.empty_like(q)
    idx = index if index is not None else length  # unused pointer when not INDEXED
    # [b, n]: one position list for every head (head stride 0); [b, hkv, n]: one list per KV head
    idx_b = index.stride(0) if index is not None else 0
    idx_h = index.stride(1) if index is not None and index.dim() == 3 else 0
    fp8 = k_scale is not None
    _decode_partial[(b * h, ws.splits)](
        q, k, v, length, idx, ws.acc, ws.m, ws.l, k_scale if fp8 else length, v_scale if fp8 else length,
        *_strides3(q), *_strides3(k), *_strides3(v), idx_b, idx_h, h, *_strides3(k_scale), *_strides3(v_scale),
        G=g, G_PAD=ws.g_pad, D=d, SPLITS=ws.splits, INDEXED=index is not None, FP8=fp8, scale=scale,
        **DECODE_LAUNCH["fp8" if fp8 else "bf16"], **_pdl())
    _merge_launch(ws, out, h, ws.splits, ws.splits)
    return out


def _merge_launch(ws: DecodeWorkspace, out: torch.Tensor, h1: int, s1: int, s2: int) -> None:
    """The split merge as its own launch (heads [0, h1) of `out` [b, h, g, d] in s1 splits, the rest in s2)."""
    b, h, g, d = out.shape
    red = _reduce_launch(ws.splits, d)
    _decode_reduce[(b * h, g, d // red["DB"])](ws.acc, ws.m, ws.l, out, *_strides3(out), h, h1, G_PAD=ws.g_pad,
                                               D=d, SPLITS=ws.splits, S1=s1, S2=s2, **red, **_pdl())


def _strides3(t: torch.Tensor | None) -> tuple[int, int, int]:
    """The first three strides a kernel indexes (batch, head, position); zeros for an absent tensor
    (an fp8 scale pointer the kernel never reads)."""
    return (t.stride(0), t.stride(1), t.stride(2)) if t is not None else (0, 0, 0)


def one_loop_fits(cache_strides: list[int]) -> bool:
    """Whether the two-group kernel may take its one attention loop (kernels.TWO_GROUP_ONE_LOOP) for caches with
    these strides. The JIT types an integer argument int64 once it reaches 2^31 (a retrieval cache of 4 heads x
    4.2M positions x 128 has a batch stride of 2.1G elements: the longest contexts), and one loop assigns each
    group's strides to the same variable, which Triton refuses to compile when one group's are int64 and the
    other's int32 (the ring's). Two loops keep each group's strides apart, so such caches take them."""
    return TWO_GROUP_ONE_LOOP and all(abs(x) < 2**31 for x in cache_strides)


def decode_attention_groups(q: torch.Tensor, groups: list[tuple], scale: float, *,
                            workspace: DecodeWorkspace | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """A layer's decode attention over its two head groups, each with its own cache and length, in one
    launch pair on CUDA (instead of one per group): q [b, hkv, g, d] with group 1's KV heads first;
    `groups` = [(k, v, length, k_scale, v_scale)] x 2, k/v [b, heads_i, t_i, d] (fp8 bits with their
    scales, or scales None). Elsewhere group by group (the reference)."""
    out = out if out is not None else torch.empty_like(q)
    if not (HAS_TRITON and q.is_cuda):
        h0 = 0
        for k, v, n, ks, vs in groups:
            h1 = h0 + k.shape[1]
            decode_attention(q[:, h0:h1], k, v, n, scale, out=out[:, h0:h1], k_scale=ks, v_scale=vs)
            h0 = h1
        return out
    return _triton_decode2(q, groups, scale, workspace=workspace, out=out)


def _triton_decode2(q, groups, scale, *, workspace=None, out=None):
    """The two launches for two groups (also run by the tests under TRITON_INTERPRET=1 on CPU tensors)."""
    (k1, v1, n1, ks1, vs1), (k2, v2, n2, ks2, vs2) = groups
    b, h, g, d = q.shape
    keys = (k1.shape[2], k2.shape[2])
    # the busy heads are those of the longest cache (both groups' when their caches are as long): as make_state
    busy = sum(kk.shape[1] for kk in (k1, k2) if kk.shape[2] == max(keys))
    ws = workspace or DecodeWorkspace(b, h, g, d, max(keys), q.device, busy_heads=busy,
                                      kv_dtype="fp8" if ks1 is not None else "bf16", group_keys=keys)
    s1, s2 = ws.group_splits or (ws.splits, ws.splits)
    out = out if out is not None else torch.empty_like(q)
    fp8 = ks1 is not None
    h1 = k1.shape[1]
    cache_strides = [*_strides3(k1), *_strides3(v1), *_strides3(k2), *_strides3(v2), *_strides3(ks1),
                     *_strides3(vs1), *_strides3(ks2), *_strides3(vs2)]
    _decode_partial2[(b * (h1 * s1 + (h - h1) * s2),)](
        q, k1, v1, n1, ks1 if fp8 else n1, vs1 if fp8 else n1, k2, v2, n2, ks2 if fp8 else n2, vs2 if fp8 else n2,
        ws.acc, ws.m, ws.l, *_strides3(q), *cache_strides, b, h, h1,
        G=g, G_PAD=ws.g_pad, D=d, SPLITS=ws.splits, S1=s1, S2=s2, FP8=fp8, scale=scale,
        ONE_LOOP=one_loop_fits(cache_strides),
        **DECODE_LAUNCH[launch_key("fp8" if fp8 else "bf16", two_groups=True)], **_pdl())
    _merge_launch(ws, out, h1, s1, s2)
    return out


# --------------------------------------------------------------------------- decode: tidal's fp8 selection logits

if HAS_TRITON:

    @triton.jit
    def _fp8_logits(Q, K, KS, LEN, OUT, sqb, sqh, sqg, skb, skh, skt, ssb, ssh, sst, sob, soh, sog, H, T,
                    G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, q_scale):
        """One block of BLOCK_N positions of one (sequence, KV head): its G query heads' logits against the fp8 keys,
        q . k x the key's scale, in OUT's dtype. The keys convert to fp16 in registers, as the decode kernel's do
        (the query scaled by q_scale first, to stay inside fp16's range); blocks past the valid length load
        nothing and write zeros (the selection masks them)."""
        bh = tl.program_id(0)
        blk = tl.program_id(1)
        b = bh // H
        h = bh % H
        offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_g = tl.arange(0, G_PAD)
        offs_d = tl.arange(0, D)
        length = tl.minimum(tl.load(LEN), T)
        s = tl.zeros([G_PAD, BLOCK_N], tl.float32)
        if blk * BLOCK_N < length:
            valid = offs_n < length
            q16 = (_load_q(Q, b, h, sqb, sqh, sqg, G, G_PAD, D).to(tl.float32) * q_scale).to(tl.float16)
            k = tl.load(K + _head_base(b, h, skb, skh) + offs_n[:, None] * skt + offs_d[None, :], mask=valid[:, None],
                        other=0)
            k = k.to(tl.float8e4nv, bitcast=True).to(tl.float16)
            ks = tl.load(KS + _head_base(b, h, ssb, ssh) + offs_n * sst, mask=valid, other=0.0).to(tl.float32)
            s = tl.dot(q16, tl.trans(k)) * (ks / q_scale)[None, :]
        mask = (offs_g[:, None] < G) & (offs_n[None, :] < T)
        tl.store(OUT + b * sob + h * soh + offs_g[:, None] * sog + offs_n[None, :], s.to(OUT.dtype.element_ty),
                 mask=mask)


def fp8_selection_logits(q: torch.Tensor, k_bits: torch.Tensor, k_scale: torch.Tensor,
                         length: torch.Tensor) -> torch.Tensor:
    """TidalDecode's selection logits on an fp8 key cache in one launch: q [b, hkv, g, d] against e4m3 bits
    [b, hkv, t, d] with scales [b, hkv, t] -> [b, hkv, g, t] in q's dtype, zero past `length` ([1]). Reads the
    cache's bytes once, where converting it to q's dtype block by block (model.fp8_logits, the reference and
    the CPU path) reads them, writes twice as many and reads those again."""
    b, h, g, d = q.shape
    t = k_bits.shape[2]
    out = torch.empty(b, h, g, t, dtype=q.dtype, device=q.device)
    block_n = 128
    _fp8_logits[(b * h, triton.cdiv(t, block_n))](
        q, k_bits, k_scale, length, out, *_strides3(q), *_strides3(k_bits), *_strides3(k_scale), *_strides3(out), h,
        t, G=g, G_PAD=dot_rows(g), D=d, BLOCK_N=block_n, q_scale=d ** -0.5, num_warps=4,
        num_stages=3)
    return out


# --------------------------------------------------------------------------- decode: RoPE + cache writes

if HAS_TRITON:

    @triton.jit
    def _rotate(X, COS, SIN, HALF: tl.constexpr):
        """RoPE of one head vector (rotate-half convention): the two halves, fp32."""
        offs = tl.arange(0, HALF)
        a = tl.load(X + offs).to(tl.float32)
        c = tl.load(X + HALF + offs).to(tl.float32)
        cos_a, cos_c = tl.load(COS + offs).to(tl.float32), tl.load(COS + HALF + offs).to(tl.float32)
        sin_a, sin_c = tl.load(SIN + offs).to(tl.float32), tl.load(SIN + HALF + offs).to(tl.float32)
        return a * cos_a - c * sin_a, c * cos_c + a * sin_c

    @triton.jit
    def _store_head(DST, SDST, lo, hi, FP8: tl.constexpr, HALF: tl.constexpr):
        """One head vector (its two fp32 halves) into a cache row: as it is, or (FP8) as e4m3 bits scaled so its
        largest magnitude is 448, with that scale (rounded to the scale cache's dtype first, as
        cache.quantize_fp8 does) into SDST."""
        offs = tl.arange(0, HALF)
        if FP8:
            amax = tl.maximum(tl.max(tl.abs(lo), axis=0), tl.max(tl.abs(hi), axis=0))
            sc = tl.maximum(amax / 448.0, 1e-12).to(SDST.dtype.element_ty)
            tl.store(SDST, sc)
            scf = sc.to(tl.float32)
            qlo = tl.clamp(lo / scf, -448.0, 448.0).to(tl.float8e4nv).to(tl.uint8, bitcast=True)
            qhi = tl.clamp(hi / scf, -448.0, 448.0).to(tl.float8e4nv).to(tl.uint8, bitcast=True)
            tl.store(DST + offs, qlo)
            tl.store(DST + HALF + offs, qhi)
        else:
            tl.store(DST + offs, lo.to(DST.dtype.element_ty))
            tl.store(DST + HALF + offs, hi.to(DST.dtype.element_ty))

    @triton.jit
    def _rope_write(Q, K, V, COS, SIN, QO, K1, V1, SLOT1, K2, V2, SLOT2, KS1, VS1, KS2, VS2,
                    sqb, sqh, skb, skh, svb, svh, sqob, sqoh,
                    s1kb, s1kh, s1kt, s1vb, s1vh, s1vt, s2kb, s2kh, s2kt, s2vb, s2vh, s2vt,
                    t1kb, t1kh, t1kt, t1vb, t1vh, t1vt, t2kb, t2kh, t2kt, t2vb, t2vh, t2vt,
                    HQ, H1, HALF: tl.constexpr, FP8: tl.constexpr, GDC: tl.constexpr):
        """One program per (sequence, head): a query head is rotated into QO; a KV head is rotated (k) and
        written with its v at its group's slot (heads [0, H1) to cache 1, the rest to cache 2); with FP8
        caches both are quantized on the way, their scales written beside them (KS*/VS*, strides t*)."""
        _await_previous(GDC)
        b = tl.program_id(0)
        h = tl.program_id(1)
        offs = tl.arange(0, HALF)
        if h < HQ:
            lo, hi = _rotate(Q + b * sqb + h * sqh, COS, SIN, HALF)
            out = QO + b * sqob + h * sqoh
            tl.store(out + offs, lo.to(QO.dtype.element_ty))
            tl.store(out + HALF + offs, hi.to(QO.dtype.element_ty))
        else:
            j = h - HQ
            lo, hi = _rotate(K + b * skb + j * skh, COS, SIN, HALF)
            # the rotated key as the model's dtype holds it (what the compiled path quantizes)
            lo = lo.to(QO.dtype.element_ty).to(tl.float32)
            hi = hi.to(QO.dtype.element_ty).to(tl.float32)
            v_lo = tl.load(V + b * svb + j * svh + offs).to(tl.float32)
            v_hi = tl.load(V + b * svb + j * svh + HALF + offs).to(tl.float32)
            if j < H1:
                t = tl.load(SLOT1)
                kd = K1 + _head_base(b, j, s1kb, s1kh) + t * s1kt
                vd = V1 + _head_base(b, j, s1vb, s1vh) + t * s1vt
                ksd = KS1 + _head_base(b, j, t1kb, t1kh) + t * t1kt
                vsd = VS1 + _head_base(b, j, t1vb, t1vh) + t * t1vt
            else:
                t = tl.load(SLOT2)
                kd = K2 + _head_base(b, j - H1, s2kb, s2kh) + t * s2kt
                vd = V2 + _head_base(b, j - H1, s2vb, s2vh) + t * s2vt
                ksd = KS2 + _head_base(b, j - H1, t2kb, t2kh) + t * t2kt
                vsd = VS2 + _head_base(b, j - H1, t2vb, t2vh) + t * t2vt
            _store_head(kd, ksd, lo, hi, FP8, HALF)
            _store_head(vd, vsd, v_lo, v_hi, FP8, HALF)


def rope_append_fits(head_dim: int, groups: int) -> bool:
    """Whether `rope_append` (one kernel) can replace the compiled RoPE + cache writes: at most two head
    groups, a power-of-two half head (bf16/fp16 caches, or fp8 ones with their scales)."""
    half = head_dim // 2
    return HAS_TRITON and groups <= 2 and head_dim % 2 == 0 and half & (half - 1) == 0 and half >= 16


def rope_append(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                slots: list[torch.Tensor], k_caches: list[torch.Tensor], v_caches: list[torch.Tensor],
                k_scales: list[torch.Tensor | None] | None = None,
                v_scales: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """One decode token's RoPE and its K/V written into each head group's cache at that group's slot, in
    one launch (the compiled function it replaces ran RoPE and each cache's write as separate kernels: six
    a layer for two groups, each ~1 us plus its gap in the graph, and more to quantize into fp8 caches).
    q [b, 1, hq, d], k/v [b, 1, hkv, d] (last dimension contiguous), cos/sin [1, d], slots [1] each, caches
    [b, heads_i, slots_i, d] (fp8: uint8 bits, with `k_scales`/`v_scales` [b, heads_i, slots_i]) -> the
    rotated q [b, hq, d]."""
    b, _, hq, d = q.shape
    hkv = k.shape[2]
    qo = torch.empty(b, hq, d, dtype=q.dtype, device=q.device)
    two = len(k_caches) == 2
    fp8 = k_scales is not None and k_scales[0] is not None
    ks, vs = (k_scales, v_scales) if fp8 else ([None] * len(k_caches), [None] * len(k_caches))
    k1, v1, s1, ks1, vs1 = k_caches[0], v_caches[0], slots[0], ks[0], vs[0]
    k2, v2, s2, ks2, vs2 = (k_caches[1], v_caches[1], slots[1], ks[1], vs[1]) if two else (k1, v1, s1, ks1, vs1)
    h1 = k1.shape[1] if two else hkv
    cos, sin = cos.reshape(-1).contiguous(), sin.reshape(-1).contiguous()
    _rope_write[(b, hq + hkv)](
        q, k, v, cos, sin, qo, k1, v1, s1, k2, v2, s2,
        ks1 if fp8 else s1, vs1 if fp8 else s1, ks2 if fp8 else s1, vs2 if fp8 else s1,
        q.stride(0), q.stride(2), k.stride(0), k.stride(2), v.stride(0), v.stride(2), qo.stride(0), qo.stride(1),
        *_strides3(k1), *_strides3(v1), *_strides3(k2), *_strides3(v2),
        *_strides3(ks1), *_strides3(vs1), *_strides3(ks2), *_strides3(vs2), hq, h1, HALF=d // 2, FP8=fp8, **_pdl())
    return qo


# --------------------------------------------------------------------------- decode: GEMV

if HAS_TRITON:

    @triton.jit
    def _swiglu(g, u, OUT_DTYPE: tl.constexpr):
        """silu(g) * u for gate and up values already in OUT_DTYPE (held as fp32), rounded where the eager glue
        rounds: silu, then the product."""
        silu = (g / (1.0 + tl.exp(-g))).to(OUT_DTYPE).to(tl.float32)
        return (silu * u).to(OUT_DTYPE).to(tl.float32)

    @triton.jit
    def _w_tile(W, rows, shift, cols, N, K, swn):
        """W's rows `rows + shift` (row stride swn) at columns `cols`, zero outside rows < N and cols < K: shift 0
        reads a program's rows, shift N their up rows under SWIGLU_OUT ([gate; up])."""
        return tl.load(W + (rows[:, None] + shift) * swn + cols[None, :], mask=(rows[:, None] < N) & (cols[None, :] < K),
                       other=0.0)

    @triton.jit
    def _gemv_x(X, NW, cols, K, inv, OUT_DTYPE: tl.constexpr, NORM: tl.constexpr, SWIGLU: tl.constexpr,
                NORM_W: tl.constexpr = True):
        """One block of the GEMV's input vector, with the glue folded in where asked (see _gemv_fused)."""
        if SWIGLU:
            g = tl.load(X + cols, mask=cols < K, other=0.0).to(tl.float32)
            u = tl.load(X + K + cols, mask=cols < K, other=0.0).to(tl.float32)
            xv = _swiglu(g, u, OUT_DTYPE)
        else:
            xv = tl.load(X + cols, mask=cols < K, other=0.0).to(tl.float32)
        if NORM and NORM_W:
            nw = tl.load(NW + cols, mask=cols < K, other=0.0).to(tl.float32)
            xv = ((xv * inv).to(OUT_DTYPE).to(tl.float32) * nw).to(OUT_DTYPE).to(tl.float32)
        elif NORM:  # the norm's weight is folded into W's columns (FOLD_NORM_WEIGHTS)
            xv = (xv * inv).to(OUT_DTYPE).to(tl.float32)
        return xv

    @triton.jit
    def _gemv_fused(X, W, Y, R, NW, SSI, SSO, N, K, swn, eps, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    NORM: tl.constexpr, SWIGLU: tl.constexpr, RESIDUAL: tl.constexpr, ONE_SHOT: tl.constexpr,
                    GDC: tl.constexpr, NORM_SS: tl.constexpr, SS_OUT: tl.constexpr, SWIGLU_OUT: tl.constexpr = False,
                    SS_INT: tl.constexpr = False, ss_scale=1.0, NORM_W: tl.constexpr = True,
                    SWIGLU_PAIRS: tl.constexpr = False, DEFER_REDUCE: tl.constexpr = False):
        """y[n] = sum_k w[n, k] x[k] for one block of rows, fp32 accumulation (batch-1 decode), optionally
        with the decode step's glue folded in: NORM, x is RMS-normalised first (its weight NW unless NORM_W is
        off, the weight then folded into W; the norm recomputed by every program from L2: 8 KB for hidden 4096,
        or with NORM_SS read as one float, the sum of squares of x at SSI); SWIGLU, x is [gate; up] (2K) and the
        GEMV reads silu(gate) * up; RESIDUAL, y = R + W x; SS_OUT, the sum of squares of y as stored is added to
        SSO (one atomic add a program: the next GEMV's NORM_SS; SS_INT: SSI / SSO hold int64 fixed point,
        ss_scale units to 1, so the sum is the same whatever order the programs add in); SWIGLU_OUT, W is
        [gate; up] (2N rows) and y[n] = silu(gate_n . x) * (up_n . x), each program reading its gate rows and the
        matching up rows (the next GEMV then reads y as it is, where SWIGLU has every one of its programs
        recompute silu over all of x); SWIGLU_PAIRS, the same with W's rows interleaved (gate_0, up_0, gate_1, ...:
        N rows, N / 2 outputs), so a program's BLOCK_N rows are one tile, read as a plain GEMV's, whose rows pair
        up after the dot products. Each rounds to x's dtype where the eager glue does. DEFER_REDUCE: the products
        summed elementwise over the K blocks and reduced across the tile's columns once, where otherwise each K block
        is reduced (across warps, through shared memory) and added.
        ONE_SHOT (BLOCK_K >= K): the program's whole weight block is loaded at once, and under PDL (GDC) before
        waiting on the previous kernel: weights are never written by it, so their bytes stream in while it ends."""
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        if ONE_SHOT:
            if GDC:
                tl.extra.cuda.gdc_launch_dependents()
            cols = tl.arange(0, BLOCK_K)
            w = _w_tile(W, rows, 0, cols, N, K, swn)
            if SWIGLU_OUT:
                wu = _w_tile(W, rows, N, cols, N, K, swn)
            if GDC:
                tl.extra.cuda.gdc_wait()
        else:
            _await_previous(GDC)
        inv = 1.0
        if NORM and NORM_SS:
            if SS_INT:
                inv = 1.0 / tl.sqrt(tl.load(SSI).to(tl.float32) / ss_scale / K + eps)
            else:
                inv = 1.0 / tl.sqrt(tl.load(SSI) / K + eps)
        elif NORM:
            ss = tl.zeros([BLOCK_K], tl.float32)
            for k0 in range(0, K, BLOCK_K):
                c = k0 + tl.arange(0, BLOCK_K)
                xv = tl.load(X + c, mask=c < K, other=0.0).to(tl.float32)
                ss += xv * xv
            inv = 1.0 / tl.sqrt(tl.sum(ss, axis=0) / K + eps)
        acc_up = tl.zeros([BLOCK_N], tl.float32)
        if ONE_SHOT:
            xv = _gemv_x(X, NW, cols, K, inv, Y.dtype.element_ty, NORM, SWIGLU, NORM_W)
            acc = tl.sum(w.to(tl.float32) * xv[None, :], axis=1)
            if SWIGLU_OUT:
                acc_up = tl.sum(wu.to(tl.float32) * xv[None, :], axis=1)
        elif DEFER_REDUCE:
            part = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
            part_up = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
            for k0 in range(0, K, BLOCK_K):
                c = k0 + tl.arange(0, BLOCK_K)
                xv = _gemv_x(X, NW, c, K, inv, Y.dtype.element_ty, NORM, SWIGLU, NORM_W)
                part += _w_tile(W, rows, 0, c, N, K, swn).to(tl.float32) * xv[None, :]
                if SWIGLU_OUT:
                    part_up += _w_tile(W, rows, N, c, N, K, swn).to(tl.float32) * xv[None, :]
            acc = tl.sum(part, axis=1)
            if SWIGLU_OUT:
                acc_up = tl.sum(part_up, axis=1)
        else:
            acc = tl.zeros([BLOCK_N], tl.float32)
            for k0 in range(0, K, BLOCK_K):
                c = k0 + tl.arange(0, BLOCK_K)
                xv = _gemv_x(X, NW, c, K, inv, Y.dtype.element_ty, NORM, SWIGLU, NORM_W)
                acc += tl.sum(_w_tile(W, rows, 0, c, N, K, swn).to(tl.float32) * xv[None, :], axis=1)
                if SWIGLU_OUT:
                    acc_up += tl.sum(_w_tile(W, rows, N, c, N, K, swn).to(tl.float32) * xv[None, :], axis=1)
        if SWIGLU_OUT:  # gate and up rounded as the GEMV's output, then as the eager glue
            acc = _swiglu(acc.to(Y.dtype.element_ty).to(tl.float32), acc_up.to(Y.dtype.element_ty).to(tl.float32),
                          Y.dtype.element_ty)
        out_rows, n_out = rows, N
        if SWIGLU_PAIRS:  # rows (2i, 2i + 1) are gate i and up i: the tile's sums in pairs
            g, u = tl.split(tl.reshape(acc, (BLOCK_N // 2, 2)))
            acc = _swiglu(g.to(Y.dtype.element_ty).to(tl.float32), u.to(Y.dtype.element_ty).to(tl.float32),
                          Y.dtype.element_ty)
            out_rows, n_out = tl.program_id(0) * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2), N // 2
        if RESIDUAL:
            acc = acc.to(Y.dtype.element_ty).to(tl.float32) + tl.load(R + out_rows, mask=out_rows < n_out,
                                                                       other=0.0).to(tl.float32)
        y = acc.to(Y.dtype.element_ty)
        tl.store(Y + out_rows, y, mask=out_rows < n_out)
        if SS_OUT:
            yf = tl.where(out_rows < n_out, y.to(tl.float32), 0.0)
            if SS_INT:  # rounded to the nearest unit (the sum is >= 0): integer adds in any order give one sum
                tl.atomic_add(SSO, (tl.sum(yf * yf, axis=0) * ss_scale + 0.5).to(tl.int64), sem="relaxed")
            else:
                tl.atomic_add(SSO, tl.sum(yf * yf, axis=0), sem="relaxed")


def gemv_fused(x: torch.Tensor, w: torch.Tensor, *, norm_weight: torch.Tensor | None = None, eps: float = 1e-5,
               swiglu: bool = False, residual: torch.Tensor | None = None, norm_ss: torch.Tensor | None = None,
               ss_out: torch.Tensor | None = None, swiglu_out: bool = False, swiglu_pairs: bool = False,
               block_n: int = 4, block_k: int = 1024, num_warps: int = 4, num_stages: int = 3,
               defer_reduce: bool | None = None) -> torch.Tensor:
    """One decode token's projection with its glue in the same launch: `norm_weight`: y = W rms_norm(x), the
    norm's sum of squares recomputed by every program or, with `norm_ss` (a 1-element fp32 tensor), read from
    it (`norm_ss` without `norm_weight`: the norm's weight is folded into w, FOLD_NORM_WEIGHTS); `swiglu`: x is
    [gate; up] and y = W (silu(gate) * up); `residual`: y += residual; `ss_out` (1-element fp32, zeroed by the
    caller): the sum of squares of y is added to it, for the next projection's `norm_ss`
    (kernels.FUSED_GLUE; int64 tensors for both: fixed point in SS_UNITS, a sum that does not depend on the order
    the programs add in); `swiglu_out`: w is [gate; up] ([2N, K]) and y = silu(gate x) * up x ([N]: the MLP's
    activation, kernels.SWIGLU_EPILOGUE; with `swiglu_pairs` w's rows are interleaved, gate_0, up_0, gate_1, ...,
    kernels.GATE_UP_INTERLEAVED, and `block_n` counts w's rows, an even number). x [K] (swiglu: [2K]), w [N, K]
    row-major -> [N]. `defer_reduce` (default GEMV_DEFER_REDUCE): one cross-column reduction after the K loop."""
    n, k = w.shape
    if (w.stride(1) != 1 or x.numel() != (2 * k if swiglu else k) or (swiglu_out and (n % 2 or swiglu))
            or (swiglu_pairs and (not swiglu_out or block_n % 2))):
        raise ValueError(f"gemv_fused: w must be row-major [N, K] ([2N, K] with swiglu_out, which excludes swiglu; "
                         f"swiglu_pairs goes with swiglu_out and an even block_n) and x [{'2K' if swiglu else 'K'}]; "
                         f"got w {tuple(w.shape)}, x {tuple(x.shape)}, block_n {block_n}")
    n_rows = n if swiglu_pairs else n // 2 if swiglu_out else n  # rows the programs split (pairs: W's, both halves)
    n = n // 2 if swiglu_out else n
    ss_int = any(t is not None and t.dtype == torch.int64 for t in (norm_ss, ss_out))
    if ss_int and (not SS_UNITS or any(t is not None and t.dtype != torch.int64 for t in (norm_ss, ss_out))):
        raise ValueError("gemv_fused: norm_ss and ss_out are both int64 (fixed point, with kernels.SS_UNITS set) "
                         "or both fp32")
    y = torch.empty(n, dtype=x.dtype, device=x.device)
    xf = x.reshape(-1)
    block_k = min(block_k, triton.next_power_of_2(k))  # a block as wide as K: the one-shot GEMV
    _gemv_fused[(triton.cdiv(n_rows, block_n),)](
        xf, w, y, residual.reshape(-1) if residual is not None else y, norm_weight if norm_weight is not None else xf,
        norm_ss if norm_ss is not None else y, ss_out if ss_out is not None else y,
        n_rows, k, w.stride(0), eps, BLOCK_N=block_n, BLOCK_K=block_k,
        NORM=norm_weight is not None or norm_ss is not None, NORM_W=norm_weight is not None, SWIGLU=swiglu,
        RESIDUAL=residual is not None, ONE_SHOT=block_k >= k, NORM_SS=norm_ss is not None,
        SS_OUT=ss_out is not None, SWIGLU_OUT=swiglu_out and not swiglu_pairs, SWIGLU_PAIRS=swiglu_pairs,
        SS_INT=ss_int, ss_scale=SS_UNITS if ss_int else 1.0,
        DEFER_REDUCE=GEMV_DEFER_REDUCE if defer_reduce is None else defer_reduce,
        num_warps=num_warps, num_stages=num_stages, **_pdl())
    return y


def gemv(x: torch.Tensor, w: torch.Tensor, *, block_n: int = 8, block_k: int = 512, num_warps: int = 4,
         num_stages: int = 3) -> torch.Tensor:
    """x [K] @ w[N, K]^T -> [N] in one Triton launch with no split-K reduction; a candidate for the batch-1
    decode's small projections (qkv, o), where cuBLAS reaches 67-77% of copy bandwidth plus a split-K
    reduce kernel (bench/results/decode_profile_duo_bf16_128k_h200.txt). Timed against cuBLAS by
    bench/scripts/gemv_probe.py; the decode step runs it through `decode_linear`."""
    return gemv_fused(x, w, block_n=block_n, block_k=block_k, num_warps=num_warps, num_stages=num_stages)


# The batch-1 decode's GEMV launch, and the weights it runs (bench/results/gemv_probe_h200.json, an H200 with
# Llama-3-8B shapes, each in a CUDA graph of 50 calls cycling 200 MiB of weight copies, so nothing stays in
# L2): 2 rows a program, 1024 columns a block. It beats cuBLAS for the attention projections, whose cuBLAS
# GEMV adds a split-K reduce (qkv 6144 x 4096: 14.8 against 15.6 us; o 4096 x 4096: 10.0 against 12.7 us;
# the earlier 4 rows a program took 15.7 and 12.8), and cuBLAS stays for the MLP's (gate_up 28672 x 4096,
# down 4096 x 14336: the GEMV's 2-8% there is not worth a second code path for the largest weights), so
# only weights up to GEMV_MAX_WEIGHT elements take it. The whole decode step with the GEMV against cuBLAS
# (--gemv-max-weight 0): 0.5% faster (bench/results/decode_launch_sweep_h200.json).
GEMV_LAUNCH = dict(block_n=2, block_k=1024, num_warps=4, num_stages=3)
GEMV_MAX_WEIGHT = 32 * 2**20

# The decode step's glue folded into its GEMVs (one token): o_proj adds the residual and the sum of squares of the
# new residual stream (one atomic add a program), gate_up applies the MLP norm with that sum, down reads
# silu(gate) * up and adds the residual and the next sum, and the next layer's qkv applies its norm with it
# (FastModel._fused_mlp). A layer takes 3 launches for o + MLP where the compiled glue and cuBLAS take 6-7 (two
# norms, SwiGLU, split-K reduces), each ~2.7 us plus its gap in the graph (norms: 2.7 us x 65 a step,
# bench/results/decode_profile_duo_bf16_128k_h200.txt). The earlier fused chain recomputed each norm in every
# program, which cost more than the launches it saved (gemv_probe_h200.json at 3226e37: 133.8 against 122.1 us
# a layer); here each program reads one float. The MLP's weights move from cuBLAS to the GEMV (the whole step
# with that alone: +0.3%, decode_launch_sweep4_h200.json). The sums are added in whatever order the programs
# finish, so a step's last bits may differ between runs. On since decode_launch_sweep5_h200.json (f6bc1bf, 128K):
# sedpa-w -1.72% in both pairs, duo -0.32% / -0.75%, full -0.19% / -0.11%; fp8 duo -1.31%, fp8 full +0.42%.
FUSED_GLUE = True

# Under FUSED_GLUE, the MLP's SwiGLU in gate_up's GEMV instead of down's: each gate_up program reads its gate rows
# and the matching up rows and stores silu(gate) * up (14336 values for Llama-3-8B), and down reads that vector as
# it is. With SwiGLU in down's GEMV every one of its 2048 programs (2 rows each) reads all 2 x 14336 of gate_up's
# outputs and takes 14336 exponentials: 117 MB of L2 reads a layer, as much as down's weights, and 29M
# exponentials. The values are the same: gate and up are rounded, then silu and the product, as before. Why: the
# fused projection GEMVs took 123-124 us a layer in the 128K duo and sedpa-w profiles at 7bebe55
# (bench/results/decode_profile_{duo,sedpa-w}_bf16_128k_7bebe55.txt) where the same four plain GEMVs took 108
# against a 102 us byte floor (gemv_probe_h200.json). Timed in the whole step at 128K
# (bench/results/decode_launch_sweep8_h200.json, c8ac657, two rows against one defaults row): full -2.96 / -2.95%,
# duo -3.47 / -3.12%, sedpa-w -3.24 / -3.39%; the defaults row ran beside the GPU tests on the machine's other GPU
# and the two rows after it did not, so part of that may be the machine. Against sweep 7's rows of the same code
# less this (another call): sedpa-w -2.0 / -2.2%, duo -0.5 / -0.2%, full +0.2%. Within its own rows, sedpa-w
# 1.809x / 1.812x faster than full, duo 1.294x / 1.290x. On; the runtime check at 7742fa7, alone on the machine
# (bench/results/efficiency_llama-3-8b.json, with FOLD_NORM_WEIGHTS too): sedpa-w 1.835x, duo 1.303x.
SWIGLU_EPILOGUE = True

# The RMSNorm weights folded into the columns of the projections that read the norm's output (qkv_in by the
# attention norm, gate_up by the MLP norm; FastModel builds them so while this is on, and keeps ones as the norms'
# weights): y = W (norm(x) * w) = (W diag(w)) norm(x). The fused GEMVs then read no norm weight: every program of
# qkv and gate_up loads x and the norm's 8 KB weight today (hidden 4096), as many L2 bytes a layer as qkv's weights
# at 2 rows a program. The folded weights round once more (W * w in bf16), well inside the logits tests' bounds.
# Read when a FastModel is built. On since launch sweep 9 (bench/results/decode_launch_sweep9_h200.json, a099130,
# 128K, two rows against the mean of two defaults rows): full -0.35 / -0.23%, duo -0.37 / -0.20%, sedpa-w -0.41 /
# -0.41%; in gemv_glue_parts_a099130_h200.json qkv's fused GEMV took 15.23 us folded against 15.58.
FOLD_NORM_WEIGHTS = True

# The fused glue's sums of squares as int64 fixed point, SS_UNITS to 1 (DecodeState.glue_ss is int64 while this is
# set; None: fp32). Each GEMV program adds its rows' share with an atomic add, in whatever order the programs
# finish: fp32 adds in another order give another last bit, so two runs of a decode step differed (0.76% in the
# logits after 10 steps of the GPU test model, bench/results/gpu_tests_7f12c15_h200.txt) and a greedy token could
# flip between runs. Integer adds give one sum in any order. 2^24 units: a share is rounded to 6e-8, so 2048
# programs put the sum within ~1e-6 (relative 3e-5 for a residual stream of RMS 0.003 at hidden 4096, far below a
# bf16 step), and sums up to 5.5e11 fit (an RMS of 11,600 at hidden 4096). On the GPU two graph-replayed runs are
# bit for bit equal (gpu_tests_4ee4023_h200.txt), and fp32 atomics were 0.3-1.2% slower in every mode in launch
# sweep 9 (bench/results/decode_launch_sweep9_h200.json).
SS_UNITS: float | None = float(2 ** 24)

# Rows a program for the fused GEMVs that normalise their input (qkv from the attention norm, gate_up from the MLP
# norm; None: GEMV_LAUNCH's 2). Every program of those reloads x and the norm weight (8 KB each at hidden 4096):
# at 2 rows a program qkv's 3072 programs read 50 MB from L2 a layer, as many bytes as its weights, and gate_up's
# 7168 (2 activation rows = 4 weight rows each, SWIGLU_EPILOGUE) 117 MB. More rows a program read that less
# often but give fewer programs to spread the weights over. Not yet timed: decode_split_rule.py --gemv-norm-block-n.
GEMV_NORM_BLOCK_N: int | None = None


# Activation rows a program for gate_up's GEMV under SWIGLU_EPILOGUE (None: gemv_norm_launch's block_n). Each
# program reads that many gate rows and as many up rows, so at GEMV_LAUNCH's 2 it streams 4 weight rows, and 4 rows
# a program is the slower launch for every decode GEMV: gate_up with the epilogue took 60.8 us against 56.0 for the
# plain GEMV of the same weight at 2 rows, as much as the plain GEMV at 4 rows (59.3 us), while gate_up without the
# epilogue took 56.2 (bench/results/gemv_glue_parts_h200.json, 4ee4023). 1: two weight rows a program, as the plain
# GEMV. It did not help: 61.2 us at 1 against 61.3 at 2 (gemv_glue_parts_a099130_h200.json), so the epilogue's ~5 us
# is not its rows a program, and the whole step lost 0.6-1.0% in every mode in both rows of launch sweep 9
# (decode_launch_sweep9_h200.json, against the mean of two defaults rows: +0.55 to +1.03%). Off.
EPILOGUE_BLOCK_N: int | None = None


def gemv_norm_launch() -> dict:
    """GEMV_LAUNCH with GEMV_NORM_BLOCK_N rows a program where it is set: the launch of the fused GEMVs that apply
    a norm to their input."""
    return GEMV_LAUNCH if GEMV_NORM_BLOCK_N is None else {**GEMV_LAUNCH, "block_n": GEMV_NORM_BLOCK_N}


def gemv_epilogue_launch(pairs: bool = False) -> dict:
    """The launch of gate_up's fused GEMV under SWIGLU_EPILOGUE: gemv_norm_launch with EPILOGUE_BLOCK_N activation
    rows a program where it is set. `pairs` (GATE_UP_INTERLEAVED): block_n counts the weight's rows, gate and up
    together (even), so at GEMV_LAUNCH's 2 a program reads the plain GEMV's tile and stores one activation."""
    launch = gemv_norm_launch()
    if pairs:
        rows = 2 * EPILOGUE_BLOCK_N if EPILOGUE_BLOCK_N is not None else launch["block_n"]
        return {**launch, "block_n": max(2, rows + rows % 2)}
    return launch if EPILOGUE_BLOCK_N is None else {**launch, "block_n": EPILOGUE_BLOCK_N}


# The decode GEMVs' products summed elementwise over the K blocks in registers and reduced across the tile once,
# after the loop (_gemv_fused's DEFER_REDUCE), where otherwise every K block of 1024 columns is reduced across the
# program's warps through shared memory (3 barriers a block in the PTX) and added: 4 reductions a program for
# K = 4096 (qkv, o, gate_up), 14 for down's 14336, twice that for the SwiGLU epilogue on [gate; up]. The small GEMVs sit at 1.24-1.25x
# their byte floor alone (qkv, o; gemv_glue_parts_a099130_h200.json). The sums run in another order (fp32). Not yet
# timed: decode_split_rule.py --gemv-defer-reduce; registers and barriers in gemv_epilogue_sm90.json.
# Off: in launch sweep 10 (bench/results/decode_launch_sweep10_h200.json, 128K) it was 3.6% (full), 5.0% (duo) and
# 6.8-6.9% (sedpa-w) slower in both rows: 39-40 registers a thread where 30-32, 12 programs an SM where 16, costs
# more than the barriers it saves.
GEMV_DEFER_REDUCE = False


# gate_up stored row by row (gate_0, up_0, gate_1, up_1, ...) instead of [gate; up], for the SwiGLU-epilogue GEMV
# (read when a FastModel is built; FastLayer.gate_up_interleaved): each program then reads one tile of adjacent
# rows, as the plain GEMV does, and pairs its sums up after the dot products, where with [gate; up] it reads its
# gate rows and the up rows 14336 rows away as two tiles. With [gate; up] the epilogue GEMV took 61.2-61.3 us against
# 56.0-56.1 for the plain GEMV of the same weight, at one activation row a program as at two
# (bench/results/gemv_glue_parts_a099130_h200.json): ~5 us a layer, most of the fused glue's cost; its PTX has two
# cross-warp reductions a K block where the plain GEMV has one (6 barriers against 3; interleaved: 3,
# bench/results/gemv_epilogue_sm90.json). Prefill and the unfused step read the interleaved output with a strided
# SwiGLU (model._silu_mul). On since launch sweep 10 (bench/results/decode_launch_sweep10_h200.json, 128K, both
# rows): decode 1.55-1.60% faster (full), 2.19% (duo), 3.49-3.58% (sedpa-w); the layer's fused chain took 111.7 us
# against 115.9 on [gate; up] (bench/results/gemv_glue_parts_339a71f_h200.json). Off: --gate-up-halves.
GATE_UP_INTERLEAVED = True


def decode_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """F.linear for one token's activations x [..., K] (one row in all) against w [N, K]: the Triton GEMV
    where it beats cuBLAS (a CUDA half-precision weight of at most GEMV_MAX_WEIGHT elements), else cuBLAS."""
    if (HAS_TRITON and w.is_cuda and w.dtype in (torch.bfloat16, torch.float16) and x.dtype == w.dtype
            and x.numel() == w.shape[1] and w.numel() <= GEMV_MAX_WEIGHT and w.stride(1) == 1
            and x.is_contiguous()):
        return gemv(x, w, **GEMV_LAUNCH).view(*x.shape[:-1], w.shape[0])
    return F.linear(x, w)


# --------------------------------------------------------------------------- prefill

def _expand(x: torch.Tensor, group: int) -> torch.Tensor:
    return x if group == 1 else x.repeat_interleave(group, dim=1)


def causal_chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int, scale: float) -> torch.Tensor:
    """Queries at positions [start, start+tq) against keys [0, start+tq), causal.

    q [b, hq, tq, d]; k/v [b, hkv, start+tq, d]. On CUDA: cuDNN attention where this GPU and torch
    run it (checked once against flash on the first chunk), else one flash-attention call over the
    whole prefix (its causal mask aligned to the bottom right when there are more keys than queries:
    query i sees keys up to start + i, exactly a chunk against its past). Elsewhere one masked SDPA.
    """
    tq, tk = q.shape[2], k.shape[2]
    group = q.shape[1] // k.shape[1]
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        out = _cudnn_chunk(q, _slices(k, v), start, scale, group) if PREFILL_CUDNN else None
        return out if out is not None else _flash(q, k, v, True, scale, group)[0]
    qpos = torch.arange(start, start + tq, device=q.device)
    mask = qpos[:, None] >= torch.arange(tk, device=q.device)[None, :]
    return F.scaled_dot_product_attention(q, _expand(k, group), _expand(v, group), attn_mask=mask, scale=scale)


def causal_chunk_attention_read(q: torch.Tensor, read, start: int, group: int, scale: float) -> torch.Tensor:
    """`causal_chunk_attention` over keys that `read(s0, s1) -> (k, v)` produces a span at a time (fp8
    caches dequantize what is read): the past is read in PAST_BLOCK-key blocks, so the dequantized copy
    is one block, never the whole past. cuDNN where it runs, else flash, on CUDA (both return the
    log-sum-exps the blocks are merged by); elsewhere the same blocks through `_math_attend`."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        out = _cudnn_chunk(q, read, start, scale, group) if PREFILL_CUDNN else None
        if out is not None:
            return out
        return blocked_chunk_attention(q, read, start, lambda q_, k_, v_, c: _flash(q_, k_, v_, c, scale, group))
    return blocked_chunk_attention(q, read, start, lambda q_, k_, v_, c: _math_attend(q_, k_, v_, c, scale, group))


def _slices(k: torch.Tensor, v: torch.Tensor):
    return lambda s0, s1: (k[:, :, s0:s1], v[:, :, s0:s1])


def _math_attend(q, k, v, causal: bool, scale: float, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One attention call with its log-sum-exp, in fp32 (the CPU's twin of `_cudnn` / `_flash`; a
    causal call is a chunk against itself, so its mask is the square's)."""
    logits = q.float() @ _expand(k, group).float().transpose(-1, -2) * scale
    if causal:
        n = q.shape[2]
        logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return (torch.softmax(logits, -1) @ _expand(v, group).float()).to(q.dtype), torch.logsumexp(logits, -1)


# cuDNN's attention runs a chunk's causal square and its rectangle against the past at ~610 TFLOP/s on the
# H200 against flash's ~350 (bench/results/prefill_attention_probe.json); its causal mask is aligned to
# the top left only, so a chunk with a past is several calls (itself: causal; the past: no mask, in
# blocks) merged by their log-sum-exps. Tests set PREFILL_CUDNN = False to compare with the flash path.
PREFILL_CUDNN = True
_CUDNN_STATE: dict[str, bool | None] = {"square": None, "past": None, "blocks": None}


def _cudnn(q, k, v, causal: bool, scale: float, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cuDNN attention with its log-sum-exp [b, h, tq] (fp32, natural log); GQA as `_gqa_call` does it."""
    def call(q_, k_, v_):
        o, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q_, k_, v_, None, True, 0.0, causal, False,
                                                                    scale=scale)[:2]
        return o, lse.reshape(q_.shape[:3])

    return _gqa_call(call, "cudnn", q, k, v, group)


def merge_softmax(o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor,
                  lse2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two attention outputs over disjoint key sets -> (the output over their union, fp32; its
    log-sum-exp), weighted by their log-sum-exps."""
    m = torch.maximum(lse1, lse2)
    w1, w2 = torch.exp(lse1 - m), torch.exp(lse2 - m)
    den = w1 + w2
    out = o1.float() * (w1 / den)[..., None] + o2.float() * (w2 / den)[..., None]
    return out, m + torch.log(den)


# How a chunk's attention over the past blocks is merged on CUDA: "triton" (`merge_attention`: one pass a block,
# into an fp32 accumulator kept across the blocks, the last merge storing the chunk's dtype) or "compiled"
# (`merge_softmax` under torch.compile, dynamic shapes). At 128K the compiled merge took ~0.51 ms a call for its
# ~335 MB (about a sixth of copy bandwidth; four a layer in full's last chunk: 65.8 of 1164 ms,
# bench/results/prefill_profile_full_128k_7742fa7_h200.txt). "triton" since launch sweep 10: one layer's chunk
# attention over 16K / 57K / 123K of past in 4.10 / 12.10 / 27.86 ms against 4.47 / 13.72 / 28.31 compiled
# (bench/results/prefill_attention_probe_339a71f_h200.json); full's 128K prefill 1.8% faster
# (decode_launch_sweep10_h200.json). Back: --prefill-merge compiled.
PREFILL_MERGE = "triton"

if HAS_TRITON:

    @triton.jit
    def _merge_attention(O1, L1, O2, L2, OUT, LOUT, H, T, s1b, s1h, s1t, s2b, s2h, s2t, sob, soh, sot,
                         slb, slh, BLOCK_T: tl.constexpr, D: tl.constexpr):
        """BLOCK_T query rows of one (sequence, head): two softmaxes over disjoint key sets merged by their
        log-sum-exps, the same fp32 arithmetic as merge_softmax. LOUT may be L1 and OUT may be O1 (in place):
        each program reads its rows before it writes them."""
        bh = tl.program_id(0)
        b, h = bh // H, bh % H
        t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
        rows = t < T
        l1 = tl.load(L1 + b * slb + h * slh + t, mask=rows, other=0.0)
        l2 = tl.load(L2 + b * slb + h * slh + t, mask=rows, other=0.0)
        m = tl.maximum(l1, l2)
        w1, w2 = tl.exp(l1 - m), tl.exp(l2 - m)
        den = w1 + w2
        d = tl.arange(0, D)
        o1 = tl.load(O1 + b * s1b + h * s1h + t[:, None] * s1t + d[None, :], mask=rows[:, None], other=0.0)
        o2 = tl.load(O2 + b * s2b + h * s2h + t[:, None] * s2t + d[None, :], mask=rows[:, None], other=0.0)
        out = o1.to(tl.float32) * (w1 / den)[:, None] + o2.to(tl.float32) * (w2 / den)[:, None]
        tl.store(OUT + b * sob + h * soh + t[:, None] * sot + d[None, :], out.to(OUT.dtype.element_ty),
                 mask=rows[:, None])
        tl.store(LOUT + b * slb + h * slh + t, m + tl.log(den), mask=rows)


def merge_attention(o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor, lse2: torch.Tensor,
                    out: torch.Tensor, block_t: int = 32) -> None:
    """`merge_softmax` in one Triton pass, into `out` (which may be o1: in place; its dtype is the result's) and
    lse1 (the merged log-sum-exp, in place). o1 / o2 / out [b, h, t, d] with any strides but a contiguous head
    dim (cuDNN's outputs keep the queries' [b, t, h, d] layout); lse1 / lse2 [b, h, t] fp32 with equal strides
    and contiguous positions."""
    b, h, t, d = o1.shape
    if (any(x.shape != o1.shape or x.stride(3) != 1 for x in (o2, out)) or o1.stride(3) != 1
            or lse2.stride() != lse1.stride() or lse1.stride(2) != 1 or lse1.dtype != torch.float32
            or d & (d - 1)):
        raise ValueError(f"merge_attention: outputs [b, h, t, d] with a contiguous power-of-two head dim and fp32 "
                         f"log-sum-exps of one layout; got {tuple(o1.shape)}, {tuple(o2.shape)}, {tuple(out.shape)}, "
                         f"lse strides {lse1.stride()} / {lse2.stride()}")
    _merge_attention[(b * h, triton.cdiv(t, block_t))](
        o1, lse1, o2, lse2, out, lse1, h, t, *_strides3(o1), *_strides3(o2), *_strides3(out),
        lse1.stride(0), lse1.stride(1), BLOCK_T=block_t, D=d, num_warps=4)


# Keys per cuDNN call against the past. cuDNN builds an execution plan per new shape (kept for the
# process), so a chunk's whole past in one call would cost a new plan at every chunk of a prompt: in
# blocks aligned to multiples of PAST_BLOCK the shapes are the full block and (the past being a
# multiple of the chunk) at most PAST_BLOCK / chunk remainders, whatever the prompt's length.
PAST_BLOCK = 32768


def blocked_chunk_attention(q: torch.Tensor, read, start: int, attend, block: int | None = None,
                            merge_kernel: bool | None = None) -> torch.Tensor:
    """A chunk (queries at [start, start+tq)) against keys [0, start+tq), causal, as one causal square
    (the chunk against itself) plus the past in `block`-key pieces (default PAST_BLOCK), merged by their
    log-sum-exps. `read(s0, s1) -> (k, v)` gives keys [s0, s1); `attend(q, k, v, causal) -> (out, lse)` is
    one attention call (cuDNN on the GPU). `merge_kernel`: merge with `merge_attention` (default: where
    PREFILL_MERGE is "triton", on CUDA)."""
    block = block or PAST_BLOCK
    out, lse = attend(q, *read(start, start + q.shape[2]), True)
    d = q.shape[-1]
    if merge_kernel is None:
        merge_kernel = PREFILL_MERGE == "triton" and HAS_TRITON and q.is_cuda and not d & (d - 1)
    if merge_kernel and start > 0:
        starts = list(range(0, start, block))
        lse, acc = lse.float().contiguous(), None  # merged into in place, block after block
        for i, s0 in enumerate(starts):
            o2, l2 = attend(q, *read(s0, min(start, s0 + block)), False)
            if i == len(starts) - 1:  # the last merge stores the chunk's dtype, in the layout attention gave
                dst = torch.empty_like(out, dtype=q.dtype)
            else:  # an fp32 accumulator, kept across the blocks
                dst = acc if acc is not None else torch.empty_like(out, dtype=torch.float32)
            merge_attention(out, lse, o2, l2.float().contiguous(), dst)
            out = acc = dst
        return out
    merge = _merge_for(q)
    if start > 0:  # every merge then sees the same dtypes (fp32 so far, the new block's own): one compile
        out = out.float()
    for s0 in range(0, start, block):
        o2, l2 = attend(q, *read(s0, min(start, s0 + block)), False)
        out, lse = merge(out, lse, o2, l2)
    return out.to(q.dtype)


_MERGE: FirstCallFallback | None = None  # merge_softmax compiled on CUDA, built on first use
MERGE_NOTES: list[str] = []  # where a failed compile of it says so


def _merge_for(q: torch.Tensor):
    """merge_softmax for this chunk: on CUDA compiled (dynamic shapes: one compile for every chunk and head
    count) into one pass over the outputs, where eagerly it is ~10 passes over fp32 copies of them (at 128K
    four merges a layer of a chunk's [heads, 8192, 128] outputs); a compile that fails falls back for the
    process."""
    global _MERGE
    if not q.is_cuda:
        return merge_softmax
    if _MERGE is None:
        _MERGE = FirstCallFallback(torch.compile(merge_softmax, dynamic=True, fullgraph=True), merge_softmax,
                                   MERGE_NOTES, "prefill block merge")
    return _MERGE


def _cudnn_chunk(q, read, start: int, scale: float, group: int) -> torch.Tensor | None:
    """The chunk's attention through cuDNN (keys from `read`, see `blocked_chunk_attention`), or None
    where cuDNN does not run it. The first call of each kind (a first chunk: one causal square; a later
    one: square + past merged; one whose past spans several blocks) is checked against flash over the
    whole prefix (read once, at the first such chunk, while the past is still short), since a cuDNN
    build that ran but disagreed would be silently wrong: a mismatch or an error turns that kind off
    for the process."""
    kind = "square" if start == 0 else "past" if start <= PAST_BLOCK else "blocks"
    if _CUDNN_STATE[kind] is False:
        return None
    try:
        out = blocked_chunk_attention(q, read, start, lambda q_, k_, v_, causal: _cudnn(q_, k_, v_, causal, scale, group))
    except RuntimeError:
        _CUDNN_STATE[kind] = False
        return None
    if _CUDNN_STATE[kind] is None:
        want = _flash(q, *read(0, start + q.shape[2]), True, scale, group)[0].float()
        err = float((out.float() - want).norm() / want.norm().clamp_min(1e-30))
        _CUDNN_STATE[kind] = err < 2e-2
        if not _CUDNN_STATE[kind]:
            return None
    return out


EXPAND_LIMIT = 1 << 30  # bytes of GQA-expanded K+V materialised at once during prefill


# per backend: whether this torch's op takes fewer KV heads than query heads (tried once)
NATIVE_GQA: dict[str, bool | None] = {"flash": None, "cudnn": None}


def _gqa_call(call, backend: str, q, k, v, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`call(q, k, v) -> (out, lse)` with GQA: the kernel reads each KV head for its group of query heads
    where `backend`'s op accepts that (tried once, NATIVE_GQA); otherwise K/V are expanded, one KV head
    at a time when that would be large (a million-token past expanded for every query head would not
    fit)."""
    if group > 1 and NATIVE_GQA[backend] is not False:
        try:
            res = call(q, k, v)
            NATIVE_GQA[backend] = True
            return res
        except RuntimeError:
            NATIVE_GQA[backend] = False
    if group == 1 or 2 * k.numel() * group * k.element_size() <= EXPAND_LIMIT or k.shape[1] == 1:
        return call(q, _expand(k, group), _expand(v, group))
    parts = [_gqa_call(call, backend, q[:, h * group:(h + 1) * group], k[:, h:h + 1], v[:, h:h + 1], group)
             for h in range(k.shape[1])]
    return torch.cat([o for o, _ in parts], 1), torch.cat([l_ for _, l_ in parts], 1)


def _flash(q, k, v, causal: bool, scale: float, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flash attention returning its log-sum-exp [b, h, tq] (fp32). With `causal` and more keys than
    queries the mask is aligned to the bottom right. GQA as `_gqa_call` does it."""
    def call(q_, k_, v_):
        res = torch.ops.aten._scaled_dot_product_flash_attention(q_, k_, v_, 0.0, causal, False, scale=scale)
        return res[0], res[1]

    return _gqa_call(call, "flash", q, k, v, group)


def band_chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                         k_pos: torch.Tensor, sink: int, band: int, scale: float,
                         block_mask=None) -> torch.Tensor:
    """Queries at `q_pos` against a gathered key set at `k_pos` (-1 = empty slot): causal, and only
    keys in the sink (pos < sink) or within `band` of the query (the query itself included).
    q [b, hq, tq, d]; k/v [b, hkv, tk, d]. On CUDA in bf16/fp16: FlexAttention (`block_mask` from
    `band_block_mask`, built once per chunk and band and shared by every layer); else masked SDPA."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and USE_FLEX:
        return band_attention_flex(q, k, v, q_pos, k_pos, sink, band, scale, block_mask=block_mask)
    q_pos, k_pos = q_pos[:q.shape[2]], k_pos[:k.shape[2]]  # positions may carry padding (the CUDA path's shapes)
    dist = q_pos[:, None] - k_pos[None, :]
    mask = (k_pos[None, :] >= 0) & (dist >= 0) & ((k_pos[None, :] < sink) | (dist < band))
    group = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, _expand(k, group), _expand(v, group), attn_mask=mask, scale=scale)


# --------------------------------------------------------------------------- prefill: FlexAttention

USE_FLEX = True  # tests flip it to compare the two CUDA paths
FLEX_BLOCK = 128
_FLEX_COMPILED = None


def _band_mask_mod(q_pos: torch.Tensor, k_pos: torch.Tensor, sink: int, band: int):
    def mask_mod(b, h, q_idx, kv_idx):
        qp, kp = q_pos[q_idx], k_pos[kv_idx]
        dist = qp - kp
        return (kp >= 0) & (dist >= 0) & ((kp < sink) | (dist < band))

    return mask_mod


def _pad_to(n: int) -> int:
    return -n % FLEX_BLOCK


def band_block_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, sink: int, band: int):
    """The block mask of one chunk's band attention, built directly from the positions: no
    `create_block_mask` (its compiled build cost minutes per new shape on the H100/H200; its eager
    build materialises the whole [chunk, keys] mask). Lengths are padded to whole blocks (padded
    queries and keys sit at position -1 and are fully masked).

    A query block holds contiguous positions [lo, hi]. Key position kp (>= 0) is visible to some
    query of the block iff kp <= hi and (kp < sink or lo - kp < band), and to every query iff
    kp <= lo and (kp < sink or hi - kp < band). Key blocks whose keys are all visible to every query
    are "full" (no mask_mod evaluated); blocks with some visible key are "partial"; the rest are
    skipped. The arithmetic is over [query blocks, keys]: ~0.5M elements at an 8K chunk."""
    from torch.nn.attention.flex_attention import BlockMask

    q_pos = F.pad(q_pos, (0, _pad_to(q_pos.numel())), value=-1)
    k_pos = F.pad(k_pos, (0, _pad_to(k_pos.numel())), value=-1)
    blk = FLEX_BLOCK
    nq, nk = q_pos.numel() // blk, k_pos.numel() // blk
    qb = q_pos.view(nq, blk)
    real_q = qb >= 0
    lo = torch.where(real_q, qb, torch.iinfo(qb.dtype).max).amin(1, keepdim=True)
    hi = torch.where(real_q, qb, -1).amax(1, keepdim=True)
    kp = k_pos[None, :]
    real_k = kp >= 0
    some = real_k & (kp <= hi) & ((kp < sink) | (lo - kp < band))
    every = real_k & (kp <= lo) & ((kp < sink) | (hi - kp < band)) & real_q.all(1, keepdim=True)
    full = every.view(nq, nk, blk).all(-1)
    partial = some.view(nq, nk, blk).any(-1) & ~full

    def lists(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = m.sum(-1, dtype=torch.int32)
        order = torch.argsort((~m).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # chosen blocks first
        return counts[None, None].contiguous(), order[None, None].contiguous()

    kv_num, kv_idx = lists(partial)
    full_num, full_idx = lists(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=blk,
                                    mask_mod=_band_mask_mod(q_pos, k_pos, sink, band))


def _flex_compiled():
    """flex_attention compiled once per process (static shapes: one kernel per chunk shape and band)."""
    global _FLEX_COMPILED
    if _FLEX_COMPILED is None:
        import torch._dynamo
        from torch.nn.attention.flex_attention import flex_attention

        dyn = torch._dynamo.config
        limit = "recompile_limit" if hasattr(dyn, "recompile_limit") else "cache_size_limit"
        setattr(dyn, limit, max(getattr(dyn, limit), 64))
        _FLEX_COMPILED = torch.compile(flex_attention, dynamic=False)
    return _FLEX_COMPILED


def band_attention_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
                        sink: int, band: int, scale: float, *, block_mask=None, compiled: bool | None = None):
    """`band_chunk_attention` through FlexAttention: only blocks with a visible key are computed,
    and GQA is native (no expanded K/V). `q_pos`/`k_pos` may be longer than q/k (padding at -1:
    the runner pads every chunk to one shape per band, so the compiled kernel is built once).
    `compiled=False` runs flex eagerly (the CPU tests)."""
    from torch.nn.attention.flex_attention import flex_attention

    compiled = q.is_cuda if compiled is None else compiled
    tq = q.shape[2]
    nq, nk = q_pos.numel() + _pad_to(q_pos.numel()), k_pos.numel() + _pad_to(k_pos.numel())
    if block_mask is None:
        block_mask = band_block_mask(q_pos, k_pos, sink, band)
    if nq > tq:
        q = F.pad(q, (0, 0, 0, nq - tq))
    if nk > k.shape[2]:
        k, v = F.pad(k, (0, 0, 0, nk - k.shape[2])), F.pad(v, (0, 0, 0, nk - v.shape[2]))
    fn = _flex_compiled() if compiled else flex_attention
    out = fn(q.contiguous(), k.contiguous(), v.contiguous(), block_mask=block_mask, scale=scale,
             enable_gqa=q.shape[1] != k.shape[1])
    return out[:, :, :tq]
