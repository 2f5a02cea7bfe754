"""Train sedpa-tiny: tokenizer, then the model on shipped text + synthetic retrieval, with atomic
checkpoints, exact resume, a final evaluation, a loss curve and a model card.

    sedpa train-tiny --recipe recipes/tiny.yaml --out runs/tiny      (the CLI: sedpa_compress/cli/train.py)

Layout of `--out`:
    tokenizer/    tokenizer.json + config (trained once, reused on resume)
    checkpoint/   model.safetensors (fp32), optimizer.pt, state.json (step, elapsed, loss history)
    model/        the Hugging Face model directory (bf16) with README.md, loss_curve.png, eval.json
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sedpa_compress.atomic import atomic_directory
from sedpa_compress.distributed import SINGLE, World
from sedpa_compress.errors import SedpaError
from sedpa_compress.tiny.config import TinyTrainConfig, config_to_dict
from sedpa_compress.tiny.data import Batch, TinyData, sequence_length
from sedpa_compress.models.loaded import count_parameters, shape_mismatches
from sedpa_compress.tiny.model import (build_model, count_layers, export_hf, grow_kv_heads, grow_layers, narrow_mlp,
                                       widen_mlp)

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    """The log of processes other than 0 under torchrun."""


def lr_at(cfg: TinyTrainConfig, step: int, progress: float) -> float:
    """Cosine from `lr` to `lr * min_lr_ratio` over the long schedule, at the point `progress` (0-1 of this run)
    reaches in the run's schedule_span; over the first `warmup_steps` a linear warmup to the rate where the span
    starts (`lr` for a whole schedule)."""
    def cosine(p: float) -> float:
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))

    if step < cfg.warmup_steps:
        return cosine(cfg.schedule_span[0]) * (step + 1) / cfg.warmup_steps
    return cosine(cfg.schedule_progress(progress))


class Progress:
    """Fraction of training done: steps/steps, or (with max_minutes) the larger of that and wall time
    spent / budget, so a time-limited run still finishes its schedule (then resume is not bit-exact)."""

    def __init__(self, cfg: TinyTrainConfig, step: int, elapsed_s: float) -> None:
        self.cfg = cfg
        self.step = step
        self.elapsed_before = elapsed_s
        self.t0 = time.time()

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t0

    def value(self, step: int | None = None) -> float:
        s = self.step if step is None else step
        p = s / max(1, self.cfg.steps)
        if self.cfg.max_minutes > 0:
            p = max(p, self.elapsed / (self.cfg.max_minutes * 60))
        return min(1.0, p)


def _step_items(cfg: TinyTrainConfig, progress: Progress, start: int) -> Iterator[tuple[int, int]]:
    import random

    for step in range(start, cfg.steps):
        rng = random.Random(cfg.data_seed * 7_919 + step)
        # lengths follow the step-based curriculum, or the time-based one when a time budget is set
        p = progress.value(step) if cfg.max_minutes > 0 else step / max(1, cfg.steps)
        yield step, sequence_length(cfg, p, rng)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _ensure_tokenizer(cfg: TinyTrainConfig, out: Path, log: Log, init_from: Path | None = None):
    """The run's tokenizer: the one in `out/tokenizer`, else the `init_from` model's (its weights only
    make sense with it), else one trained on the shipped text."""
    import shutil

    from tokenizers import Tokenizer

    from sedpa_compress.tiny.data import training_text
    from sedpa_compress.tiny.tokenizer import has_value_space, save_tokenizer, train_tokenizer, write_value_space

    tok_dir = out / "tokenizer"
    src = Path(init_from) if init_from is not None else None
    if not (tok_dir / "tokenizer.json").is_file() and src is not None and (src / "tokenizer.json").is_file():
        with atomic_directory(tok_dir, overwrite=True) as tmp:
            for name in TOKENIZER_FILES:
                if (src / name).is_file():
                    shutil.copy2(src / name, tmp / name)
        log(f"tokenizer taken from {src}")
    if not (tok_dir / "tokenizer.json").is_file():
        t0 = time.time()
        tok = train_tokenizer(training_text(cfg), cfg.vocab_size, value_space=cfg.value_space)
        with atomic_directory(tok_dir, overwrite=True) as tmp:
            save_tokenizer(tok, tmp, cfg.max_position_embeddings)
        log(f"trained tokenizer: vocab {tok.get_vocab_size()} in {time.time() - t0:.1f}s")
    if cfg.value_space and not has_value_space(json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))):
        with atomic_directory(tok_dir, overwrite=True) as tmp:
            for name in TOKENIZER_FILES:
                if (tok_dir / name).is_file():
                    shutil.copy2(tok_dir / name, tmp / name)
            write_value_space(tok_dir / "tokenizer.json", tmp / "tokenizer.json")
        log("tokenizer switched to value_space: the space before a word holding a digit is its own token")
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    if tok.get_vocab_size() > cfg.vocab_size:
        raise SedpaError(f"{tok_dir} has {tok.get_vocab_size()} tokens but vocab_size is {cfg.vocab_size}: "
                         "delete the tokenizer folder or use the recipe it was trained with")
    return tok, tok_dir


def save_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    with atomic_directory(path, overwrite=True) as tmp:
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()
                   if not (k == "lm_head.weight" and model.config.tie_word_embeddings)}
        save_file(tensors, str(tmp / "model.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state) + "\n")


def load_weights(model: torch.nn.Module, path: Path, grow: bool = False, log: Log = _quiet) -> None:
    """Weights from a checkpoint dir or a Hugging Face model dir (single or sharded safetensors). `grow`
    (--init-from): a model with fewer KV heads or fewer layers than the recipe's is grown into it, computing the same
    function (`tiny.model.grow_kv_heads`, `grow_layers`, `widen_mlp`); one with a wider MLP is narrowed to the
    recipe's (`narrow_mlp`, the strongest channels kept). A folder whose weights are stored as int8 (`models.int8`)
    starts from the weights they restore to."""
    from sedpa_compress.models.int8 import INT8_FILE, load_int8_state_dict

    path = Path(path)
    files = sorted(f for f in path.glob("model*.safetensors") if f.name != INT8_FILE)
    state: dict[str, torch.Tensor] = {}
    if not files and (path / INT8_FILE).is_file():
        state = load_int8_state_dict(path / INT8_FILE, torch.float32)
    elif not files:
        raise SedpaError(f"{path} has no model*.safetensors: pass a checkpoint or model directory")
    for f in files:
        state.update(load_file(str(f)))
    if grow:
        cfg = model.config
        key = "model.layers.0.self_attn.k_proj.weight"
        have = state[key].shape[0] // cfg.head_dim if key in state else cfg.num_key_value_heads
        if have != cfg.num_key_value_heads:
            state = grow_kv_heads(state, cfg.num_key_value_heads, cfg.head_dim)
            log(f"grew {path}'s {have} KV heads a layer into {cfg.num_key_value_heads} (each copied into its "
                "query group's new heads: the same function to start from)")
        layers = count_layers(state)
        if layers != cfg.num_hidden_layers:
            state = grow_layers(state, cfg.num_hidden_layers)
            log(f"grew {path}'s {layers} layers into {cfg.num_hidden_layers} (each new one a copy of the layer "
                "before it with its output projections zeroed: the same function to start from)")
        key = "model.layers.0.mlp.gate_proj.weight"
        width = state[key].shape[0] if key in state else cfg.intermediate_size
        if width < cfg.intermediate_size:
            state = widen_mlp(state, cfg.intermediate_size)
            log(f"widened {path}'s MLP from {width} to {cfg.intermediate_size} channels a layer (new channels with "
                "zero down-projection columns: the same function to start from)")
        elif width > cfg.intermediate_size:
            state = narrow_mlp(state, cfg.intermediate_size)
            log(f"narrowed {path}'s MLP from {width} to {cfg.intermediate_size} channels a layer (those with the "
                "largest gate x up x down norms kept)")
    wrong = shape_mismatches(state, model)
    if wrong:
        raise SedpaError(f"{path} does not match the recipe's model ({wrong[0]}): use the recipe it was trained "
                         "with (--init-from grows a model with fewer KV heads, layers or MLP channels and narrows a wider MLP)")
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise SedpaError(f"{path} does not match the recipe's model (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}): use the recipe it was trained with")
    if model.config.tie_word_embeddings:
        model.tie_weights()


@contextlib.contextmanager
def tf32_matmuls() -> Iterator[None]:
    """TF32 matmuls for the training run only; the previous settings come back afterwards, so later
    work in the same process (a test session, calibration, factoring) keeps full fp32 matmuls."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _with_tf32(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with tf32_matmuls():
            return fn(*args, **kwargs)

    return wrapper


