"""`sedpa identify-heads`, `sedpa heads show`, `sedpa heads probe`: parse flags, call sedpa_compress.heads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Hub id ORG/NAME, local directory, or `sedpa-tiny` (default).")]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", help="Geometry preset for speed work: llama-3-8b, llama-2-7b, mistral-7b, qwen2-7b, llama-3.2-1b.")]
RandomOpt = Annotated[bool, typer.Option("--random-weights", help="With --config: random weights of that geometry.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 … (default: cuda when available).")]


def _device(device: str) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _load(model, config, random_weights, device, dtype):
    from sedpa_compress.models import load_model

    with console.status("loading model…"):
        return load_model(model, config=config, random_weights=random_weights, device=_device(device), dtype=dtype)


def identify_heads_cmd(
    model: ModelOpt = None,
    config: ConfigOpt = None,
    random_weights: RandomOpt = False,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", "-r", help="Recipe YAML (recipes/identify-<model>.yaml); default: the shipped recipe naming --model, else DuoAttention's 7-8B settings. Flags override it.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Pattern file to write (default: <model>.pattern.json).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint beside --out (same model and settings).")] = False,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Training steps.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Samples per step (under torchrun split over the processes: at least --nproc-per-node).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate of the gates.")] = None,
    reg_weight: Annotated[Optional[float], typer.Option("--reg-weight", help="Lambda of the L1 term on the gates.")] = None,
    optimizer: Annotated[Optional[str], typer.Option("--optimizer", help="adamw, adam or sgd.")] = None,
    sink: Annotated[Optional[int], typer.Option("--sink", help="Sink tokens of a streaming head.")] = None,
    recent: Annotated[Optional[int], typer.Option("--recent", help="Recent tokens of a streaming head.")] = None,
    context_min: Annotated[Optional[int], typer.Option("--context-min", help="Shortest training context (tokens).")] = None,
    context_max: Annotated[Optional[int], typer.Option("--context-max", help="Longest training context (tokens).")] = None,
    num_passkeys: Annotated[Optional[int], typer.Option("--num-passkeys", help="Passkeys per example.")] = None,
    haystack: Annotated[Optional[Path], typer.Option("--haystack", help="UTF-8 text file for the haystack (default: the bundled text).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    retrieval_ratio: Annotated[Optional[float], typer.Option("--retrieval-ratio", help="Fraction of KV heads kept as retrieval heads in the mask.")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Instead of a ratio: gate >= threshold is a retrieval head.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", help="Steps between checkpoints.")] = None,
    gradient_checkpointing: Annotated[Optional[str], typer.Option("--gradient-checkpointing", help="auto (on for CUDA), on, off.")] = None,
    attention_backend: Annotated[Optional[str], typer.Option("--attention-backend", help="auto (flex on CUDA, banded on CPU), reference, banded, flex.")] = None,
    device: DeviceOpt = "",
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16.")] = None,
) -> None:
    """Learn which KV heads need the full context (retrieval) and which only sink + recent (streaming).

    Under `torchrun --nproc-per-node N -m sedpa_compress identify-heads ...` the N processes split each
    step's samples (data parallel); rank 0 prints and writes."""
    from sedpa_compress.distributed import launch
    from sedpa_compress.errors import SedpaError
    from sedpa_compress.heads.config import load_recipe, shipped_recipe_for
    from sedpa_compress.heads.show import pattern_summary, pattern_table
    from sedpa_compress.heads.train import default_pattern_path, identify_heads

    with launch(device) as world:
        console.quiet = not world.main
        with world.together():  # a bad flag or recipe ends every process, with one message
            if retrieval_ratio is not None and threshold is not None:
                raise SedpaError("give at most one of --retrieval-ratio or --threshold")
            if recipe is None and config is None:
                recipe = shipped_recipe_for(model or "sedpa-tiny")
                if recipe is not None:
                    console.print(f"recipe: {recipe} (the shipped recipe for this model; --recipe picks another)")
            cfg = load_recipe(recipe).with_overrides(
                steps=steps, batch_size=batch_size, lr=lr, reg_weight=reg_weight, optimizer=optimizer, sink=sink,
                recent=recent, context_min=context_min, context_max=context_max, num_passkeys=num_passkeys,
                haystack=str(haystack) if haystack else None, seed=seed, retrieval_ratio=retrieval_ratio,
                threshold=threshold, checkpoint_every=checkpoint_every, gradient_checkpointing=gradient_checkpointing,
                attention_backend=attention_backend, dtype=dtype)
            loaded = _load(model, config, random_weights, world.device, cfg.dtype)
        out = out or default_pattern_path(loaded.name)
        procs = f" x {world.size} processes" if world.distributed else ""
        batch = f" of {cfg.batch_size} samples" if cfg.batch_size > 1 else ""
        console.print(f"identifying heads of [bold]{loaded.name}[/] ({loaded.geometry.num_layers} layers x "
                      f"{loaded.geometry.num_kv_heads} KV heads) on {loaded.device}{procs}: {cfg.steps} steps{batch}, "
                      f"contexts {cfg.context_min}-{cfg.context_max}, sink {cfg.sink} / recent {cfg.recent}")
        result = identify_heads(loaded, cfg, out=out, resume=resume, recipe_path=str(recipe) if recipe else None,
                                progress=True, world=world)
        if result.resumed_from:
            console.print(f"resumed from step {result.resumed_from} ({result.checkpoint})")
        elif resume:
            console.print(f"[yellow]no checkpoint at {result.checkpoint}[/]: trained from step 0")
        console.print(pattern_table(result.pattern))
        for line in pattern_summary(result.pattern):
            console.print(line)
        console.print(f"[green]wrote[/] {result.out}  (checkpoint {result.checkpoint})")


