"""Move answers between stores (SQLite ↔ PostgreSQL, one host ↔ a cluster) through JSONL or Parquet files.

An export record is one stored attempt with every field of `StoredAnswer`: its key, the teacher id and prompt
version it was generated with, the answer, and the rejection reason (null when accepted). Importing such a file
puts the attempts back under the same keys, so a run on the other store finds them as its own. Both directions
stream in batches: a store of millions of answers never sits in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from fsa_distill.core.errors import InputError
from fsa_distill.core.files import atomic_file
from fsa_distill.tasks.store.answers import AnswerStore, StoredAnswer

ExportFormat = Literal["jsonl", "parquet"]
RECORD_FIELDS = tuple(f.name for f in fields(StoredAnswer))
REQUIRED_FIELDS = ("key", "review_digest", "prompt", "prompt_version", "teacher", "attempt", "seed", "response",
                   "n_tokens", "finish_reason")
_BATCH = 5000


def _schema() -> Any:
    import pyarrow as pa

    types = {"attempt": pa.int32(), "seed": pa.int64(), "n_tokens": pa.int32(), "final": pa.bool_()}
    return pa.schema([(name, types.get(name, pa.string())) for name in RECORD_FIELDS])


def export_store(store: AnswerStore, out: Path, fmt: ExportFormat) -> dict[str, Any]:
    """Every attempt in `store` written to `out` (atomically: a failed export leaves no half file)."""
    counts = {"accepted": 0, "rejected_attempts": 0}
    entries = store.entries()
    if fmt == "jsonl":
        with atomic_file(Path(out)) as handle:
            for entry in entries:
                counts["accepted" if entry.valid else "rejected_attempts"] += 1
                handle.write(json.dumps(entry.record(), ensure_ascii=False) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_file(Path(out), "wb") as handle, pq.ParquetWriter(handle, _schema()) as writer:
            while batch := list(islice(entries, _BATCH)):
                for entry in batch:
                    counts["accepted" if entry.valid else "rejected_attempts"] += 1
                writer.write_table(pa.Table.from_pylist([e.record() for e in batch], schema=_schema()))
    return {**counts, "records": sum(counts.values()), "format": fmt, "out": str(out), "store": store.location}


def is_store_export(path: Path) -> bool:
    """True for a file written by `cache export` (Parquet, or JSONL whose first record carries a `key`)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return True
    try:
        with open(path, encoding="utf-8-sig") as handle:
            first = next((line for line in handle if line.strip()), "")
        record = json.loads(first)
    except (OSError, ValueError, RecursionError):  # not one: the answer-file reader names the problem
        return False
    return isinstance(record, dict) and "key" in record


def read_store_export(path: Path, teacher_id: str | None = None) -> Iterator[StoredAnswer]:
    """The attempts of an exported file, lazily; a malformed record (a missing or ill-typed field, another
    teacher than an explicit `teacher_id`) is an InputError naming its line/row."""
    path = Path(path)
    if path.suffix == ".parquet":
        yield from _parquet_records(path, teacher_id)
        return
    with open(path, encoding="utf-8-sig") as handle:  # file iteration splits at \n only: U+2028 stays inside
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise InputError(path, f"line {number}", f"not JSON: {error}") from None
            except RecursionError:
                raise InputError(path, f"line {number}", "JSON nested too deeply") from None
            yield _checked(record, path, f"line {number}", teacher_id)


def _parquet_records(path: Path, teacher_id: str | None) -> Iterator[StoredAnswer]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=_BATCH)
        row = 0
        for batch in batches:
            for record in batch.to_pylist():
                row += 1
                yield _checked(record, path, f"row {row}", teacher_id)
    except (pa.ArrowException, OSError) as error:
        if isinstance(error, OSError) and error.filename is not None:
            raise
        raise InputError(path, None, f"not a readable Parquet file ({_one_line(str(error))})") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


# The store's column types (answers.RESPONSES / REJECTED): text, INTEGER (32-bit) and BIGINT (64-bit) columns.
_TEXT_FIELDS = ("key", "review_digest", "prompt", "prompt_version", "teacher", "response", "finish_reason")
_INT_BOUNDS = {"attempt": 2**31, "n_tokens": 2**31, "seed": 2**63}


def _field_problems(record: dict[str, Any]) -> list[str]:
    """What is wrong with one export record's fields, as the store's columns define them; empty when fine."""
    problems = [f"{name} is missing" for name in REQUIRED_FIELDS if record.get(name) is None]
    for name in _TEXT_FIELDS:
        if record.get(name) is not None and not isinstance(record[name], str):
            problems.append(f"{name} must be a string, got {type(record[name]).__name__}")
    for name in ("key", "teacher", "prompt"):
        if isinstance(record.get(name), str) and not record[name].strip():
            problems.append(f"{name} is empty")
    for name, bound in _INT_BOUNDS.items():
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not -bound <= value < bound):
            problems.append(f"{name} must be an integer below {bound}, got {value!r}"[:120])
    if record.get("reason") is not None and not isinstance(record["reason"], str):
        problems.append("reason must be a string or null")
    if record.get("final") is not None and record["final"] not in (True, False, 0, 1):
        problems.append("final must be true or false")
    return problems


def _checked(record: Any, path: Path, where: str, teacher_id: str | None) -> StoredAnswer:
    if not isinstance(record, dict):
        raise InputError(path, where, "each record must be an object")
    problems = _field_problems(record)
    if problems:
        raise InputError(path, where, "; ".join(problems))
    if teacher_id is not None and record["teacher"] != teacher_id:
        raise InputError(path, where, f"teacher {record['teacher']!r} disagrees with --teacher-id {teacher_id!r} "
                                      "(an exported answer keeps its teacher; leave --teacher-id out)")
    return StoredAnswer.from_record(record)


def import_store_export(path: Path, store: AnswerStore, teacher_id: str | None = None) -> dict[str, Any]:
    """Every attempt of an exported file put into `store` under its own key, all or nothing.

    The file is read twice: once to check every record (nothing written), then once more into one transaction,
    so a bad record anywhere leaves the store as it was and millions of records never sit in memory."""
    records = sum(1 for _ in read_store_export(path, teacher_id))
    stored = store.record(read_store_export(path, teacher_id))
    return {"records": records, "stored": stored, "already_in_store": records - stored, "refused": 0,
            "store": store.location}
