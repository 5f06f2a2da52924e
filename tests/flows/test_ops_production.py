"""Production mode for real: deployments/servers.sh starts a Prefect server and an MLflow tracking server on
PostgreSQL (databases of their own, dropped at the end), deploy.sh registers the deployments, worker.sh runs a
process worker, and a shortened demo `distill` runs through it. Checked: the flow run completes on the worker, and
the run, its metrics, its artifacts and the registered model land in the PostgreSQL-backed MLflow.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.teacher_fixtures import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PG = {"host": "127.0.0.1", "port": 5432, "user": os.environ.get("FSA_PG_USER", "postgres")}
# Handed to servers.sh as FSA_PG_PASSWORD (trust authentication here ignores it): it must reach the clients
# through PGPASSFILE and appear on no command line.
PG_SECRET = f"fsa-pg-{secrets.token_hex(8)}"


def _pg_connect(dbname: str = "postgres"):
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        connection = psycopg2.connect(dbname=dbname, connect_timeout=5, **PG)
    except psycopg2.OperationalError as error:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 as {PG['user']}: {error}")
    connection.autocommit = True
    return connection


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Both servers on fresh databases; stopped and their databases dropped afterwards."""
    _pg_connect().close()
    suffix = secrets.token_hex(4)
    base = tmp_path_factory.mktemp("servers")
    env = {
        **os.environ,
        "FSA_SERVERS_DIR": str(base / "servers"),
        "FSA_PREFECT_PORT": str(free_port()),
        "FSA_MLFLOW_PORT": str(free_port()),
        "FSA_PREFECT_DB": f"fsa_prefect_test_{suffix}",
        "FSA_MLFLOW_DB": f"fsa_mlflow_test_{suffix}",
        "FSA_PG_USER": PG["user"],
        "FSA_PG_PASSWORD": PG_SECRET,
    }
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    script = str(ROOT / "deployments" / "servers.sh")
    try:
        started = subprocess.run(check=False, args=[script, "start"], env=env, text=True, capture_output=True, timeout=400)
        assert started.returncode == 0, started.stderr
        urls = subprocess.run([script, "env"], env=env, text=True, capture_output=True, check=True).stdout
        env.update(line.removeprefix("export ").split("=", 1) for line in urls.strip().splitlines())
        yield {"env": env, "base": base, "prefect_db": env["FSA_PREFECT_DB"], "mlflow_db": env["FSA_MLFLOW_DB"],
               "script": script}
    finally:
        subprocess.run(check=False, args=[script, "stop"], env=env, text=True, capture_output=True, timeout=120)
        connection = _pg_connect()
        with connection.cursor() as cursor:
            for name in (env["FSA_PREFECT_DB"], env["FSA_MLFLOW_DB"]):
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()


