"""DuoAttention's published head patterns, read and written.

DuoAttention's research code keeps a pattern as a directory
`attn_patterns/<model>/<run>/` holding
- `full_attention_heads.tsv`: one row per layer, one tab-separated gate per KV head (numpy's
  `savetxt` format; trained gates may stray slightly outside [0, 1] and are clipped on load), and
- `config.json`: the training run's arguments, of which a deployment reads `sink_size` and
  `recent_size`.

Its binarisation (evaluation scripts, which seed numpy with 42 first): a uniform noise below 1e-6
is added to the gates to break ties, then a head is a retrieval head when its noised gate is >= a
threshold; for a target sparsity s (the streaming fraction, `1 - retrieval ratio`) the threshold is
numpy's (linearly interpolated) s-quantile of the noised gates (s >= 1 keeps none, s <= 0 all).
Published gates are bf16 values with many ties (the Llama-3-8B-1048K pattern has 94 distinct values
among 256 heads, 82 of them exactly 1.0), so the noise decides which tied heads are kept.
`duo_binarize` computes exactly that, with the noise drawn from numpy's seed 42 as those scripts
draw it, so an imported pattern keeps the heads DuoAttention's own evaluation kept.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models.families import AttentionGeometry

GATES_FILE = "full_attention_heads.tsv"
CONFIG_FILE = "config.json"
FORMATS = ("duo-attention",)
DEFAULT_RETRIEVAL_RATIO = 0.5  # DuoAttention's evaluation default: --sparsity 0.5
# Training settings carried from DuoAttention's config.json into the sedpa pattern's `training` block.
_CARRIED = ("model_name", "dataset_name", "lr", "reg_weight", "num_steps", "context_length_min",
            "context_length_max", "num_passkeys", "sink_size", "recent_size", "streaming_attn_implementation")


def is_duo_pattern(path: Path) -> bool:
    """A DuoAttention pattern: a directory (holding the TSV, or one run folder that does) or a .tsv file."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() == ".tsv"


DUO_EVAL_SEED = 42  # seed_everything(42) in DuoAttention's evaluation scripts, before the noise is drawn


def duo_binarize(gates: list[list[float]], *, retrieval_ratio: float | None = None,
                 threshold: float | None = None, seed: int = DUO_EVAL_SEED) -> list[list[int]]:
    """DuoAttention's rule: gate + noise >= threshold, or >= the (1 - ratio)-quantile (see the module doc)."""
    if (retrieval_ratio is None) == (threshold is None):
        raise SedpaError("give exactly one of --retrieval-ratio or --threshold to turn gates into a mask")
    if threshold is not None and not math.isfinite(threshold):
        raise SedpaError(f"--threshold {threshold} is not a number: pass a gate value such as 0.5")
    if retrieval_ratio is not None and not (math.isfinite(retrieval_ratio) and 0.0 <= retrieval_ratio <= 1.0):
        raise SedpaError(f"--retrieval-ratio {retrieval_ratio} is outside [0, 1]: pass a fraction such as 0.5")
    g = np.asarray(gates, dtype=np.float64)
    g = g + np.random.RandomState(seed).uniform(0, 1e-6, g.shape)  # the stream np.random.seed(seed) gives
    if retrieval_ratio is not None:
        sparsity = 1.0 - retrieval_ratio
        threshold = 2.0 if sparsity >= 1 else -1.0 if sparsity <= 0 else float(np.quantile(g, sparsity))
    return (g >= threshold).astype(int).tolist()