def show_cmd(
    pattern: Annotated[Path, typer.Argument(help="A *.pattern.json file.")],
    retrieval_ratio: Annotated[Optional[float], typer.Option("--retrieval-ratio", help="Re-binarize the gates at this ratio.")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Re-binarize: gate >= threshold is a retrieval head.")] = None,
    png: Annotated[Optional[Path], typer.Option("--png", help="Heatmap PNG (default: beside the pattern, .png).")] = None,
    save: Annotated[Optional[Path], typer.Option("--save", help="Write the re-binarized pattern here.")] = None,
) -> None:
    """Print the gates as a coloured layer x KV-head table and write a heatmap PNG."""
    from sedpa_compress.errors import SedpaError
    from sedpa_compress.heads.pattern import HeadPattern
    from sedpa_compress.heads.show import default_png_path, pattern_summary, pattern_table, plot_heatmap

    if retrieval_ratio is not None and threshold is not None:
        raise SedpaError("give at most one of --retrieval-ratio or --threshold")
    p = HeadPattern.load(pattern).with_ratio(retrieval_ratio, threshold)
    console.print(pattern_table(p, title=str(pattern)))
    for line in pattern_summary(p):
        console.print(line)
    png_path = plot_heatmap(p, png or default_png_path(pattern))
    console.print(f"[green]wrote[/] {png_path}")
    if save is not None:
        p.save(save)
        console.print(f"[green]wrote[/] {save}")


def _ints(value: str, flag: str) -> list[int]:
    from sedpa_compress.errors import SedpaError

    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise SedpaError(f"{flag} {value!r}: pass comma-separated integers such as 1024,2048") from None


def _floats(value: str, flag: str) -> list[float]:
    from sedpa_compress.errors import SedpaError

    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise SedpaError(f"{flag} {value!r}: pass comma-separated numbers such as 0.1,0.5,0.9") from None


def probe_cmd(
    pattern: Annotated[Path, typer.Option("--pattern", "-p", help="The *.pattern.json to probe.")],
    k: Annotated[int, typer.Option("--k", help="How many KV heads to force to streaming per arm.")] = 4,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    random_weights: RandomOpt = False,
    contexts: Annotated[str, typer.Option("--contexts", help="Context lengths in tokens, comma-separated.")] = "1024,2048",
    depths: Annotated[str, typer.Option("--depths", help="Needle depths in [0, 1], comma-separated.")] = "0.1,0.3,0.5,0.7,0.9",
    samples: Annotated[int, typer.Option("--samples", help="Examples per (context, depth).")] = 2,
    random_trials: Annotated[int, typer.Option("--random-trials", help="Random head sets drawn for the random arms.")] = 3,
    retrieval_ratio: Annotated[Optional[float], typer.Option("--retrieval-ratio", help="Ratio for the duo / random-duo arms (default: the pattern's mask).")] = None,
    haystack: Annotated[Optional[Path], typer.Option("--haystack", help="Haystack text file (default: the bundled held-out text).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Result JSON (a PNG is written beside it).")] = None,
    device: DeviceOpt = "",
    dtype: Annotated[str, typer.Option("--dtype")] = "auto",
) -> None:
    """Needle accuracy with the top-K gate heads forced to streaming vs the bottom-K vs K random heads."""
    from rich.table import Table

    from sedpa_compress.heads.pattern import HeadPattern
    from sedpa_compress.heads.probe import ProbeConfig, run_probe, write_probe
    from sedpa_compress.heads.train import default_pattern_path

    p = HeadPattern.load(pattern)
    cfg = ProbeConfig(k=k, contexts=_ints(contexts, "--contexts"), depths=_floats(depths, "--depths"), samples=samples,
                      random_trials=random_trials, retrieval_ratio=retrieval_ratio, seed=seed,
                      haystack=str(haystack) if haystack else None)
    loaded = _load(model, config, random_weights, device, dtype)
    cfg.validate(p, loaded.geometry.max_position_embeddings)
    result = run_probe(loaded, p, cfg, progress=True)
    out = out or Path("probe_" + default_pattern_path(loaded.name).name.replace(".pattern.json", ".json"))
    json_path, png_path = write_probe(result, out)
    table = Table(title=f"probe: {loaded.name}, K={k}")
    for col in ("arm", "accuracy", "min..max", "n"):
        table.add_column(col, justify="right" if col != "arm" else "left")
    for cond, s in result["summary"].items():
        table.add_row(cond, f"{s['accuracy']:.1%}", f"{s['accuracy_min']:.0%}..{s['accuracy_max']:.0%}", str(s["n"]))
    console.print(table)
    console.print(result["findings"])
    console.print(f"[green]wrote[/] {json_path} and {png_path}")


def import_cmd(
    path: Annotated[Path, typer.Argument(help="A DuoAttention pattern: the run folder attn_patterns/<model>/<run>/ (full_attention_heads.tsv + config.json) or the TSV itself.")],
    model: ModelOpt = None,
    config: ConfigOpt = None,
    random_weights: RandomOpt = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Pattern file to write (default: <model>.pattern.json).")] = None,
    retrieval_ratio: Annotated[Optional[float], typer.Option("--retrieval-ratio", help="Keep this fraction of KV heads (DuoAttention's quantile rule, sparsity = 1 - ratio). Default: the config's sparsity, else 0.5.")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Instead of a ratio: gate >= threshold is a retrieval head.")] = None,
    sink: Annotated[Optional[int], typer.Option("--sink", help="Sink tokens (default: the config's sink_size).")] = None,
    recent: Annotated[Optional[int], typer.Option("--recent", help="Recent tokens (default: the config's recent_size).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """DuoAttention's published head pattern -> a sedpa *.pattern.json, checked against the model's layers and KV heads."""
    from sedpa_compress.errors import SedpaError
    from sedpa_compress.heads.interop import import_duo_pattern
    from sedpa_compress.heads.show import pattern_summary
    from sedpa_compress.heads.train import default_pattern_path
    from sedpa_compress.models.geometry import model_geometry

    if retrieval_ratio is not None and threshold is not None:
        raise SedpaError("give at most one of --retrieval-ratio or --threshold")
    if random_weights and config is None:
        raise SedpaError("--random-weights goes with --config NAME (a geometry preset)")
    name, geometry = model_geometry(model, config=config)  # config.json only: no weights are loaded
    pattern = import_duo_pattern(path, geometry, model=name, retrieval_ratio=retrieval_ratio, threshold=threshold,
                                 sink=sink, recent=recent)
    out = out or default_pattern_path(name)
    if out.exists() and not overwrite:
        raise SedpaError(f"--out {out} already exists: choose another path or pass --overwrite")
    pattern.save(out)
    for line in pattern_summary(pattern):
        console.print(line, highlight=False)
    console.print(f"[green]wrote[/] {out}")


def export_cmd(
    pattern: Annotated[Path, typer.Argument(help="A sedpa *.pattern.json (or an artifact's sedpa_pattern.json).")],
    out: Annotated[Path, typer.Argument(help="Folder to write: full_attention_heads.tsv + config.json (DuoAttention's run-folder layout).")],
    fmt: Annotated[str, typer.Option("--format", help="duo-attention (the only format).")] = "duo-attention",
) -> None:
    """A sedpa pattern -> DuoAttention's layout (gates TSV + config.json with sink_size / recent_size)."""
    from sedpa_compress.errors import SedpaError
    from sedpa_compress.heads.interop import FORMATS, export_duo_pattern
    from sedpa_compress.heads.pattern import HeadPattern

    if fmt not in FORMATS:
        raise SedpaError(f"--format {fmt!r}: choose {', '.join(FORMATS)}")
    written = export_duo_pattern(HeadPattern.load(pattern), out)
    console.print(f"[green]wrote[/] {written}/full_attention_heads.tsv and {written}/config.json")


def register(app: typer.Typer) -> None:
    app.command("identify-heads")(identify_heads_cmd)
    heads_app = typer.Typer(help="Inspect, probe, import and export head patterns (*.pattern.json).", no_args_is_help=True)
    heads_app.command("show")(show_cmd)
    heads_app.command("probe")(probe_cmd)
    heads_app.command("import")(import_cmd)
    heads_app.command("export")(export_cmd)
    app.add_typer(heads_app, name="heads")
