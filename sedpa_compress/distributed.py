"""Data parallel over torch.distributed, for commands started by torchrun; one process without it is unchanged.

    torchrun --nproc-per-node 2 -m sedpa_compress identify-heads ...     (NCCL on GPUs, gloo on the CPU)

`launch(device_flag)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), picks this process's
device (`cuda:LOCAL_RANK`, or the CPU), starts the process group and hands back a `World`. Without
torchrun (or with one process) it starts nothing and the `World` is the single process: every helper
below is then a no-op, so the stages run exactly as before.

Errors: a stage does its local work (what can fail on one process only: a forward pass, a file read,
a flag check) inside `world.together()`. On leaving the block every process says whether it failed
(one small all-reduce); if any did, all of them raise, so none is left waiting in the next collective,
and only rank 0 prints the one-line message (naming the process that failed when it is another one).
A process that dies outright (killed, segfault) is torchrun's to handle: it stops the others.

NCCL's environment is left as the machine sets it (this module never sets an NCCL_* variable).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from sedpa_compress.errors import SedpaError

# Long enough for the slowest thing one rank does while the others wait (rank 0 writing a checkpoint,
# a 32K-token step, loading an 8B model); a process that dies is torchrun's to clean up, not this timeout's.
TIMEOUT = timedelta(minutes=30)


class PeerFailed(SedpaError):
    """Another process of the job failed; this one stops too."""


@contextlib.contextmanager
def _collective(rank: int, size: int) -> Iterator[None]:
    """A collective that fails (a peer died, the network broke) is one line, not a backend traceback."""
    try:
        yield
    except RuntimeError as exc:  # gloo raises RuntimeError; NCCL's DistBackendError is one
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0][:160]  # (without gloo's "[file.cc:553] ")
        raise SedpaError(f"process {rank} of {size} lost contact with the others ({first}): another process died "
                         "or hangs, its own output says why; identify-heads --resume continues from the last "
                         "checkpoint") from None


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank, number of processes, device. `World()` is one process alone."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, n: int) -> range:
        """Indices of `range(n)` this process takes: rank, rank + size, ... (the union over ranks is range(n))."""
        return range(self.rank, n, self.size)

    def _comm_device(self) -> torch.device:
        return torch.device(self.device) if torch.device(self.device).type == "cuda" else torch.device("cpu")

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the processes, in place (moved through the backend's device when needed)."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        comm = self._comm_device()
        buf = tensor if tensor.device == comm else tensor.to(comm)
        with _collective(self.rank, self.size):
            dist.all_reduce(buf)
        if buf is not tensor:
            tensor.copy_(buf)
        return tensor

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every process (pickled: only for what this job itself made)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        with _collective(self.rank, self.size):
            dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            with _collective(self.rank, self.size):
                dist.barrier()

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Run a block of local work; if it raised on any process, raise on all of them (see the module doc).

        No collective may run inside the block: a process that failed early would meet the others'
        collective with its own error check. The process that failed re-raises its own exception
        (a bug keeps its traceback); the others raise `PeerFailed` naming it.
        """
        if not self.distributed:
            yield
            return
        import torch.distributed as dist

        error: Exception | None = None
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - any failure must reach the other processes
            error = exc
        flag = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=self._comm_device())
        try:
            with _collective(self.rank, self.size):
                dist.all_reduce(flag)
                if int(flag.item()) == 0:
                    return
                messages: list[str | None] = [None] * self.size
                dist.all_gather_object(messages, None if error is None else _one_line(error))
        except SedpaError:
            if error is not None:  # this process's own failure says more than the lost contact
                raise error from None
            raise
        if error is not None:
            error.sedpa_shared = True  # rank 0 reports it (launch() keeps the other ranks quiet)
            raise error
        first = next(r for r, m in enumerate(messages) if m is not None)
        failed = PeerFailed(f"process {first} of {self.size} failed: {messages[first]}")
        failed.sedpa_shared = True
        raise failed


SINGLE = World()


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SedpaError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise SedpaError(f"environment variable {name}={value!r} is not an integer: start the job with torchrun") from None


def world_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) for a plain process."""
    return _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)


def device_for(flag: str, *, size: int, local_rank: int) -> str:
    """This process's device: the `--device` flag as today for one process; under torchrun each process
    takes `cuda:LOCAL_RANK` (`--device cuda` or no flag, with CUDA) or the CPU (`--device cpu`)."""
    cuda = torch.cuda.is_available()
    if size <= 1:
        return flag or ("cuda" if cuda else "cpu")
    if flag in ("", "cuda"):
        if not cuda:
            if flag == "cuda":
                raise SedpaError("--device cuda but CUDA is not available: drop --device (the CPU, gloo) or run on a GPU machine")
            return "cpu"
        if local_rank >= torch.cuda.device_count():
            raise SedpaError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible: "
                             "pass --nproc-per-node at most the number of GPUs")
        return f"cuda:{local_rank}"
    if flag == "cpu":
        return "cpu"
    raise SedpaError(f"--device {flag} under torchrun: each process takes cuda:LOCAL_RANK; pass --device cuda "
                     "(or nothing), or --device cpu, and pick GPUs with CUDA_VISIBLE_DEVICES")


def _init(rank: int, size: int, local_rank: int, device: str) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    kwargs: dict[str, Any] = {"timeout": TIMEOUT}
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        kwargs.update(backend="nccl", device_id=torch.device(device))
    else:
        kwargs.update(backend="gloo")
    dist.init_process_group(rank=rank, world_size=size, **kwargs)


@contextlib.contextmanager
def launch(device_flag: str = "") -> Iterator[World]:
    """The `World` of this command: started from torchrun's environment, torn down on the way out.

    A SedpaError that every process knows of (`together`) is printed by rank 0 alone: the other
    ranks exit with the same status and no message. One that only this rank knows of is printed with
    its rank in front.
    """
    rank, size, local_rank = world_from_env()
    world: World | None = None
    try:
        device = device_for(device_flag, size=size, local_rank=local_rank)
        world = World(rank=rank, size=size, local_rank=local_rank, device=device)
        if world.distributed:
            _init(rank, size, local_rank, device)
        yield world
    except SedpaError as err:
        if rank == 0 or size <= 1:
            raise
        # A flag or environment error before the group exists is the same on every rank: rank 0 says it.
        if getattr(err, "sedpa_shared", False) or world is None:
            raise SystemExit(err.exit_code) from None
        raise SedpaError(f"process {rank} of {size}: {err}") from None
    finally:
        if world is not None and world.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
