"""Running out of things: disk (a real EFBIG from RLIMIT_FSIZE in a child, a real ENOSPC on a small tmpfs),
GPU memory (the runtime's plan refuses with the largest context that fits), and the output path itself
(two runs racing for the same --out: one wins, the other says so, the winner's artifact loads)."""

from __future__ import annotations

import functools
import resource
import signal
import subprocess

import pytest

from faults.harness import TALLY, child_error, cli, finish, leftovers, refused, run_child, start_child, wait_for


def _compress(world, out, *extra):
    return ["compress", "--model", world.model, "--pattern", world.pattern, "--calibration", world.calibration,
            "--rank-ratio", 0.7, "--no-ppl", "--device", "cpu", "--out", out, *extra]


def _file_size_limit(nbytes: int):
    """preexec_fn: writes past `nbytes` fail with EFBIG (SIGXFSZ ignored, as on a full quota)."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


def test_write_error_mid_artifact_leaves_nothing(world, tmp_path):
    """The weights file (~450 KB here) cannot be written past 64 KB: exit 2, one line, no --out, no temp dir."""
    out = tmp_path / "art"
    rc, output = run_child(_compress(world, out), preexec_fn=_file_size_limit(64 * 1024))
    assert rc == 2, output[-3000:]
    message = child_error(output)
    assert "cannot write" in message and "free disk space" in message, message
    assert not out.exists() and leftovers(tmp_path, "art") == []
    TALLY.refusal("faults", "a write error halfway through the artifact (file-size limit: EFBIG)", message)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs (needs mount rights: root in a container; skipped elsewhere)."""
    where = tmp_path / "small"
    where.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], check=True,
                       capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN); the RLIMIT_FSIZE test covers write errors")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True, timeout=10)


