"""Issue #15: credentials inside URLs (a tracking URI with a password, a teacher endpoint with an API key in its
query) never reach MLflow params, artifacts, tags, error messages or the run summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fsa_distill.core.config import DistillConfig, resolve_config
from fsa_distill.core.redact import redact_secrets, redact_text, redact_url

SECRET = "s3cret-Pa55"
TEACHER_URL = f"http://fsa:{SECRET}@127.0.0.1:9/v1?api_key={SECRET}&model=served"


@pytest.mark.parametrize(("url", "expected"), [
    (f"postgresql://mlflow:{SECRET}@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
    (TEACHER_URL, "http://***@127.0.0.1:9/v1?api_key=***&model=served"),
    (f"https://{SECRET}@host/x", "https://***@host/x"),
    (f"https://s3.example/b/o?X-Amz-Signature={SECRET}&X-Amz-Credential={SECRET}&v=1",
     "https://s3.example/b/o?X-Amz-Signature=***&X-Amz-Credential=***&v=1"),
    (f"http://h/x?token={SECRET}#frag", "http://h/x?token=***#frag"),
    ("sqlite:////work/mlflow.db", "sqlite:////work/mlflow.db"),  # nothing secret: byte for byte the same
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("not a url", "not a url"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_and_trees() -> None:
    message = f"HTTP 503 from {TEACHER_URL}/chat/completions, then 'postgresql://u:{SECRET}@db/x'"
    assert SECRET not in redact_text(message)
    assert redact_text(message).startswith("HTTP 503 from http://***@127.0.0.1:9/v1?api_key=***")
    tree = {"teacher": {"base_url": TEACHER_URL, "max_retries": 5}, "files": [f"http://a:{SECRET}@h/f"]}
    assert SECRET not in json.dumps(redact_secrets(tree))
    assert redact_secrets(tree)["teacher"]["max_retries"] == 5


def test_run_tracker_keeps_passwords_out_of_mlflow(tmp_path: Path) -> None:
    """The parent run's params, the resolved-config artifact and tags, as MLflow stores them (real SQLite
    store), carry the redacted URL and never the password."""
    from fsa_distill.tasks.tracking.runs import RunTracker

    config = resolve_config("demo", overrides=[f"work_dir={tmp_path / 'work'}", f"teacher.base_url={TEACHER_URL}"],
                            environ={})
    tracker = RunTracker(config)
    run_id = tracker.start_parent("redaction", tags={})
    tracker.log_dict(run_id, config.model_dump(mode="json"), "config/resolved_config.json")
    tracker.set_tags(run_id, {"endpoint": TEACHER_URL})
    tracker.finish(run_id)

    client = MlflowClient(config.mlflow_uri)
    run = client.get_run(run_id)
    assert run.data.params["teacher.base_url"] == "http://***@127.0.0.1:9/v1?api_key=***&model=served"
    assert SECRET not in json.dumps(run.data.params) and SECRET not in json.dumps(run.data.tags)
    artifact = Path(client.download_artifacts(run_id, "config/resolved_config.json", str(tmp_path)))
    assert SECRET not in artifact.read_text(encoding="utf-8")
    stored = b"".join(path.read_bytes() for path in (tmp_path / "work").rglob("*") if path.is_file())
    assert SECRET.encode() not in stored, "no file MLflow wrote holds the password"


def test_teacher_errors_do_not_show_the_password() -> None:
    """An unreachable OpenAI-compatible teacher (nothing listens on port 9) fails with a message that names the
    endpoint without its credentials."""
    from fsa_distill.models.teacher.base import GenerationRequest, TeacherError
    from fsa_distill.models.teacher.openai_backend import OpenAIBackend

    teacher = OpenAIBackend(TEACHER_URL, model="served", max_retries=0, request_timeout_s=2)
    with pytest.raises(TeacherError) as caught:
        teacher.generate([GenerationRequest(prompt="hi", max_tokens=1)])
    assert "http://***@127.0.0.1:9/v1" in str(caught.value) and SECRET not in str(caught.value)


def test_flow_run_parameters_hold_no_credentials(tmp_path: Path) -> None:
    """The CLI hands flows the resolved config; Prefect stores flow-run parameters as JSON in its database, and
    that JSON copy of the config carries the URLs redacted while the flow itself gets the real ones."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    config = resolve_config("demo", overrides=[f"work_dir={tmp_path}", "teacher.backend=openai",
                                               f"teacher.base_url={TEACHER_URL}",
                                               f"tracking.mlflow_tracking_uri=postgresql://m:{SECRET}@db/m"])

    @flow(name="redaction-probe")
    def probe(config: DistillConfig) -> tuple[str, str]:
        return str(flow_run.get_id()), config.teacher.base_url

    run_id, seen = probe(config=config)
    assert seen == TEACHER_URL  # the flow computes with the real endpoint
    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(run_id).parameters
    assert SECRET not in json.dumps(stored)
    assert stored["config"]["teacher"]["base_url"] == redact_url(TEACHER_URL)
