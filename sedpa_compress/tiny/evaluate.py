"""Acceptance evaluation of a sedpa-tiny model: needle retrieval (full vs streaming-only attention) on
held-out templates and held-out text, and held-out text perplexity. Writes bench JSON.

    python -m sedpa_compress.tiny.evaluate --model sedpa_compress/models/embedded/sedpa-tiny \
        --out bench/results/tiny_acceptance.json

Answers are greedy decodes (a KV cache, the prompt prefilled in chunks) of up to the answer's tokens +
`data.needles.ANSWER_SLACK`, ending with the first line. `accuracy` is RULER's string match: the value appears
in the answer's first line as a whole value; `exact` is stricter: the answer starts with the value.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sedpa_compress.atomic import atomic_write_bytes
from sedpa_compress.bench.results import device_name, git_commit, weights_sha256
from sedpa_compress.data.needles import (ANSWER_SLACK, HELDOUT_TEMPLATES, NeedleTemplates, answer_found,
                                         make_needle_example, score_answer)
from sedpa_compress.data.text import load_bundled_text, load_haystack
from sedpa_compress.data.wordings import value_format
from sedpa_compress.errors import SedpaError, one_line_errors
from sedpa_compress.models.forward_args import ForwardArgs
from sedpa_compress.runtime.reference import positions, streaming_mask

# On CUDA the acceptance runs in bf16 autocast (the weights' dtype, the speed the benchmarks see); False keeps fp32, where
# a batched decode must reproduce one cell at a time exactly (tests: a padding bug is then told apart from bf16 ties).
CUDA_BF16 = True


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and CUDA_BF16)


def _allowed(tq: int, tk: int, mode: str, sink: int, recent: int, device: torch.device,
             pad: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 1, tq, tk] bool for the last `tq` of `tk` tokens: causal, or the streaming sink + recent mask. `pad`
    ([B]): each row's left padding, never attended to; its sink is its own first tokens. A padded query sees
    itself only (a row with nothing to attend to would be NaN, and NaN keys poison the rows that mask them)."""
    if mode == "full":  # streaming with an unbounded recent window is causal
        recent = tk
    allowed = streaming_mask(tq, tk, sink, recent, device, start=pad)
    if pad is None:
        return allowed[None, None]
    queries, keys = positions(tq, tk, device)
    return (allowed | (queries[:, None] == keys[None, :])[None])[:, None]


@torch.no_grad()
def greedy_answer(model: torch.nn.Module, prompt_ids: list[int], new_tokens: int, mode: str,
                  sink: int = 16, recent: int = 64, chunk: int = 2048,
                  stop: Callable[[list[int]], bool] | None = None) -> list[int]:
    """Greedy decoding of up to `new_tokens` tokens with a KV cache, ending early once `stop(generated)` holds.
    The prompt is prefilled in chunks of `chunk` queries, so no [T, T] mask or score matrix is built at 16K;
    streaming attention sees only the sink and the last `recent` tokens (the same as evicting the rest under
    RoPE)."""
    return greedy_answers(model, [prompt_ids], [new_tokens], mode, sink, recent, chunk, stop)[0]


