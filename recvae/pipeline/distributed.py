"""The train step in `train.nproc` processes: `launch_train_step` starts them under torchrun on this machine (each runs
`train_step` as one rank, this module's `__main__`) and returns rank 0's result, or raises the run's failure as one
error: the first rank's own error, else which rank died and how. The ranks find the step by name (no import cycle
with pipeline.training, which calls this module)."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from recvae.config import ConfigError
from recvae.pipeline.results import ModelRun

logger = logging.getLogger(__name__)

REPORT_VAR = "RECVAE_DIST_REPORT"  # the folder where the ranks find their arguments and leave their result or error
ARGS_FILE = "step.json"
TRAIN_STEP = "recvae.pipeline.training:train_step"
RESULT_FILE = "result.json"
RUN_ID_FILE = "run.json"


def launch_train_step(nproc: int, **kwargs: Any) -> ModelRun:
    """`train_step(**kwargs)` in `nproc` processes; rank 0's result (ConfigError or RankFailedError on failure)."""
    from recvae.training import distributed

    with tempfile.TemporaryDirectory(prefix="recvae-ranks-") as tmp:
        report = Path(tmp)
        (report / ARGS_FILE).write_text(json.dumps({"step": TRAIN_STEP, "kwargs": kwargs}))
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        rc = distributed.launch(["-m", "recvae.pipeline.distributed", str(report)], nproc, report,
                                env={"RECVAE_LOG_LEVEL": str(level), REPORT_VAR: str(report)})
        result = report / RESULT_FILE
        if rc == 0 and result.exists():
            return ModelRun.of(json.loads(result.read_text()))
        _fail_run(report)
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
    from recvae.log import setup_logging
    from recvae.training.distributed import die_with_parent, env_rank

    die_with_parent()
    setup_logging(os.environ.get("RECVAE_LOG_LEVEL", "INFO"))
    return _run_rank(report, env_rank())


def _run_rank(report: Path, rank: int) -> int:
    from recvae.errors import fault_errors, is_user_error, user_errors
    from recvae.log import mask_secrets
    from recvae.training.distributed import RankFailedError

    reported: tuple[type[BaseException], ...] = (*user_errors(), *fault_errors(), RankFailedError)
    try:
        spec = json.loads((report / ARGS_FILE).read_text())
        module, _, name = spec["step"].partition(":")
        out = getattr(importlib.import_module(module), name)(**spec["kwargs"])
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


def note_run(run_id: str) -> None:
    """Rank 0 of a launched step names its MLflow run, which the launching process ends FAILED if the ranks fail:
    the launcher stops the surviving ranks with SIGTERM, which leaves the run RUNNING."""
    report = os.environ.get(REPORT_VAR)
    if report:
        _write(Path(report) / RUN_ID_FILE, {"run_id": run_id})


def _fail_run(report: Path) -> None:
    """End rank 0's MLflow run FAILED when it was left RUNNING."""
    path = report / RUN_ID_FILE
    if not path.exists():
        return
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from recvae import tracking

    tracking.configure_if_needed()  # the ranks' store ($MLFLOW_TRACKING_URI, else the home's), not MLflow's default
    run_id = json.loads(path.read_text())["run_id"]
    client = MlflowClient()
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status="FAILED")
            logger.info("MLflow run %s of the failed ranks marked FAILED", run_id)
    except MlflowException as exc:  # the ranks' failure is the error to report; the next run ends this one
        logger.warning("could not mark MLflow run %s FAILED: %s", run_id, exc)


def _write(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(_rank_main(Path(sys.argv[1])))
