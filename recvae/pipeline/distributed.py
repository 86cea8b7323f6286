"""The train step in `train.nproc` processes: `launch_train_step` starts them under torchrun on this machine (each runs
`train_step` as one rank, this module's `__main__`) and returns rank 0's result, or raises the run's failure as one
error: the first rank's own error, else which rank died and how."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from recvae.config import ConfigError
from recvae.pipeline.results import ModelRun

logger = logging.getLogger(__name__)

REPORT_VAR = "RECVAE_DIST_REPORT"  # the folder where the ranks find their arguments and leave their result or error
ARGS_FILE = "train_step.json"
RESULT_FILE = "result.json"


def launch_train_step(nproc: int, **kwargs: Any) -> ModelRun:
    """`train_step(**kwargs)` in `nproc` processes; rank 0's result (ConfigError or RankFailedError on failure)."""
    from recvae.training import distributed

    with tempfile.TemporaryDirectory(prefix="recvae-ranks-") as tmp:
        report = Path(tmp)
        (report / ARGS_FILE).write_text(json.dumps(kwargs))
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        rc = distributed.launch(["-m", "recvae.pipeline.distributed", str(report)], nproc, report,
                                env={"RECVAE_LOG_LEVEL": str(level)})
        result = report / RESULT_FILE
        if rc == 0 and result.exists():
            return ModelRun.of(json.loads(result.read_text()))
        raise _failure(report, nproc, rc)


def _failure(report: Path, nproc: int, rc: int) -> Exception:
    """The error to raise for a failed launch: a rank's own error first (a user's error stays one: no retry), then
    the launcher's account of the ranks that died, then a rank's lost-peer error."""
    from recvae.training.distributed import RankFailedError, launch_failures

    errors = sorted((json.loads(p.read_text()) for p in report.glob("error-rank*.json")),
                    key=lambda e: (e["lost_peer"], e["rank"]))
    own = [e for e in errors if not e["lost_peer"]]
    prefix = f"training in {nproc} processes failed"
    if own:
        first = own[0]
        message = first["message"] if first["rank"] == 0 else f"rank {first['rank']}: {first['message']}"
        return ConfigError(message) if first["kind"] == "user" else RankFailedError(f"{prefix}: {message}")
    died = launch_failures(report)
    if died:
        return RankFailedError(f"{prefix}: {died}")
    if errors:
        return RankFailedError(f"{prefix}: {errors[0]['message']}")
    return RankFailedError(f"{prefix} (launcher exit status {rc}) without a report; see the log above")


def _rank_main(report: Path) -> int:
    """One rank of a launched train step: its result (rank 0) or its error, written to `report`; the exit status."""
    from recvae.errors import fault_errors, is_user_error, user_errors
    from recvae.log import mask_secrets, setup_logging
    from recvae.pipeline.training import train_step
    from recvae.training.distributed import RankFailedError, env_rank

    setup_logging(os.environ.get("RECVAE_LOG_LEVEL", "INFO"))
    rank = env_rank()
    reported: tuple[type[BaseException], ...] = (*user_errors(), *fault_errors(), RankFailedError)
    # the launcher stops the other ranks with SIGTERM when one fails: unwind, so rank 0's MLflow run ends FAILED
    signal.signal(signal.SIGTERM, _stop)
    try:
        out = train_step(**json.loads((report / ARGS_FILE).read_text()))
    except reported as exc:
        _write(report / f"error-rank{rank}.json",
               {"rank": rank, "message": mask_secrets(" ".join(str(exc).split())) or type(exc).__name__,
                "kind": "user" if is_user_error(exc) else "fault", "lost_peer": isinstance(exc, RankFailedError)})
        return 2
    except Exception as exc:  # a bug: its traceback in the log, the parent's error names it
        logger.exception("rank %d: unexpected internal error", rank)
        _write(report / f"error-rank{rank}.json",
               {"rank": rank, "message": f"internal error (a bug in recvae): {type(exc).__name__}: {exc}",
                "kind": "internal", "lost_peer": False})
        return 70
    if rank == 0:
        _write(report / RESULT_FILE, out.to_dict())
    return 0


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _write(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(_rank_main(Path(sys.argv[1])))