@torch.no_grad()
def greedy_answers(model: torch.nn.Module, prompts: list[list[int]], new_tokens: list[int], mode: str,
                   sink: int = 16, recent: int = 64, chunk: int = 2048,
                   stop: Callable[[list[int]], bool] | None = None, pad_id: int = 0) -> list[list[int]]:
    """`greedy_answer` for several prompts at once (left-padded to one length; each row keeps its own positions,
    sink, budget and stop): one forward a step for the whole batch. One cell at a time, the acceptance's 1K length
    took 24 s on the H200 for 60 answers, nearly all of it one-token steps. A batch of one is `greedy_answer`
    exactly; `chunk` is the most prefill queries a forward takes (fewer where the batch's masks would be large)."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    rows, length = len(prompts), max(map(len, prompts))
    pad_n = [length - len(p) for p in prompts]
    padded = any(pad_n)
    ids = torch.tensor([[pad_id] * n + p for n, p in zip(pad_n, prompts)], device=device)
    pad = torch.tensor(pad_n, device=device) if padded else None
    heads = getattr(model.config, "num_attention_heads", 8)
    # the score matrix a chunk may build (rows x heads x chunk x keys) stays within ~1 GiB of fp32 on the CPU
    budget = (1 << 31 if device.type == "cuda" else 1 << 28) // max(1, rows * heads * length)
    step = max(16, min(chunk, 1 << max(0, budget.bit_length() - 1)))

    def positions(start: int, end: int) -> torch.Tensor | None:
        if pad is None:
            return None
        return (torch.arange(start, end, device=device)[None, :] - pad[:, None]).clamp(min=0)

    cache = DynamicCache()
    args = ForwardArgs(model.model)
    logits = None
    generated: list[list[int]] = [[] for _ in prompts]
    done = [n <= 0 for n in new_tokens]
    with _autocast(device):
        for start in range(0, length, step):
            end = min(length, start + step)
            out = model.model(input_ids=ids[:, start:end], attention_mask=_allowed(end - start, end, mode, sink, recent,
                                                                                    device, pad),
                              position_ids=positions(start, end), **args(cache))
            logits = model.lm_head(out.last_hidden_state[:, -1])
        pos = length
        while not all(done):
            nxt = logits.argmax(-1).tolist()
            for r, token in enumerate(nxt):
                if done[r]:
                    continue
                generated[r].append(token)
                if len(generated[r]) >= new_tokens[r] or (stop is not None and stop(generated[r])):
                    done[r] = True
            if all(done):
                break
            out = model.model(input_ids=torch.tensor(nxt, device=device)[:, None],
                              attention_mask=_allowed(1, pos + 1, mode, sink, recent, device, pad),
                              position_ids=positions(pos, pos + 1), **args(cache))
            logits = model.lm_head(out.last_hidden_state[:, -1])
            pos += 1
    return generated


def acceptance_depths(depths: int) -> list[float]:
    """`depths` needle depths evenly over 0..1 (one: the middle), rounded as the acceptance's cells are named."""
    return [round(d / (depths - 1), 4) for d in range(depths)] if depths > 1 else [0.5]


def acceptance_example(tokenizer: Any, haystack: str, context: int, depth: float, sample: int, seed: int = 1234,
                       templates: NeedleTemplates = HELDOUT_TEMPLATES):
    """The needle example of the acceptance's cell (context, depth, sample), drawn from those and `seed` alone: every
    script that reads "the acceptance's own cells" draws them here."""
    rng = random.Random(f"{seed}-{context}-{depth}-{sample}")
    return make_needle_example(tokenizer, haystack, context, [depth], rng, templates=templates)


def needle_rows(model: torch.nn.Module, tokenizer: Any, contexts: list[int], depths: int, samples: int,
                modes: tuple[str, ...] = ("full", "streaming"), sink: int = 16, recent: int = 64,
                stream_max_context: int | None = None,
                templates: NeedleTemplates = HELDOUT_TEMPLATES, seed: int = 1234, haystack: str | None = None,
                batch: int = 1, log=print) -> list[dict[str, Any]]:
    """Needle rows per (mode, context, depth), each with its cells (needle, value, question, raw output). `batch`:
    cells decoded together (`greedy_answers`); in fp32 the answers are those of one at a time, under CUDA's bf16 a
    batch's other rounding can turn a near-tie (tests/test_tiny.py: at most 2 of 40 verdicts)."""
    hay = haystack if haystack is not None else load_haystack(None, min_chars=max(contexts) * 6)

    def first_line_written(out: list[int]) -> bool:  # what `answer_found` reads is complete
        return "\n" in tokenizer.decode(out).lstrip()

    depth_list = acceptance_depths(depths)
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    batch = max(1, batch)
    rows = []
    for ctx in contexts:
        t0 = time.time()
        results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
        examples, prompts, budgets = [], [], []
        for depth in depth_list:
            for s in range(samples):
                ex = acceptance_example(tokenizer, hay, ctx, depth, s, seed, templates)
                examples.append(ex)
                prompts.append(tokenizer(ex.prompt, add_special_tokens=True)["input_ids"])
                budgets.append(len(tokenizer(" " + ex.answer, add_special_tokens=False)["input_ids"]) + ANSWER_SLACK)
        by_mode: dict[str, list[dict[str, Any]]] = {}
        for mode in modes:
            if mode != "full" and stream_max_context and ctx > stream_max_context:
                continue
            texts: list[str] = []
            for b in range(0, len(prompts), batch):
                texts += [tokenizer.decode(out) for out in greedy_answers(
                    model, prompts[b:b + batch], budgets[b:b + batch], mode, sink, recent,
                    stop=first_line_written, pad_id=pad_id)]
            by_mode[mode] = []
            for d, depth in enumerate(depth_list):
                per_cell, cells = [], []  # what was asked, what came back
                for ex, text in zip(examples[d * samples:(d + 1) * samples], texts[d * samples:(d + 1) * samples]):
                    exact, _ = score_answer(text, ex.answer)
                    per_cell.append((answer_found(text, ex.answer), exact))
                    needle = ex.needles[ex.query_index]
                    cells.append({"needle": needle.sentence, "value": ex.answer, "kind": needle.kind,
                                  "question": ex.prompt[-300:].split("\n\n")[-1], "output": text})
                by_mode[mode].append({"mode": mode, "context": ctx, "depth": depth,
                                      "accuracy": sum(f for f, _ in per_cell) / samples,
                                      "exact": sum(e for _, e in per_cell) / samples, "samples": samples,
                                      "cells": cells})
                results[mode] += per_cell
        rows += [mode_rows[d] for d in range(len(depth_list)) for mode_rows in by_mode.values()]  # depth, then mode
        summary = ", ".join(f"{m} {sum(e for e, _ in results[m]) / len(results[m]):.3f}" for m in modes if results[m])
        log(f"needle ctx {ctx}: {summary} ({time.time() - t0:.1f}s)")
    return rows


