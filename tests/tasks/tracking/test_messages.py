"""Messages (tasks/tracking/messages.py) for real: a Prefect server started as users start it (`prefect server
start`), the automations deploy.sh sets up (deployments/message_automations.py), and a local HTTP receiver in
place of the webhook, whose path and query hold the secret. A failing run and a crashed run of the inbox
deployment, and one champion change through the registry gate, each deliver exactly one message with its
fields; the secret shows in no log, event, MLflow param or tag, or Prefect parameter.

The deployment's runs execute in this process (prefect.flow_engine.run_flow, what a worker's subprocess does): a
worker and its flow-run subprocess would add two Python start-ups to a test whose subject is the server's side.
"""

from __future__ import annotations

import json
import os
import runpy
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.postgres_fixtures import postgres_url  # noqa: F401 - a fixture
from tests.teacher_fixtures import free_port, stop_group, wait_until_healthy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
SECRET_PATH = f"hook-{secrets.token_hex(10)}"
SECRET_QUERY = secrets.token_hex(10)
MODEL = "messages-student"
WAIT_S = 120  # for one delivery, on a loaded 2-core machine


class Receiver:
    """A webhook on 127.0.0.1: keeps the JSON bodies posted to its secret path, answers 404 elsewhere."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != f"/{SECRET_PATH}?token={SECRET_QUERY}":
                    self.send_response(404)
                    self.end_headers()
                    return
                with receiver.arrived:
                    receiver.messages.append(json.loads(body))
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # request lines would print the secret path

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{SECRET_PATH}?token={SECRET_QUERY}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, found: Callable[[list[dict]], bool], what: str) -> None:
        """Until `found(messages)` holds; the receiver's thread notifies on every delivery."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: found(self.messages), timeout=WAIT_S):
                pytest.fail(f"no {what} within {WAIT_S} s; received: {self.messages}")


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture()
def prefect_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    """`prefect server start` on a fresh PostgreSQL database, as deployments/servers.sh runs it (its own
    PREFECT_HOME); this process's clients and events go to it while the test runs. Not SQLite: there Prefect
    before 3.8.8 can deadlock its event loop while creating an automation (PrefectHQ/prefect#23055; seen here
    on a loaded machine: the create call failed with a read timeout after 429 s)."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    database = request.getfixturevalue("postgres_url")
    port, log = free_port(), tmp_path / "prefect-server.log"
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_URL": f"http://127.0.0.1:{port}",
           "PREFECT_API_DATABASE_CONNECTION_URL": database.replace("postgresql://", "postgresql+asyncpg://", 1)}
    env.pop("PREFECT_API_URL", None)
    with open(log, "w") as out:
        server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                                   "127.0.0.1", "--port", str(port)], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(server, f"{api}/health", 300, log)
        EventsWorker.drain_all()  # a worker made earlier in this session would send to another server
        with temporary_settings({PREFECT_API_URL: api}):
            yield api, log
            EventsWorker.drain_all()
    finally:
        stop_group(server)


def _deploy_inbox_poll(inbox: Path) -> None:
    """The real inbox flow as deployments/prefect.yaml deploys it (tags `fsa-distill`, `inbox`), on a profile that
    does not exist: each run fails at once with a config error."""
    from fsa_distill.flows.retrain_on_new_corpus import retrain_on_new_corpus

    retrain_on_new_corpus.to_deployment(
        name="inbox-poll", tags=["fsa-distill", "inbox"],
        parameters={"inbox": str(inbox), "profile": "no-such-profile"}).apply()


def _crash(flow_run: Any, mlflow_run_id: str) -> None:
    """A run that started (and tagged itself with its MLflow run, as flows/distill.py does), then what a worker
    reports when the run's process dies (exit -9, say): Crashed."""
    from prefect import get_client
    from prefect.states import Crashed, Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Running())
        client.update_flow_run(flow_run.id, tags=[*flow_run.tags, f"mlflow:{mlflow_run_id}"])
        client.set_flow_run_state(flow_run.id, Crashed(message="Flow run infrastructure exited with status -9."))


@pytest.fixture()
def registry(tmp_path: Path) -> tuple[str, str]:
    """A tracking store whose model has a champion (v1, mean F1 0.40) and an already registered v2 (same weights
    register again as the same version; no model is logged), plus the gate run's parent run with the config
    logged as a flow run logs it, while FSA_NOTIFY_WEBHOOK is set."""
    from mlflow.tracking import MlflowClient

    from fsa_distill.core.config import resolve_config
    from fsa_distill.tasks.tracking.runs import RunTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = resolve_config("demo", overrides=[f"tracking.mlflow_tracking_uri={uri}", f"work_dir={tmp_path}"])
    tracker = RunTracker(config)
    parent = tracker.start_parent("gate-run", tags={"profile": "demo"})
    client = MlflowClient(uri)
    client.create_registered_model(MODEL)
    for digest, f1 in (("weights-1", "0.400000"), ("weights-2", "0.550000")):
        client.create_model_version(MODEL, source=str(tmp_path / digest), run_id=parent,
                                    tags={"model_digest": digest, "mean_f1": f1})
    client.set_registered_model_alias(MODEL, "champion", "1")
    return uri, parent


