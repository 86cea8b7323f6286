"""Data-parallel training over processes started by torchrun: the process group, rank helpers, the gradient sum,
rank 0's decisions sent to every rank, and a launcher of N local processes that ends in one error, never a hang.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each process; `session` joins the group
they describe (gloo on the CPU, NCCL on CUDA) with a finite timeout, so a collective waiting for a dead or stuck rank
fails instead of hanging. Outside torchrun every helper is the one-process identity.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# tests only: RANK or RANK@N: that rank leaves with os._exit(3) at its first (or Nth) gradient sum, as if killed
KILL_RANK_VAR = "RECVAE_TEST_KILL_RANK"
LAUNCH_FAILURES = "launch_failures.json"  # what the launcher writes beside the ranks' reports when a rank fails
_STOPPED = (-15, 128 + 15)  # SIGTERM: how the launcher stops the other ranks (unhandled, or handled as SystemExit)

T = TypeVar("T")


class RankFailedError(RuntimeError):
    """Another rank died, or a collective timed out waiting for it: the whole distributed run stops."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank 0 of 1 outside torchrun."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates, checkpoints, logs and registers."""
        return self.rank == 0


def under_torchrun() -> bool:
    """True in a process started by torchrun (its environment variables are set)."""
    return all(name in os.environ for name in TORCHRUN_VARS)


def env_rank() -> int:
    """This process's global rank from torchrun's environment (0 outside torchrun), group joined or not."""
    return int(os.environ.get("RANK", "0")) if under_torchrun() else 0


def ranks() -> Ranks:
    """The rank and world size of the joined process group (0 of 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def check_devices(nproc: int, device: torch.device) -> None:
    """ConfigError unless this machine has a GPU for each of `nproc` CUDA processes (NCCL needs one per rank)."""
    from recvae.config import ConfigError

    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(f"train.nproc={nproc} CUDA processes need as many GPUs; this machine has "
                          f"{torch.cuda.device_count()} (set train.nproc to at most that, or train.device=cpu)")


@contextmanager
def session(device: torch.device, timeout_s: float) -> Iterator[Ranks]:
    """Join torchrun's process group for the block (not under torchrun, or already joined: nothing to do)."""
    if not under_torchrun() or not dist.is_available() or dist.is_initialized():
        yield ranks()
        return
    if device.type == "cuda":  # one GPU per local rank; "cuda" then means this one
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    try:
        dist.init_process_group(backend_for(device), timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:
        raise RankFailedError(f"could not join the process group of {os.environ['WORLD_SIZE']} ranks at "
                              f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: {_first_line(exc)}") from exc
    try:
        yield ranks()
    finally:
        teardown()


def teardown() -> None:
    """Leave the process group, if joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextmanager
def _collective(what: str) -> Iterator[None]:
    """A failed collective (a rank gone, a timeout) as RankFailedError: one line, not a backend traceback."""
    try:
        yield
    except RuntimeError as exc:  # dist.DistBackendError and gloo's errors are RuntimeErrors
        if isinstance(exc, RankFailedError):
            raise
        raise RankFailedError(f"rank {ranks().rank}: {what} failed, another rank died or timed out: "
                              f"{_first_line(exc)}") from exc


def broadcast(obj: T, where: Ranks) -> T:
    """Rank 0's `obj` on every rank (pickled; for small things and the run's initial state)."""
    if where.world == 1:
        return obj
    box = [obj if where.main else None]
    with _collective("a broadcast from rank 0"):
        dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def from_main(fn: Callable[[], T], where: Ranks) -> T:
    """`fn()` computed on rank 0 and sent to every rank; an error there is raised on every rank, so none is left
    waiting for rank 0 until the timeout. An error every rank raised already (`everywhere`) is not sent again."""
    if where.world == 1:
        return fn()
    outcome: tuple[str, Any] | None = None
    if where.main:
        try:
            outcome = ("ok", fn())
        except Exception as exc:
            if not isinstance(exc, RankFailedError) and not getattr(exc, _EVERYWHERE, False):
                broadcast(("error", _portable(exc)), where)
            raise everywhere(exc)  # noqa: B904 - the same exception, marked so an enclosing from_main lets it pass
    sent = broadcast(outcome, where)
    assert sent is not None
    kind, value = sent
    if kind == "error":
        raise everywhere(value)
    return value


_EVERYWHERE = "_recvae_raised_everywhere"


def everywhere(exc: BaseException) -> BaseException:
    """`exc`, marked as raised on every rank at the same point (rank 0's decision, a diverged loss's sums)."""
    setattr(exc, _EVERYWHERE, True)
    return exc


def _portable(exc: Exception) -> Exception:
    """`exc` itself when it survives pickling, else a RankFailedError with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any unpicklable exception is re-made as one we can send
        return RankFailedError(f"rank 0: {type(exc).__name__}: {_first_line(exc)}")
    return exc


def all_reduce_sum(tensor: torch.Tensor, where: Ranks) -> torch.Tensor:
    """`tensor` summed over the ranks, in place."""
    if where.world > 1:
        with _collective("summing over the ranks"):
            dist.all_reduce(tensor)
    return tensor


def sum_gradients(params: list[torch.nn.Parameter], where: Ranks) -> None:
    """Every rank's gradients summed into each parameter's `.grad` (the ranks weight their losses by their share of
    the global batch, so the sum is the one-process gradient). One flat all_reduce a step, as DDP's buckets do for a
    model this small; a parameter no rank gave a gradient keeps none, so Adam skips it as in one process."""
    if where.world == 1:
        return
    _maybe_die(where)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [has])
    all_reduce_sum(flat, where)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p)
        offset += n
    for p, count in zip(params, flat[offset:].tolist(), strict=True):
        if count == 0:
            p.grad = None


