"""The modeling code an artifact carries so that `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`
works without sedpa installed. `copy_remote_code` puts it in an artifact; `AUTO_MAP` goes in its config.json."""

from __future__ import annotations

import shutil
from pathlib import Path

REMOTE_CODE_DIR = Path(__file__).parent
REMOTE_CODE_FILES = ("modeling_sedpa.py",)
AUTO_MAP = {"AutoModelForCausalLM": "modeling_sedpa.SedpaForCausalLM"}


def copy_remote_code(dest: Path) -> list[str]:
    """Copy the remote code files into an artifact directory; returns their names."""
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(REMOTE_CODE_DIR / name, Path(dest) / name)
    return list(REMOTE_CODE_FILES)
