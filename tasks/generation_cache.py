"""Durable per-answer cache of teacher responses (stdlib SQLite, WAL mode).

One row per (review text, prompt name+version+template digest, teacher model+weights digest, sampling
settings): rerunning on a grown corpus generates only the new reviews, and a crash loses at most the chunk in
flight. Accepted answers and rejected attempts live in separate tables, so garbage never mixes with the
corpus but is never asked for again either. `INSERT OR IGNORE` plus WAL make two concurrent runs safe: both
may write, the first answer for a key wins, readers never block.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from filelock import FileLock

from fsa_distill.core.digests import sha256_json, sha256_text

_LOOKUP_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    review_digest TEXT NOT NULL,
    prompt TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    teacher TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    response TEXT NOT NULL,
    n_tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    review_digest TEXT NOT NULL,
    prompt TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    teacher TEXT NOT NULL,
    seed INTEGER NOT NULL,
    response TEXT NOT NULL,
    n_tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    reason TEXT NOT NULL,
    final INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (key, attempt)
);
"""


def cache_key(review: str, prompt_key: str, teacher_key: str, sampling: dict[str, Any]) -> str:
    """The content digest naming one answer: review text, prompt identity, teacher identity, sampling."""
    return sha256_json(
        {"review": sha256_text(review), "prompt": prompt_key, "teacher": teacher_key, "sampling": sampling}
    )


@dataclass(frozen=True)
class CacheEntry:
    """One attempt at one key. `reason` None = accepted; `final` marks the last attempt of a rejected key."""

    key: str
    review_digest: str
    prompt: str
    prompt_version: str
    teacher: str
    attempt: int
    seed: int
    response: str
    n_tokens: int
    finish_reason: str
    reason: str | None = None
    final: bool = True

    @property
    def valid(self) -> bool:
        return self.reason is None


class GenerationCache:
    def __init__(self, path: Path, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=timeout_s)
        self.conn.row_factory = sqlite3.Row
        # Switching a new file to WAL takes an exclusive lock and SQLite answers "database is locked" at once,
        # without waiting, when two processes do it together (seen in CI): set-up is serialised by a file lock.
        with FileLock(f"{self.path}.init.lock", timeout=timeout_s):
            self.conn.execute("PRAGMA journal_mode=WAL")
            with self.conn:
                self.conn.executescript(_SCHEMA)
        self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash

    def _select(self, table: str, keys: list[str], where: str = "") -> Iterator[sqlite3.Row]:
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            yield from self.conn.execute(f"SELECT * FROM {table} WHERE key IN ({marks}) {where}", chunk)

    def lookup(self, keys: Iterable[str]) -> dict[str, CacheEntry]:
        """Finished keys: the accepted answer, else the final rejected attempt. Unfinished keys are absent."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, CacheEntry] = {}
        for row in self._select("rejected", keys, "AND final = 1"):
            found[row["key"]] = _entry(row)
        for row in self._select("responses", keys):  # an accepted answer beats any rejection
            found[row["key"]] = _entry(row)
        return found

    def rejected_attempts(self, keys: Iterable[str]) -> list[CacheEntry]:
        """Every rejected attempt (re-asks included) for these keys, for the rejected dataset."""
        rows = self._select("rejected", list(dict.fromkeys(keys)))
        return sorted((_entry(row) for row in rows), key=lambda e: (e.key, e.attempt))

    def record(self, entries: Iterable[CacheEntry]) -> None:
        """Write a chunk of attempts in one transaction: all of them are durable, or none."""
        now = time.time()
        accepted, rejected = [], []
        for e in entries:
            fields = asdict(e)
            fields.update(created=now, final=int(e.final))
            (accepted if e.valid else rejected).append(fields)
        with self.conn:
            self.conn.executemany(
                "INSERT OR IGNORE INTO responses VALUES (:key, :review_digest, :prompt, :prompt_version,"
                " :teacher, :attempt, :seed, :response, :n_tokens, :finish_reason, :created)",
                accepted,
            )
            self.conn.executemany(
                "INSERT OR IGNORE INTO rejected VALUES (:key, :attempt, :review_digest, :prompt,"
                " :prompt_version, :teacher, :seed, :response, :n_tokens, :finish_reason, :reason, :final,"
                " :created)",
                rejected,
            )

    def counts(self) -> dict[str, Any]:
        """Rows per table and rejected attempts per reason (whole cache, all runs)."""
        accepted = self.conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        reasons = dict(self.conn.execute("SELECT reason, COUNT(*) FROM rejected GROUP BY reason").fetchall())
        return {"accepted": accepted, "rejected_attempts": sum(reasons.values()), "reasons": reasons}

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _entry(row: sqlite3.Row) -> CacheEntry:
    names = row.keys()
    return CacheEntry(
        key=row["key"],
        review_digest=row["review_digest"],
        prompt=row["prompt"],
        prompt_version=row["prompt_version"],
        teacher=row["teacher"],
        attempt=row["attempt"],
        seed=row["seed"],
        response=row["response"],
        n_tokens=row["n_tokens"],
        finish_reason=row["finish_reason"],
        reason=row["reason"] if "reason" in names else None,
        final=bool(row["final"]) if "final" in names else True,
    )


