"""The answer store's two backends (SQLite, PostgreSQL): concurrent writers on one PostgreSQL store, export →
import round trips between the backends, and no password in what the store reports."""

from __future__ import annotations

import json
import multiprocessing
import traceback
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fsa_distill.cli.app import app
from fsa_distill.core.config import resolve_config
from fsa_distill.models.teacher.base import GenerationRequest
from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses
from fsa_distill.tasks.store.answers import SQLiteAnswerStore, StoredAnswer, open_store
from tests.postgres_fixtures import postgres_url  # noqa: F401
from tests.teacher_fixtures import FakeTeacher, make_reviews

N_KEYS = 600


def _entry(i: int, writer: str) -> StoredAnswer:
    rejected = i % 7 == 0
    return StoredAnswer(f"k{i:05d}", f"d{i}", "analysis" if i % 2 else "rewrite", "3", "teacher@abc", 0, i,
                      f"answer {i} by {writer} — ünïcode", 5, "stop", reason="no_targets" if rejected else None)


def _write_half_overlapping(url: str, writer: str, start: int, barrier: Any, error_dir: str) -> None:
    """Writes keys [start, start + N_KEYS) in batches of 25, each batch after a look-up, as a generate run does."""
    try:
        with open_store(url) as store:
            barrier.wait(timeout=60)
            for first in range(start, start + N_KEYS, 25):
                batch = [_entry(i, writer) for i in range(first, first + 25)]
                missing = [e for e in batch if e.key not in store.lookup(e.key for e in batch)]
                store.record(missing)
            store.record([_entry(i, writer) for i in range(start, start + N_KEYS)])  # all again: ignored
    except BaseException:
        barrier.abort()
        Path(error_dir, f"error-{writer}.txt").write_text(traceback.format_exc(), encoding="utf-8")
        raise