@torch.no_grad()
def perplexity(model: torch.nn.Module, tokenizer: Any, text: str, window: int = 1024, max_tokens: int = 65536,
               mode: str = "full", sink: int = 16, recent: int = 64) -> float:
    """Perplexity over non-overlapping windows of `window` tokens (each starting with BOS)."""
    device = next(model.parameters()).device
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    bos = tokenizer.bos_token_id
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, window - 1):
        chunk = [bos] + ids[start: start + window - 1]
        if len(chunk) < 2:
            break
        x = torch.tensor([chunk], device=device)
        mask = None if mode == "full" else _allowed(x.shape[1], x.shape[1], mode, sink, recent, device)
        with _autocast(device):
            logits = model(input_ids=x, attention_mask=mask).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], x[0, 1:], reduction="sum")
        nll += loss.item()
        count += x.shape[1] - 1
    return math.exp(nll / max(1, count))


@torch.no_grad()
def sample_text(model: torch.nn.Module, tokenizer: Any, prompt: str, new_tokens: int = 60, seed: int = 0,
                temperature: float = 0.8, top_k: int = 40) -> str:
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    for _ in range(new_tokens):
        x = torch.tensor([ids], device=device)
        with _autocast(device):
            logits = model(input_ids=x).logits[0, -1].float().cpu()
        top = torch.topk(logits / temperature, top_k)
        nxt = top.indices[torch.multinomial(torch.softmax(top.values, -1), 1, generator=gen)].item()
        if nxt == tokenizer.eos_token_id:
            break
        ids.append(nxt)
    return tokenizer.decode(ids, skip_special_tokens=True)


SAMPLE_PROMPTS = ("And it came to pass, when the king", "The function returns a new list", "In the morning")


