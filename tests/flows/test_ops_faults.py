"""Fault drills: the faults a team running fsa-distill every week really meets, each asserting what was kept.

- teacher endpoint down, then back: retries, then success; every answer cached exactly once; a rerun asks nothing
- tracking server down at registration: a clear error, no half-registered model; registering again once it is
  back works and creates exactly one version
- killed during generation (SIGKILL): the answers finished before the kill are kept and not asked again
- a corrupt corpus in the inbox: moved aside with its reason, the good corpus still trains (tests/tasks/ops/test_ops_inbox.py
  covers the variants; here the end-to-end with the real inbox flow and a recording distill)
- PostgreSQL restarted mid-generate (a private server): the run reconnects and carries on; no answer is lost,
  asked twice or stored twice; a rerun completes from the store alone; a server down for longer than the store
  waits is one clean StoreError
- two flow runs at once: the shared teacher cache and the model registry stay consistent
- a full artifact disk (a 1 MiB tmpfs): logging the model fails with ENOSPC, no model version points at it
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fsa_distill.core.config import DistillConfig
from tests.postgres_fixtures import PrivatePostgres, private_postgres  # noqa: F401 - a fixture
from tests.teacher_fixtures import FakeTeacher, free_port, kill_once_cached, make_reviews

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path) -> DistillConfig:
    config = DistillConfig(work_dir=tmp_path / "work")
    config.generation.batch_size = 4
    return config


def _cache_rows(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT key, attempt FROM responses").fetchall()


# --- teacher endpoint down, then back -------------------------------------------------------------------------


def test_teacher_endpoint_down_then_back(tmp_path: Path, flaky_server) -> None:
    from fsa_distill.models.teacher.openai_backend import OpenAIBackend
    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses

    config = _config(tmp_path)
    config.generation.reask_rejected = False
    reviews = make_reviews(6)
    # The endpoint answers 503 (down behind its proxy) for the first requests, then serves again.
    server = flaky_server([503] * 6)
    teacher = OpenAIBackend(server.base_url, model="served", max_retries=8, max_concurrency=2)
    stats = generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out", teacher=teacher,
                               progress=False, work_dir=config.work_dir)

    assert teacher.retries >= 6, "the outage was retried, not skipped"
    assert stats["generated"] == stats["unique_requests"] == 12
    cache_path = Path(stats["cache_path"])
    keys = [key for key, _ in _cache_rows(cache_path)]
    with sqlite3.connect(cache_path) as connection:
        rejected = connection.execute("SELECT COUNT(DISTINCT key) FROM rejected WHERE final = 1").fetchone()[0]
    assert len(keys) == len(set(keys)), "no answer stored twice"
    assert len(keys) + rejected == 12, "every request ended in exactly one accepted or rejected answer"

    asked_before = len(server.requests)
    again = generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out2", teacher=teacher,
                               progress=False, work_dir=config.work_dir)
    assert len(server.requests) == asked_before and again["cached"] == 12


# --- tracking server down at registration -----------------------------------------------------------------------


def _start_mlflow(port: int, store: Path, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115 - the server owns it
    )
    import httpx

    for _ in range(120):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(1)
    raise RuntimeError("mlflow server did not start")


@pytest.mark.slow
def test_tracking_server_down_then_back(tmp_path: Path, tiny_student_dir: Path, monkeypatch) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from fsa_distill.tasks.tracking.register import register_student

    # Fail fast instead of MLflow's default of minutes of HTTP retries.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_mlflow(port, tmp_path / "store", tmp_path / "mlflow.log")
    try:
        client = MlflowClient(uri)
        experiment = client.create_experiment("faults")
        run_id = client.create_run(experiment).info.run_id
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)

    # Down: a clear error naming the server, and nothing registered.
    with pytest.raises((MlflowException, OSError)) as failure:
        register_student(tiny_student_dir, "digest-1", 0.5, run_id, "fsa-distill-student", uri)
    assert str(port) in str(failure.value) or "Connection" in str(failure.value)

    server = _start_mlflow(port, tmp_path / "store", tmp_path / "mlflow2.log")
    try:
        client = MlflowClient(uri)
        assert client.search_model_versions("name='fsa-distill-student'") == []
        # Back: the same registration, resumed, creates exactly one version with its aliases.
        first = register_student(tiny_student_dir, "digest-1", 0.5, run_id, "fsa-distill-student", uri)
        again = register_student(tiny_student_dir, "digest-1", 0.5, run_id, "fsa-distill-student", uri)
        assert again["model_version"] == first["model_version"] and again["reused_version"]
        versions = client.search_model_versions("name='fsa-distill-student'")
        assert len(versions) == 1
        assert client.get_model_version_by_alias("fsa-distill-student", "champion").version == versions[0].version
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


# --- kill during generation ------------------------------------------------------------------------------------

_SLOW_GENERATION = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from fsa_distill.core.config import DistillConfig
    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses
    from tests.teacher_fixtures import FakeTeacher, make_reviews

    class SlowTeacher(FakeTeacher):
        def generate(self, requests):
            time.sleep(0.4)
            return super().generate(requests)

    work, n_reviews = Path(sys.argv[1]), int(sys.argv[2])
    store = sys.argv[3] if len(sys.argv) > 3 else None  # default: the work dir's SQLite store
    config = DistillConfig(work_dir=work)
    config.generation.batch_size = 2
    teacher = SlowTeacher()
    stats = generate_responses(make_reviews(n_reviews), GenerateSettings.of(config), work / "out",
                               teacher=teacher, progress=False,
                               cache_path=store, work_dir=config.work_dir)
    print(json.dumps({"rows": stats["rows"], "generated": stats["generated"], "asked": teacher.n_requests}))
    """
)


