"""`sedpa bench longbench`: LongBench from local JSONL files, every `--attention` mode on the same prompts.

Each task reads `<data-dir>/<task>.jsonl` in the upstream format (one object per line with
`input`, `context`, `answers`, `all_classes`, `length`), fills the upstream prompt, truncates the
prompt in the middle to the model's length (keeping the instruction at both ends, as upstream
does), generates greedily up to the task's length and scores with the task's metric.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sedpa_compress.bench.cache import CellCache
from sedpa_compress.bench.common import (
    DEFAULT_CHUNK,
    BenchModel,
    ProgressFn,
    bench_fingerprint,
    fingerprint,
    greedy_generate,
)
from sedpa_compress.bench.longbench.metrics import score_prediction
from sedpa_compress.errors import SedpaError
from sedpa_compress.models.loader import LoadedModel

DEFAULT_TASKS = ("narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "gov_report", "qmsum",
                 "multi_news", "trec", "triviaqa", "samsum", "passage_count", "passage_retrieval_en", "lcc",
                 "repobench-p")  # the English tasks (the DuoAttention / SEDPA tables)
REQUIRED_FIELDS = ("input", "context", "answers")
DATA_HINT = ("download LongBench's data.zip (huggingface.co/datasets/THUDM/LongBench, data/ folder) on a machine "
             "with internet and unzip it so that DIR/<task>.jsonl exists, then pass --data-dir DIR")


@functools.lru_cache(maxsize=1)
def task_table() -> dict[str, dict[str, Any]]:
    """Task name -> prompt, max_new_tokens, metric, first_line (tasks.json, from upstream's config)."""
    return json.loads((Path(__file__).parent / "tasks.json").read_text(encoding="utf-8"))["tasks"]


def parse_tasks(value: str | None) -> list[str]:
    """`--tasks hotpotqa,lcc` (or `all`, or `english`: the default) -> task names, refusing unknown ones."""
    table = task_table()
    if value is None or value.strip() in ("", "english"):
        return list(DEFAULT_TASKS)
    if value.strip() == "all":
        return list(table)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SedpaError(f"unknown LongBench task {', '.join(unknown)}: choose from {', '.join(table)} (or all, english)")
    return names


@dataclass
class LongBenchConfig:
    data_dir: Path = Path("longbench_data")
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    limit: int | None = None  # at most this many examples per task (the first ones)
    max_length: int | None = None  # prompt tokens; None: the model's limit minus the task's generation length
    chat_template: bool = False  # wrap prompts in the tokenizer's chat template (upstream does for chat models)
    chunk: int = DEFAULT_CHUNK


def read_task(data_dir: Path, task: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The examples of one task; a malformed line is an error naming the file and line (none is skipped)."""
    path = Path(data_dir) / f"{task}.jsonl"
    if not path.is_file():
        raise SedpaError(f"LongBench task {task!r}: no file {path}; {DATA_HINT}")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SedpaError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); fix or remove that line") from None
            if not isinstance(obj, dict):
                raise SedpaError(f"{path}:{lineno}: expected a JSON object with {', '.join(REQUIRED_FIELDS)}")
            missing = [k for k in REQUIRED_FIELDS if k not in obj]
            if missing:
                raise SedpaError(f"{path}:{lineno}: missing field {', '.join(missing)} (LongBench lines carry input, "
                                 "context, answers, all_classes, length)")
            if not isinstance(obj["answers"], list) or not all(isinstance(a, str) for a in obj["answers"]):
                raise SedpaError(f"{path}:{lineno}: `answers` must be a list of strings")
            if not isinstance(obj["input"], str) or not isinstance(obj["context"], str):
                raise SedpaError(f"{path}:{lineno}: `input` and `context` must be strings")
            classes = obj.get("all_classes")
            if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
                raise SedpaError(f"{path}:{lineno}: `all_classes` must be null or a list of strings")
            obj["_line"] = lineno
            rows.append(obj)
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise SedpaError(f"{path} holds no examples: {DATA_HINT}")
    return rows


def build_prompt(task: str, example: dict[str, Any]) -> str:
    # str.format parses only the template, so braces inside the context (code) are kept as they are
    return task_table()[task]["prompt"].format(context=example["context"], input=example["input"])


def truncate_middle(loaded: LoadedModel, prompt: str, max_length: int) -> tuple[str, bool]:
    """Keep the first and last max_length/2 tokens of a prompt that is too long (upstream's rule:
    instructions sit at both ends, the middle of the context goes)."""
    if loaded.tokenizer is None:
        ids = loaded.encode(prompt)
        if len(ids) <= max_length:
            return prompt, False
        half = max_length // 2
        return loaded.decode(ids[:half]) + loaded.decode(ids[-half:]), True
    ids = loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_length:
        return prompt, False
    half = max_length // 2
    tok = loaded.tokenizer
    return tok.decode(ids[:half], skip_special_tokens=True) + tok.decode(ids[-half:], skip_special_tokens=True), True


def _prompt_ids(loaded: LoadedModel, task: str, example: dict[str, Any], cfg: LongBenchConfig) -> tuple[list[int], bool]:
    spec = task_table()[task]
    limit = loaded.geometry.max_position_embeddings or 0
    budget = cfg.max_length or max(16, limit - spec["max_new_tokens"] - 8)
    prompt, truncated = truncate_middle(loaded, build_prompt(task, example), budget)
    tok = loaded.tokenizer
    if cfg.chat_template and spec["chat_template"] and tok is not None and getattr(tok, "chat_template", None):
        prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return loaded.encode(prompt), truncated


def run_longbench(models: list[BenchModel], cfg: LongBenchConfig, cache: CellCache | None = None,
                  progress: ProgressFn | None = None) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Score every (mode, task, example); return (rows, summary: per mode each task's score 0-100 and the mean)."""
    cache = cache if cache is not None else CellCache(None)
    data = {t: read_task(cfg.data_dir, t, cfg.limit) for t in cfg.tasks}  # all files checked before any work
    table = task_table()
    rows: list[dict[str, Any]] = []
    for bm in models:
        fp = bench_fingerprint("longbench", bm.settings, {"max_length": cfg.max_length, "chat": cfg.chat_template})
        for task in cfg.tasks:
            spec = table[task]
            for i, ex in enumerate(data[task]):
                key = f"{task}|{i}|{fingerprint(ex['input'], ex['context'][:2000], ex['answers'])}"
                row = cache.get(fp, key)
                if row is None:
                    row = _run_example(bm, task, spec, ex, cfg)
                    row.update(mode=bm.name, task=task, index=i)
                    cache.put(fp, key, row)
                rows.append(row)
                if progress:
                    progress(bm.name)
    return rows, summarize(rows)


def _run_example(bm: BenchModel, task: str, spec: dict[str, Any], ex: dict[str, Any], cfg: LongBenchConfig) -> dict[str, Any]:
    loaded = bm.loaded
    ids, truncated = _prompt_ids(loaded, task, ex, cfg)
    stop: list[int] = []
    if task == "samsum" and loaded.tokenizer is not None:  # upstream also stops samsum at a newline
        nl = loaded.tokenizer.encode("\n", add_special_tokens=False)
        stop = nl[-1:]
    t0 = time.perf_counter()
    out = greedy_generate(loaded, ids, bm.mode, spec["max_new_tokens"], chunk=cfg.chunk, stop_ids=stop)
    pred = loaded.decode(out)
    score = score_prediction(spec["metric"], pred, ex["answers"], all_classes=ex.get("all_classes"),
                             first_line=spec["first_line"])
    return {"score": round(100 * score, 2), "tokens": len(ids), "truncated": truncated, "length": ex.get("length"),
            "prediction": pred[:200], "wall_s": round(time.perf_counter() - t0, 3)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        tasks = list(dict.fromkeys(r["task"] for r in mine))
        per = {t: round(float(np.mean([r["score"] for r in mine if r["task"] == t])), 2) for t in tasks}
        out[mode] = {"score": round(float(np.mean(list(per.values()))), 2), "tasks": per, "n": len(mine)}
    return out
