"""Which failures a stage retries: transient faults yes; bad input, bugs and the stage's own timeout no."""

from __future__ import annotations

import pytest
from prefect.states import Failed
from prefect.task_engine import TaskRunTimeoutError

from fsa_distill.core.errors import InputError
from fsa_distill.tasks.stages.stage_task import retry_only_transient


@pytest.mark.parametrize(("error", "retried"), [
    (ConnectionError("refused"), True),
    (TimeoutError("read timed out"), True),
    (OSError("I/O error"), True),
    (TaskRunTimeoutError("Task run exceeded timeout of 15.0 second(s)"), False),
    (InputError("x.jsonl", "line 3", "not valid JSON"), False),
    (ValueError("a bug"), False),
])
def test_only_transient_faults_are_retried(error: BaseException, retried: bool) -> None:
    assert retry_only_transient(None, None, Failed(data=error)) is retried
