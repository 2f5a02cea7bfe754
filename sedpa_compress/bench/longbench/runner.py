"""`sedpa bench longbench`: LongBench, every `--attention` mode on the same prompts.

The examples come from local JSONL files (`<data-dir>/<task>.jsonl`, or LongBench's data.zip itself) or
from a Hugging Face dataset in LongBench's published layout (one config per task, split `test`) through
`datasets`. Each line / row carries `input`, `context`, `answers`, `all_classes`, `length`.

As upstream (THUDM/LongBench pred.py): the task's prompt is filled in; a prompt longer than the max
length (one per model, counted in tokens with the tokenizer's BOS) keeps its first and last
int(max_length / 2) tokens (instructions sit at both ends); greedy decoding up to the task's length,
stopping at the model's eos ids (tokenizer eos + generation_config's list; samsum: eos or a newline,
after at least one token); scoring with the task's metric.
"""

from __future__ import annotations

import functools
import json
import time
import zipfile
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
from sedpa_compress.models.stop_tokens import model_stop_token_ids

DEFAULT_TASKS = ("narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "gov_report", "qmsum",
                 "multi_news", "trec", "triviaqa", "samsum", "passage_count", "passage_retrieval_en", "lcc",
                 "repobench-p")  # the English tasks (the DuoAttention / SEDPA tables)
REQUIRED_FIELDS = ("input", "context", "answers")
DATA_HINT = ("download LongBench's data.zip (huggingface.co/datasets/THUDM/LongBench) on a machine with internet "
             "and pass it with --data-dir data.zip (or unzipped: --data-dir DIR holding DIR/<task>.jsonl)")
# Upstream's max prompt length per model (THUDM/LongBench and DuoAttention's LongBench config/model2maxlen.json),
# keyed by the lower-cased Hub repo name; the families sedpa runs.
UPSTREAM_MAX_LENGTH = {
    "llama-2-7b-chat-hf": 3500, "longchat-7b-v1.5-32k": 31500, "vicuna-7b-v1.5-16k": 15500,
    "llama-2-7b-32k-instruct": 31500, "mistral-7b-instruct-v0.2": 31500, "mistral-7b-instruct-v0.3": 31500,
    "llama-3-8b-instruct-gradient-1048k": 1047500, "meta-llama-3.1-8b-instruct": 127500, "llama-3.1-8b-instruct": 127500,
}


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
    data_dir: Path | None = None  # folder of <task>.jsonl, or LongBench's data.zip
    dataset: str | None = None  # or a Hugging Face dataset (Hub name[@revision] or local folder) through `datasets`
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    limit: int | None = None  # at most this many examples per task (the first ones)
    max_length: int | None = None  # prompt tokens (with BOS); None: upstream's value for the model
    chat_template: bool = False  # wrap prompts in the tokenizer's chat template (upstream does for chat models)
    chunk: int = DEFAULT_CHUNK

    @property
    def source(self) -> str:
        return str(self.data_dir) if self.data_dir is not None else f"{self.dataset} (Hugging Face dataset)"


