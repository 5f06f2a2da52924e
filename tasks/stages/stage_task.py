"""What every stage's Prefect task shares; each stage module (tasks/stages/*.py) defines its own task with it.

What a stage task adds to its body, and nothing else:
- caching by the stage's key (`StageCachePolicy`, from tasks/stages/keys.py), persisted as JSON in
  `<work_dir>/prefect-results`;
- retries with backoff for transient faults only; a timeout per stage;
- a lock that keeps two model-heavy stages (teacher, training) of one work dir from running at once;
- the output folder `<work_dir>/stages/<stage>/<key>`, stable across runs so a killed stage resumes there.

Prefect's default cache policy includes the flow-run id, so a later run would recompute everything. Instead the
stage key is the Prefect cache key, and the task body reads the same key back (`current_stage_key`) to name its
output folder and to let the stage decide whether it already finished there. So an identical later run is served
from the cache; a changed setting, prompt or helper invalidates that stage and, because its output digest
changes, exactly the stages downstream of it; a killed stage never completed, so the next run re-enters it with
the same key and folder, where it resumes from whatever it had written.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from filelock import FileLock
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.transactions import get_transaction

from fsa_distill.tasks.stages.keys import Placement, stage_key

HOUR = 3600
# Task parameters that never enter a key: where outputs go, and the MLflow run that receives live metrics.
NOT_INPUTS = frozenset({"settings", "placement", "tracking_run_id"})
MetricsLogger = Callable[[dict[str, float], "int | None"], None]


@dataclass
class StageCachePolicy(CachePolicy):
    """Prefect cache policy of a stage task: its `stage_key`, computed from the task's own parameters."""

    stage: str = field(kw_only=True)  # keyword only: the base class's first field is `key_storage`

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str:
        upstream = {name: value for name, value in inputs.items() if name not in NOT_INPUTS}
        return f"{self.stage}-{stage_key(self.stage, task_ctx.task.fn.__module__, inputs['settings'], **upstream)}"


def current_stage_key() -> str:
    """Inside a stage task: the key `StageCachePolicy` computed for this run (without the stage-name prefix).

    Read back rather than recomputed, so the output folder and the stage's own "already done" check use the
    very key Prefect caches under. Prefect logs and swallows an error in a cache policy (and then does not
    cache); failing here makes that loud instead.
    """
    transaction = get_transaction()
    if transaction is None or not transaction.key:
        raise RuntimeError("no stage key for this task run: its cache policy failed (see the log above)")
    return transaction.key.rsplit("-", 1)[1]  # stage names may hold a dash; the digest never does


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, httpx.TransportError, OSError)


def retry_only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry connection/timeouts and I/O hiccups, never bad input or code bugs."""
    from prefect.task_engine import TaskRunTimeoutError  # a TimeoutError, but the stage's own deadline

    from fsa_distill.core.config import ConfigError
    from fsa_distill.core.errors import InputError

    try:
        state.result()
    except (InputError, ConfigError, FileNotFoundError, PermissionError, TaskRunTimeoutError):
        return False  # a stage that ran out its timeout would only run it out again
    except TRANSIENT_ERRORS:
        return True
    except Exception:  # noqa: BLE001 - any other failure is a bug or bad data: retrying cannot help
        return False
    return False


def stage_task_options(stage: str, timeout_hours: float) -> dict[str, Any]:
    """The options of every stage task: its name, key, timeout, persisted JSON result and transient retries."""
    return {
        "name": stage,
        "cache_policy": StageCachePolicy(stage=stage),
        "timeout_seconds": timeout_hours * HOUR,
        "persist_result": True,
        "result_serializer": "json",
        "cache_expiration": timedelta(days=365),
        "retries": 2,
        "retry_delay_seconds": [10, 60],
        "retry_condition_fn": retry_only_transient,
    }


def model_heavy(placement: Placement) -> FileLock:
    """One model-heavy stage (teacher engine, training) at a time per work dir, across flow runs.

    A file lock rather than a Prefect global concurrency limit: the OS releases it when its holder dies, while a
    Prefect slot held by a killed run stays taken until its lease is reaped — and with the ephemeral server's
    in-memory lease storage, never.
    """
    path = placement.work_dir / "locks" / "model-heavy.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)


def stage_dir(placement: Placement, stage: str, key: str) -> Path:
    """The stage's output folder: named by its key, so a killed run's next attempt resumes in the same place."""
    path = placement.work_dir / "stages" / stage / key[:16]
    path.mkdir(parents=True, exist_ok=True)
    return path


def result_storage(work_dir: Path) -> Path:
    """Where Prefect persists stage results (the cache records) for this work dir (a local folder)."""
    path = (work_dir / "prefect-results").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def metrics_logger(placement: Placement, tracking_run_id: str | None) -> MetricsLogger | None:
    """A `log_metrics(metrics, step)` callback writing to the stage's MLflow run; drops non-finite values.
    Its own client rather than RunTracker's: a stage task gets no whole config, only its placement."""
    if tracking_run_id is None:
        return None
    import mlflow

    client = mlflow.MlflowClient(placement.mlflow_uri)

    def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        batch = [mlflow.entities.Metric(key, float(value), timestamp, step or 0) for key, value in metrics.items()
                 if isinstance(value, (int, float)) and math.isfinite(float(value))]
        if batch:
            client.log_batch(tracking_run_id, metrics=batch)

    return log_metrics


def replay_train_log(log_path: Path, log_metrics: MetricsLogger | None) -> None:
    """Log a multi-process training's losses (rank 0's train_log.jsonl) to MLflow once it has finished: the
    processes themselves never log to MLflow, so there is exactly one writer."""
    if log_metrics is None or not log_path.exists():
        return
    for line in log_path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        metrics = {"train/loss": record["loss"], "train/lr": record["lr"]}
        if "eval_loss" in record:
            metrics["eval/loss"] = record["eval_loss"]
        log_metrics(metrics, record["step"])


def prefect_progress(key: str = "teacher-answers", every_s: float = 5.0) -> Callable[[int, int], None]:
    """A progress artifact of the running Prefect task (the UI's progress bar), updated at most every `every_s`
    seconds and at the end, so a million-answer run does not flood the API."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    state: dict[str, Any] = {"id": None, "last": 0.0}

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if state["id"] is not None and done < total and now - state["last"] < every_s:
            return
        percent = 100.0 * done / total if total else 100.0
        description = f"{done} of {total} teacher answers stored"
        try:
            if state["id"] is None:
                state["id"] = create_progress_artifact(percent, key=key, description=description)
            else:
                update_progress_artifact(state["id"], percent, description=description)
        except Exception as error:  # noqa: BLE001 - a progress bar must never fail the stage
            logging.getLogger(__name__).warning("progress artifact not updated: %s", error)
        state["last"] = now

    return report
