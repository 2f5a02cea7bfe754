"""`sedpa bench report`: the trade-off table the SEDPA paper shows, from the benchmark JSONs of one
model: per mode NIAH accuracy (and exact match), perplexity, LongBench score when given, decode
latency at one context, KV cache bytes, peak memory and parameters (from the efficiency run), as
markdown, and a PNG of accuracy against decode time. `tradeoff_markdown(paths)` is the function a
model card calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sedpa_compress.errors import SedpaError

KINDS = ("niah", "ppl", "longbench", "efficiency", "max-context")
MODE_ORDER = ("full", "streaming", "duo", "sedpa-s", "sedpa-w", "tidal")


def _kind(result: dict[str, Any]) -> str:
    bench = result.get("benchmark")
    if bench == "efficiency" and (result.get("settings") or {}).get("max_context"):
        return "max-context"
    return bench


def load_results(paths: list[Path | str]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """kind -> (path, result) for each JSON; one file per kind (niah, ppl, longbench, efficiency,
    and an efficiency --max-context run)."""
    if not paths:
        raise SedpaError("no results given: pass the JSONs of `sedpa bench niah`, `ppl` and `efficiency` for one model")
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for p in map(Path, paths):
        if not p.is_file():
            raise SedpaError(f"{p} does not exist: pass a JSON that a `sedpa bench` command wrote")
        try:
            result = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SedpaError(f"{p} is not valid JSON ({str(exc)[:80]}): pass a JSON that a `sedpa bench` command wrote") from None
        if not isinstance(result, dict) or not isinstance(result.get("summary"), dict):
            raise SedpaError(f"{p} is not a benchmark result (no `summary`): pass a JSON that a `sedpa bench` command wrote")
        kind = _kind(result)
        if kind not in KINDS:
            raise SedpaError(f"{p} is a {kind!r} result: pass niah, ppl, longbench or efficiency JSONs")
        if kind in out:
            raise SedpaError(f"two {kind} results ({out[kind][0]}, {p}): pass one per benchmark")
        out[kind] = (p, result)
    return out


def efficiency_context(result: dict[str, Any], context: int | None = None) -> int | None:
    """The context whose decode latency the table shows: `context` when given, else the longest
    context every sedpa-runtime mode measured (peers may stop earlier), else the longest measured."""
    measured = [r for r in result.get("rows", []) if "skipped" not in r and "context" in r and "decode_ms" in r]
    if context is not None:
        return context
    if not measured:
        return None
    own = [r for r in measured if r.get("method", "sedpa-runtime") == "sedpa-runtime"] or measured
    modes = {r["mode"] for r in own}
    common = set.intersection(*({r["context"] for r in own if r["mode"] == m} for m in modes))
    return max(common) if common else max(r["context"] for r in measured)


@dataclass
class Tradeoff:
    mode: str
    values: dict[str, Any] = field(default_factory=dict)  # column -> value (None: not measured)
    notes: list[str] = field(default_factory=list)


COLUMNS = (  # (key, header, needs)
    ("accuracy", "NIAH accuracy", "niah"),
    ("exact", "NIAH exact", "niah"),
    ("ppl", "ppl", "ppl"),
    ("longbench", "LongBench", "longbench"),
    ("decode_ms", "decode ms", "efficiency"),
    ("kv_bytes", "KV cache", "efficiency"),
    ("peak_bytes", "peak memory", "efficiency"),
    ("params", "parameters", "efficiency"),
    ("max_context", "max context", "max-context"),
)


def tradeoff_rows(results: dict[str, tuple[Path, dict[str, Any]]], context: int | None = None
                  ) -> tuple[list[Tradeoff], int | None]:
    """One row per mode (the runtime's modes in their usual order, then peers), and the decode context."""
    get = {k: v[1] for k, v in results.items()}
    modes: list[str] = []
    for kind in ("niah", "ppl", "longbench", "efficiency", "max-context"):
        if kind in get:
            names = list(get[kind]["summary"]) + [r["mode"] for r in get[kind].get("rows", []) if "mode" in r]
            modes += [m for m in dict.fromkeys(names) if m not in modes]
    first_seen = {m: i for i, m in enumerate(modes)}
    modes.sort(key=lambda m: (MODE_ORDER.index(m) if m in MODE_ORDER else len(MODE_ORDER), first_seen[m]))
    ctx = efficiency_context(get["efficiency"], context) if "efficiency" in get else None
    rows = []
    for mode in modes:
        t = Tradeoff(mode)
        niah = get.get("niah", {}).get("summary", {}).get(mode, {})
        t.values["accuracy"], t.values["exact"] = niah.get("accuracy"), niah.get("exact")
        t.values["ppl"] = get.get("ppl", {}).get("summary", {}).get(mode, {}).get("ppl")
        t.values["longbench"] = get.get("longbench", {}).get("summary", {}).get(mode, {}).get("score")
        if "efficiency" in get:
            mine = [r for r in get["efficiency"].get("rows", []) if r.get("mode") == mode]
            at = next((r for r in mine if r.get("context") == ctx and "skipped" not in r), None)
            if at is not None:
                for key in ("decode_ms", "kv_bytes", "peak_bytes"):
                    t.values[key] = at.get(key)
            else:
                why = next((r["skipped"] for r in mine if r.get("context") == ctx and "skipped" in r), None)
                if mine and ctx is not None:
                    t.notes.append(f"{mode}: no decode row at {ctx} tokens" + (f" ({why})" if why else ""))
            t.values["params"] = next((r["params"] for r in mine if r.get("params") is not None), None)
        stored = stored_parameters(get, mode)
        if stored is not None:  # the weights the mode loads, as stored, over what the runtime holds
            t.values["params"] = stored
        if "max-context" in get:
            row = next((r for r in get["max-context"].get("rows", []) if r.get("mode") == mode and "skipped" not in r), None)
            t.values["max_context"] = row.get("max_context") if row else None
        rows.append(t)
    return rows, ctx


def stored_parameters(results: dict[str, dict[str, Any]], mode: str) -> int | None:
    """Parameters of the weights `mode` ran on as stored (the base model, or an artifact whose streaming heads'
    projections are factored), from the accuracy benchmarks' model identity; None where no result records it."""
    for kind in ("niah", "ppl", "longbench"):
        model = results.get(kind, {}).get("settings", {}).get("modes", {}).get(mode, {}).get("model", {})
        if model.get("parameters") is not None:
            return int(model["parameters"])
    return None


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _gib(v) -> str:
    return "–" if v is None else f"{v / 2**30:.2f} GiB"


def _params(v) -> str:
    if v is None:
        return "–"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if v >= div:
            return f"{v / div:.2f}{unit}"
    return str(v)


def _tokens(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else f"{n:,}"


FORMAT = {"accuracy": _pct, "exact": _pct, "ppl": lambda v: "–" if v is None else f"{v:.3f}",
          "longbench": lambda v: "–" if v is None else f"{v:.2f}", "decode_ms": lambda v: "–" if v is None else f"{v:.2f}",
          "kv_bytes": _gib, "peak_bytes": _gib, "params": _params, "max_context": _tokens}


def _source_line(kind: str, path: Path, result: dict[str, Any]) -> str:
    commit = (result.get("git_commit") or "")[:10] or "unknown commit"
    return f"- {kind}: `{path.name}` ({result.get('model')}, {result.get('device')}, {commit}, {result.get('created', '')})"


def tradeoff_from_results(results: list[tuple[str, dict[str, Any]]], context: int | None = None, *,
                          heading: bool = True) -> str | None:
    """The trade-off table of already loaded results [(name, result), ...] (the model card's
    `results/`); None when fewer than two kinds of benchmark are there, or two of one kind."""
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for name, result in results:
        kind = _kind(result) if isinstance(result.get("summary"), dict) else None
        if kind not in KINDS:
            continue
        if kind in out:
            return None
        out[kind] = (Path(name), result)
    if len(out) < 2:
        return None
    return _markdown(out, context, heading)


def tradeoff_markdown(paths: list[Path | str], context: int | None = None, *, heading: bool = True) -> str:
    """The trade-off table (markdown) of the benchmark JSONs at `paths` (niah / ppl / longbench /
    efficiency of one model): one row per mode; decode latency at `context` (default: the longest
    context every runtime mode measured). Columns no file backs are left out."""
    return _markdown(load_results(paths), context, heading)


def _markdown(results: dict[str, tuple[Path, dict[str, Any]]], context: int | None, heading: bool) -> str:
    rows, ctx = tradeoff_rows(results, context)
    cols = [(key, head) for key, head, need in COLUMNS if need in results]
    headers = [head if key != "decode_ms" else f"decode ms @ {_tokens(ctx)}" for key, head in cols]
    models = sorted({str(r.get("model")) for _, r in results.values()})
    lines = []
    if heading:
        lines += [f"### Accuracy and efficiency per mode: {', '.join(models)}", ""]
    lines += ["| mode | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(cols)]
    for t in rows:
        lines.append(f"| {t.mode} | " + " | ".join(FORMAT[key](t.values.get(key)) for key, _ in cols) + " |")
    lines.append("")
    if "niah" in results:
        lines.append("NIAH accuracy: the needle's value in the first line of the answer (string match); exact: the "
                     "answer starts with it.")
    stored = any(stored_parameters({k: v[1] for k, v in results.items()}, t.mode) is not None for t in rows)
    if "efficiency" in results:
        lines.append("Decode latency, KV cache and peak memory at one context from the efficiency run; parameters "
                     + ("as the mode's weights are stored (the base model, or the artifact with its streaming heads' "
                        "projections factored)." if stored else "as the runtime holds them."))
    notes = [n for t in rows for n in t.notes]
    if len(models) > 1:
        notes.append(f"the files name different models ({', '.join(models)}): e.g. timing on random weights of "
                     "the same geometry")
    if notes:
        lines += [""] + [f"Note: {n}." for n in notes]
    lines += ["", "Sources:"] + [_source_line(kind, p, r) for kind, (p, r) in results.items()]
    return "\n".join(lines) + "\n"


def plot_tradeoff(rows: list[Tradeoff], path: Path, *, context: int | None, title: str = "") -> Path | None:
    """NIAH accuracy against decode latency, one labelled point per mode that has both (None: none has)."""
    points = [(t.mode, t.values["decode_ms"], t.values["accuracy"]) for t in rows
              if t.values.get("decode_ms") is not None and t.values.get("accuracy") is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sedpa_compress.atomic import atomic_write_figure

    fig, ax = plt.subplots(figsize=(6.0, 4.2), layout="constrained")
    for mode, x, y in points:
        ax.scatter([x], [100 * y], s=40)
        ax.annotate(mode, (x, 100 * y), textcoords="offset points", xytext=(5, 4), fontsize=9)
    ax.set_xlabel(f"decode latency at {_tokens(context)} tokens (ms / token)")
    ax.set_ylabel("NIAH accuracy (%)")
    ax.set_title(title or "accuracy against decode latency", fontsize=10)
    ax.grid(alpha=0.3)
    return atomic_write_figure(Path(path), fig, dpi=120)


def write_report(paths: list[Path | str], out: Path, context: int | None = None) -> tuple[Path, Path | None]:
    """`out` (markdown) and `out` with .png (accuracy against decode time), each written atomically."""
    from sedpa_compress.atomic import atomic_write_text

    out = Path(out)
    results = load_results(paths)
    text = _markdown(results, context, True)
    rows, ctx = tradeoff_rows(results, context)
    models = ", ".join(sorted({str(r.get("model")) for _, r in results.values()}))
    png = plot_tradeoff(rows, out.with_suffix(".png"), context=ctx, title=f"{models}: accuracy against decode latency")
    if png is not None:
        text += f"\n![accuracy against decode latency]({png.name})\n"
    atomic_write_text(out, text)
    return out, png
