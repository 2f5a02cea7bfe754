"""Atomic writes: a file or directory appears whole at its final path, or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sedpa_compress.errors import SedpaError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise SedpaError(f"cannot write {path}: {exc.strerror or exc}; free disk space or choose another path") from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it is renamed to `out`.

    On any error (or Ctrl-C) the temporary directory is removed and `out` is untouched. With
    `overwrite`, an existing `out` is replaced only after the new one is complete. Two runs racing for
    the same `out`: the rename of the second fails and it reports that the first one won.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise SedpaError(f"--out {out} already exists: choose another path or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            if not overwrite:
                raise SedpaError(f"--out {out} appeared while this run was writing (another run?): "
                                 "nothing was replaced; choose another path or pass --overwrite")
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, out)
            except OSError as exc:  # a concurrent run created `out` between our check and rename
                raise SedpaError(f"--out {out} was created by another run while this one was writing "
                                 f"({exc.strerror}): nothing was replaced; choose another path") from None
    except OSError as exc:
        raise SedpaError(f"cannot write {out}: {exc.strerror or exc}; free disk space or choose another path") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
