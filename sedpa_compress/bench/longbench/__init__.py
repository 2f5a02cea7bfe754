"""LongBench from local JSONL files, data.zip or a Hugging Face dataset: upstream prompts, truncation,
stop tokens and metrics (tasks.json, metrics.py), every mode."""

from sedpa_compress.bench.longbench.metrics import METRICS, score_prediction
from sedpa_compress.bench.longbench.runner import (
    DEFAULT_TASKS,
    LongBenchConfig,
    load_tasks,
    parse_tasks,
    read_hf_task,
    read_task,
    run_longbench,
    task_table,
    truncate_middle,
    upstream_max_length,
)

__all__ = ["DEFAULT_TASKS", "METRICS", "LongBenchConfig", "load_tasks", "parse_tasks", "read_hf_task", "read_task",
           "run_longbench", "score_prediction", "task_table", "truncate_middle", "upstream_max_length"]
