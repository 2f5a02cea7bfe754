"""Activation second moments of every projection input, accumulated in fp32 (SVD-LLM's whitening input).

Per layer: `attn_input` (the normed hidden state shared by q/k/v) and `o_input` (the concatenated head
outputs that o_proj reads). E[x xᵀ] over calibration tokens; saved as safetensors with metadata (the
model name and revision they belong to, the text, and the attention they were gathered under).

`attention="duo"` gathers them under the head pattern's attention (streaming heads see sink + recent),
the attention the compressed model then runs: the o_proj inputs of streaming heads are their windowed
outputs, and every later layer's inputs carry the streaming heads' effect. `auto` (the default) does
so whenever there is a pattern: on sedpa-tiny it lowered the compressed model's perplexity for every
rank search but uniform (by 0.1% or less; bench/results/rank_search_sedpa-tiny-cpu.json).

Under torchrun (`world`), process r of N runs the token windows r, r+N, ... of the one stream; the sums
of x xᵀ and the token counts are all-reduced (fp32) before dividing, so every process holds the
statistics of all the windows, as one process would compute them (up to float summation order).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors import safe_open
from safetensors.torch import save

from sedpa_compress.atomic import atomic_write_bytes
from sedpa_compress.calibration.sources import describe_source, iter_texts, token_batches
from sedpa_compress.distributed import SINGLE, World
from sedpa_compress.errors import SedpaError
from sedpa_compress.models.loader import LoadedModel

FORMAT = "sedpa-calibration-v1"
ATTENTIONS = ("auto", "full", "duo")


@dataclass
class CalibrateConfig:
    data: str | None = None  # None: the bundled text
    tokens: int = 131072
    seq_len: int = 2048
    batch_size: int = 1
    text_field: str = "text"
    attention: str = "auto"  # auto (duo when a pattern is given, else full) | full | duo (needs a pattern)


def mask_digest(pattern) -> str:
    """A short hash of a pattern's mask, sink and recent (what `attention="duo"` statistics depend on)."""
    import hashlib

    blob = json.dumps({"mask": pattern.mask, "sink": pattern.sink, "recent": pattern.recent}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _same_model(recorded: str, current: str) -> bool:
    if recorded == current:
        return True
    a, b = Path(recorded), Path(current)
    try:  # the same local directory named two ways
        return a.exists() and b.exists() and a.resolve() == b.resolve()
    except OSError:
        return False


@dataclass
class CalibrationStats:
    """Second moments per layer, normalised by the token count."""

    attn_input: list[torch.Tensor]  # [hidden, hidden] each
    o_input: list[torch.Tensor]  # [heads*head_dim, heads*head_dim] each
    tokens: int
    metadata: dict[str, str]

    def check_model(self, loaded: LoadedModel, source: str = "calibration file", *, force: bool = False) -> None:
        """Shapes must match; so must the recorded model name and revision, unless `force` (statistics of a
        same-shape sibling, base vs instruct or another revision, would otherwise pass unnoticed)."""
        g = loaded.geometry
        want = (g.num_layers, g.hidden_size, g.num_heads * g.head_dim)
        have = (len(self.attn_input), self.attn_input[0].shape[0] if self.attn_input else 0,
                self.o_input[0].shape[0] if self.o_input else 0)
        if want != have:
            raise SedpaError(
                f"{source} was made for another model ({have[0]} layers, hidden {have[1]}, attention {have[2]}; "
                f"this model: {want[0]}, {want[1]}, {want[2]}): run `sedpa calibrate` for this model"
            )
        if force:
            return
        model, revision = self.metadata.get("model"), self.metadata.get("revision") or None
        if model and not _same_model(model, loaded.name):
            raise SedpaError(f"{source} was made for {model!r}, not {loaded.name!r} (same shapes, other weights?): "
                             "run `sedpa calibrate` for this model, or pass --force if it really is the same model")
        if revision and loaded.revision and revision != loaded.revision:
            raise SedpaError(f"{source} was made for {model!r} at revision {revision}, this is revision "
                             f"{loaded.revision}: run `sedpa calibrate` again, or pass --force to use it anyway")

    def check_pattern(self, pattern, source: str = "calibration file", *, force: bool = False) -> None:
        """Statistics gathered under a pattern's attention belong to that pattern."""
        recorded = self.metadata.get("pattern_mask")
        if force or self.metadata.get("attention", "full") != "duo" or not recorded:
            return
        if pattern is None or mask_digest(pattern) != recorded:
            raise SedpaError(f"{source} was gathered under another head pattern's attention (duo, mask {recorded}): "
                             "calibrate with this --pattern, or with --attention full, or pass --force")


def calibrate(loaded: LoadedModel, cfg: CalibrateConfig, *, show_progress: bool = True,
              pattern=None, world: World = SINGLE) -> CalibrationStats:
    """Stream calibration batches through the model and accumulate E[x xᵀ] of every projection input,
    under full attention or (cfg.attention "duo") under `pattern`'s attention; `world`: this process's
    share of a torchrun job (every process calls this and gets the whole job's statistics)."""
    with world.together():
        attn_acc, o_acc, seen, meta = _accumulate(loaded, cfg, show_progress=show_progress and world.main,
                                                  pattern=pattern, world=world)
    if world.distributed:  # sums and counts of every process, then the division
        counts = torch.tensor([seen], dtype=torch.float64)
        world.all_reduce_(counts)
        seen = int(counts.item())
        for acc in (*attn_acc, *o_acc):
            world.all_reduce_(acc)
        meta["tokens"] = str(seen)
    with world.together():
        if seen == 0:
            raise SedpaError(f"calibration data {describe_source(cfg.data)!r} gave no tokens: pass non-empty text with --data")
    return CalibrationStats([a / seen for a in attn_acc], [o / seen for o in o_acc], seen, meta)


def _accumulate(loaded: LoadedModel, cfg: CalibrateConfig, *, show_progress: bool, pattern,
                world: World) -> tuple[list[torch.Tensor], list[torch.Tensor], int, dict[str, str]]:
    """This process's sums of x xᵀ per projection input, its token count and the file's metadata."""
    if cfg.tokens < 1 or cfg.seq_len < 2:
        raise SedpaError(f"--tokens {cfg.tokens} / --seq-len {cfg.seq_len}: need tokens >= 1 and seq-len >= 2")
    if cfg.attention not in ATTENTIONS:
        raise SedpaError(f"--attention {cfg.attention!r}: calibrate under auto, full or duo attention")
    attention = cfg.attention if cfg.attention != "auto" else ("duo" if pattern is not None else "full")
    mode = None
    if attention == "duo":
        if pattern is None:
            raise SedpaError("--attention duo calibrates under a head pattern's attention: pass --pattern P.pattern.json "
                             "(or a model that ships one), or use --attention full")
        from sedpa_compress.heads.gated import GatedAttention

        pattern.validate_for(loaded.geometry)
        mode = GatedAttention.from_mask(pattern.mask, sink=pattern.sink, recent=pattern.recent, device=loaded.device)
    limit = loaded.geometry.max_position_embeddings
    seq_len = min(cfg.seq_len, limit) if limit else cfg.seq_len
    model, family, device = loaded.model, loaded.family, loaded.device
    g = loaded.geometry
    attn_acc = [torch.zeros(g.hidden_size, g.hidden_size, dtype=torch.float32, device=device) for _ in range(g.num_layers)]
    o_dim = g.num_heads * g.head_dim
    o_acc = [torch.zeros(o_dim, o_dim, dtype=torch.float32, device=device) for _ in range(g.num_layers)]

    def hook(acc: torch.Tensor):
        def fn(_module, inputs):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            acc.addmm_(x.T, x)

        return fn

    handles = []
    for i, attn in enumerate(family.attention_modules(model)):
        handles.append(attn.q_proj.register_forward_pre_hook(hook(attn_acc[i])))
        handles.append(attn.o_proj.register_forward_pre_hook(hook(o_acc[i])))
    batches = token_batches(iter_texts(cfg.data, text_field=cfg.text_field), loaded.encode, seq_len=seq_len,
                            max_tokens=cfg.tokens)
    mine = (seq for i, seq in enumerate(batches) if i % world.size == world.rank)  # every window, alone
    seen = 0
    t0 = time.perf_counter()
    progress = Progress(TextColumn("calibrating"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} tokens"),
                        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), disable=not show_progress)
    from sedpa_compress.runtime.reference import using_mode

    try:
        with progress, torch.inference_mode(), (using_mode(model, mode) if mode else contextlib.nullcontext()):
            task = progress.add_task("calibrate", total=-(-cfg.tokens // world.size), rate="")
            batch: list[list[int]] = []
            for seq in mine:
                batch.append(seq)
                if len(batch) < cfg.batch_size:
                    continue
                seen += _run(model, batch, device)
                batch = []
                progress.update(task, completed=min(seen, cfg.tokens), rate=f"{seen / (time.perf_counter() - t0):,.0f} tok/s")
            if batch:
                seen += _run(model, batch, device)
                progress.update(task, completed=min(seen, cfg.tokens))
    finally:
        for h in handles:
            h.remove()
    meta = {"format": FORMAT, "model": loaded.name, "revision": loaded.revision or "", "tokens": str(seen),
            "source": describe_source(cfg.data), "seq_len": str(seq_len), "attention": attention}
    if mode is not None:
        meta["pattern_mask"] = mask_digest(pattern)
    return attn_acc, o_acc, seen, meta


def _run(model, batch: list[list[int]], device: torch.device) -> int:
    n = min(len(s) for s in batch)  # equal lengths; only the last short source batch can differ
    ids = torch.tensor([s[:n] for s in batch], device=device)
    # The decoder stack alone: the LM head (0.5B parameters on Llama-3) reads nothing we need.
    getattr(model, "model", model)(input_ids=ids, use_cache=False)
    return ids.numel()


def save_stats(stats: CalibrationStats, path: Path) -> None:
    tensors = {}
    for i, (a, o) in enumerate(zip(stats.attn_input, stats.o_input)):
        tensors[f"layers.{i}.attn_input"] = a.contiguous().cpu()
        tensors[f"layers.{i}.o_input"] = o.contiguous().cpu()
    atomic_write_bytes(Path(path), save(tensors, metadata=stats.metadata))


def load_stats(path: Path, device: str | torch.device = "cpu") -> CalibrationStats:
    path = Path(path)
    if not path.is_file():
        raise SedpaError(f"calibration file {path} does not exist: make it with `sedpa calibrate --model ... --out {path}`")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = dict(f.metadata() or {})
            keys = set(f.keys())
            n = len([k for k in keys if k.endswith(".attn_input")])
            attn = [f.get_tensor(f"layers.{i}.attn_input").float() for i in range(n)]
            o = [f.get_tensor(f"layers.{i}.o_input").float() for i in range(n)]
    except Exception as exc:  # safetensors raises its own error type for corrupt headers
        raise SedpaError(f"calibration file {path} is not a readable safetensors file ({str(exc).splitlines()[0][:120]}); "
                         "regenerate it with `sedpa calibrate`") from None
    if meta.get("format") != FORMAT or n == 0:
        raise SedpaError(f"{path} is not a sedpa calibration file (format {meta.get('format')!r}); regenerate it with `sedpa calibrate`")
    # A file from elsewhere may parse and still hold vectors, mixed sizes or NaN: the SVD would fail far
    # from here, so every matrix is checked now.
    for kind, mats in (("attn_input", attn), ("o_input", o)):
        for i, m in enumerate(mats):
            if m.dim() != 2 or m.shape[0] != m.shape[1] or m.shape != mats[0].shape or not torch.isfinite(m).all():
                raise SedpaError(f"{path}: layers.{i}.{kind} is not a finite square matrix like the other layers' "
                                 f"(shape {tuple(m.shape)}); regenerate it with `sedpa calibrate`")
    tokens = str(meta.get("tokens", "0") or "0")
    if not tokens.isdigit() or len(tokens) > 18:
        raise SedpaError(f"{path}: metadata tokens={tokens[:20]!r} is not a token count; regenerate it with `sedpa calibrate`")
    return CalibrationStats(attn, o, int(tokens), meta)


def summary(stats: CalibrationStats) -> str:
    return json.dumps({k: stats.metadata[k] for k in ("model", "revision", "tokens", "source", "seq_len", "attention")
                       if k in stats.metadata})