def test_servers_are_healthy_and_use_postgresql(servers: dict) -> None:
    status = subprocess.run(check=False, args=[servers["script"], "status"], env=servers["env"], text=True, capture_output=True)
    assert status.returncode == 0, status.stderr
    connection = _pg_connect(servers["prefect_db"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'flow_run'")
        assert cursor.fetchone()[0] == 1  # Prefect migrated its schema into our database
    connection.close()
    connection = _pg_connect(servers["mlflow_db"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'registered_models'")
        assert cursor.fetchone()[0] == 1
    connection.close()
    # Started twice: the second start notices the running servers instead of starting more.
    again = subprocess.run(check=False, args=[servers["script"], "start"], env=servers["env"], text=True, capture_output=True)
    assert again.returncode == 0 and "already running" in again.stderr


def test_database_password_is_on_no_command_line(servers: dict) -> None:
    """`ps` shows command lines to every user: the password lives in a 0600 PGPASSFILE instead."""
    import psutil

    servers_dir = Path(servers["env"]["FSA_SERVERS_DIR"])
    server_pids = {int((servers_dir / f"{name}.pid").read_text()) for name in ("prefect", "mlflow")}
    seen = set()
    for process in psutil.process_iter(["pid", "cmdline"]):
        command_line = " ".join(process.info["cmdline"] or [])
        assert PG_SECRET not in command_line, f"pid {process.info['pid']}: {command_line[:300]}"
        seen.add(process.info["pid"])
    assert server_pids <= seen, "both servers were among the processes checked"
    pgpass = servers_dir / "pgpass"
    assert pgpass.stat().st_mode & 0o777 == 0o600 and PG_SECRET in pgpass.read_text()


def test_demo_flow_through_a_worker_lands_in_postgres_mlflow(servers: dict, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.flows.test_flow import tiny_overrides, with_imported_answers

    env = {**servers["env"], "FSA_WORK_DIR": str(tmp_path / "work"), "FSA_INBOX": str(tmp_path / "inbox")}
    deployed = subprocess.run(check=False, args=[str(ROOT / "deployments" / "deploy.sh")], env=env, text=True, capture_output=True,
                              timeout=300)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    for name in ("distill/weekly", "retrain-on-new-corpus/inbox-poll", "benchmark/champion"):
        assert name.split("/")[1] in deployed.stdout

    # The flow's tiny test config, lighter still: this test checks the wiring, not the model or the teacher
    # (imported answers: the worker's flow run starts no vLLM engine).
    overrides = [o for o in tiny_overrides(tmp_path / "work", Path("unused"))
                 if not o.startswith("tracking.experiment_name")]
    overrides = with_imported_answers([*overrides, "evaluate.zero_shot=false"])
    # Settings are read once per process: point this client at the test's server explicitly.
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        # Scheduled first (timeout=0: not waited for), so that a one-shot worker's single poll finds it.
        flow_run = run_deployment("distill/on-demand", parameters={"profile": "demo", "overrides": overrides},
                                  timeout=0)
    # `--run-once`: the worker polls once, runs what it found and exits when that flow run's process has ended,
    # with no signal to stop it (a SIGTERMed worker's shutdown took up to minutes on a loaded machine).
    worker_log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed after the worker stops
    worker = subprocess.Popen([str(ROOT / "deployments" / "worker.sh"), "--run-once"], env=env, stdout=worker_log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        worker.wait(timeout=1800)
    except subprocess.TimeoutExpired:  # stop what the test started; the exit status check below fails with the log
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=60)
    finally:
        worker_log.close()
    log_text = (tmp_path / "worker.log").read_text(errors="replace")
    assert worker.returncode == 0, f"worker exit {worker.returncode}\n{log_text[-4000:]}"
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(flow_run.id)
    assert flow_run.state.is_completed(), f"{flow_run.state}\n{log_text[-4000:]}"

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs(
        [client.get_experiment_by_name("fsa-distill").experiment_id],
        filter_string=f"tags.`prefect.flow_run_id` = '{flow_run.id}'",
    )
    assert len(runs) == 1, "the flow run's MLflow parent run is in the server"
    run = runs[0]
    assert run.info.status == "FINISHED" and "mean_f1" in run.data.metrics
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through the tracking server"
    version = client.get_model_version_by_alias("fsa-distill-student", "challenger")
    assert version.run_id == run.info.run_id
    # ... and really in PostgreSQL, not in a local file store.
    connection = _pg_connect(servers["mlflow_db"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cursor.fetchone() == ("FINISHED",)
        cursor.execute("SELECT count(*) FROM model_versions WHERE name = 'fsa-distill-student'")
        assert cursor.fetchone()[0] >= 1
    connection.close()
    served = servers["base"] / "servers" / "mlflow-artifacts"
    assert any(served.rglob("MLmodel")), "the model's files are in the server's artifact store"


def _flow_run_states(api_url: str, tag: str) -> list[str]:
    import httpx

    response = httpx.post(f"{api_url}/flow_runs/filter", json={"flow_runs": {"tags": {"all_": [tag]}}}, timeout=10)
    response.raise_for_status()
    return [run["state_type"] for run in response.json()]


def _heartbeats(api_url: str, tag: str) -> int:
    """How many heartbeat events the server has recorded for the flow run tagged `tag`.

    The zombie automation is armed by a run's first heartbeat (its trigger starts `after` one), so a run killed
    before that is never marked; the test waits for one heartbeat, a recorded event, before it kills."""
    import httpx

    runs = httpx.post(f"{api_url}/flow_runs/filter", json={"flow_runs": {"tags": {"all_": [tag]}}}, timeout=10)
    runs.raise_for_status()
    ids = [f"prefect.flow-run.{run['id']}" for run in runs.json()]
    events = httpx.post(f"{api_url}/events/filter", timeout=10, json={
        "filter": {"event": {"name": ["prefect.flow-run.heartbeat"]}, "resource": {"id": ids}}, "limit": 10})
    events.raise_for_status()
    return len(events.json()["events"])


def _poll(condition, deadline_s: float, what: str):
    import time

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")


@pytest.mark.parametrize("watchdog", ["alive", "killed too"])
def test_killed_run_is_marked_crashed_on_the_servers(servers: dict, smollm2_dir, tmp_path: Path, watchdog: str) -> None:
    """`fsa-distill run` against the production servers, SIGKILLed while it runs, ends Crashed, not Running.

    alive: the run's watchdog marks it at once. killed too (the whole machine lost, say): Prefect's own zombie
    detection does, from the missing heartbeats (deployments/zombie_automation.py, 30 s heartbeats)."""
    import sys
    import uuid

    import psutil

    from tests.flows.test_flow import tiny_overrides

    env = {**servers["env"], "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
    created = subprocess.run([sys.executable, str(ROOT / "deployments" / "zombie_automation.py")], env=env,
                             text=True, capture_output=True, timeout=120, check=False)
    assert created.returncode == 0, created.stderr[-3000:]
    marker = uuid.uuid4().hex
    overrides = tiny_overrides(tmp_path / "work", smollm2_dir[0]) + ["pretrain.max_steps=2000"]
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 - closed below
    run = subprocess.Popen([sys.executable, "-m", "fsa_distill.cli", "run", "--json",
                            *[arg for override in overrides for arg in ("--set", override)]],
                           cwd=ROOT, env={**env, "FSA_TEST_MARKER": marker}, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)

    def ours() -> list[psutil.Process]:
        from tests.flows.test_run_lifecycle import processes_with

        return processes_with(marker)

    def running_tag() -> str | None:
        assert run.poll() is None, (tmp_path / "run.log").read_text(errors="replace")[-3000:]
        from tests.flows.test_run_lifecycle import environ_of

        inherited = set(os.environ.get("FSA_RUN_TOKENS", "").split(":"))
        tokens = set()
        for process in ours():  # the run's children carry the token it added (the run's own block predates it)
            if process.pid != run.pid:
                try:
                    tokens |= set(environ_of(process.pid).get("FSA_RUN_TOKENS", "").split(":")) - inherited - {""}
                except OSError:
                    continue
        for token in tokens:
            if "RUNNING" in _flow_run_states(env["PREFECT_API_URL"], f"fsa-run-{token}"):
                return f"fsa-run-{token}"
        return None

    try:
        tag = _poll(running_tag, 600, "the flow run to be Running on the server")
        reapers = [p for p in ours() if "fsa_distill.core.reaper" in " ".join(p.cmdline())]
        assert len(reapers) == 1
        if watchdog == "killed too":
            _poll(lambda: _heartbeats(env["PREFECT_API_URL"], tag), 120, "the run's first heartbeat on the server")
            reapers[0].kill()  # nothing of ours is left to report: only the heartbeats stop
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        deadline = 60 if watchdog == "alive" else 300  # 3 missed 30 s heartbeats, then the automation acts
        _poll(lambda: _flow_run_states(env["PREFECT_API_URL"], tag) == ["CRASHED"], deadline,
              "the killed flow run to be Crashed")
    finally:
        for process in ours():
            process.kill()
        log.close()