def test_full_disk_tmpfs(world, small_tmpfs):
    out = small_tmpfs / "art"
    message = refused("faults", "a full disk (256 KiB tmpfs) while writing the artifact",
                      _compress(world, out), "No space left on device")
    assert not out.exists() and leftovers(small_tmpfs, "art") == []
    calib = small_tmpfs / "calib.safetensors"  # the tmpfs is empty again: the failed run freed its space
    r = cli("calibrate", "--model", world.model, "--tokens", 256, "--seq-len", 64, "--out", calib, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "free disk space" in message


def test_concurrent_runs_same_out(world, tmp_path):
    """Both runs pass the `--out exists?` check and are inside their atomic write when the barrier opens."""
    out, barrier = tmp_path / "art", tmp_path / "go"
    procs = [start_child(_compress(world, out), pause=f"barrier:{barrier}") for _ in range(2)]
    for p in procs:
        wait_for(p, "@@at barrier")
    barrier.touch()
    results = [finish(p) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], [o[-2000:] for _, o in results]
    loser = next(o for rc, o in results if rc == 2)
    message = child_error(loser)
    assert "another run" in message, message
    from sedpa_compress.artifact.manifest import verify_manifest
    from sedpa_compress.models import load_model

    verify_manifest(out)
    assert load_model(str(out)).source == "artifact"
    assert leftovers(tmp_path, "art") == []
    TALLY.refusal("faults", "two `sedpa compress` runs writing the same --out at once (the loser)", message)
    TALLY.fault("two `sedpa compress` runs racing for the same --out",
                "exactly one exits 0 and its artifact verifies and loads; the other exits 2 naming the race; "
                "no temp dir left", inputs=0)


# ------------------------------------------------------------------------------ GPU memory (the plan)

@pytest.fixture
def tight_memory(world, monkeypatch):
    """Pretend the device has just enough free memory for a ~300-token context, and run the fast runtime
    (the one CUDA uses) on the CPU: the refusal logic is the same, no GPU needed."""
    from sedpa_compress.models import load_model
    from sedpa_compress.runtime import generate, memory, runner
    from sedpa_compress.runtime.model import FastModel, RuntimeSpec

    loaded = load_model(str(world.model))
    fast = FastModel(loaded, RuntimeSpec(mode="full"))
    free = memory.plan(fast, batch=1, max_len=300, chunk=300).needed
    monkeypatch.setattr(memory, "free_device_bytes", lambda device: free)
    monkeypatch.setattr(generate, "GenerateConfig", functools.partial(generate.GenerateConfig, runtime="fast"))
    allocated = []
    real = runner.make_caches
    monkeypatch.setattr(runner, "make_caches", lambda *a, **k: allocated.append(1) or real(*a, **k))
    return fast, free, allocated


def test_context_that_does_not_fit_is_refused_with_the_largest_that_does(world, tight_memory):
    import re

    from sedpa_compress.runtime import memory

    fast, free, allocated = tight_memory
    message = refused("runtime", "a context that does not fit in GPU memory (free memory patched low)",
                      ["generate", "--model", world.model, "--prompt", "w" * 700, "-n", 4, "--device", "cpu"],
                      "the largest context that fits")
    assert allocated == [], "the runtime allocated its caches before refusing"
    fit = int(re.search(r"the largest context that fits with --attention \S+ and --kv-dtype \S+ is (\d+) tokens", message).group(1))
    assert 256 <= fit < 704
    # the number it names is true: that context plans within the free memory, and one chunk more does not
    assert memory.plan(fast, batch=1, max_len=fit, chunk=fit).needed <= free
    assert memory.plan(fast, batch=1, max_len=fit + 256, chunk=fit + 256).needed > free
    # and a prompt that fits runs to the end on the same "device"
    r = cli("generate", "--model", world.model, "--prompt", "w" * (fit - 20), "-n", 4, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert allocated == [1]
    TALLY.fault("a context longer than GPU memory holds (free memory patched to fit ~300 tokens)",
                f"refused before any cache is allocated, naming the largest context that fits ({fit} tokens); "
                "a prompt of that size then runs", inputs=0)


def test_max_context_is_monotone_and_conservative(world):
    from sedpa_compress.runtime import memory
    from sedpa_compress.runtime.model import FastModel, RuntimeSpec
    from sedpa_compress.models import load_model

    fast = FastModel(load_model(str(world.model)), RuntimeSpec(mode="full"))
    budgets = [memory.plan(fast, batch=1, max_len=n, chunk=n).needed for n in (100, 1000, 5000)]
    fits = [memory.max_context(fast, free_bytes=b) for b in budgets]
    assert fits == sorted(fits)
    for b, n in zip(budgets, fits):
        if n:
            assert memory.plan(fast, batch=1, max_len=n, chunk=min(8192, n)).needed <= b
    with pytest.raises(ValueError):
        memory.max_context(fast)  # CPU and no budget given: it says it cannot know


def test_an_oom_the_plan_did_not_foresee_is_one_line(world, monkeypatch):
    """Another process grabs the GPU between the plan and the allocation: torch raises OutOfMemoryError
    mid-run; sedpa prints one line naming what to do instead of a traceback."""
    import torch

    from sedpa_compress.runtime import generate

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")

    monkeypatch.setattr(generate, "generate_text", oom)
    refused("runtime", "the GPU runs out of memory mid-run anyway (another process took it)",
            ["generate", "--model", world.model, "--prompt", "hi", "--device", "cpu"], "the GPU ran out of memory")


def test_a_failed_overwrite_keeps_the_previous_file(tmp_path):
    """A checkpoint or pattern rewritten on a full disk: the write fails, the previous file is intact (so a
    training run is never lost to a failed checkpoint), and no temp file is left."""
    import sys

    target = tmp_path / "run.identify-ckpt.pt"
    target.write_bytes(b"previous checkpoint" * 10)
    code = ("from pathlib import Path; from sedpa_compress.atomic import atomic_write_bytes\n"
            "from sedpa_compress.errors import SedpaError\n"
            f"try: atomic_write_bytes(Path({str(target)!r}), b'x' * 100000)\n"
            "except SedpaError as e: print('error:', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=_file_size_limit(8192))
    message = child_error(proc.stdout + proc.stderr)
    assert "File too large" in message, message
    assert target.read_bytes() == b"previous checkpoint" * 10
    assert leftovers(tmp_path, target.name) == []
    TALLY.fault("a checkpoint rewrite that fails on a full disk (EFBIG)",
                "one-line error; the previous checkpoint is intact (atomic replace), no temp file left")
