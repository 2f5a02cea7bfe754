"""Atomic writes: a file or directory appears whole at its final path, or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
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
    """Remove what killed runs (SIGKILL, power loss) left beside `parent/name`: temp files,
    `.partial-` dirs and `.push-` staging dirs of processes that no longer exist. An `.old-` dir (the
    previous `--out`, moved aside during `--overwrite`) is put back when the run died before the new
    one took its place. Temp names carry the writer's pid (`pid<N>-`), so a live concurrent run's
    files are left alone."""
    removed: list[str] = []
    if not parent.is_dir():
        return removed
    pattern = re.compile(rf"^\.{re.escape(name)}\.(partial-|old-|push-|)pid(\d+)-")
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


def umask() -> int:
    """The process umask. Read from /proc where there is one: setting it to read it back (the only
    portable way) would briefly change it for every other thread."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def check_parent(path: Path) -> None:
    """Refuse, in words, a path whose folder is a file: mkdir would say only "File exists"."""
    for ancestor in Path(path).absolute().parents:
        if ancestor.exists() or ancestor.is_symlink():
            if not ancestor.is_dir():
                raise SedpaError(f"cannot write {path}: {ancestor} is a file, not a folder; choose another --out")
            return


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = None
    try:
        check_parent(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}-", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600; outputs are as readable as any file the user writes
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
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


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the rename is as durable as they allow
        pass
    finally:
        os.close(fd)


def settle_tree(root: Path) -> None:
    """Give every file and folder under `root` the permissions the umask gives new ones (writers such
    as huggingface_hub's save through mkstemp, which makes 0600), and fsync them all: the content is on
    disk before anything that depends on it, such as deleting the artifact it replaces."""
    mask = umask()
    for folder, dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(folder, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                executable = os.fstat(fd).st_mode & 0o111
                with contextlib.suppress(PermissionError):  # a hard link to someone else's file keeps its mode
                    os.fchmod(fd, (0o777 if executable else 0o666) & ~mask)
                os.fsync(fd)
            finally:
                os.close(fd)
        for name in dirs:
            if not os.path.islink(os.path.join(folder, name)):
                os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        _fsync_dir(Path(folder))


def check_out(out: Path, *, overwrite: bool, replace_if: Callable[[Path], bool] | None = None,
              replaceable: str = "a sedpa output") -> None:
    """The refusals atomic_directory would give at the end, given now (before an hour of work):
    --out inside a file, an existing --out without --overwrite, and one `replace_if` says no to."""
    out = Path(out)
    check_parent(out)
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise SedpaError(f"--out {out} already exists: choose another path or pass --overwrite")
    if replace_if is not None and not replace_if(out):
        raise SedpaError(f"--out {out} is not {replaceable} (or an empty folder): --overwrite replaces only those; "
                         "choose another --out, or remove it yourself")


@contextlib.contextmanager
def atomic_directory(out: Path, *, overwrite: bool = False, replace_if: Callable[[Path], bool] | None = None,
                     replaceable: str = "a sedpa output") -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it is renamed to `out`.

    On any error (or Ctrl-C) the temporary directory is removed and `out` is untouched. With
    `overwrite`, an existing `out` is replaced only after the new one is complete and on disk
    (fsynced), and only when `replace_if(out)` agrees (callers pass what their outputs look like,
    so --overwrite never deletes a stranger's folder). Two runs racing for the same `out`: the rename
    of the second fails and it reports that the first one won. The directory gets the permissions
    the user's umask gives a new folder (mkdtemp's are 0700).
    """
    out = Path(out)
    try:
        remove_stale(out.parent, out.name)
        check_out(out, overwrite=overwrite, replace_if=replace_if, replaceable=replaceable)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-pid{os.getpid()}-", dir=out.parent))
        os.chmod(tmp, 0o777 & ~umask())
    except OSError as exc:
        raise SedpaError(f"cannot write {out}: {exc.strerror or exc}; free disk space or choose another path") from None
    try:
        yield tmp
        settle_tree(tmp)
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise SedpaError(f"--out {out} appeared while this run was writing (another run?): "
                                 "nothing was replaced; choose another path or pass --overwrite")
            check_out(out, overwrite=overwrite, replace_if=replace_if, replaceable=replaceable)
            old = out.with_name(f".{out.name}.old-pid{os.getpid()}-")
            os.replace(out, old)
            os.replace(tmp, out)
            _fsync_dir(out.parent)  # the swap is on disk before the old artifact is gone
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        else:
            try:
                os.rename(tmp, out)
            except OSError as exc:  # a concurrent run created `out` between our check and rename
                raise SedpaError(f"--out {out} was created by another run while this one was writing "
                                 f"({exc.strerror}): nothing was replaced; choose another path") from None
            _fsync_dir(out.parent)
    except OSError as exc:
        raise SedpaError(f"cannot write {out}: {exc.strerror or exc}; free disk space or choose another path") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_figure(path: Path, fig: Any, **savefig_kwargs: Any) -> Path:
    """Render a matplotlib figure to a palette PNG (`figures.figure_png`), close it, and write it atomically to `path`."""
    from sedpa_compress.figures import figure_png

    atomic_write_bytes(Path(path), figure_png(fig, **savefig_kwargs))
    return Path(path)

