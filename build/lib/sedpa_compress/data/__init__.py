"""Shipped English text and synthetic needle-in-a-haystack data, shared by every stage."""

from sedpa_compress.data.needles import (
    HELDOUT_TEMPLATES,
    TRAIN_TEMPLATES,
    Needle,
    NeedleExample,
    NeedleTemplates,
    make_needle_example,
    score_answer,
)
from sedpa_compress.data.text import bundled_text_paths, load_bundled_text, load_haystack

__all__ = [
    "HELDOUT_TEMPLATES",
    "TRAIN_TEMPLATES",
    "Needle",
    "NeedleExample",
    "NeedleTemplates",
    "bundled_text_paths",
    "load_bundled_text",
    "load_haystack",
    "make_needle_example",
    "score_answer",
]
