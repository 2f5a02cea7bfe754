"""Atomic writes: a file or directory appears whole at its final path, or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sedpa_compress.errors import SedpaError


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_stale(parent: Path, name: str) -> list[str]:
    """Remove what killed runs (SIGKILL, power loss) left beside `parent/name`: temp files and
    `.partial-` dirs of processes that no longer exist. An `.old-` dir (the previous `--out`, moved
    aside during `--overwrite`) is put back when the run died before the new one took its place.
    Temp names carry the writer's pid (`pid<N>-`), so a live concurrent run's files are left alone."""
    removed: list[str] = []
    if not parent.is_dir():
        return removed
    pattern = re.compile(rf"^\.{re.escape(name)}\.(partial-|old-|)pid(\d+)-")
    for entry in parent.iterdir():
        m = pattern.match(entry.name)
        if m is None or _pid_alive(int(m.group(2))):
            continue
        with contextlib.suppress(OSError):
            if m.group(1) == "old-" and not (parent / name).exists():
                os.replace(entry, parent / name)  # the interrupted --overwrite's original, restored
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
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
    try:
        remove_stale(out.parent, out.name)
        if out.exists() and not overwrite:
            raise SedpaError(f"--out {out} already exists: choose another path or pass --overwrite")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-pid{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise SedpaError(f"cannot write {out}: {exc.strerror or exc}; free disk space or choose another path") from None
    try:
        yield tmp
        if out.exists():
            if not overwrite:
                raise SedpaError(f"--out {out} appeared while this run was writing (another run?): "
                                 "nothing was replaced; choose another path or pass --overwrite")
            old = out.with_name(f".{out.name}.old-pid{os.getpid()}-")
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


def atomic_write_figure(path: Path, fig: Any, **savefig_kwargs: Any) -> Path:
    """Render a matplotlib figure to PNG, close it, and write the bytes atomically to `path`."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", **savefig_kwargs)
    finally:
        plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)

