"""Runs the flows' stage tasks: each inside a nested MLflow run that records its metrics and whether it came
from the cache. Shared by the `distill` and `study` flows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fsa_distill.core.config import DistillConfig
from fsa_distill.tasks.stages.keys import Placement
from fsa_distill.tasks.stages.records import StageResult
from fsa_distill.tasks.stages.stage_task import result_storage
from fsa_distill.tasks.tracking.runs import RunTracker


class StageRunner:
    """Runs one stage task inside a nested MLflow run and records whether it came from the cache. Every task gets
    this run's placement (work dir, tracking, processes); its settings come from the caller."""

    def __init__(self, config: DistillConfig, tracker: RunTracker, parent_run_id: str) -> None:
        self.placement = Placement.of(config)
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.outcomes: dict[str, str] = {}
        self.metric_runs: dict[str, str] = {}  # stage label → the MLflow run holding its live metrics
        self.seconds: dict[str, float] = {}  # stage label → wall seconds in this run (cost per run)

    def __call__(self, label: str, stage_task: Any, *, live_metrics: bool = False, **parameters: Any) -> Any:
        child, task = self._start(label, stage_task, live_metrics, parameters)
        started = time.perf_counter()

        def run() -> tuple[Any, Any]:
            state = task(**parameters, return_state=True)
            return state, state.result()

        return self._finish(label, child, started, run)

    def submit(self, runner: Any, label: str, stage_task: Any, *, live_metrics: bool = False,
               **parameters: Any) -> tuple[str, str, Any, float]:
        """Start the stage on `runner` (a started Prefect task runner) without waiting; `collect` finishes it.
        Resource requests for Ray (`prefect_ray.context.remote_options`) come from the caller's context."""
        child, task = self._start(label, stage_task, live_metrics, parameters)
        return label, child, runner.submit(task, parameters), time.perf_counter()

    def collect(self, pending: tuple[str, str, Any, float]) -> Any:
        """Wait for a submitted stage and record it as `__call__` does (its seconds include the queueing)."""
        label, child, future, started = pending

        def wait() -> tuple[Any, Any]:
            result = future.result()
            return future.state, result

        return self._finish(label, child, started, wait)

    def _start(self, label: str, stage_task: Any, live_metrics: bool,
               parameters: dict[str, Any]) -> tuple[str, Any]:
        """The stage's nested MLflow run, and its task set to keep results in the run's result storage."""
        child = self.tracker.start_child(self.parent_run_id, label)
        parameters["placement"] = self.placement
        if live_metrics:
            parameters["tracking_run_id"] = child
        return child, stage_task.with_options(result_storage=result_storage(self.placement.work_dir))

    def _finish(self, label: str, child: str, started: float, outcome: Callable[[], tuple[Any, Any]]) -> Any:
        try:
            state, result = outcome()
        except BaseException:
            self.tracker.finish(child, "FAILED")
            raise
        cached = state.name == "Cached"
        self.outcomes[label] = "cached" if cached else "ran"
        if not isinstance(result, StageResult):  # e.g. a cached record whose class can no longer be imported
            raise TypeError(f"stage {label} returned a {type(result).__name__}, not a typed stage result")
        self.seconds[label] = time.perf_counter() - started
        self.tracker.log_metrics(child, {**result.metrics(), "stage_seconds": self.seconds[label]})
        self.tracker.set_tags(child, {"cached": cached, "digest": result.digest, "stage_key": result.key})
        if result.trained_in_run:  # a cached stage points at the run that actually computed it
            self.metric_runs[label] = result.trained_in_run
            if cached:
                self.tracker.set_tags(child, {"cached_from_run": result.trained_in_run})
        self.tracker.finish(child)
        return result
