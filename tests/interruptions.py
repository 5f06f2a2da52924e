"""A crash at a chosen step, raised from a stage's metrics callback: how the resume tests stop a run midway."""

from __future__ import annotations

from collections.abc import Callable


class Crash(Exception):
    """Stands for a process killed mid-run."""


def crash_at(step: int) -> Callable[[dict[str, float], int | None], None]:
    """A `log_metrics` callback that raises Crash when the stage reports `step` (pretraining: optimizer steps;
    fine-tuning: epochs)."""

    def log_metrics(metrics: dict[str, float], reported_step: int | None) -> None:
        if reported_step == step:
            raise Crash

    return log_metrics
