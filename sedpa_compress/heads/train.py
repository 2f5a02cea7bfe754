"""`sedpa identify-heads`: train one gate per (layer, KV head) with frozen weights, write the pattern file.

Each step draws a synthetic multi-passkey example, runs the original model once without gradients to
get the final hidden states at the positions that predict the answers (the distillation target), runs the gated model
and minimises  mean((h_gated - h_orig)^2) + reg_weight * mean(alpha)  over the gates alone.
Gates start at 1 (every head full); heads whose streaming version changes nothing are pushed to 0 by
the L1 term, heads that retrieval needs are held up by the distillation term.

Checkpoints (gates, optimizer, scheduler, RNG states, step, history, and a fingerprint of model and
recipe) are written atomically every `checkpoint_every` steps; `resume=True` continues bit-for-bit.

Several processes (torchrun; `sedpa_compress.distributed`): data parallel. A step has `batch_size`
samples, drawn in order from the one checkpointed RNG stream that every process advances alike; process
r of N runs samples r, r+N, ... and the gate gradients are summed over the processes (each sample's
distillation loss weighs 1/batch_size; the L1 term rides on sample 0). One process with the same
batch_size accumulates the same gradient, so the gates agree up to float summation order, and the
checkpoint (written by rank 0 alone) holds nothing that depends on the number of processes: a run
resumes with another one. batch_size 1 in one process is the original one-sample-per-step loop, bit-for-bit.
"""

from __future__ import annotations

import dataclasses
import io
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sedpa_compress.atomic import atomic_write_bytes
from sedpa_compress.distributed import SINGLE, World
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.config import IdentifyConfig, fingerprint
from sedpa_compress.heads.gated import GatedAttention
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.heads.synthetic import PasskeyData, encoder_for
from sedpa_compress.models.loader import LoadedModel
from sedpa_compress.runtime.reference import using_mode

CHECKPOINT_SUFFIX = ".identify-ckpt.pt"
CHECKPOINT_FORMAT = 2  # 2: the loss reads the states that predict the answers (1 read the answer tokens')


@dataclass
class StepLog:
    step: int  # 1-based: the number of optimizer steps done
    loss: float
    distill: float
    reg: float
    mean_gate: float
    context: int
    seconds: float


@dataclass
class IdentifyResult:
    pattern: HeadPattern
    history: list[StepLog]
    wall_s: float
    resumed_from: int  # 0 for a fresh run
    checkpoint: Path
    out: Path


