"""`sedpa train-tiny`: train the embedded default model (parsing only; the work is sedpa_compress.tiny)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("train-tiny")
    def train_tiny(
        recipe: Path = typer.Option(Path("recipes/tiny.yaml"), help="Training recipe (YAML of TinyTrainConfig fields)."),
        out: Path = typer.Option(Path("runs/sedpa-tiny"), help="Run folder: tokenizer/, checkpoint/, model/."),
        resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint (same data, same schedule)."),
        init_from: Optional[Path] = typer.Option(
            None, help="Start from these weights with a fresh optimizer (a model with fewer KV heads or layers is "
                       "grown into the recipe's shape, computing the same function; a wider MLP is narrowed)."),
        steps: Optional[int] = typer.Option(None, help="Override the recipe's number of steps."),
        max_minutes: Optional[float] = typer.Option(None, help="Stop after this wall time, schedule finished."),
        device: str = typer.Option("auto", help="cuda, cpu or auto."),
        no_eval: bool = typer.Option(False, "--no-eval", help="Skip the needle/perplexity evaluation at the end."),
        override: list[str] = typer.Option([], help="field=yaml-value, e.g. --override tokens_per_step=8192."),
    ) -> None:
        """Train sedpa-tiny (tokenizer, then the model on shipped text + synthetic retrieval) and export it.

        Under `torchrun --nproc-per-node N -m sedpa_compress train-tiny ...` (one node) each process trains
        on its own batches and the gradients are averaged: N times the tokens a step; process 0 writes."""
        import yaml

        from sedpa_compress.distributed import launch
        from sedpa_compress.errors import SedpaError
        from sedpa_compress.tiny.config import load_config
        from sedpa_compress.tiny.train import train

        pairs = {}
        for item in override:
            if "=" not in item:
                raise SedpaError(f"--override {item!r} is not field=value: write e.g. --override steps=100")
            key, value = item.split("=", 1)
            pairs[key] = yaml.safe_load(value)
        for flag, value in (("steps", steps), ("max_minutes", max_minutes)):
            if value is not None:  # the dedicated flag wins over --override of the same field
                pairs[flag] = value
        cfg = load_config(recipe, **pairs)
        with launch("" if device == "auto" else device) as world:
            train(cfg, out, resume=resume, init_from=init_from, device=device, eval_at_end=not no_eval,
                  log=lambda s: typer.echo(s), command="sedpa " + " ".join(sys.argv[1:]), world=world)
