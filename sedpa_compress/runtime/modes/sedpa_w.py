"""`sedpa-w`: SEDPA-S plus a sliding window: retrieval heads attend to the sink and the last
`window` tokens instead of the whole context (the SEDPA reference code's `window_w` band), streaming
heads keep sink + recent. Lower decode latency and KV reads at long context, at a small accuracy cost
for needles further back than the window."""

from __future__ import annotations

from dataclasses import dataclass

from sedpa_compress.runtime.modes.duo import DuoAttention
from sedpa_compress.runtime.modes.table import DEFAULTS


@dataclass
class SedpaW(DuoAttention):
    window: int | None = DEFAULTS.window
    name: str = "sedpa-w"
