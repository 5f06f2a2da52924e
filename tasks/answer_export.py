"""Move answers between stores (SQLite ↔ PostgreSQL, one host ↔ a cluster) through JSONL or Parquet files.

An export record is one stored attempt with every field of `CacheEntry`: its key, the teacher id and prompt
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

from fsa_distill.tasks.generation_cache import AnswerStore, CacheEntry

from fsa_distill.core.errors import InputError
from fsa_distill.core.files import atomic_file

ExportFormat = Literal["jsonl", "parquet"]
RECORD_FIELDS = tuple(f.name for f in fields(CacheEntry))
REQUIRED_FIELDS = ("key", "review_digest", "prompt", "prompt_version", "teacher", "attempt", "response")
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
        return isinstance(json.loads(first), dict) and "key" in json.loads(first)
    except (OSError, ValueError):
        return False


def read_store_export(path: Path) -> Iterator[CacheEntry]:
    """The attempts of an exported file, lazily; a malformed record is an InputError naming its line/row."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH):
            for record in batch.to_pylist():
                row += 1
                yield _checked(record, path, f"row {row}")
        return
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise InputError(path, f"line {number}", f"not JSON: {error}") from None
            yield _checked(record, path, f"line {number}")


def _checked(record: Any, path: Path, where: str) -> CacheEntry:
    if not isinstance(record, dict):
        raise InputError(path, where, "each record must be an object")
    missing = [name for name in REQUIRED_FIELDS if record.get(name) is None]
    if missing:
        raise InputError(path, where, f"an exported answer needs {', '.join(missing)}")
    return CacheEntry.from_record(record)


def import_store_export(path: Path, store: AnswerStore) -> dict[str, Any]:
    """Every attempt of an exported file put into `store` under its own key (idempotent)."""
    entries = read_store_export(path)
    records = new_accepted = 0
    before = store.counts()["accepted"]
    while batch := list(islice(entries, _BATCH)):
        store.record(batch)
        records += len(batch)
    new_accepted = store.counts()["accepted"] - before
    return {"records": records, "new_accepted_in_store": new_accepted, "store": store.location}
