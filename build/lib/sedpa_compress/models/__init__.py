"""Models: load from a Hub id, a local directory, the embedded default or a geometry preset."""

from sedpa_compress.models.families import AttentionGeometry, Family, family_for
from sedpa_compress.models.loader import DEFAULT_MODEL, LoadedModel, load_model

__all__ = ["AttentionGeometry", "DEFAULT_MODEL", "Family", "LoadedModel", "family_for", "load_model"]
