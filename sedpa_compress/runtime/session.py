"""Pick the attention mode a command runs, from the flags and what the model carries."""

from __future__ import annotations

from pathlib import Path

from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models.loader import LoadedModel, shipped_pattern_path
from sedpa_compress.runtime.modes import PATTERN_MODES, build_mode
from sedpa_compress.runtime.reference import AttentionMode


def pattern_for(loaded: LoadedModel, pattern: Path | None) -> HeadPattern | None:
    """--pattern wins; otherwise the one the model carries (an artifact's, or the embedded model's)."""
    if pattern is not None:
        return HeadPattern.load(pattern, loaded.geometry)
    carried = shipped_pattern_path(loaded)
    return HeadPattern.load(carried, loaded.geometry) if carried else None


def default_mode_name(loaded: LoadedModel, has_pattern: bool) -> str:
    if loaded.artifact is not None and has_pattern:
        return "sedpa-w" if loaded.artifact.get("window") else "sedpa-s"
    return "full"


def mode_for(loaded: LoadedModel, name: str | None, *, pattern: Path | None = None, window: int | None = None,
             sink: int | None = None, recent: int | None = None, **options) -> AttentionMode | None:
    pat = pattern_for(loaded, pattern)
    name = name or default_mode_name(loaded, pat is not None)
    if window is None and loaded.artifact is not None:
        window = loaded.artifact.get("window")
    if name in PATTERN_MODES or name == "streaming":
        return build_mode(name, pattern=pat, sink=sink, recent=recent, window=window)
    if name == "tidal":  # its layers are checked against, and its defaults drawn from, the model's depth
        options.setdefault("num_layers", loaded.geometry.num_layers)
    return build_mode(name, pattern=pat, sink=sink, recent=recent, window=window, **options)
