"""A compiled function with its eager twin: used until a call fails, then the twin for good, with a note."""

from __future__ import annotations


class FirstCallFallback:
    """A compiled function that, when a call fails (a lowering this inductor lacks, also on a later
    recompile for another head split), runs the eager function from then on and leaves a note. A real
    error raises again from the eager function; the writes it repeats are the same writes."""

    def __init__(self, compiled, eager, notes: list[str], what: str, instead: str = "eagerly",
                 failed: str = "torch.compile") -> None:
        self.fn, self.eager, self.notes, self.what = compiled, eager, notes, what
        self.instead, self.failed = instead, failed

    def __call__(self, *args, **kwargs):
        if self.fn is self.eager:
            return self.eager(*args, **kwargs)
        try:
            return self.fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compile failure: the same math, eagerly
            self.fn = self.eager
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            self.notes.append(f"{self.what} run {self.instead} ({self.failed} failed: {first})")
            return self.eager(*args, **kwargs)