def test_two_processes_writing_one_postgres_store_lose_nothing_and_duplicate_nothing(
    postgres_url: str, tmp_path: Path  # noqa: F811
) -> None:
    context = multiprocessing.get_context("spawn")  # not fork: the test process may hold threads
    barrier = context.Barrier(2)
    writers = [context.Process(target=_write_half_overlapping, args=(postgres_url, name, start, barrier,
                                                                      str(tmp_path)))
               for name, start in (("a", 0), ("b", N_KEYS // 2))]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=180)
    errors = "\n".join(path.read_text() for path in tmp_path.glob("error-*.txt"))
    assert [writer.exitcode for writer in writers] == [0, 0], errors

    expected = {f"k{i:05d}" for i in range(N_KEYS + N_KEYS // 2)}
    with open_store(postgres_url) as store:
        rows = list(store.entries())
        counts = store.counts()
    keys = [row.key for row in rows]
    assert len(keys) == len(set(keys)) == len(expected)  # no duplicate, no lost row
    assert set(keys) == expected
    n_rejected = sum(1 for i in range(N_KEYS + N_KEYS // 2) if i % 7 == 0)
    assert counts["accepted"] == len(expected) - n_rejected and counts["rejected_attempts"] == n_rejected
    # The overlap was written by both: one of them won, whole.
    overlap = {row.key: row.response for row in rows if N_KEYS // 2 <= int(row.key[1:]) < N_KEYS}
    assert {response.split(" by ")[1][0] for response in overlap.values()} <= {"a", "b"}


def _bad_every_third(request: GenerationRequest) -> str | None:
    """Analyses of every third review are garbage (rejected twice: the attempt and its re-ask)."""
    content = request.messages[0]["content"] if request.messages else ""
    number = int(content.rsplit("Pasta", 1)[-1].split()[0])
    return "I cannot help with that." if content.startswith("Analyze") and number % 3 == 0 else None


def _records(store_location: str) -> list[dict[str, Any]]:
    with open_store(store_location) as store:
        return sorted((entry.record() for entry in store.entries()), key=lambda r: (r["key"], r["attempt"]))


def _cli(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["cache", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_then_import_round_trips_every_answer_between_sqlite_and_postgres(
    postgres_url: str, tmp_path: Path, fmt: str  # noqa: F811
) -> None:
    sqlite_path = tmp_path / "work" / "cache" / "teacher_responses.sqlite"
    # A real generate run fills the SQLite store: accepted answers, rejected attempts and their re-asks.
    config = resolve_config("demo", overrides=[f"work_dir={tmp_path / 'work'}"], environ={})
    stats = generate_responses(make_reviews(12), GenerateSettings.of(config), tmp_path / "out", progress=False,
                               teacher=FakeTeacher(answer=_bad_every_third), work_dir=config.work_dir)
    assert stats["rejected"] > 0 and stats["rows"] > 0
    original = _records(str(sqlite_path))

    # SQLite → file → PostgreSQL
    exported = _cli("export", str(tmp_path / f"a.{fmt}"), "--format", fmt, "--set", f"work_dir={tmp_path / 'work'}")
    assert exported["records"] == len(original)
    imported = _cli("import", str(tmp_path / f"a.{fmt}"), "--store", postgres_url)
    assert imported["records"] == len(original)
    assert _records(postgres_url) == original

    # PostgreSQL → file → a fresh SQLite store (the config's store this time)
    _cli("export", str(tmp_path / f"b.{fmt}"), "--format", fmt, "--store", postgres_url)
    _cli("import", str(tmp_path / f"b.{fmt}"), "--set", f"work_dir={tmp_path / 'work2'}",
         "--set", f"generation.cache_url={tmp_path / 'other.sqlite'}")
    assert _records(str(tmp_path / "other.sqlite")) == original
    again = _cli("import", str(tmp_path / f"b.{fmt}"), "--store", str(tmp_path / "other.sqlite"))
    assert (again["stored"], again["already_in_store"]) == (0, len(original))  # idempotent

    # A run on the PostgreSQL store finds every answer as its own and asks the teacher nothing.
    teacher = FakeTeacher(answer=_bad_every_third)
    rerun = generate_responses(make_reviews(12), GenerateSettings.of(config), tmp_path / "out2",
                               progress=False, teacher=teacher,
                               cache_path=postgres_url, work_dir=config.work_dir)
    assert teacher.n_requests == 0 and rerun["rows"] == stats["rows"]


def test_store_password_never_reported(postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    # Trust auth ignores the password, so the URL connects while carrying one.
    with_password = postgres_url.replace("postgres@", "postgres:s3cret-pw@")
    config = resolve_config("demo", overrides=[f"work_dir={tmp_path}", f"generation.cache_url={with_password}"],
                            environ={})
    assert "s3cret-pw" not in config.model_dump_json()
    stats = generate_responses(make_reviews(2), GenerateSettings.of(config), tmp_path / "out",
                               progress=False, teacher=FakeTeacher(), work_dir=config.work_dir)
    assert "s3cret-pw" not in json.dumps(stats) and stats["cache_path"].startswith("postgresql://***@")
    exported = _cli("export", str(tmp_path / "a.jsonl"), "--set", f"generation.cache_url={with_password}")
    assert "s3cret-pw" not in json.dumps(exported) and exported["records"] == 4


def test_unknown_store_file_is_one_error_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["cache", "export", str(tmp_path / "a.jsonl"), "--store",
                                      str(tmp_path / "missing.sqlite")])
    assert result.exit_code == 2 and "no answer store" in result.output
    assert not (tmp_path / "missing.sqlite").exists() and not (tmp_path / "a.jsonl").exists()
    with SQLiteAnswerStore(tmp_path / "s.sqlite") as store:
        store.record([_entry(1, "a")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_entry(1, "a").record()) + "\n" + json.dumps({"key": "x"}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["cache", "import", str(bad), "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 2 and "line 2" in result.output


@pytest.mark.slow  # an ephemeral Prefect server: 27 s on a quiet machine, 75 s on a loaded one
def test_prefect_run_shows_the_generation_progress(tmp_path: Path) -> None:
    """The generate stage's progress artifact reaches 100% in the Prefect run (ephemeral server)."""
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from fsa_distill.tasks.stages.stage_task import prefect_progress

    key = f"teacher-answers-{tmp_path.name.lower().replace('_', '-')}"[:60]

    @task
    def generate() -> dict[str, Any]:
        config = resolve_config("demo", overrides=[f"work_dir={tmp_path}", "generation.batch_size=4"], environ={})
        return generate_responses(make_reviews(6), GenerateSettings.of(config), tmp_path / "out",
                                  progress=False, teacher=FakeTeacher(),
                                  on_progress=prefect_progress(key=key, every_s=0.0), work_dir=config.work_dir)

    @flow
    def run() -> dict[str, Any]:
        return generate()

    assert run()["generated"] == 12
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert artifacts and artifacts[0].type == "progress"
    assert float(artifacts[0].data) == 100.0 and "12 of 12" in artifacts[0].description