def default_pattern_path(model_name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-._" else "-" for c in Path(model_name).name or model_name)
    return Path(f"{safe.strip('-') or 'model'}.pattern.json")


def checkpoint_path(out: Path) -> Path:
    out = Path(out)
    base = out.name[: -len(".pattern.json")] if out.name.endswith(".pattern.json") else out.name
    return out.with_name(base + CHECKPOINT_SUFFIX)


def lr_lambda(cfg: IdentifyConfig) -> Callable[[int], float]:
    """DuoAttention's schedule: linear warm-up, flat, linear decay; never below `min_lr_ratio`."""
    warm = max(1, round(cfg.steps * cfg.warmup_fraction))
    decay = max(1, round(cfg.steps * cfg.decay_fraction))

    def f(step: int) -> float:
        up = (step + 1) / warm if cfg.warmup_fraction > 0 else 1.0
        down = (cfg.steps - step) / decay if cfg.decay_fraction > 0 else 1.0
        return min(1.0, max(up, cfg.min_lr_ratio), max(down, cfg.min_lr_ratio))

    return f


def model_identity(loaded: LoadedModel) -> dict[str, Any]:
    return {"name": loaded.name, "revision": loaded.revision, "geometry": asdict(loaded.geometry)}


def _haystack_text(cfg: IdentifyConfig) -> tuple[str, str]:
    from sedpa_compress.data.text import load_bundled_text, load_haystack

    if cfg.haystack:
        return load_haystack(Path(cfg.haystack)), f"haystack file {cfg.haystack}"
    # Train split: the held-out split is what the probe and the benchmarks use as haystack.
    return load_bundled_text("train"), "the bundled text"


def check_model(loaded: LoadedModel, cfg: IdentifyConfig) -> None:
    limit = loaded.geometry.max_position_embeddings
    if limit and cfg.context_max > limit:
        raise SedpaError(f"context_max {cfg.context_max} is beyond {loaded.name}'s position limit of {limit} tokens: "
                         f"pass --context-max {limit} or less (or a recipe made for this model)")


def _make_optimizer(cfg: IdentifyConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _backend(cfg: IdentifyConfig, device: torch.device) -> str:
    if cfg.attention_backend == "auto":
        return "flex" if device.type == "cuda" else "banded"
    if cfg.attention_backend == "flex" and device.type != "cuda":
        raise SedpaError("attention_backend flex needs a CUDA device: use --device cuda or attention_backend reference")
    return cfg.attention_backend


@dataclass
class _State:
    step: int
    history: list[StepLog] = field(default_factory=list)


def save_checkpoint(path: Path, *, gated: GatedAttention, optimizer, scheduler, rng: random.Random, state: _State,
                    fp: str, identity: dict[str, Any], cfg: IdentifyConfig) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fp,
        "model": identity,
        "recipe": cfg.fingerprint_fields(),
        "step": state.step,
        "gates": gated.gates.detach().cpu().clone(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "python_rng": rng.getstate(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": [asdict(h) for h in state.history],
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, fp: str, identity: dict[str, Any], cfg: IdentifyConfig) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise SedpaError(f"checkpoint {path} cannot be read ({type(exc).__name__}): delete it and run without --resume") from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if type(fmt) is not type(CHECKPOINT_FORMAT) or fmt != CHECKPOINT_FORMAT:  # a tensor here would not compare
        raise SedpaError(f"{path} is not an identify-heads checkpoint of this version: delete it and run without --resume")
    if not isinstance(payload.get("fingerprint"), str) or payload["fingerprint"] != fp:
        diffs = []
        try:  # what differs, for the message; a damaged payload may hold tensors where values were
            model = payload.get("model")
            if not isinstance(model, dict) or model != identity:
                diffs.append(f"model {model.get('name') if isinstance(model, dict) else None!r} (now {identity['name']!r})")
            old = payload.get("recipe")
            old = old if isinstance(old, dict) else {}
            new = cfg.fingerprint_fields()
            diffs += [f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in new if old.get(k) != new.get(k)]
        except (RuntimeError, TypeError, ValueError):
            diffs = []
        raise SedpaError(f"checkpoint {path} belongs to another model or recipe ({'; '.join(diffs) or 'fingerprint differs'}): "
                         "resume with the same --model/--recipe/flags, or run without --resume to start over")
    return payload


def identify_heads(
    loaded: LoadedModel,
    cfg: IdentifyConfig,
    *,
    out: Path,
    resume: bool = False,
    recipe_path: str | None = None,
    stop_after: int | None = None,
    on_step: Callable[[StepLog, GatedAttention], None] | None = None,
    progress: bool = False,
    world: World = SINGLE,
) -> IdentifyResult:
    """Train the gates of `loaded` per `cfg`; write `out` (the pattern file) and return it.

    `stop_after` ends this call after that many total steps without writing the pattern (the
    checkpoint is written), as an interruption would; a later `resume=True` call finishes the run.
    `world`: this process's share of a torchrun job (every process calls this; rank 0 writes the files).
    """
    with world.together():
        cfg = cfg.validate()
        if cfg.batch_size < world.size:
            raise SedpaError(f"batch_size {cfg.batch_size} is fewer samples per step than the {world.size} processes: "
                             f"pass --batch-size {world.size} (or a multiple), or start fewer processes")
        check_model(loaded, cfg)
        out = Path(out)
        ckpt = checkpoint_path(out)
        model, geom = loaded.model, loaded.geometry
        device = loaded.device
        identity = model_identity(loaded)
        fp = fingerprint(identity, cfg)

        text, source = _haystack_text(cfg)
        encode, start_tokens = encoder_for(loaded)
        data = PasskeyData(encode, text, context_min=cfg.context_min, context_max=cfg.context_max,
                           context_intervals=cfg.context_intervals, num_passkeys=cfg.num_passkeys,
                           depth_min=cfg.depth_min, depth_max=cfg.depth_max, start_tokens=start_tokens, source=source)

        gated = GatedAttention(geom.num_layers, geom.num_kv_heads, sink=cfg.sink, recent=cfg.recent, init=cfg.init_gate,
                               backend=_backend(cfg, device), device=device, full_source=cfg.full_attention_source)
        optimizer = _make_optimizer(cfg, [gated.gates])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)
        state = _State(step=0)
        # Rank 0 reads the checkpoint and hands it to the others (no shared file system needed).
        payload = load_checkpoint(ckpt, fp, identity, cfg) if resume and world.main and ckpt.is_file() else None
    payload = world.broadcast(payload)

    if payload is not None:
        with world.together():
            state = _restore(payload, ckpt, cfg, gated=gated, optimizer=optimizer, scheduler=scheduler, rng=rng)
    resumed_from = state.step

    requires = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # frozen weights: the gates are the only thing that learns
    use_ckpt = cfg.gradient_checkpointing == "on" or (cfg.gradient_checkpointing == "auto" and device.type == "cuda")
    was_training = model.training
    if use_ckpt:
        _checkpointing(model, True)
    model.train(use_ckpt)  # HF checkpoints only in train mode; these models have no dropout
    base = model.model  # decoder stack: final (normed) hidden states, no [t, vocab] logits

    def distill_loss(example) -> torch.Tensor:
        ids = torch.tensor([example.input_ids], device=device)
        pos = torch.tensor(example.loss_positions, device=device)
        gated.active = False
        gated.record = cfg.full_attention_source == "original"
        with torch.no_grad():
            target = base(input_ids=ids, use_cache=False).last_hidden_state[0, pos].float()
        gated.active, gated.record = True, False
        hidden = base(input_ids=ids, use_cache=False).last_hidden_state[0, pos].float()
        return (hidden - target).pow(2).mean(dim=-1).mean()

    last = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    batch = cfg.batch_size
    t_start = time.perf_counter()
    bar = _Progress(cfg.steps, state.step, enabled=progress and world.main)
    try:
        with bar, using_mode(model, gated):
            while state.step < last:
                t0 = time.perf_counter()
                with world.together():  # this process's samples: forward, backward, gradients accumulated
                    gated.clamp_()
                    examples = _draw(data, rng, batch)  # the whole step's samples: the RNG stays the same everywhere
                    optimizer.zero_grad(set_to_none=True)
                    reg = gated.gates.abs().mean()
                    distill_sum = torch.zeros((), device=device)
                    for i in world.shard(batch):
                        distill = distill_loss(examples[i])
                        part = distill / batch
                        if i == 0:  # the L1 term once per step, on the process that has sample 0
                            part = part + cfg.reg_weight * reg
                        part.backward()
                        gated.forget()  # (after backward: checkpointed layers re-read the recorded outputs)
                        distill_sum = distill_sum + distill.detach()
                if world.distributed:  # one all-reduce: the gate gradients and the summed losses
                    flat = torch.cat([gated.gates.grad.reshape(-1), distill_sum.reshape(1)])
                    world.all_reduce_(flat)
                    gated.gates.grad.copy_(flat[:-1].view_as(gated.gates))
                    distill_sum = flat[-1]
                optimizer.step()
                scheduler.step()
                gated.clamp_()
                state.step += 1
                distill = distill_sum / batch
                loss = distill + cfg.reg_weight * reg.detach()
                log = StepLog(step=state.step, loss=loss.item(), distill=distill.item(), reg=reg.item(),
                              mean_gate=gated.gates.detach().mean().item(), context=examples[0].context_tokens,
                              seconds=time.perf_counter() - t0)
                state.history.append(log)
                bar.update(log)
                if on_step is not None:
                    on_step(log, gated)
                if state.step % cfg.checkpoint_every == 0 or state.step == last:
                    with world.together():
                        if world.main:
                            save_checkpoint(ckpt, gated=gated, optimizer=optimizer, scheduler=scheduler, rng=rng,
                                            state=state, fp=fp, identity=identity, cfg=cfg)
    finally:
        gated.forget()
        if use_ckpt:
            _checkpointing(model, False)
        model.train(was_training)
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    wall = time.perf_counter() - t_start

    pattern = _to_pattern(loaded, cfg, gated, state, recipe_path=recipe_path, world=world)
    with world.together():
        if state.step >= cfg.steps and world.main:
            pattern.save(out)
    return IdentifyResult(pattern=pattern, history=state.history, wall_s=wall, resumed_from=resumed_from,
                          checkpoint=ckpt, out=out)


def _draw(data: PasskeyData, rng: random.Random, batch: int) -> list:
    """One step's samples: one context length for all of them (so the processes of a step finish
    together), then each sample in order. For batch 1 this is `data.sample(rng)`, draw for draw."""
    length = rng.choice(data.lengths)
    return [data.make(rng, length) for _ in range(batch)]


def _restore(payload: dict[str, Any], ckpt: Path, cfg: IdentifyConfig, *, gated: GatedAttention, optimizer,
             scheduler, rng: random.Random) -> _State:
    """Put a checkpoint's state into the fresh run; a damaged one is one line, not a traceback."""
    try:  # the fingerprint matched, but the file may still be damaged
        gates = payload["gates"]
        if not isinstance(gates, torch.Tensor) or gates.shape != gated.gates.shape or not torch.isfinite(gates).all():
            raise ValueError(f"gates {tuple(getattr(gates, 'shape', ()))} do not fit {tuple(gated.gates.shape)}")
        with torch.no_grad():
            gated.gates.copy_(gates.to(gated.gates.device))
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        rng.setstate(_as_rng_state(payload["python_rng"]))
        torch.set_rng_state(payload["torch_rng"])
        if payload["cuda_rng"] and torch.cuda.is_available():
            # Written where more (or fewer) GPUs were visible: restore the devices both have.
            for i, s in enumerate(payload["cuda_rng"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
        step = payload["step"]
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= cfg.steps:
            raise ValueError(f"step {step!r}")
        return _State(step=step, history=[StepLog(**h) for h in payload["history"]])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError, OverflowError) as exc:
        detail = str(exc).splitlines()[0][:80] if str(exc) else ""
        raise SedpaError(f"checkpoint {ckpt} is damaged ({type(exc).__name__}{': ' + detail if detail else ''}): "
                         "delete it and run without --resume") from None


def _checkpointing(model, on: bool) -> None:
    """Per-layer activation checkpointing; transformers renamed the API in 5.2x, so take either."""
    # Non-reentrant: the inputs need no grad (frozen embeddings) but the gates inside the layers do.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_disable()


def _as_rng_state(value: Any) -> tuple:
    """random.setstate wants tuples; a checkpoint round trip may hand back lists."""
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


def final_losses(history: list[StepLog], last: int = 20) -> dict[str, float]:
    tail = history[-last:]
    if not tail:
        return {}
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"loss": mean([h.loss for h in tail]), "distill": mean([h.distill for h in tail]),
            "reg": mean([h.reg for h in tail]), "last_steps": len(tail)}


def _to_pattern(loaded: LoadedModel, cfg: IdentifyConfig, gated: GatedAttention, state: _State, *,
                recipe_path: str | None, world: World = SINGLE) -> HeadPattern:
    gates = gated.gates.detach().float().cpu().clamp(0, 1).tolist()
    training = {
        "method": "duoattention-gates",
        "recipe": recipe_path,
        "settings": dataclasses.asdict(cfg),
        "steps_done": state.step,
        "final_losses": final_losses(state.history),
        "wall_s": round(sum(h.seconds for h in state.history), 3),
        "device": str(loaded.device),
        "dtype": str(next(loaded.model.parameters()).dtype).replace("torch.", ""),
    }
    if world.distributed:
        training["processes"] = world.size
    return HeadPattern.from_gates(gates, sink=cfg.pattern_sink, recent=cfg.pattern_recent, retrieval_ratio=cfg.retrieval_ratio,
                                  threshold=cfg.threshold, model=loaded.name, revision=loaded.revision,
                                  training=training)


class _Progress:
    """Rich progress: step, loss, distillation part, mean gate, projected time left."""

    def __init__(self, total: int, done: int, *, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        # Compact enough for 80 columns: step, loss (its distillation part), mean gate, context, time left.
        self.progress = Progress(
            MofNCompleteColumn(), BarColumn(bar_width=12),
            TextColumn("loss {task.fields[loss]:.4f} (distill {task.fields[distill]:.4f}) "
                       "gate {task.fields[gate]:.3f} ctx {task.fields[ctx]}"),
            TextColumn("left"), TimeRemainingColumn(compact=True),
            console=Console(stderr=True), transient=False,
        )
        self.task = self.progress.add_task("steps", total=total, completed=done, loss=float("nan"),
                                           distill=float("nan"), gate=float("nan"), ctx="-")

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)

    def update(self, log: StepLog) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=log.step, loss=log.loss, distill=log.distill,
                                 gate=log.mean_gate, ctx=log.context)
