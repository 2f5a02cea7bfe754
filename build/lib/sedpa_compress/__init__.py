"""sedpa: compress a Hugging Face causal LM for long-context inference, run and benchmark it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sedpa-compress")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"


def load(model: str | None = None, *, device: str = "cpu", dtype=None):
    """Load a sedpa artifact (or any supported model) with the artifact alone: `sedpa_compress.load(DIR)`.

    Returns a `LoadedModel` (`.model` is a transformers model with the artifact's low-rank projections,
    `.tokenizer`, and for artifacts `.artifact` and the head pattern under `.path`).
    """
    from sedpa_compress.models.loader import load_model

    return load_model(model, device=device, dtype=dtype)


__all__ = ["__version__", "load"]
