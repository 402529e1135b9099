"""Process groups as torchrun makes them, and torchrun's own launcher called from Python (for notebooks).

Under ``torchrun --nproc_per_node=N`` every process finds RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous address in its environment; :func:`world` reads them and joins the group once (NCCL on
GPUs, gloo on CPUs). :func:`launch` starts N such processes from a running Python (a notebook's
kernel) with the same environment, and turns a failed worker into one line naming its rank and how
it ended (a signal, an exit code and its error).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..errors import ConfigError


class DistributedRunFailed(RuntimeError):
    """A worker of a multi-process run failed; the message names the rank and how it ended."""


@dataclass(frozen=True)
class World:
    """This process's place in the group (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints and results."""
        return self.rank == 0

    def device(self) -> torch.device:
        """cuda:LOCAL_RANK where CUDA is available, else the CPU."""
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def world() -> World:
    """Join the process group torchrun describes in the environment (once); rank 0 of 1 without it."""
    if "WORLD_SIZE" not in os.environ or not dist.is_available():  # torchrun sets it, even for one process
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=dt.timedelta(minutes=10))
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _how(code: int | None, error: str) -> tuple[int, str]:
    """(order, words) for one rank's end: a rank killed or failing on its own comes before one that only
    lost its peers (gloo's "Connection closed/reset by peer") or was stopped by the launcher (SIGTERM)."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return (1 if name == "SIGTERM" else 0), f"killed by {name}"
    if "by peer" in error:
        return 1, f"exit code {code} (lost the connection to the other ranks)"
    return 0, f"exit code {code}" + (f" ({error})" if error else "")


def launch(fn: Callable[..., Any], nproc: int, *args: Any, start_method: str | None = None,
           grace_s: float = 5.0) -> dict[int, Any]:
    """Run ``fn(*args)`` in `nproc` processes of one group, with torchrun's environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT); rank -> return value.

    The processes are PyTorch's own (``torch.multiprocessing.start_processes``); `fn` and its arguments
    travel by cloudpickle, so a notebook's closures and models can be passed. The default start method is
    ``fork``, or ``spawn`` once this process has initialized CUDA (which a forked child cannot use
    again). When a rank fails, the others get
    `grace_s` seconds and are then stopped; :class:`DistributedRunFailed` names every failed rank, the
    cause first (a signal, an exit code and its error) and the ranks that only lost their peers after.
    """
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException, start_processes

    if nproc < 1:
        raise ConfigError(f"nproc = {nproc}: must be >= 1")
    import cloudpickle

    if start_method is None:
        start_method = "spawn" if torch.cuda.is_available() and torch.cuda.is_initialized() else "fork"
    threads = max(1, torch.get_num_threads() // nproc)
    payload = cloudpickle.dumps((fn, args))
    with tempfile.TemporaryDirectory(prefix="attnlab-launch-") as tmp:
        ctx = start_processes(_in_worker, args=(payload, nproc, _free_port(), tmp, threads), nprocs=nproc,
                              join=False, start_method=start_method)
        try:
            while not ctx.join(grace_period=grace_s):
                pass
        except (ProcessRaisedException, ProcessExitedException):
            for proc in ctx.processes:
                proc.join(grace_s)
            ends = []
            for rank, proc in enumerate(ctx.processes):
                if proc.exitcode in (0, None):
                    continue
                error = _error_line(Path(tmp) / f"{rank}.error")
                order, words = _how(proc.exitcode, error)
                ends.append((order, rank, words))
            lines = [f"rank {rank}: {words}" for _, rank, words in sorted(ends)]
            raise DistributedRunFailed(f"{nproc}-process run failed: " + "; ".join(lines)) from None
        return {rank: torch.load(Path(tmp) / f"{rank}.pt", weights_only=False) for rank in range(nproc)}


def _error_line(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text().strip().splitlines()
    return text[-1] if text else ""


def _in_worker(rank: int, payload: bytes, nproc: int, port: int, tmp: str, threads: int) -> None:
    import cloudpickle

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    try:
        fn, args = cloudpickle.loads(payload)
        result = fn(*args)
        torch.save(result, Path(tmp) / f"{rank}.pt")
    except BaseException as e:
        (Path(tmp) / f"{rank}.error").write_text(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
