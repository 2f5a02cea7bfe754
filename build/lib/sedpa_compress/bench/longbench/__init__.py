"""LongBench from local JSONL files: upstream prompts (tasks.json), self-written metrics, every mode."""

from sedpa_compress.bench.longbench.metrics import METRICS, score_prediction
from sedpa_compress.bench.longbench.runner import (
    DEFAULT_TASKS,
    LongBenchConfig,
    parse_tasks,
    read_task,
    run_longbench,
    task_table,
    truncate_middle,
)

__all__ = ["DEFAULT_TASKS", "METRICS", "LongBenchConfig", "parse_tasks", "read_task", "run_longbench",
           "score_prediction", "task_table", "truncate_middle"]