def evaluate(model: torch.nn.Module, tokenizer: Any, *, model_name: str, contexts: list[int], depths: int,
             samples: int, sink: int, recent: int, command: str, ppl_tokens: int = 65536,
             stream_max_context: int | None = None, haystack: Path | None = None, text_samples: bool = True,
             batch: int = 1, values: str = "default", log=print) -> dict[str, Any]:
    """Needle rows (full + streaming) and held-out perplexity in the bench JSON shape. `haystack`: a text file
    the haystacks are cut from instead of the bundled held-out text (text no stage trained on); perplexity is
    then measured on it too. `text_samples`: write a few sampled continuations into the JSON (a look at what the
    model writes; the slowest part on the CPU at short contexts). `values`: "default" (the held-out family's mix of
    value formats: the acceptance) or one of data.wordings.VALUE_FORMATS for every value (e.g. phrase)."""
    model.eval()
    device = next(model.parameters()).device
    t0 = time.time()
    hay = load_haystack(haystack, min_chars=max(contexts) * 6) if haystack is not None else None
    rows = needle_rows(model, tokenizer, contexts, depths, samples, sink=sink, recent=recent,
                       stream_max_context=stream_max_context, haystack=hay, batch=batch, log=log,
                       templates=heldout_templates(values))
    heldout = load_bundled_text("heldout")
    ppl_full = perplexity(model, tokenizer, heldout, max_tokens=ppl_tokens)
    ppl_stream = perplexity(model, tokenizer, heldout, max_tokens=ppl_tokens, mode="streaming", sink=sink,
                            recent=recent)
    log(f"held-out perplexity: full {ppl_full:.2f}, streaming {ppl_stream:.2f}")
    hay_name = str(haystack) if haystack is not None else "bundled held-out text"
    samples_text = [sample_text(model, tokenizer, p, seed=i) for i, p in enumerate(SAMPLE_PROMPTS)] \
        if text_samples else []
    summary = summarise(rows, contexts)
    summary["full"]["ppl"], summary["streaming"]["ppl"] = ppl_full, ppl_stream
    if hay is not None:
        for mode in ("full", "streaming"):
            summary[mode]["ppl_haystack"] = perplexity(model, tokenizer, hay, max_tokens=ppl_tokens, mode=mode,
                                                       sink=sink, recent=recent)
        log(f"haystack perplexity: full {summary['full']['ppl_haystack']:.2f}, "
            f"streaming {summary['streaming']['ppl_haystack']:.2f}")
    return {
        "benchmark": "niah",
        "model": model_name,
        "device": device_name(str(device)),
        "command": command,
        "git_commit": git_commit() or "unknown",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"contexts": contexts, "depths": depths, "samples_per_depth": samples, "sink": sink,
                     "stream_max_context": stream_max_context,
                     "recent": recent, "templates": "heldout", "values": values, "haystack": hay_name,
                     "ppl_text": "bundled held-out text", "ppl_window": 1024, "ppl_tokens": ppl_tokens,
                     "answer_decoding": "greedy, KV cache; accuracy = value in the first line (RULER string match), exact = answer starts with the value",
                     "answer_slack": ANSWER_SLACK, "answer_ends": "at the end of the first line",
                     "batch": batch},
        "rows": rows,
        "summary": summary,
        "text_samples": [{"prompt": p, "text": t} for p, t in zip(SAMPLE_PROMPTS, samples_text)],
        "wall_s": round(time.time() - t0, 1),
    }


def heldout_templates(values: str = "default") -> NeedleTemplates:
    """The held-out family, with its own mix of value formats ("default") or every value of one format."""
    from sedpa_compress.bench.niah import value_weights  # `sedpa bench niah --values`'s weights for one format
    from sedpa_compress.data.wordings import VALUE_FORMATS

    if values == "default":
        return HELDOUT_TEMPLATES
    if values not in VALUE_FORMATS:
        raise SedpaError(f"--values {values!r}: pass default or one of {', '.join(VALUE_FORMATS)}")
    return dataclasses.replace(HELDOUT_TEMPLATES, value_weights=value_weights(values))


def summarise(rows: list[dict[str, Any]], contexts: list[int]) -> dict[str, dict[str, Any]]:
    """Per mode (full, streaming): string-match and exact accuracy overall and per context, and per value format
    overall and per context (which kinds of value fail where)."""
    summary: dict[str, dict[str, Any]] = {}
    for mode in ("full", "streaming"):
        mrows = [r for r in rows if r["mode"] == mode]
        at = {c: [r for r in mrows if r["context"] == c] for c in contexts}
        at = {c: rs for c, rs in at.items() if rs}
        summary[mode] = {"accuracy": sum(r["accuracy"] for r in mrows) / max(1, len(mrows)),
                         "exact": sum(r["exact"] for r in mrows) / max(1, len(mrows)),
                         "accuracy_by_context": {str(c): sum(r["accuracy"] for r in rs) / len(rs) for c, rs in at.items()},
                         "exact_by_context": {str(c): sum(r["exact"] for r in rs) / len(rs) for c, rs in at.items()},
                         "accuracy_by_value_format": accuracy_by_value_format(mrows),
                         "accuracy_by_value_format_by_context": {str(c): accuracy_by_value_format(rs)
                                                                 for c, rs in at.items()},
                         "accuracy_by_needle_kind": accuracy_by_needle_kind(mrows)}
    return summary


