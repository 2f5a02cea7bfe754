"""Every `--attention` mode behind one interface (`AttentionMode.attend`), one file each."""

from __future__ import annotations

from typing import Any

from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.runtime.modes.duo import DuoAttention
from sedpa_compress.runtime.modes.full import FullAttention
from sedpa_compress.runtime.modes.sedpa_s import SedpaS
from sedpa_compress.runtime.modes.sedpa_w import SedpaW
from sedpa_compress.runtime.modes.streaming import StreamingAttention
from sedpa_compress.runtime.modes.table import (DEFAULTS, MODE_NAMES, MODES, PATTERN_MODES, ModeInfo, check_mode,
                                                parse_modes)
from sedpa_compress.runtime.reference import AttentionMode


def build_mode(
    name: str,
    *,
    pattern: HeadPattern | None = None,
    sink: int | None = None,
    recent: int | None = None,
    window: int | None = None,
    **options: Any,
) -> AttentionMode:
    """The mode object for `--attention NAME`. Sink/recent default to the pattern's, else the table's."""
    check_mode(name)
    sink = sink if sink is not None else (pattern.sink if pattern else DEFAULTS.sink)
    recent = recent if recent is not None else (pattern.recent if pattern else DEFAULTS.recent)
    if sink < 0 or recent < 1:
        raise SedpaError(f"--sink {sink} / --recent {recent}: need sink >= 0 and recent >= 1")
    if name == "full":
        return FullAttention()
    if name == "streaming":
        return StreamingAttention(sink=sink, recent=recent)
    if name == "tidal":
        from sedpa_compress.runtime.modes.tidal import TidalAttention, pattern_selection_layers

        if options.get("selection_layers") is None and pattern is not None:  # the pattern's retrieval layer
            layers = pattern_selection_layers(pattern.gates, options.get("dense_layers", DEFAULTS.dense_layers))
            if layers is not None:
                options.update(selection_layers=layers, selection_source="head pattern")
        return TidalAttention(**options)
    if pattern is None:
        raise SedpaError(f"--attention {name} needs a head pattern: pass --pattern P.pattern.json "
                         "(make one with `sedpa identify-heads`) or an artifact that carries one")
    if name == "sedpa-w":
        window = window if window is not None else DEFAULTS.window
        if window < recent:
            raise SedpaError(f"--window {window} is smaller than --recent {recent}: the window must cover the recent tokens")
        return SedpaW(pattern=pattern, sink=sink, recent=recent, window=window)
    cls = SedpaS if name == "sedpa-s" else DuoAttention
    return cls(pattern=pattern, sink=sink, recent=recent)


__all__ = ["AttentionMode", "DEFAULTS", "MODES", "MODE_NAMES", "PATTERN_MODES", "ModeInfo", "build_mode",
           "check_mode", "parse_modes"]
