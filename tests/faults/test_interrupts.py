"""Ctrl-C and `kill -9` in the middle of `compress` (while the artifact is half written) and of
`identify-heads` (between checkpoints): no partial --out, and a resumed run loses no training step."""

from __future__ import annotations

import json
import signal

import pytest

from faults.harness import TALLY, cli, finish, leftovers, start_child, wait_for
from sedpa_compress.heads.pattern import HeadPattern

HEADS = ["--sink", 4, "--recent", 16, "--context-min", 300, "--context-max", 360, "--num-passkeys", 1,
         "--steps", 4, "--checkpoint-every", 1, "--device", "cpu"]


def _compress_args(world, out):
    return ["compress", "--model", world.model, "--pattern", world.pattern, "--calibration", world.calibration,
            "--rank-ratio", 0.7, "--no-ppl", "--device", "cpu", "--out", out]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_compress_interrupted_mid_write_leaves_no_artifact(world, tmp_path, sig):
    out = tmp_path / "art"
    proc = start_child(_compress_args(world, out), pause="write")
    wait_for(proc, "@@paused write")
    partial = leftovers(tmp_path, "art")
    assert partial and not out.exists(), "the child should be inside its atomic write now"
    proc.send_signal(sig)
    rc, output = finish(proc)
    assert not out.exists(), f"a {sig.name} mid-write left a half artifact at --out"
    if sig == signal.SIGINT:
        assert rc == 130 and "interrupted" in output and "Traceback" not in output, output
        assert leftovers(tmp_path, "art") == [], "Ctrl-C left the temporary directory behind"
        outcome = "exit 130, `interrupted: nothing half-written was left at the output path`; no --out, no temp dir"
    else:
        assert rc == -signal.SIGKILL
        assert leftovers(tmp_path, "art") == partial  # nothing can clean up after kill -9 ... until the next run:
        r = cli(*_compress_args(world, out))
        assert r.exit_code == 0, r.output
        assert leftovers(tmp_path, "art") == [], "the next run did not remove the killed run's temp dir"
        from sedpa_compress.models import load_model

        assert load_model(str(out)).source == "artifact"
        outcome = ("killed; no --out; its `.art.partial-pid<N>-*` temp dir is removed by the next run into the "
                   "same folder, which then succeeds")
    TALLY.fault(f"{sig.name} during `sedpa compress`, halfway through writing the artifact", outcome)


@pytest.fixture(scope="module")
def uninterrupted(world, tmp_path_factory):
    """The same identify-heads run without interruption: what a resumed run must reproduce."""
    out = tmp_path_factory.mktemp("heads-ref") / "ref.pattern.json"
    r = cli("identify-heads", "--model", world.model, "--out", out, *HEADS)
    assert r.exit_code == 0, r.output
    return HeadPattern.load(out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_identify_heads_interrupted_then_resumed(world, uninterrupted, tmp_path, sig):
    import torch

    out = tmp_path / "tiny.pattern.json"
    proc = start_child(["identify-heads", "--model", world.model, "--out", out, *HEADS], pause="checkpoint:2")
    wait_for(proc, "@@paused checkpoint 2")
    proc.send_signal(sig)
    rc, output = finish(proc)
    assert rc == (130 if sig == signal.SIGINT else -signal.SIGKILL), output
    if sig == signal.SIGINT:
        assert "interrupted" in output and "Traceback" not in output, output
    assert not out.exists(), "an interrupted run wrote a pattern from unfinished training"
    ckpt = out.with_name("tiny.identify-ckpt.pt")
    assert ckpt.is_file() and leftovers(tmp_path, ckpt.name) == []
    r = cli("identify-heads", "--model", world.model, "--out", out, "--resume", *HEADS)
    assert r.exit_code == 0, r.output
    assert "resumed from step 2" in r.output, r.output
    resumed = HeadPattern.load(out)
    assert resumed.training["steps_done"] == 4
    # steps 1-2 ran in the killed process, 3-4 here: the gates match one uninterrupted run
    torch.testing.assert_close(torch.tensor(resumed.gates), torch.tensor(uninterrupted.gates), atol=1e-5, rtol=0)
    assert resumed.mask == uninterrupted.mask
    TALLY.fault(f"{sig.name} during `sedpa identify-heads`, after the step-2 checkpoint",
                f"{'exit 130' if rc > 0 else 'killed'}; no pattern file; `--resume` continues from step 2 and ends "
                "with the gates of an uninterrupted run")


def test_resume_after_the_run_finished_trains_nothing(world, tmp_path):
    out = tmp_path / "done.pattern.json"
    assert cli("identify-heads", "--model", world.model, "--out", out, *HEADS).exit_code == 0
    first = json.loads(out.read_text())
    r = cli("identify-heads", "--model", world.model, "--out", out, "--resume", *HEADS)
    assert r.exit_code == 0 and "resumed from step 4" in r.output, r.output
    assert json.loads(out.read_text())["gates"] == first["gates"]
