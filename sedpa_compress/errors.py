"""The one error type a user sees: a one-line message that names the problem and the fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def printable(text: str) -> str:
    """`text` with every control or format character written as an escape (`\\x1b`, `\\u202e`).

    Names in messages come from files and Hub answers a stranger controls: printed raw, an ESC
    sequence or a bidi override would reach the user's terminal.
    """
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


class SedpaError(Exception):
    """A problem with the user's input or environment.

    The CLI prints ``str(err)`` on one line and exits with status 2; no traceback.
    Messages name the problem and what to do about it, e.g.
    ``--rank-ratio 1.5 is outside (0, 1]: pass a fraction such as 0.85``.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(printable(" ".join(message.split())))  # always one line, no control characters


@contextmanager
def one_line_errors() -> Iterator[None]:
    """For the `python -m sedpa_compress...` entry points (the typer CLI has its own handler): a SedpaError ends the
    process with its one line, `error: ...`, and a non-zero status, no traceback."""
    try:
        yield
    except SedpaError as exc:
        raise SystemExit(f"error: {exc}") from None