def attention_kernel(backend: str) -> contextlib.AbstractContextManager:
    """The SDPA kernel that the model's attention runs on CUDA under this context (TinyTrainConfig.attention_backend;
    "auto": PyTorch's own choice). The backward pass runs the kernel the forward chose."""
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                        "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend])


@_with_tf32
def train(cfg: TinyTrainConfig, out: Path, *, resume: Path | bool | None = None, init_from: Path | None = None,
          device: str = "auto", eval_at_end: bool = True, log: Log = print, command: str = "",
          world: World = SINGLE) -> Path:
    """Run (or continue) training; returns the exported model directory (`out/model`).

    Under torchrun (`world`, one node) every process trains on its own stream of batches (TinyData's
    `stream` = its rank; process 0's is the one-process stream) of `tokens_per_step` tokens each, and DDP
    averages the gradients: N processes take N times the tokens a step at the speed of one. Process 0
    logs, checkpoints, exports and evaluates; all stop at the same step."""
    out = Path(out)
    if world.distributed:
        device = world.device
    elif device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SedpaError("--device cuda was asked for but no CUDA GPU is visible: pass --device cpu")
    dev = torch.device(device)
    if cfg.attention_backend != "auto" and dev.type != "cuda":
        raise SedpaError(f"attention_backend {cfg.attention_backend} is a CUDA kernel; training runs on {device}: "
                         "use --override attention_backend=auto")
    out.mkdir(parents=True, exist_ok=True)
    if not world.main:
        log = _quiet

    if world.main:  # process 0 trains or copies the tokenizer; the others read it
        tok, tok_dir = _ensure_tokenizer(cfg, out, log, init_from if not resume else None)
    world.barrier()
    if not world.main:
        tok, tok_dir = _ensure_tokenizer(cfg, out, log, init_from if not resume else None)
    model = build_model(cfg, tok.get_vocab()).to(dev)
    n_params = count_parameters(model)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=cfg.betas, fused=dev.type == "cuda")
    state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "history": [], "config": config_to_dict(cfg),
                             "init_from": str(init_from) if init_from else None}
    ckpt_dir = out / "checkpoint"
    if resume:
        src = ckpt_dir if resume is True else Path(resume)
        if not (src / "state.json").is_file():
            raise SedpaError(f"no checkpoint at {src} (state.json missing): run without --resume to start fresh")
        load_weights(model, src)
        opt.load_state_dict(torch.load(src / "optimizer.pt", map_location=dev, weights_only=True))
        prev = json.loads((src / "state.json").read_text())
        state.update({k: prev[k] for k in ("step", "elapsed_s", "history", "init_from") if k in prev})
        log(f"resumed from {src} at step {state['step']}")
    elif init_from and cfg.init_weights:
        load_weights(model, Path(init_from), grow=True, log=log)
        log(f"initialised weights from {init_from} (fresh optimizer and schedule)")
    elif init_from:
        state["init_from"] = f"{init_from} (tokenizer only: init_weights false)"
        log(f"fresh weights; the tokenizer from {init_from} (init_weights false)")

    data = TinyData(cfg, tok, stream=world.rank)
    net: torch.nn.Module = model
    if world.distributed:  # gradients averaged over the processes during backward (parameters from rank 0)
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if cfg.compile_model:  # one graph for every length: shapes dynamic from the first step, no recompile per length
        net = torch.compile(net, dynamic=True)
    progress = Progress(cfg, state["step"], state["elapsed_s"])
    loader = torch.utils.data.DataLoader(
        data, sampler=_step_items(cfg, progress, state["step"]), batch_size=None,
        num_workers=cfg.num_workers, pin_memory=dev.type == "cuda",
        prefetch_factor=4 if cfg.num_workers else None, persistent_workers=False,
    )
    log(f"model: {n_params / 1e6:.2f}M parameters, {cfg.num_layers} layers, {cfg.num_heads} heads / "
        f"{cfg.num_kv_heads} KV heads; {len(data.corpus)} text tokens; device {device}; "
        f"{cfg.steps} steps of {cfg.tokens_per_step} tokens" + (f" x {world.size} processes" if world.distributed else "")
        + (f", budget {cfg.max_minutes} min" if cfg.max_minutes else ""))

    def shared_progress(at: int | None = None) -> float:
        """The schedule's progress, the processes' mean under torchrun: with a time budget each process's
        clock differs a little, and the same learning rate and the same last step keep the replicas equal."""
        p = progress.value(at)
        if world.distributed and cfg.max_minutes > 0:
            p = float(world.all_reduce_(torch.tensor([p], dtype=torch.float64, device=dev)).item()) / world.size
        return p

    model.train()
    last_print = time.time()
    window: list[dict[str, float]] = []
    step = state["step"]
    stopped_by_time = False
    for step_item, batch in zip(range(state["step"], cfg.steps), loader):
        batch: Batch
        step = step_item
        progress.step = step
        lr = lr_at(cfg, step, shared_progress())
        for g in opt.param_groups:
            g["lr"] = lr
        x = batch.input_ids.to(dev, non_blocking=True)
        ans = batch.answer_mask.to(dev, non_blocking=True)[:, 1:]
        txt = batch.text_mask.to(dev, non_blocking=True)[:, 1:] & ~ans
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"), \
                attention_kernel(cfg.attention_backend):
            logits = net(input_ids=x).logits
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                               x[:, 1:].reshape(-1), reduction="none").view_as(ans)
        n_ans = ans.sum()
        loss_text = (ce * txt).sum() / txt.sum().clamp(min=1)
        loss_ans = (ce * ans).sum() / n_ans.clamp(min=1)
        loss = loss_text + cfg.answer_loss_weight * loss_ans
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            pred = logits[:, :-1].argmax(-1)
            ans_acc = ((pred == x[:, 1:]) & ans).sum() / n_ans.clamp(min=1)
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            rec = {"step": step, "length": batch.length, "loss_text": round(loss_text.item(), 4),
                   "loss_answer": round(loss_ans.item(), 4), "answer_token_acc": round(ans_acc.item(), 4),
                   "lr": lr, "grad_norm": round(gnorm.item(), 3), "elapsed_s": round(progress.elapsed, 1)}
            state["history"].append(rec)
            window.append(rec)
        if time.time() - last_print > 30 or step == cfg.steps:
            if window:
                lt = sum(r["loss_text"] for r in window) / len(window)
                la = sum(r["loss_answer"] for r in window) / len(window)
                aa = sum(r["answer_token_acc"] for r in window) / len(window)
                log(f"step {step}/{cfg.steps} len {batch.length} text {lt:.3f} answer {la:.3f} "
                    f"ans_acc {aa:.3f} lr {lr:.2e} progress {progress.value(step):.3f} "
                    f"{progress.elapsed:.0f}s")
            window = []
            last_print = time.time()
        state["step"] = step
        state["elapsed_s"] = progress.elapsed
        done_by_time = cfg.max_minutes > 0 and shared_progress(step) >= 1.0
        if world.main and (step % cfg.checkpoint_every == 0 or step == cfg.steps or done_by_time):
            save_checkpoint(ckpt_dir, model, opt, state)
        if done_by_time:
            stopped_by_time = True
            log(f"time budget of {cfg.max_minutes} min reached at step {step}: schedule finished, checkpoint saved")
            break
    del loader
    model_dir = out / "model"
    replicas_equal = None
    if world.distributed:  # DDP keeps the replicas equal only if every process stepped alike: check it
        mine = torch.cat([p.detach().flatten().cpu() for p in model.parameters()])
        ref = world.broadcast(mine if world.main else None)
        differs = torch.tensor([int(not torch.equal(mine, ref))], dtype=torch.int32, device=dev)
        replicas_equal = not bool(world.all_reduce_(differs).item())
        if not replicas_equal:
            log("warning: the processes' weights differ at the end of training; process 0's are exported")
    if not world.main:  # process 0 exports and evaluates
        return model_dir

    from sedpa_compress.tiny.card import write_card, write_loss_curve

    model.eval()
    train_info = {"steps_done": step, "stopped_by_time": stopped_by_time, "elapsed_s": round(state["elapsed_s"], 1),
                  "parameters": n_params, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                  "command": command or "sedpa train-tiny", "init_from": state.get("init_from"),
                  "processes": world.size, "tokens_per_step_all_processes": cfg.tokens_per_step * world.size,
                  **({"replicas_equal": replicas_equal} if world.distributed else {}),
                  "config": config_to_dict(cfg), "final": state["history"][-1] if state["history"] else {},
                  "history": state["history"]}
    # The model first (a run killed during evaluation still leaves it), then the evaluation and card.
    with atomic_directory(model_dir, overwrite=True) as tmp:
        export_hf(model, tok_dir, tmp)
        write_loss_curve(state["history"], tmp / "loss_curve.png")
        (tmp / "training.json").write_text(json.dumps(train_info, indent=2) + "\n")
        write_card(tmp, train_info, state["history"], None)
    log(f"exported {model_dir}")
    if eval_at_end:
        from sedpa_compress.tiny.evaluate import evaluate
        from sedpa_compress.tiny.tokenizer import load_hf_tokenizer

        hf_tok = load_hf_tokenizer(model_dir)
        result = evaluate(model, hf_tok, model_name="sedpa-tiny", contexts=cfg.eval_contexts,
                          depths=cfg.eval_depths, samples=cfg.eval_samples_per_depth, sink=cfg.stream_sink,
                          recent=cfg.stream_recent, command=f"{command} (evaluation at the end of training)",
                          log=log)
        (model_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        write_card(model_dir, train_info, state["history"], result)
    log(f"wrote {model_dir}")
    return model_dir
