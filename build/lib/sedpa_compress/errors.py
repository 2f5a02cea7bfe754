"""The one error type a user sees: a one-line message that names the problem and the fix."""

from __future__ import annotations


class SedpaError(Exception):
    """A problem with the user's input or environment.

    The CLI prints ``str(err)`` on one line and exits with status 2; no traceback.
    Messages name the problem and what to do about it, e.g.
    ``--rank-ratio 1.5 is outside (0, 1]: pass a fraction such as 0.85``.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # always one line