def _check_row(obj: Any, where: str) -> dict[str, Any]:
    """One example, checked: what every task reads must be there and of the right kind."""
    if not isinstance(obj, dict):
        raise SedpaError(f"{where}: expected a JSON object with {', '.join(REQUIRED_FIELDS)}")
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise SedpaError(f"{where}: missing field {', '.join(missing)} (LongBench lines carry input, "
                         "context, answers, all_classes, length)")
    if not isinstance(obj["answers"], list) or not all(isinstance(a, str) for a in obj["answers"]):
        raise SedpaError(f"{where}: `answers` must be a list of strings")
    if not isinstance(obj["input"], str) or not isinstance(obj["context"], str):
        raise SedpaError(f"{where}: `input` and `context` must be strings")
    classes = obj.get("all_classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise SedpaError(f"{where}: `all_classes` must be null or a list of strings")
    return obj


def _parse_lines(lines, where: str, limit: int | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SedpaError(f"{where}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); fix or remove that line") from None
        obj = _check_row(obj, f"{where}:{lineno}")
        obj["_line"] = lineno
        rows.append(obj)
        if limit is not None and len(rows) >= limit:
            break
    return rows


def read_task(data_dir: Path, task: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The examples of one task from DIR/<task>.jsonl or from LongBench's data.zip (data/<task>.jsonl);
    a malformed line is an error naming the file and line (none is skipped)."""
    data_dir = Path(data_dir)
    if data_dir.is_file() and zipfile.is_zipfile(data_dir):
        with zipfile.ZipFile(data_dir) as zf:
            names = [n for n in (f"data/{task}.jsonl", f"{task}.jsonl") if n in zf.namelist()]
            if not names:
                raise SedpaError(f"LongBench task {task!r}: {data_dir} holds no data/{task}.jsonl; {DATA_HINT}")
            where = f"{data_dir}:{names[0]}"
            with zf.open(names[0]) as f:
                rows = _parse_lines((b.decode("utf-8") for b in f), where, limit)
    else:
        if data_dir.is_file():
            raise SedpaError(f"--data-dir {data_dir} is a file but not a zip archive: {DATA_HINT}")
        path = data_dir / f"{task}.jsonl"
        if not path.is_file():
            raise SedpaError(f"LongBench task {task!r}: no file {path}; {DATA_HINT}")
        where = str(path)
        with path.open(encoding="utf-8") as f:
            rows = _parse_lines(f, where, limit)
    if not rows:
        raise SedpaError(f"{where} holds no examples: {DATA_HINT}")
    return rows


def read_hf_task(dataset: str, task: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The examples of one task from a Hugging Face dataset in LongBench's layout (config = task, split
    test), through `datasets`: a Hub name (NAME or NAME@REVISION) or a local dataset folder."""
    try:
        import datasets
    except ImportError:
        raise SedpaError(f"--dataset {dataset} needs the Hugging Face `datasets` package: pip install "
                         f"'sedpa-compress[data]', or {DATA_HINT}") from None
    name, _, revision = dataset.partition("@") if not Path(dataset).exists() else (dataset, "", "")
    try:
        ds = datasets.load_dataset(name, task, split="test", revision=revision or None)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for offline, missing, scripts
        raise SedpaError(_dataset_error(dataset, task, exc)) from None
    rows: list[dict[str, Any]] = []
    for i, obj in enumerate(ds):
        obj = _check_row(dict(obj), f"{dataset} {task} row {i + 1}")
        obj["_line"] = i + 1
        rows.append(obj)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise SedpaError(f"{dataset} {task}: the test split holds no examples; {DATA_HINT}")
    return rows


def _dataset_error(dataset: str, task: str, exc: Exception) -> str:
    text = str(exc)
    first = (text.strip().splitlines() or [type(exc).__name__])[0][:160]
    kind = type(exc).__name__
    if "scripts are no longer supported" in text or "trust_remote_code" in text:
        return (f"--dataset {dataset} is a loading-script dataset, which `datasets` no longer runs (and sedpa "
                f"never runs a repository's code): pass a Parquet/JSON copy in the same layout, or {DATA_HINT}")
    if kind == "DatasetNotFoundError" or "doesn't exist on the Hub" in text or "FileNotFoundError" == kind:
        return f"--dataset {dataset}: no such dataset (a Hub name ORG/NAME, or a local dataset folder); or {DATA_HINT}"
    if "BuilderConfig" in text or "Unknown config" in text or "config name" in text.lower():
        return f"--dataset {dataset} has no config {task!r} ({first}): it is not in LongBench's layout (one config per task)"
    if kind in ("ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "ReadTimeout", "ConnectTimeout") \
            or "offline" in text.lower() or "Name or service not known" in text:
        return (f"cannot fetch {dataset} ({task}) from the Hugging Face Hub ({kind}): this machine seems offline; run once "
                f"where there is network (later runs read the `datasets` cache, with HF_DATASETS_OFFLINE=1 too), or {DATA_HINT}")
    return f"cannot load {dataset} ({task}): {kind}: {first}; or {DATA_HINT}"


def load_tasks(cfg: LongBenchConfig) -> dict[str, list[dict[str, Any]]]:
    """Every task's examples, all checked before any model work."""
    if (cfg.data_dir is None) == (cfg.dataset is None):
        raise SedpaError("give exactly one of --data-dir DIR (LongBench JSONL files or data.zip) or --dataset NAME "
                         "(a Hugging Face dataset, e.g. THUDM/LongBench)")
    if cfg.data_dir is not None:
        return {t: read_task(cfg.data_dir, t, cfg.limit) for t in cfg.tasks}
    return {t: read_hf_task(cfg.dataset, t, cfg.limit) for t in cfg.tasks}


def build_prompt(task: str, example: dict[str, Any]) -> str:
    # str.format parses only the template, so braces inside the context (code) are kept as they are
    return task_table()[task]["prompt"].format(context=example["context"], input=example["input"])


def upstream_max_length(loaded: LoadedModel) -> tuple[int, str]:
    """Upstream's one max length per model: its table value for the models it lists, else its
    convention (7 of its 8 values): the position limit in whole thousands minus 500 (31500 for 32K)."""
    names = [str(loaded.name)]
    if loaded.artifact:
        names.append(str(loaded.artifact.get("base_model") or ""))
    for name in names:
        key = Path(name.split("@")[0]).name.lower()
        if key in UPSTREAM_MAX_LENGTH:
            return UPSTREAM_MAX_LENGTH[key], f"upstream's model2maxlen value for {key}"
    limit = loaded.geometry.max_position_embeddings or 0
    if limit >= 1000:
        return (limit // 1000) * 1000 - 500, f"upstream's convention: {limit} positions in thousands minus 500"
    if limit > 0:
        return limit // 2, f"half of the model's {limit} positions (too few for upstream's 500-token margin)"
    raise SedpaError(f"{loaded.name}: its config has no max_position_embeddings, so the prompt length is unknown: "
                     "pass --max-length N (prompt tokens; LongBench uses 31500 for 32K models)")


def truncate_middle(loaded: LoadedModel, prompt: str, max_length: int) -> tuple[str, bool]:
    """Upstream's rule: a prompt of more than max_length tokens, counted as the tokenizer encodes it (with
    its BOS), keeps its first and last int(max_length / 2) tokens, decoded without special tokens (so the
    BOS counts in the first half). Instructions sit at both ends; the middle of the context goes."""
    ids = loaded.encode(prompt)
    if len(ids) <= max_length:
        return prompt, False
    half = int(max_length / 2)
    return loaded.decode(ids[:half]) + loaded.decode(ids[-half:]), True


def encode_prompt(loaded: LoadedModel, prompt: str, chat: bool) -> list[int]:
    """Token ids of the final prompt. In the chat template the template writes the BOS itself (Llama-3's
    `<|begin_of_text|>`), so the tokenizer adds none; a second BOS would shift every score."""
    tok = loaded.tokenizer
    if not (chat and tok is not None and getattr(tok, "chat_template", None)):
        return loaded.encode(prompt)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    bos = getattr(tok, "bos_token", None)
    return tok(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]


def _prompt_ids(loaded: LoadedModel, task: str, example: dict[str, Any], cfg: LongBenchConfig,
                max_length: int) -> tuple[list[int], bool]:
    spec = task_table()[task]
    prompt, truncated = truncate_middle(loaded, build_prompt(task, example), max_length)
    return encode_prompt(loaded, prompt, cfg.chat_template and spec["chat_template"]), truncated


def stop_ids_for(loaded: LoadedModel, task: str) -> tuple[list[int], int]:
    """(stop ids, minimum new tokens). Upstream generates with the model's eos ids (generation_config's
    list: Llama-3-Instruct's <|eot_id|> too); samsum stops at the tokenizer's eos or a newline instead,
    after at least one new token (HF's min_length)."""
    if task == "samsum" and loaded.tokenizer is not None:
        nl = loaded.tokenizer.encode("\n", add_special_tokens=False)[-1:]
        eos = loaded.tokenizer.eos_token_id
        return [i for i in ([eos] if isinstance(eos, int) else []) + nl], 1
    return model_stop_token_ids(loaded), 0


def run_longbench(models: list[BenchModel], cfg: LongBenchConfig, cache: CellCache | None = None,
                  progress: ProgressFn | None = None, data: dict[str, list[dict[str, Any]]] | None = None,
                  ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Score every (mode, task, example); return (rows, summary: per mode each task's score 0-100 and the mean)."""
    cache = cache if cache is not None else CellCache(None)
    data = data if data is not None else load_tasks(cfg)  # all examples checked before any work
    table = task_table()
    rows: list[dict[str, Any]] = []
    for bm in models:
        max_length = cfg.max_length or upstream_max_length(bm.loaded)[0]
        fp = bench_fingerprint("longbench", bm.settings, {"max_length": max_length, "chat": cfg.chat_template,
                                                          "rules": "upstream-2"})
        for task in cfg.tasks:
            spec = table[task]
            for i, ex in enumerate(data[task]):
                key = f"{task}|{i}|{fingerprint(ex['input'], ex['context'][:2000], ex['answers'])}"
                row = cache.get(fp, key)
                if row is None:
                    row = _run_example(bm, task, spec, ex, cfg, max_length)
                    row.update(mode=bm.name, task=task, index=i)
                    cache.put(fp, key, row)
                rows.append(row)
                if progress:
                    progress(bm.name)
    return rows, summarize(rows)


def _run_example(bm: BenchModel, task: str, spec: dict[str, Any], ex: dict[str, Any], cfg: LongBenchConfig,
                 max_length: int) -> dict[str, Any]:
    loaded = bm.loaded
    ids, truncated = _prompt_ids(loaded, task, ex, cfg, max_length)
    stop, min_new = stop_ids_for(loaded, task)
    t0 = time.perf_counter()
    out = greedy_generate(loaded, ids, bm.mode, spec["max_new_tokens"], chunk=cfg.chunk, stop_ids=stop,
                          min_new_tokens=min_new)
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