def _find_tsv(path: Path) -> Path:
    """The gates file a --pattern path names: the TSV itself, DIR/full_attention_heads.tsv, or the one
    run folder below DIR (attn_patterns/<model>/ holding a single <run>/)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise SedpaError(f"DuoAttention pattern {path} does not exist: pass the run folder "
                         f"(attn_patterns/<model>/<run>/) or its {GATES_FILE}")
    if (path / GATES_FILE).is_file():
        return path / GATES_FILE
    runs = sorted(p.parent for p in path.glob(f"*/{GATES_FILE}"))
    if len(runs) == 1:
        return runs[0] / GATES_FILE
    if runs:
        names = ", ".join(r.name for r in runs[:4]) + (" ..." if len(runs) > 4 else "")
        raise SedpaError(f"{path} holds {len(runs)} DuoAttention runs ({names}): pass one run folder")
    raise SedpaError(f"{path} holds no {GATES_FILE}: pass a DuoAttention run folder (attn_patterns/<model>/<run>/) "
                     "or a *.pattern.json")


def read_duo_gates(tsv: Path) -> list[list[float]]:
    """The TSV's gates as [layer][kv_head], clipped to [0, 1] as DuoAttention does when it loads them."""
    try:
        text = Path(tsv).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SedpaError(f"{tsv} is not a text file: pass DuoAttention's {GATES_FILE}") from None
    except OSError as exc:
        raise SedpaError(f"cannot read {tsv} ({exc.strerror or exc}): pass a readable {GATES_FILE}") from None
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            values = [float(v) for v in line.strip().split("\t")]
        except ValueError:
            raise SedpaError(f"{tsv}:{lineno}: not tab-separated numbers; pass DuoAttention's {GATES_FILE} "
                             "(one row per layer, one gate per KV head)") from None
        if not all(math.isfinite(v) for v in values):
            raise SedpaError(f"{tsv}:{lineno}: a gate is not finite (nan or inf); regenerate the pattern")
        if rows and len(values) != len(rows[0]):
            raise SedpaError(f"{tsv}:{lineno}: {len(values)} gates but the first row has {len(rows[0])}; "
                             "every layer needs one gate per KV head")
        rows.append([min(1.0, max(0.0, v)) for v in values])
    if not rows:
        raise SedpaError(f"{tsv} holds no gates: pass DuoAttention's {GATES_FILE}")
    return rows


def read_duo_config(tsv: Path) -> dict[str, Any]:
    """config.json beside the TSV ({} when there is none)."""
    path = Path(tsv).parent / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise SedpaError(f"{path} is not valid JSON: fix it or pass --sink and --recent") from None
    if not isinstance(data, dict):
        raise SedpaError(f"{path} is not a JSON object: fix it or pass --sink and --recent")
    return data


def _int_setting(config: dict[str, Any], key: str, override: int | None, source: Path, flag: str) -> int:
    if override is not None:
        return override
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        where = f"{source.parent / CONFIG_FILE}" if config else f"no {CONFIG_FILE} beside {source}"
        raise SedpaError(f"{where}: no integer `{key}`; pass {flag} N (DuoAttention deploys sink 64, recent 256)")
    return value