def test_kill_during_generation_keeps_finished_answers(tmp_path: Path) -> None:
    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses

    work = tmp_path / "work"
    cache_path = work / "cache" / "teacher_responses.sqlite"
    child = subprocess.Popen([sys.executable, "-c", _SLOW_GENERATION, str(work), "40"], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    kill_once_cached(child, cache_path, at_least=6, timeout_s=120)
    kept = _cache_rows(cache_path)
    assert 6 <= len(kept) < 80, "the kill came mid-generation and the finished answers survived it"

    config = DistillConfig(work_dir=work)
    config.generation.batch_size = 8
    teacher = FakeTeacher()
    stats = generate_responses(make_reviews(40), GenerateSettings.of(config), work / "out", teacher=teacher,
                               progress=False, work_dir=config.work_dir)
    assert stats["cached"] >= len(kept)
    assert teacher.n_requests == 80 - stats["cached"], "only the unfinished answers were asked again"
    keys = [key for key, _ in _cache_rows(cache_path)]
    assert len(keys) == len(set(keys))


# --- PostgreSQL restarted during generation ---------------------------------------------------------------------


def _poll(condition: Callable[[], bool], child: subprocess.Popen, timeout_s: float, what: str) -> None:
    """Wait until `condition()` holds; fail at once if the child exits first, or at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if child.poll() is not None:
            pytest.fail(f"the generating process exited ({child.returncode}) before {what}:\n"
                        f"{child.stderr.read() if child.stderr else ''}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"no {what} within {timeout_s} s")
        time.sleep(0.05)


@pytest.mark.slow
def test_postgres_restart_during_generation_loses_and_duplicates_nothing(
    tmp_path: Path, private_postgres: PrivatePostgres  # noqa: F811
) -> None:
    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses
    from fsa_distill.tasks.store.answers import AnswerStoreUnreachable, PostgresAnswerStore

    work, n_reviews = tmp_path / "work", 15
    answers = 2 * n_reviews  # analysis + rewrite per review

    def stored() -> int:
        try:
            return private_postgres.scalar("SELECT COUNT(*) FROM responses")
        except Exception:  # noqa: BLE001 - the table does not exist until the run has opened the store
            return 0

    child = subprocess.Popen([sys.executable, "-c", _SLOW_GENERATION, str(work), str(n_reviews),
                              private_postgres.url], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _poll(lambda: stored() >= 4, child, 120, "answer committed")
    private_postgres.restart()  # a fast shutdown cuts the run's session mid-generate
    before_restart = stored()
    out, err = child.communicate(timeout=180)

    assert child.returncode == 0, f"the run did not carry on after the restart:\n{err[-3000:]}"
    assert before_restart < answers, "the restart came while answers were still being generated"
    assert "reconnecting" in err, "the run met the restart (its connection was cut) and reconnected"
    run = json.loads(out.strip().splitlines()[-1])
    assert run == {"rows": answers, "generated": answers, "asked": answers}, "every answer asked exactly once"
    assert private_postgres.scalar("SELECT COUNT(*) FROM responses") == answers, "no answer lost"

    # A rerun completes from the store alone: nothing asked again, nothing stored twice.
    config = DistillConfig(work_dir=work)
    teacher = FakeTeacher()
    again = generate_responses(make_reviews(n_reviews), GenerateSettings.of(config), work / "out2",
                               teacher=teacher, progress=False,
                               cache_path=private_postgres.url, work_dir=config.work_dir)
    assert teacher.n_requests == 0 and again["cached"] == again["rows"] == answers
    assert private_postgres.scalar("SELECT COUNT(*) FROM responses") == answers
    assert private_postgres.scalar("SELECT COUNT(*) FROM rejected") == 0

    # Down for longer than the store waits for it: one StoreError naming the store (no password), no hang.
    with PostgresAnswerStore(private_postgres.url, reconnect_s=2) as store:
        private_postgres.stop()
        started = time.monotonic()
        with pytest.raises(AnswerStoreUnreachable, match=r"^answer store postgresql://\*\*\*@127\.0\.0\.1:\d+/"):
            store.lookup(["any-key"])
        assert time.monotonic() - started < 30


# --- two flow runs at once --------------------------------------------------------------------------------------


def _generate_in_process(work: str, start: int) -> int:
    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses

    config = DistillConfig(work_dir=Path(work))
    config.generation.batch_size = 3
    reviews = make_reviews(30)[start:] + make_reviews(30)[:start]  # same reviews, different order
    return generate_responses(reviews, GenerateSettings.of(config), Path(work) / f"out-{start}", teacher=FakeTeacher(),
                              progress=False, work_dir=config.work_dir)["rows"]


def _register_in_process(args: tuple[str, str, str, float]) -> dict:
    model_dir, digest, uri, f1 = args
    from mlflow.tracking import MlflowClient

    from fsa_distill.tasks.tracking.register import register_student

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("faults")
    run_id = client.create_run(experiment.experiment_id).info.run_id
    return register_student(Path(model_dir), digest, f1, run_id, "fsa-distill-student", uri)


@pytest.mark.slow
def test_two_runs_at_once_keep_cache_and_registry_intact(tmp_path: Path, tiny_student_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        rows = pool.starmap(_generate_in_process, [(str(work), 0), (str(work), 15)])
    assert rows == [60, 60]
    keys = [key for key, _ in _cache_rows(work / "cache" / "teacher_responses.sqlite")]
    assert len(keys) == len(set(keys)) == 60, "one cached answer per (review, prompt), none duplicated or lost"

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment("faults", artifact_location=(tmp_path / "artifacts").as_uri())
    jobs = [(str(tiny_student_dir), "digest-a", uri, 0.40), (str(tiny_student_dir), "digest-b", uri, 0.45)]
    with context.Pool(2) as pool:
        results = pool.map(_register_in_process, jobs)
    versions = client.search_model_versions("name='fsa-distill-student'")
    assert sorted(v.tags["model_digest"] for v in versions) == ["digest-a", "digest-b"]
    assert all(v.status == "READY" for v in versions)
    champion = client.get_model_version_by_alias("fsa-distill-student", "champion")
    challenger = client.get_model_version_by_alias("fsa-distill-student", "challenger")
    assert champion.tags["model_digest"] == "digest-b", "the better model holds champion whatever the order"
    assert str(challenger.version) in {r["model_version"] for r in results}


# --- a full artifact disk ---------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_disk(tmp_path: Path):
    """A 1 MiB tmpfs (needs root and mount); skips with the reason where the sandbox forbids it."""
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    result = subprocess.run(check=False, args=["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); see docs/operations.md")
    yield mount_point
    subprocess.run(check=False, args=["umount", "-l", str(mount_point)], capture_output=True)


@pytest.mark.slow
def test_full_artifact_disk_fails_clearly_without_half_registered_model(
    tmp_path: Path, tiny_disk: Path, tiny_student_dir: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from fsa_distill.tasks.tracking.register import register_student

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("faults", artifact_location=tiny_disk.as_uri())
    run_id = client.create_run(experiment).info.run_id
    with pytest.raises(OSError) as failure:
        register_student(tiny_student_dir, "digest-full", 0.5, run_id, "fsa-distill-student", uri)
    assert failure.value.errno == 28 or "No space left" in str(failure.value)
    assert client.search_model_versions("name='fsa-distill-student'") == [], "no version points at half a model"

    # Space freed (the artifact store moved to a roomy disk): the same registration now succeeds.
    subprocess.run(["umount", "-l", str(tiny_disk)], check=True)
    result = register_student(tiny_student_dir, "digest-full", 0.5, run_id, "fsa-distill-student", uri)
    assert result["model_version"] == "1" and result["champion"]


# --- corrupt corpus in the inbox, end to end through the real retrain flow -------------------------------------


def test_corrupt_corpus_in_inbox_end_to_end(tmp_path: Path, monkeypatch) -> None:
    import fsa_distill.flows.retrain_on_new_corpus as retrain_module

    inbox, work = tmp_path / "inbox", tmp_path / "work"
    inbox.mkdir()
    (inbox / "good.jsonl").write_text(json.dumps({"id": "1", "text": "Great pasta."}) + "\n", encoding="utf-8")
    (inbox / "bad.csv").write_text("review\nno text column here\n", encoding="utf-8")
    calls: list[list[Path]] = []

    def recording_distill(config) -> dict:
        calls.append(config.corpus.review_files)
        return {"mlflow_run_id": "r1", "model_version": "1"}

    monkeypatch.setattr(retrain_module, "run_distill", recording_distill)
    monkeypatch.setattr(retrain_module.retrain, "__defaults__",
                        retrain_module.retrain.__defaults__[:-1] + (recording_distill,))
    summary = retrain_module.retrain_on_new_corpus(str(inbox), "demo", None, [f"work_dir={work}"])
    assert summary["distilled"] and len(calls) == 1
    assert (inbox / "rejected" / "bad.csv").exists()
    assert "'text'" in (inbox / "rejected" / "bad.csv.reason.txt").read_text()
    assert (inbox / "good.jsonl").exists(), "accepted corpora stay in the inbox; their digest marks them done"
    again = retrain_module.retrain_on_new_corpus(str(inbox), "demo", None, [f"work_dir={work}"])
    assert not again["distilled"] and len(calls) == 1
