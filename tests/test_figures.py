"""figures: the PNGs sedpa writes are palette PNGs that look like the RGBA ones matplotlib renders, at a fraction of
the bytes (the committed plots travel to the device machine, 64 MiB in all)."""

from __future__ import annotations

import io

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from sedpa_compress.atomic import atomic_write_figure  # noqa: E402
from sedpa_compress.figures import figure_png, palette_png  # noqa: E402


def _plot() -> "plt.Figure":
    """A loss-curve-like figure: noisy antialiased lines, a legend, text, and a heatmap panel."""
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    for k in range(3):
        ax[0].plot(np.cumsum(rng.normal(size=2000)), lw=1, label=f"run {k}")
    ax[0].legend()
    ax[1].imshow(rng.random((10, 8)), cmap="viridis")
    fig.tight_layout()
    return fig


def test_a_figure_is_written_as_a_palette_png_that_looks_like_the_rgba_one(tmp_path):
    fig = _plot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    rgba = buf.getvalue()
    small = figure_png(fig, dpi=90)
    assert len(small) < 0.6 * len(rgba)
    a = np.asarray(Image.open(io.BytesIO(rgba)).convert("RGBA"), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(small)).convert("RGBA"), dtype=np.int16)
    assert Image.open(io.BytesIO(small)).mode == "P" and a.shape == b.shape
    diff = np.abs(a - b)
    assert diff.mean() < 1.0 and np.quantile(diff, 0.999) <= 24  # a rounding of colours, no pixel moved
    # deterministic (a hashed PNG stays stable), idempotent, and what atomic_write_figure writes
    assert figure_png(_plot(), dpi=90) == small
    assert palette_png(small) == small
    out = atomic_write_figure(tmp_path / "plot.png", _plot(), dpi=90)
    assert out.read_bytes() == small and not list(tmp_path.glob("*.tmp*"))
