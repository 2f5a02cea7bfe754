"""One JSON shape for every benchmark (ARCHITECTURE.md): write it atomically, read it back."""

from __future__ import annotations

import datetime as _dt
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from sedpa_compress.atomic import atomic_write_json


def device_name(device: str | None = None) -> str:
    import torch

    if (device is None or str(device).startswith("cuda")) and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def git_commit() -> str | None:
    """The commit of the code that ran. `SEDPA_GIT_COMMIT` overrides `git rev-parse HEAD`: a copy of the
    working tree sent to another machine can carry a stale .git (the GPU machine's did, reporting the
    commit its copy started from), so scripts that run there pass the commit they were sent at."""
    import os

    if os.environ.get("SEDPA_GIT_COMMIT"):
        return os.environ["SEDPA_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def weights_sha256(model_dir: Path) -> str | None:
    """The sha256 of a model folder's single-file weights (model.safetensors, or the int8 form's
    model.int8.safetensors), or None when it has none: which weights a result measured, also when the folder's
    contents change later."""
    from sedpa_compress.artifact.manifest import sha256_file
    from sedpa_compress.models.loaded import INT8_FILE, stored_as_int8

    weights = Path(model_dir) / (INT8_FILE if stored_as_int8(model_dir) else "model.safetensors")
    return sha256_file(weights) if weights.is_file() else None


def command_line() -> str:
    """The command as the user typed it (`sedpa bench ...`)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("sedpa", "__main__.py", "cli.py"):
        argv[0] = "sedpa"
    return " ".join(shlex.quote(a) for a in argv)


def make_result(benchmark: str, *, model: str, settings: dict[str, Any], rows: list[dict[str, Any]],
                summary: dict[str, dict[str, Any]], device: str | None = None,
                command: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "model": model,
        "device": device or device_name(),
        "command": command or command_line(),
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "rows": rows,
        "summary": summary,
        **extra,
    }


def write_result(path: Path, result: dict[str, Any]) -> Path:
    path = Path(path)
    atomic_write_json(path, result)
    return path


def read_result(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