def import_duo_pattern(path: Path, geometry: AttentionGeometry | None = None, *, model: str = "",
                       retrieval_ratio: float | None = None, threshold: float | None = None,
                       sink: int | None = None, recent: int | None = None) -> HeadPattern:
    """A DuoAttention pattern (run folder or TSV) as a sedpa HeadPattern, checked against `geometry`.

    Binarised by DuoAttention's rule at `threshold`, or at `retrieval_ratio`; with neither, at the
    config's `sparsity` when it records one (sedpa's export does), else at ratio 0.5 (DuoAttention's
    evaluation default). sink/recent come from the config unless given.
    """
    if retrieval_ratio is not None and threshold is not None:
        raise SedpaError("give at most one of --retrieval-ratio or --threshold")
    tsv = _find_tsv(path)
    gates = read_duo_gates(tsv)
    config = read_duo_config(tsv)
    if geometry is not None and (len(gates), len(gates[0])) != (geometry.num_layers, geometry.num_kv_heads):
        raise SedpaError(
            f"{tsv} has {len(gates)} layers x {len(gates[0])} KV heads but the model has {geometry.num_layers} x "
            f"{geometry.num_kv_heads}: this pattern was trained for another model; pass the run folder made for "
            "this one (attn_patterns/<model>/<run>/) or identify heads with `sedpa identify-heads --model ...`")
    sink_size = _int_setting(config, "sink_size", sink, tsv, "--sink")
    recent_size = _int_setting(config, "recent_size", recent, tsv, "--recent")
    if sink_size < 0 or recent_size < 1:
        raise SedpaError(f"{tsv}: sink must be >= 0 and recent >= 1 (got {sink_size}, {recent_size}); pass --sink/--recent")
    chosen_by = "flag"
    if retrieval_ratio is None and threshold is None:
        sparsity = config.get("sparsity")
        if isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool) and 0 <= sparsity <= 1:
            retrieval_ratio, chosen_by = 1.0 - float(sparsity), "config sparsity"
        else:
            retrieval_ratio, chosen_by = DEFAULT_RETRIEVAL_RATIO, "DuoAttention's default sparsity 0.5"
    mask = duo_binarize(gates, retrieval_ratio=retrieval_ratio, threshold=threshold)
    carried = {k: config[k] for k in _CARRIED if k in config}
    training = {
        "method": "duoattention-gates",
        "imported_from": {"format": "duo-attention", "path": str(tsv), "config": carried},
        "binarization": {"rule": "duo-attention", "retrieval_ratio": retrieval_ratio, "threshold": threshold,
                         "chosen_by": chosen_by},
    }
    name = model or str(config.get("model_name") or "")
    return HeadPattern(gates=gates, mask=mask, sink=sink_size, recent=recent_size, model=name,
                       retrieval_ratio=retrieval_ratio, threshold=threshold, training=training)


def export_duo_pattern(pattern: HeadPattern, out: Path) -> Path:
    """Write `pattern` as a DuoAttention run folder: OUT/full_attention_heads.tsv (its gates, numpy's
    savetxt layout) and OUT/config.json (sink_size, recent_size, the sparsity of its mask)."""
    from sedpa_compress.atomic import atomic_write_json, atomic_write_text

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SedpaError(f"{out} is a file: DuoAttention's layout is a folder; pass a folder path")
    if (out / GATES_FILE).exists():
        raise SedpaError(f"{out / GATES_FILE} already exists: pass another folder (or remove it first)")
    out.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(f"{float(g):.18e}" for g in row) for row in pattern.gates]
    config = {
        "model_name": pattern.model,
        "sink_size": pattern.sink,
        "recent_size": pattern.recent,
        # what this pattern's mask keeps, as DuoAttention's --sparsity (the streaming fraction); sedpa's
        # `heads import` reads it back, DuoAttention's scripts take --sparsity on their command line
        "sparsity": 1.0 - pattern.actual_retrieval_ratio,
        "threshold": pattern.threshold,
        "exported_by": "sedpa heads export --format duo-attention",
    }
    settings = pattern.training.get("settings") if isinstance(pattern.training, dict) else None
    if isinstance(settings, dict):  # sedpa's identification settings under DuoAttention's names
        for ours, theirs in (("lr", "lr"), ("reg_weight", "reg_weight"), ("steps", "num_steps"),
                             ("context_min", "context_length_min"), ("context_max", "context_length_max"),
                             ("num_passkeys", "num_passkeys")):
            if ours in settings:
                config[theirs] = settings[ours]
    atomic_write_text(out / GATES_FILE, "\n".join(lines) + "\n")
    atomic_write_json(out / CONFIG_FILE, config)
    return out


def load_any_pattern(path: Path, geometry: AttentionGeometry | None = None, *,
                     retrieval_ratio: float | None = None) -> HeadPattern:
    """A --pattern value: a sedpa *.pattern.json, or a DuoAttention run folder / TSV (binarised by
    DuoAttention's rule at `retrieval_ratio`, else as `import_duo_pattern` decides)."""
    path = Path(path)
    if is_duo_pattern(path):
        return import_duo_pattern(path, geometry, retrieval_ratio=retrieval_ratio)
    pattern = HeadPattern.load(path, geometry)
    return pattern.with_ratio(retrieval_ratio=retrieval_ratio) if retrieval_ratio is not None else pattern
