"""`sedpa bench ppl`: perplexity of every `--attention` mode over the same sliding windows of text.

Each window of `seq_len` tokens is scored in one chunked prefill (the masked modes' prefill and
decode compute the same function). Modes whose decode differs (tidal) prefill the window's first
part with full attention, as they run, and score the last `decode_tail` tokens one at a time on
the decode path. Every mode reports `ppl` over all tokens of the windows and `tail_ppl` over each
window's last `decode_tail` tokens, where long-range attention matters most.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from sedpa_compress.bench.cache import CellCache
from sedpa_compress.bench.common import (
    DECODE_SPARSE_MODES,
    DEFAULT_CHUNK,
    BenchModel,
    ProgressFn,
    bench_fingerprint,
    ppl_from_nll,
    provenance,
    token_nll,
)
from sedpa_compress.errors import SedpaError
from sedpa_compress.models.loader import LoadedModel

DEFAULT_SEQ_LEN = 4096
DEFAULT_DECODE_TAIL = 256


@dataclass
class PplConfig:
    data: str | None = None  # None: the bundled held-out text; else .txt, folder of .txt, .jsonl, dataset
    text_field: str = "text"
    split: str = "test"  # for a Hugging Face dataset
    seq_len: int | None = None  # None: min(4096, the model's limit)
    stride: int | None = None  # None: seq_len (non-overlapping windows)
    windows: int = 4  # at most this many windows
    decode_tail: int | None = None  # None: min(256, seq_len // 4)
    chunk: int = DEFAULT_CHUNK

    def validate(self, limit: int | None) -> PplConfig:
        if self.seq_len is None:
            self.seq_len = min(DEFAULT_SEQ_LEN, limit) if limit else DEFAULT_SEQ_LEN
        if self.seq_len < 16:
            raise SedpaError(f"--seq-len {self.seq_len}: pass at least 16 tokens")
        if limit and self.seq_len > limit:
            raise SedpaError(f"--seq-len {self.seq_len} is beyond the model's {limit}-token limit: pass --seq-len {limit} or less")
        if self.stride is not None and self.stride < 1:
            raise SedpaError(f"--stride {self.stride}: pass a positive number of tokens")
        if self.windows < 1:
            raise SedpaError(f"--windows {self.windows}: pass at least 1")
        if self.decode_tail is None:
            self.decode_tail = min(DEFAULT_DECODE_TAIL, self.seq_len // 4)
        if not 0 <= self.decode_tail < self.seq_len:
            raise SedpaError(f"--decode-tail {self.decode_tail}: pass 0..{self.seq_len - 1}")
        if self.chunk < 1:
            raise SedpaError(f"--chunk {self.chunk}: pass a positive prefill chunk size")
        return self


def load_texts(cfg: PplConfig) -> tuple[list[str], str]:
    """The documents to score and a description of where they came from."""
    from sedpa_compress.calibration.sources import iter_texts
    from sedpa_compress.data.text import load_bundled_text

    if cfg.data is None:
        return [load_bundled_text("heldout")], "bundled held-out text"
    return list(iter_texts(cfg.data, text_field=cfg.text_field, split=cfg.split)), cfg.data


def make_windows(loaded: LoadedModel, texts: list[str], cfg: PplConfig) -> list[list[int]]:
    """Token windows of `seq_len` over the documents joined (each tokenised on its own, so document
    boundaries keep the tokenizer's BOS), every `stride` tokens, at most `windows` of them."""
    ids: list[int] = []
    need = cfg.seq_len + (cfg.windows - 1) * (cfg.stride or cfg.seq_len)
    for text in texts:
        if text.strip():
            ids.extend(loaded.encode(text))
        if len(ids) >= need:
            break
    if len(ids) < cfg.seq_len:
        raise SedpaError(f"the text has {len(ids)} tokens, fewer than --seq-len {cfg.seq_len}: pass more text "
                         "with --data or a shorter --seq-len")
    stride = cfg.stride or cfg.seq_len
    starts = range(0, len(ids) - cfg.seq_len + 1, stride)
    return [ids[s:s + cfg.seq_len] for s in starts][: cfg.windows]


def prepare_windows(loaded: LoadedModel, cfg: PplConfig) -> tuple[list[list[int]], str]:
    """The token windows every mode scores, and where their text came from."""
    cfg.validate(loaded.geometry.max_position_embeddings)
    texts, source = load_texts(cfg)
    return make_windows(loaded, texts, cfg), source


def ppl_provenance(windows: list[list[int]]) -> dict[str, Any]:
    """Provenance of the ppl cells: code, versions, metrics and a digest of every window's token ids."""
    import hashlib

    h = hashlib.sha256()
    for w in windows:
        h.update(",".join(map(str, w)).encode() + b";")
    return provenance("ppl", text=h.hexdigest()[:16])


def run_ppl(models: list[BenchModel], cfg: PplConfig, cache: CellCache | None = None,
            progress: ProgressFn | None = None, prepared: tuple[list[list[int]], str] | None = None,
            ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], str]:
    """Score every (mode, window); return (rows, summary, data description). Windows found in `cache`
    (same settings, same provenance) are not rescored; their rows say `cached: true`."""
    cache = cache if cache is not None else CellCache(None)
    windows, source = prepared or prepare_windows(models[0].loaded, cfg)
    common = {k: v for k, v in asdict(cfg).items() if k not in ("windows", "chunk")}
    prov = ppl_provenance(windows)  # the data itself: other text gives other cells
    rows: list[dict[str, Any]] = []
    for bm in models:
        fp = bench_fingerprint("ppl", bm.settings, common, prov)
        for w, ids in enumerate(windows):
            key = f"{w}"
            row = cache.get(fp, key)
            if row is None:
                t0 = time.perf_counter()
                tail = cfg.decode_tail if bm.name in DECODE_SPARSE_MODES else 0
                nll = token_nll(bm.loaded, ids, bm.mode, chunk=cfg.chunk, decode_tail=tail)
                k = min(cfg.decode_tail, len(nll)) if cfg.decode_tail else 0
                tail_nll = nll[-k:] if k else nll[:0]
                row = {"mode": bm.name, "window": w, "context": len(ids), "nll_sum": float(nll.sum()),
                       "tokens": int(nll.numel()), "tail_nll_sum": float(tail_nll.sum()), "tail_tokens": int(k),
                       "wall_s": round(time.perf_counter() - t0, 3)}
                row["ppl"] = round(ppl_from_nll(row["nll_sum"], row["tokens"]), 4)
                row["tail_ppl"] = round(ppl_from_nll(row["tail_nll_sum"], row["tail_tokens"]), 4) if k else None
                cache.put(fp, key, row)
            rows.append(row)
            if progress:
                progress(bm.name)
    return rows, summarize(rows), source


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per mode: perplexity over every scored token of every window (not a mean of window ppls),
    and over the windows' tails; `vs_full` is the relative change against the full-attention row."""
    out: dict[str, dict[str, Any]] = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        tok = sum(r["tokens"] for r in mine)
        tail = sum(r["tail_tokens"] for r in mine)
        out[mode] = {
            "ppl": round(ppl_from_nll(sum(r["nll_sum"] for r in mine), tok), 4),
            "tail_ppl": round(ppl_from_nll(sum(r["tail_nll_sum"] for r in mine), tail), 4) if tail else None,
            "tokens": tok,
            "windows": len(mine),
            "wall_s": round(sum(r["wall_s"] for r in mine), 2),
        }
    if "full" in out:
        ref = out["full"]["ppl"]
        for s in out.values():
            s["vs_full"] = round(s["ppl"] / ref - 1, 4) if ref else None
    return out
