"""What every fault test shares: the tally of inputs tried, the CLI runner, child processes, a hang guard.

Every test that feeds sedpa something bad records it here: `TALLY.refusal(...)` for a refusal with its
message (these rows become tests/faults/REFUSALS.md and the README table), `TALLY.fault(...)` for a
survived fault (interrupt, full disk, race), `TALLY.fuzzed(...)` for each fuzzed loader input.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("child.py")
AREAS = ("pipeline", "heads", "runtime", "bench", "hub", "artifact", "faults")


@dataclass
class Row:
    area: str
    what: str  # the input, as a person would describe it
    message: str  # the one line sedpa printed (temp paths shortened)


@dataclass
class Tally:
    """Session-wide counts: inputs tried and faults survived (a refusal that is one clean line counts)."""

    tried: int = 0
    survived: int = 0
    rows: list[Row] = field(default_factory=list)
    faults: list[Row] = field(default_factory=list)
    fuzz_tried: Counter = field(default_factory=Counter)
    fuzz_messages: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    roots: list[str] = field(default_factory=list)  # temp roots stripped from messages

    def short(self, text: str) -> str:
        """Messages name temp paths; keep only what follows the test's own folder."""
        for root in self.roots:
            text = re.sub(re.escape(root.rstrip("/")) + r"/[^/\s]+/", "", text)
        return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)  # a fresh closed port each run

    def refusal(self, area: str, what: str, message: str) -> None:
        assert area in AREAS, area
        self.tried += 1
        self.survived += 1
        self.rows.append(Row(area, what, self.short(message)))

    def fault(self, what: str, outcome: str, *, inputs: int = 1) -> None:
        self.tried += inputs
        self.survived += inputs
        self.faults.append(Row("faults", what, self.short(outcome)))

    def fuzzed(self, loader: str, message: str | None) -> None:
        """One fuzzed input that ended in a clean refusal (message) or a clean load (None)."""
        self.tried += 1
        self.survived += 1
        self.fuzz_tried[loader] += 1
        kind = "loaded" if message is None else _message_kind(self.short(message))
        self.fuzz_messages[loader][kind] += 1


def _message_kind(message: str) -> str:
    """Group fuzz messages by their wording, not by the values they quote."""
    message = re.sub(r"'[^']*'|\"[^\"]*\"|\([^()]*\)", "…", message)
    message = re.sub(r"\d+", "N", message)
    return message[:90]


TALLY = Tally()

# ---------------------------------------------------------------------------------------------- CLI

_runner = CliRunner()


def cli(*args) -> object:
    from sedpa_compress.cli import app

    return _runner.invoke(app, [str(a) for a in args])


def error_line(output: str) -> str:
    """The single `error: ...` line (SedpaError) or click's usage error line."""
    lines = [ln.strip() for ln in output.splitlines()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    if errors:
        assert len(errors) == 1, f"more than one error line:\n{output}"
        return errors[0][len("error:"):].strip()
    # click usage errors: a panel whose text line says "Invalid value ..." / "No such option ..."
    usage = [ln.strip("│╭╮╰╯─ ").strip() for ln in lines if any(k in ln for k in ("Invalid value", "No such", "Missing", "Got unexpected"))]
    assert usage, f"no error line in:\n{output}"
    return usage[0]


def refused(area: str, what: str, args: list, expect: str) -> str:
    """Run `sedpa ARGS` in-process; it must exit 2 with one line containing `expect`, no traceback."""
    r = cli(*args)
    assert "Traceback" not in r.output, r.output
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback

        raise AssertionError(f"{what}: sedpa raised {type(r.exception).__name__} instead of refusing:\n"
                             + "".join(traceback.format_exception(r.exception)))
    assert r.exit_code == 2, f"{what}: exit {r.exit_code}\n{r.output}"
    message = error_line(r.output)
    assert expect.lower() in message.lower(), f"{what}: expected {expect!r} in {message!r}"
    TALLY.refusal(area, what, message)
    return message


def has_command(*path: str) -> bool:
    """Whether `sedpa PATH...` exists in this checkout (other engineers add commands as they land)."""
    from sedpa_compress.cli import app

    names = {c.name for c in app.registered_commands}
    groups = {g.name: g.typer_instance for g in app.registered_groups}
    if len(path) == 1:
        return path[0] in names or path[0] in groups
    group = groups.get(path[0])
    return group is not None and path[1] in {c.name for c in group.registered_commands}


# ------------------------------------------------------------------------------------- child runs

def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


def start_child(args: list, *, pause: str | None = None, cwd: Path | None = None, preexec_fn=None,
                prefix: list[str] | None = None) -> subprocess.Popen:
    """`sedpa ARGS` in a fresh interpreter (tests/faults/child.py), optionally pausing at a named point.
    A thread collects its output (stdout and stderr together) into `proc.output`."""
    env = child_env(**({"SEDPA_FAULT_PAUSE": pause} if pause else {}))
    cmd = [*(prefix or []), sys.executable, str(CHILD), *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=cwd or REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=preexec_fn, start_new_session=True)
    proc.output = []

    def pump():
        for line in proc.stdout:
            proc.output.append(line)

    proc.reader = threading.Thread(target=pump, daemon=True)
    proc.reader.start()
    return proc


def output_of(proc: subprocess.Popen) -> str:
    return "".join(proc.output)


def wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120.0) -> None:
    """Wait until the child prints `marker`; fail with what it printed if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in output_of(proc):
            return
        if proc.poll() is not None:
            proc.reader.join(5)
            if marker in output_of(proc):
                return
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    raise AssertionError(f"child never printed {marker!r} (exit {proc.poll()}):\n{output_of(proc)[-3000:]}")


def finish(proc: subprocess.Popen, timeout: float = 120.0) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        proc.reader.join(5)
        raise AssertionError(f"child hung:\n{output_of(proc)[-3000:]}")
    proc.reader.join(10)
    return proc.returncode, output_of(proc)


def run_child(args: list, *, timeout: float = 120.0, **kw) -> tuple[int, str]:
    return finish(start_child(args, **kw), timeout)


def child_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip().startswith("error:")]
    assert len(lines) == 1, f"expected one error line:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    return lines[0][len("error:"):].strip()


def leftovers(parent: Path, name: str) -> list[str]:
    """Temporary siblings a write into `parent/name` could leave behind."""
    return sorted(p.name for p in Path(parent).iterdir() if p.name.startswith(f".{name}."))


# ----------------------------------------------------------------------------------------- hangs

class Hang(Exception):
    pass


@contextlib.contextmanager
def no_hang(seconds: float):
    """Fail an example that takes longer than `seconds` (a loader must never hang on a bad file)."""

    def fire(signum, frame):
        raise Hang(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