_sums = 0  # gradient sums made by this process (the test hook counts them)


def _maybe_die(where: Ranks) -> None:
    """The tests' killed rank (KILL_RANK_VAR); nothing when the variable is unset."""
    global _sums
    _sums += 1
    rank, _, at = os.environ.get(KILL_RANK_VAR, "").partition("@")
    if rank == str(where.rank) and _sums == int(at or 1):
        os._exit(3)


# ------------------------------------------------------------------------------------------ the launcher


def launch(args: list[str], nproc: int, report_dir: Path, env: dict[str, str] | None = None) -> int:
    """Run `python ARGS` in `nproc` local processes under torch's elastic launcher (torchrun's) and wait: its exit
    status. A rank that fails stops the others at once (no restarts); the failures go to report_dir."""
    cmd = [sys.executable, "-c", _LAUNCHER, str(nproc), str(report_dir), *args]
    child_env = {**os.environ, **(env or {})}
    # as torchrun does, unless set: N processes share the cores instead of each taking them all
    child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logger.info("training in %d processes (torchrun, gloo on CPU / NCCL on GPUs)", nproc)
    return subprocess.call(cmd, env=child_env)


def launch_failures(report_dir: Path) -> str | None:
    """The launcher's summary of the ranks that failed (exit codes, signals), if it wrote one."""
    path = report_dir / LAUNCH_FAILURES
    if not path.exists():
        return None
    failures = json.loads(path.read_text())
    return "; ".join(f"rank {f['rank']} exited with {f['exit']}" for f in failures)


# not `-m recvae.training.distributed`: the package imports this module before runpy would run it again
_LAUNCHER = "import sys; from recvae.training.distributed import launcher_main; sys.exit(launcher_main(sys.argv[1:]))"


def die_with_parent() -> None:
    """On Linux, this process is sent SIGTERM when the process that started it dies: a killed `recvae train` (or
    launcher) leaves no training behind to write into the same checkpoints and MLflow run as a later --resume."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the call: nothing would ever signal
        os._exit(143)


def launcher_main(argv: list[str]) -> int:
    """`N REPORT_DIR ARGS...`: torchrun --standalone's launch of `python ARGS` in N processes, quiet on failure
    (the caller reports it in one line)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    die_with_parent()
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nproc, report_dir, args = int(argv[0]), Path(argv[1]), argv[2:]
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its failure report is ours to give
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as exc:
        # the launcher's own SIGTERMs to the other ranks follow the failure: the rest is its cause
        failures = sorted(exc.failures.items(), key=lambda kv: (kv[1].exitcode in _STOPPED, kv[1].timestamp, kv[0]))
        causes = [(rank, f) for rank, f in failures if f.exitcode not in _STOPPED] or failures
        summary = [{"rank": rank, "exit": _exit_text(f.exitcode)} for rank, f in causes]
        (report_dir / LAUNCH_FAILURES).write_text(json.dumps(summary))
        return 1
    return 0


def _exit_text(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
