"""Issue #23: `cache import` is all or nothing and counts honestly; store faults are one `error:` line.

Export files are written here record by record in the format `cache export` writes (every StoredAnswer field), so
a bad record can sit after thousands of good ones (past the store's 5000-row write chunk).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fsa_distill.cli.app import app
from fsa_distill.core.errors import StoreError
from fsa_distill.tasks.store.answers import StoredAnswer, open_store
from tests.postgres_fixtures import postgres_url  # noqa: F401

TEACHER = "teacher@abc"


def _entry(i: int) -> StoredAnswer:
    return StoredAnswer(f"k{i:05d}", f"d{i}", "analysis", "3", TEACHER, 0, i, f"answer {i}", 5, "stop")


def _export_file(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _import(*args: str) -> Any:
    return CliRunner().invoke(app, ["cache", "import", *args, "--json"])


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("postgres_url")


def _all(url: str) -> list[dict[str, Any]]:
    with open_store(url) as store:
        return [entry.record() for entry in store.entries()]


def test_a_bad_record_after_thousands_leaves_the_store_as_it_was(store_url: str, tmp_path: Path) -> None:
    with open_store(store_url) as store:
        store.record([_entry(0)])
    before = _all(store_url)
    records = [_entry(i).record() for i in range(1, 6002)] + [{**_entry(9999).record(), "attempt": "1"}]
    result = _import(str(_export_file(tmp_path / "a.jsonl", records)), "--store", store_url)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {tmp_path / 'a.jsonl'}: line 6002: attempt must be an integer below " \
                                    "2147483648, got '1'"
    assert _all(store_url) == before

    # The transaction itself: a failure while the entries stream in rolls back the rows written before it.
    def failing() -> Any:
        yield from (_entry(i) for i in range(1, 6002))
        raise RuntimeError("disk on fire")

    with open_store(store_url) as store, pytest.raises(RuntimeError):
        store.record(failing())
    assert _all(store_url) == before


def test_stats_count_stored_already_there_and_duplicates(store_url: str, tmp_path: Path) -> None:
    with open_store(store_url) as store:
        store.record([_entry(1)])
    records = [_entry(1).record(), _entry(2).record(), _entry(2).record(), _entry(3).record()]
    stats = json.loads(_import(str(_export_file(tmp_path / "a.jsonl", records)), "--store", store_url).stdout)
    assert (stats["records"], stats["stored"], stats["already_in_store"], stats["refused"]) == (4, 2, 2, 0)
    with open_store(store_url) as store:
        assert store.counts()["accepted"] == 3


@pytest.mark.parametrize(("change", "problem"), [
    ({"seed": 2**70}, "seed must be an integer below 9223372036854775808"),
    ({"n_tokens": 2.5}, "n_tokens must be an integer"),
    ({"final": "yes"}, "final must be true or false"),
    ({"response": 5}, "response must be a string, got int"),
    ({"teacher": " "}, "teacher is empty"),
    ({"finish_reason": None}, "finish_reason is missing"),
    ({"reason": ["x"]}, "reason must be a string or null"),
])
def test_ill_typed_export_records_are_refused(tmp_path: Path, change: dict[str, Any], problem: str) -> None:
    path = _export_file(tmp_path / "a.jsonl", [_entry(1).record(), {**_entry(2).record(), **change}])
    result = _import(str(path), "--store", str(tmp_path / "s.sqlite"))
    assert result.exit_code == 2 and f"line 2: {problem}" in result.output, result.output
    assert _all(str(tmp_path / "s.sqlite")) == []


def test_teacher_id_must_agree_and_not_be_empty(tmp_path: Path) -> None:
    path = _export_file(tmp_path / "a.jsonl", [_entry(1).record()])
    store = str(tmp_path / "s.sqlite")
    wrong = _import(str(path), "--store", store, "--teacher-id", "other")
    assert wrong.exit_code == 2 and "teacher 'teacher@abc' disagrees with --teacher-id 'other'" in wrong.output
    empty = _import(str(path), "--store", store, "--teacher-id", "")
    assert empty.exit_code == 2 and "--teacher-id must not be empty" in empty.output
    assert _all(store) == []
    assert json.loads(_import(str(path), "--store", store, "--teacher-id", TEACHER).stdout)["stored"] == 1


def test_line_separator_inside_a_json_string_is_not_a_line_break(tmp_path: Path) -> None:
    exported = _export_file(tmp_path / "a.jsonl", [replace(_entry(1), response="one\u2028two\u2029three").record()])
    assert json.loads(_import(str(exported), "--store", str(tmp_path / "s.sqlite")).stdout)["stored"] == 1
    answers = _export_file(tmp_path / "b.jsonl", [{"ID": 1, "Text": "Nice\u2028staff.", "mixtral_response":
                                                   "The staff were nice\u2028to me."}])
    result = _import(str(answers), "--teacher-id", "t", "--set", f"work_dir={tmp_path}")
    assert result.exit_code == 0 and json.loads(result.stdout)["records"] == 1, result.output


def _folder(path: Path) -> str:
    path.mkdir()
    return str(path)


def _not_a_database(path: Path) -> str:
    path.write_bytes(b"this is not SQLite\n" * 100)
    return str(path)


@pytest.mark.parametrize(("make", "problem"), [
    (_folder, "is a folder, not an SQLite file"),
    (_not_a_database, "not an SQLite database"),
])
def test_sqlite_store_faults_are_one_error_line(tmp_path: Path, make: Any, problem: str) -> None:
    store = make(tmp_path / "store.sqlite")
    exported = _export_file(tmp_path / "a.jsonl", [_entry(1).record()])
    for args in (["import", str(exported)], ["export", str(tmp_path / "out.jsonl")]):
        result = CliRunner().invoke(app, ["cache", *args, "--store", store])
        assert result.exit_code == 2 and result.output.startswith(f"error: answer store {store}: {problem}"), \
            result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_read_only_sqlite_store_is_a_store_error(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "s.sqlite")) as store:
        store.record([_entry(1)])
    (tmp_path / "s.sqlite").chmod(0o444)
    with pytest.raises(StoreError, match="read-only"), open_store(str(tmp_path / "s.sqlite")) as store:
        store.record([_entry(2)])


@pytest.mark.parametrize("content", [b"", b"PAR1 but not really parquet", b'{"key": 1}\n'])
def test_broken_parquet_files_are_one_error_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "a.parquet"
    path.write_bytes(content)
    result = CliRunner().invoke(app, ["cache", "import", str(path), "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 2 and result.output.startswith(f"error: {path}: not a readable Parquet file"), \
        result.output
    assert len(result.output.strip().splitlines()) == 1
    with sqlite3.connect(tmp_path / "s.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 0


def test_deeply_nested_json_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"key": ' + "[" * 100_000 + "]" * 100_000 + "}\n", encoding="utf-8")
    result = _import(str(path), "--store", str(tmp_path / "s.sqlite"), "--teacher-id", "t",
                     "--set", f"work_dir={tmp_path}")
    assert result.exit_code == 2 and result.output.strip() == f"error: {path}: line 1: JSON nested too deeply"
