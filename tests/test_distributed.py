"""Data parallel under torchrun (2 CPU processes, gloo): the same gates and statistics as one process,
checkpoints that resume with another number of processes, a killed rank, and errors that end every rank.

What "the same" means: a step has `batch_size` samples drawn in order from one RNG stream; under torchrun
process r of N runs samples r, r+N, ... and the gate gradients are summed over the processes. One process
with the same batch_size accumulates the same sum, so the gates agree up to float summation order (the
tests allow 1e-6; on this CPU they come out bit-identical). Calibration: the processes split the token
windows of the one stream and all-reduce the sums of x xᵀ and the token counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sedpa_compress.calibration.stats import CalibrateConfig, calibrate, load_stats
from sedpa_compress.distributed import SINGLE, World, device_for, launch
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.config import IdentifyConfig
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.heads.train import checkpoint_path, identify_heads
from sedpa_compress.models import load_model

from conftest import build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
# Byte-level tokens (the test model has no tokenizer): 2 passkeys need ~450 tokens of fixed text.
CFG = IdentifyConfig(sink=4, recent=16, steps=6, batch_size=2, lr=0.05, context_min=600, context_max=700,
                     context_intervals=3, num_passkeys=2, checkpoint_every=2, retrieval_ratio=0.5)
LAUNCH_S = 120  # a torchrun job of these sizes takes ~10 s here; far beyond that it hangs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny("llama", tmp_path_factory.mktemp("dist") / "model", max_pos=1024)


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_model(str(model_dir))




def write_recipe(path: Path, cfg: IdentifyConfig) -> Path:
    fields = ("sink", "recent", "steps", "batch_size", "lr", "context_min", "context_max", "context_intervals",
              "num_passkeys", "checkpoint_every", "retrieval_ratio")
    path.write_text("".join(f"{k}: {getattr(cfg, k)}\n" for k in fields))
    return path


def torchrun(nproc: int, *args: str) -> list[str]:
    # --standalone: a free local port, so concurrent test runs on one machine do not collide.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "sedpa_compress", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=LAUNCH_S)


def identify_args(model_dir: Path, recipe: Path, out: Path, *extra: str) -> list[str]:
    return ["identify-heads", "--model", str(model_dir), "--recipe", str(recipe), "--out", str(out),
            "--device", "cpu", *extra]


def gates(path: Path) -> torch.Tensor:
    return torch.tensor(HeadPattern.load(path).gates)


def test_one_process_without_torchrun_starts_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with launch("cpu") as world:
        assert world == World(device="cpu") and world.main and not world.distributed
        assert not torch.distributed.is_initialized()
        assert list(world.shard(3)) == [0, 1, 2]
        with world.together():  # a plain block: errors pass through as they are
            pass
        with pytest.raises(SedpaError, match="boom"), world.together():
            raise SedpaError("boom")


def test_each_process_takes_its_own_device_and_its_share_of_the_samples():
    assert device_for("", size=1, local_rank=0) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert device_for("cuda:1", size=1, local_rank=0) == "cuda:1"  # one process: the flag as before
    assert device_for("cpu", size=2, local_rank=1) == "cpu"
    with pytest.raises(SedpaError, match="each process takes cuda:LOCAL_RANK"):
        device_for("cuda:1", size=2, local_rank=0)
    ranks = [World(rank=r, size=3) for r in range(3)]
    assert [list(w.shard(7)) for w in ranks] == [[0, 3, 6], [1, 4], [2, 5]]


def test_batch_size_one_keeps_the_fingerprint_of_older_checkpoints():
    assert "batch_size" not in IdentifyConfig().fingerprint_fields()
    assert IdentifyConfig(batch_size=2).fingerprint_fields()["batch_size"] == 2
    with pytest.raises(SedpaError, match="batch_size 0"):
        IdentifyConfig(batch_size=0).validate()


def test_two_processes_train_the_gates_one_process_trains(loaded, model_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", CFG)
    proc = run(torchrun(2, *identify_args(model_dir, recipe, tmp_path / "two.pattern.json")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = identify_heads(loaded, CFG, out=tmp_path / "one.pattern.json")
    torch.testing.assert_close(gates(tmp_path / "two.pattern.json"), torch.tensor(one.pattern.gates), rtol=0, atol=1e-6)
    two = HeadPattern.load(tmp_path / "two.pattern.json")
    assert two.training["processes"] == 2 and two.training["steps_done"] == CFG.steps
    assert two.training["final_losses"]["loss"] == pytest.approx(one.pattern.training["final_losses"]["loss"], rel=1e-5)
    assert proc.stdout.count("wrote") == 1  # rank 0 alone prints (and writes)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left nothing behind


def test_a_one_process_checkpoint_resumes_on_two(loaded, model_dir, tmp_path):
    out = tmp_path / "p.pattern.json"
    identify_heads(loaded, CFG, out=out, stop_after=2)
    proc = run(torchrun(2, *identify_args(model_dir, write_recipe(tmp_path / "r.yaml", CFG), out, "--resume")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from step 2" in proc.stdout
    whole = identify_heads(loaded, CFG, out=tmp_path / "whole.pattern.json")
    torch.testing.assert_close(gates(out), torch.tensor(whole.pattern.gates), rtol=0, atol=1e-6)


def _worker_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker of that rank (a child process whose environment says RANK=rank)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def test_a_killed_rank_ends_the_job_and_leaves_a_checkpoint_that_resumes(loaded, model_dir, tmp_path):
    cfg = CFG.with_overrides(steps=200)  # long enough that the kill lands mid-run
    out = tmp_path / "k.pattern.json"
    ckpt = checkpoint_path(out)
    job = subprocess.Popen(torchrun(2, *identify_args(model_dir, write_recipe(tmp_path / "r.yaml", cfg), out)),
                           env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + LAUNCH_S
        while not ckpt.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ckpt.exists(), "no checkpoint appeared"
        victim = _worker_pid(job.pid, 1)
        assert victim is not None, "rank 1 not found"
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        _, err = job.communicate(timeout=60)
        assert job.returncode != 0, "the job finished before the kill: make it longer"
        assert time.monotonic() - t0 < 60  # torchrun stopped rank 0 too; nothing hangs
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert not out.exists()  # no pattern from an unfinished run
    done = torch.load(ckpt, weights_only=True)["step"]
    assert 2 <= done < cfg.steps
    rest = identify_heads(loaded, cfg, out=out, resume=True)  # one process now
    assert rest.resumed_from == done
    whole = identify_heads(loaded, cfg, out=tmp_path / "whole.pattern.json")
    torch.testing.assert_close(torch.tensor(rest.pattern.gates), torch.tensor(whole.pattern.gates), rtol=0, atol=1e-6)


def test_two_processes_gather_the_statistics_one_process_gathers(loaded, model_dir, tmp_path):
    out = tmp_path / "c.safetensors"
    proc = run(torchrun(2, "calibrate", "--model", str(model_dir), "--tokens", "5000", "--seq-len", "256",
                        "--batch-size", "2", "--device", "cpu", "--out", str(out)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = calibrate(loaded, CalibrateConfig(tokens=5000, seq_len=256, batch_size=2), show_progress=False, world=SINGLE)
    two = load_stats(out)
    assert two.tokens == one.tokens == 20 * 256  # 20 windows: 10 on each process
    for a, b in zip(two.attn_input + two.o_input, one.attn_input + one.o_input):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert set(load_file(out)) == {f"layers.{i}.{k}" for i in range(2) for k in ("attn_input", "o_input")}


def test_a_bad_flag_under_torchrun_ends_every_rank_with_one_message(model_dir, tmp_path):
    """Fewer samples per step than processes: every rank refuses it, rank 0 says so once, the job ends."""
    recipe = write_recipe(tmp_path / "r.yaml", CFG)
    t0 = time.monotonic()
    proc = run(torchrun(2, *identify_args(model_dir, recipe, tmp_path / "b.pattern.json", "--batch-size", "1")))
    assert proc.returncode != 0 and time.monotonic() - t0 < 60
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert errors == ["error: batch_size 1 is fewer samples per step than the 2 processes: pass --batch-size 2 "
                      "(or a multiple), or start fewer processes"]
    assert not (tmp_path / "b.pattern.json").exists()


ONE_RANK_FAILS = '''
import sys
from sedpa_compress.distributed import launch
from sedpa_compress.errors import SedpaError

try:
    with launch("cpu") as world:
        with world.together():  # only rank 1 fails; rank 0 would otherwise wait in the next collective
            if world.rank == 1:
                raise SedpaError("the haystack is missing on this node")
        world.barrier()
        print(f"rank {world.rank} went on")
except SedpaError as err:
    print(f"rank 0 says: {err}")
    sys.exit(err.exit_code)
'''


def test_an_error_on_one_rank_ends_every_rank_and_rank_0_names_it(tmp_path):
    script = tmp_path / "one_rank_fails.py"
    script.write_text(ONE_RANK_FAILS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    proc = run(cmd)
    assert proc.returncode != 0
    assert "went on" not in proc.stdout
    said = [line for line in proc.stdout.splitlines() if "says" in line]
    assert said == ["rank 0 says: process 1 of 2 failed: the haystack is missing on this node"]