def gate(tracking_uri: str, run_id: str, model_dir: str) -> list[str]:
    """Three registrations through the real gate: v1 again with a lower F1 (kept), v2 better (promoted: the
    champion changes), v2 again (promoted, but the champion stays v2)."""
    from fsa_distill.tasks.tracking.register import register_student

    return [register_student(Path(model_dir), digest, f1, run_id, MODEL, tracking_uri)["decision"]
            for digest, f1 in (("weights-1", 0.30), ("weights-2", 0.55), ("weights-2", 0.55))]


def _new_run(name: str, parameters: dict | None = None) -> Any:
    """A flow run of the deployment, scheduled now (as its schedule or `prefect deployment run` would)."""
    from prefect.deployments import run_deployment

    return run_deployment(name, parameters=parameters or {}, timeout=0)


def _run_deployment(flow: Any, name: str, parameters: dict | None = None) -> Any:
    """A flow run of the deployment, executed here as a worker's subprocess would; its final state."""
    from prefect.flow_engine import run_flow

    flow_run = _new_run(name, parameters)
    return run_flow(flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"), flow_run


def _server_records(api: str) -> str:
    """Everything the Prefect server keeps that could hold the secret: logs, every event, deployments and flow
    runs with their parameters, block documents (as the API shows them)."""
    import httpx

    texts = []
    for path in ("logs/filter", "deployments/filter", "flow_runs/filter", "block_documents/filter"):
        response = httpx.post(f"{api}/{path}", json={}, timeout=30)
        response.raise_for_status()
        texts.append(response.text)
    page = httpx.post(f"{api}/events/filter", json={"limit": 50}, timeout=30).raise_for_status().json()
    while True:
        texts.append(json.dumps(page["events"]))
        if not page.get("next_page"):
            return "\n".join(texts)
        page = httpx.get(page["next_page"], timeout=30).raise_for_status().json()


def _executed_actions(api: str) -> int:
    import httpx

    response = httpx.post(f"{api}/events/filter", timeout=30, json={
        "filter": {"event": {"name": ["prefect.automation.action.executed"]}}, "limit": 50})
    response.raise_for_status()
    return len(response.json()["events"])


def test_failed_crashed_runs_and_a_new_champion_each_send_one_message(
    prefect_server, receiver: Receiver, registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture,
) -> None:
    from mlflow.tracking import MlflowClient
    from prefect import flow

    from fsa_distill.flows.retrain_on_new_corpus import retrain_on_new_corpus

    api, server_log = prefect_server
    uri, parent = registry
    monkeypatch.setenv("FSA_NOTIFY_WEBHOOK", receiver.url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    runpy.run_path(str(ROOT / "deployments" / "message_automations.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert f"messages to http://127.0.0.1:{receiver.server.server_address[1]}/***" in printed
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    _deploy_inbox_poll(tmp_path / "inbox")
    failed, failed_run = _run_deployment(retrain_on_new_corpus, "retrain-on-new-corpus/inbox-poll")
    assert failed.is_failed()
    crashed_run = _new_run("retrain-on-new-corpus/inbox-poll")
    _crash(crashed_run, parent)
    gate_flow = flow(name="gate-check")(gate)
    gate_flow.to_deployment(name="registry-gate", tags=["fsa-distill"]).apply()
    gated, _ = _run_deployment(gate_flow, "gate-check/registry-gate",
                               {"tracking_uri": uri, "run_id": parent, "model_dir": str(tmp_path / "unused")})
    assert gated.result() == ["kept_champion", "promoted", "promoted"]

    receiver.wait_for(lambda messages: len(messages) >= 3, "three messages (failed, crashed, new champion)")
    deadline = time.monotonic() + WAIT_S
    while _executed_actions(api) < 3 and time.monotonic() < deadline:  # the server's record of each delivery
        time.sleep(1)
    assert _executed_actions(api) == 3 and len(receiver.messages) == 3, receiver.messages
    by_run = {message.get("flow_run_id"): message for message in receiver.messages if message["kind"] == "run-failed"}

    failure = by_run[str(failed_run.id)]
    assert failure["deployment"] == "retrain-on-new-corpus/inbox-poll" and failure["state"] == "Failed"
    assert failure["flow_run"] == failed_run.name and "no-such-profile" in failure["reason"]
    assert failure["links"]["prefect"].endswith(f"/runs/flow-run/{failed_run.id}")
    crash = by_run[str(crashed_run.id)]
    assert crash["state"] == "Crashed" and "exited with status -9" in crash["reason"]
    assert crash["deployment"] == "retrain-on-new-corpus/inbox-poll" and failure["links"]["mlflow"] == []
    assert crash["links"]["mlflow"] == [f"http://mlflow.example:5000/#/runs/{parent}"]

    (champion,) = [message for message in receiver.messages if message["kind"] == "new-champion"]
    assert champion["deployment"] == "gate-check/registry-gate"
    assert (champion["model"], champion["version"], champion["previous_version"]) == (MODEL, "2", "1")
    assert (champion["mean_f1"], champion["previous_mean_f1"]) == (0.55, 0.4)
    experiment = MlflowClient(uri).get_run(parent).info.experiment_id
    assert champion["links"]["mlflow_run"] == f"http://mlflow.example:5000/#/experiments/{experiment}/runs/{parent}"
    assert champion["links"]["prefect"].startswith(api.removesuffix("/api")) and "v2 (mean F1 0.55)" in champion["text"]

    # The secret appears nowhere it could be logged or recorded.
    captured = capsys.readouterr()
    client = MlflowClient(uri)
    mlflow_text = json.dumps([[run.data.params, run.data.tags] for run in client.search_runs(
        [client.get_run(parent).info.experiment_id])])
    for where, text in (("the Prefect server's log", server_log.read_text(errors="replace")),
                        ("the Prefect server's records", _server_records(api)),
                        ("this process's output and logs", printed + captured.out + captured.err + caplog.text),
                        ("MLflow params and tags", mlflow_text)):
        assert SECRET_PATH not in text and SECRET_QUERY not in text, f"the webhook secret is in {where}"


def test_a_webhook_that_is_not_http_is_one_error_line(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("FSA_NOTIFY_WEBHOOK", f"ftp://bot:{SECRET_QUERY}@files.example/{SECRET_PATH}")
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(ROOT / "deployments" / "message_automations.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err == "error: FSA_NOTIFY_WEBHOOK: not an http(s) URL (ftp://files.example/***)\n"


@pytest.mark.parametrize(("url", "problem"), [
    (f"https://hooks.example/{SECRET_PATH} x", "contains a space"),
    ("http://[::1", "cannot read the host and port"),
    (f"https://hooks.example:99999/{SECRET_PATH}", "not a number from 1 to 65535"),
], ids=["space", "bracket", "port"])  # fixed ids: the URLs hold a random secret
def test_a_webhook_that_could_never_be_called_is_refused_up_front(url: str, problem: str) -> None:
    from fsa_distill.core.errors import InputError
    from fsa_distill.tasks.tracking.messages import webhook_from_env

    with pytest.raises(InputError, match=problem) as raised:
        webhook_from_env({"FSA_NOTIFY_WEBHOOK": url})
    assert SECRET_PATH not in str(raised.value)


def test_an_unreachable_prefect_server_is_one_error_line(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url = f"http://bot:{SECRET_QUERY}@127.0.0.1:{free_port()}/api"  # nothing listens there
    monkeypatch.setenv("FSA_NOTIFY_WEBHOOK", f"https://hooks.example/{SECRET_PATH}")
    monkeypatch.setenv("PREFECT_API_URL", api_url)  # what the message names; Prefect's loaded settings below
    with temporary_settings(updates={PREFECT_API_URL: api_url}), pytest.raises(SystemExit) as exited:
        runpy.run_path(str(ROOT / "deployments" / "message_automations.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith("error: http://***@127.0.0.1:") and err.count("\n") == 1
    assert SECRET_PATH not in err and SECRET_QUERY not in err

def test_links_and_logs_never_carry_credentials() -> None:
    from fsa_distill.core.redact import redact_webhook
    from fsa_distill.tasks.tracking.messages import DASHBOARD_MLFLOW_URL, mlflow_ui_url

    assert mlflow_ui_url("https://bot:pw@mlflow.example:5000/?token=t") == "https://mlflow.example:5000"
    assert mlflow_ui_url("sqlite:////work/mlflow.db") == mlflow_ui_url(None) == DASHBOARD_MLFLOW_URL
    assert redact_webhook("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com/***"
    assert redact_webhook("https://u:p@hooks.example/?sig=abc") == "https://hooks.example/***"
    assert redact_webhook("https://hooks.example") == "https://hooks.example"
