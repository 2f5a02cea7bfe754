"""PNG bytes for a matplotlib figure, with its colours reduced to a palette of at most 256.

A plot has few colours, but its antialiased edges make an RGBA PNG several times larger than the palette one that
looks the same (the committed plots: 6.4 MB as RGBA, 1.7 MB as palettes). The size matters where the files travel:
the shipped sedpa-tiny folder and `bench/results/` are carried to the device machine, 64 MiB in all. The reduction is
deterministic (the same figure gives the same bytes), so a hashed PNG (an artifact's pattern heatmap) stays stable.
"""

from __future__ import annotations

import io
from typing import Any


def palette_png(data: bytes) -> bytes:
    """`data` (a PNG) re-encoded with a palette of at most 256 colours (alpha kept), or `data` itself when that is not
    smaller or Pillow is missing (matplotlib depends on it, so it is there wherever a figure was drawn)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - matplotlib requires Pillow
        return data
    image = Image.open(io.BytesIO(data))
    quantized = image.convert("RGBA").quantize(256, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    quantized.save(buf, format="PNG", optimize=True)
    return buf.getvalue() if buf.tell() < len(data) else data


def figure_png(fig: Any, **savefig_kwargs: Any) -> bytes:
    """`fig` rendered to palette PNG bytes (no timestamp in the file), and closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", **{"metadata": {"Software": None}, **savefig_kwargs})
    finally:
        plt.close(fig)
    return palette_png(buf.getvalue())
