"""The one table of `--attention` modes: their names, what each needs, and the defaults of their
settings. Every command, the runtime and the benchmarks read it; `check_mode` is the one validator."""

from __future__ import annotations

from dataclasses import dataclass

from sedpa_compress.errors import SedpaError


@dataclass(frozen=True)
class ModeInfo:
    name: str
    summary: str
    needs_pattern: bool = False  # retrieval/streaming heads from a head pattern
    lowrank: bool = False  # runs an artifact's low-rank streaming projections
    windowed: bool = False  # retrieval heads see sink + the last `window` tokens
    decode_sparse: bool = False  # decoding differs from a masked prefill (benchmarks feed tokens one by one)


MODES: dict[str, ModeInfo] = {m.name: m for m in (
    ModeInfo("full", "every head attends to the whole context (the baseline)"),
    ModeInfo("streaming", "StreamingLLM: every head keeps sink + recent tokens"),
    ModeInfo("duo", "DuoAttention: retrieval heads full, streaming heads sink + recent", needs_pattern=True),
    ModeInfo("sedpa-s", "duo on an artifact whose streaming heads' projections are low-rank",
             needs_pattern=True, lowrank=True),
    ModeInfo("sedpa-w", "sedpa-s with retrieval heads windowed to sink + window", needs_pattern=True,
             lowrank=True, windowed=True),
    ModeInfo("tidal", "TidalDecode: token-selection layers pick top-k positions per KV head for the layers after",
             decode_sparse=True),
)}
MODE_NAMES = tuple(MODES)
PATTERN_MODES = tuple(n for n, m in MODES.items() if m.needs_pattern)
LOWRANK_MODES = tuple(n for n, m in MODES.items() if m.lowrank)
DECODE_SPARSE_MODES = tuple(n for n, m in MODES.items() if m.decode_sparse)


@dataclass(frozen=True)
class ModeDefaults:
    """Defaults when neither the flags nor a head pattern / artifact say otherwise."""

    sink: int = 64  # DuoAttention's deployment setting for 7-8B models
    recent: int = 256
    window: int = 8192  # SEDPA-W
    top_k: int = 2048  # TidalDecode's token budget
    dense_layers: int = 2  # TidalDecode: the first layers run full attention; selection right after


DEFAULTS = ModeDefaults()


def check_mode(name: str) -> ModeInfo:
    """The mode called `name`, or a one-line refusal naming the choices."""
    info = MODES.get(name)
    if info is None:
        raise SedpaError(f"unknown --attention {name!r}: choose from {','.join(MODE_NAMES)}")
    return info


def parse_modes(value: str) -> list[str]:
    """`--attention full,duo` -> ["full", "duo"], refusing unknown names."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise SedpaError(f"--attention {value!r} names no mode: choose from {','.join(MODE_NAMES)}")
    for n in names:
        check_mode(n)
    return names