def _accuracy_by(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], str]) -> dict[str, dict[str, float]]:
    """String-match accuracy and cell count of the rows' cells, grouped by `key(cell)`."""
    hits: dict[str, list[bool]] = {}
    for row in rows:
        for cell in row.get("cells", []):
            hits.setdefault(key(cell), []).append(answer_found(cell["output"], cell["value"]))
    return {group: {"accuracy": sum(h) / len(h), "cells": len(h)} for group, h in sorted(hits.items())}


def accuracy_by_needle_kind(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Attribute needles ("the vault code of X reads 4821"), action needles ("X remains stationed at 4821", no
    attribute noun) and subject needles ("Voucher 4821 ended up lodged at X", the value first) scored apart; cells
    of JSONs from before action needles are attribute needles."""
    return _accuracy_by(rows, lambda cell: cell.get("kind", "attribute"))


def accuracy_by_value_format(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """String-match accuracy and cell count per value format (digits, grouped, thousands, code, word) over
    the rows' cells: which kinds of value a model fails to copy (sedpa-tiny misses letter-first codes and
    invented words far more often than digits)."""
    return _accuracy_by(rows, lambda cell: value_format(cell["value"]))


def load_model_dir(path: Path, device: str):
    """A model folder in fp32, through sedpa's loader (so a folder whose weights are stored as int8,
    `models.int8`, evaluates as the weights it restores to)."""
    from transformers import AutoTokenizer

    from sedpa_compress.models.loader import load_pretrained_dir

    if not (Path(path) / "config.json").is_file():  # transformers would read the path as a Hub repo id
        raise SedpaError(f"--model {path} is not a model folder (no config.json): pass a run's model/ folder or a "
                         "kept stage restored with python -m sedpa_compress.tiny.checkpoints restore")
    loaded = load_pretrained_dir(Path(path), source="local", name=str(path), dtype=torch.float32, device=device)
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    return loaded.model, tok


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Evaluate sedpa-tiny: needle retrieval full vs streaming, perplexity.")
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "models/embedded/sedpa-tiny"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--contexts", default="1024,2048,4096,8192,16384")
    ap.add_argument("--depths", type=int, default=11)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--sink", type=int, default=16)
    ap.add_argument("--recent", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--stream-max-context", type=int, default=None,
                    help="measure streaming attention only up to this context (it costs as much as full on the CPU)")
    ap.add_argument("--ppl-tokens", type=int, default=65536)
    ap.add_argument("--batch", type=int, default=None,
                    help="cells decoded together (left-padded; in fp32 the same answers as one at a time, in CUDA's "
                         "bf16 up to near-ties); default 30 on CUDA (one context's cells of the acceptance), 8 on the CPU")
    ap.add_argument("--haystack", type=Path, default=None,
                    help="a UTF-8 text file to cut the haystacks from instead of the bundled held-out text (text no "
                         "stage trained on: a corpus's held-out split, your own documents); its perplexity is reported")
    ap.add_argument("--values", default="default",
                    help="the values' format: default (the held-out family's mix: the acceptance) or one for every "
                         "value: digits, grouped, thousands, code, word, free_code or phrase (spans of held-out text)")
    args = ap.parse_args(argv)
    with one_line_errors():
        _run(args, argv)


def _run(args: argparse.Namespace, argv: list[str] | None) -> None:
    model, tok = load_model_dir(Path(args.model), args.device)
    command = "python -m sedpa_compress.tiny.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
    result = evaluate(model, tok, model_name="sedpa-tiny", contexts=[int(c) for c in args.contexts.split(",")],
                      depths=args.depths, samples=args.samples, sink=args.sink, recent=args.recent,
                      command=command, stream_max_context=args.stream_max_context, ppl_tokens=args.ppl_tokens,
                      haystack=args.haystack, values=args.values,
                      batch=args.batch or (30 if str(args.device).startswith("cuda") else 8))
    if sha := weights_sha256(Path(args.model)):
        result["weights_sha256"] = sha
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
