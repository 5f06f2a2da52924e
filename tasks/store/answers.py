"""Durable per-answer store of teacher responses: SQLite (embedded, one host) or PostgreSQL (shared by hosts).

One row per (review text, prompt name+version+template digest, teacher model+weights digest, sampling
settings): rerunning on a grown corpus generates only the new reviews, and a crash loses at most the answers in
flight. Accepted answers and rejected attempts live in separate tables, so garbage never mixes with the corpus
but is never asked for again either. Inserts are `INSERT ... ON CONFLICT DO NOTHING` on the key in both
backends (SQLite >= 3.24 has the same syntax), so any number of writers is safe: the first answer for a key
wins, nothing is stored twice. The queries are SQLAlchemy Core statements on one pair of `Table`s, written once;
the backends differ only in how they connect, their dialect's INSERT and how table creation is serialised.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from functools import wraps
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote

from filelock import FileLock
from sqlalchemy import (
    DOUBLE_PRECISION,
    URL,
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    Select,
    Table,
    Text,
    create_engine,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from fsa_distill.core.digests import sha256_json, sha256_text
from fsa_distill.core.errors import StoreError
from fsa_distill.core.redact import REDACTED, redact_text, redact_url
from fsa_distill.core.urls import POSTGRES, libpq_url, store_target, url_password

_log = logging.getLogger(__name__)
_LOOKUP_CHUNK = 500  # keys per `IN (...)`: SQLite caps the bound parameters of one statement
_EXPORT_BATCH = 5000

# One schema for both backends (the column names and types the stores have always had; SQLite takes
# DOUBLE PRECISION as a REAL column). `create_all` creates a missing table and leaves an existing one alone.
_METADATA = MetaData()


RESPONSES = Table(
    "responses", _METADATA,
    Column("key", Text, primary_key=True),
    Column("review_digest", Text, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("prompt_version", Text, nullable=False),
    Column("teacher", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("response", Text, nullable=False),
    Column("n_tokens", Integer, nullable=False),
    Column("finish_reason", Text, nullable=False),
    Column("created", DOUBLE_PRECISION, nullable=False),
)
REJECTED = Table(
    "rejected", _METADATA,
    Column("key", Text, primary_key=True),
    Column("attempt", Integer, primary_key=True, autoincrement=False),
    Column("review_digest", Text, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("prompt_version", Text, nullable=False),
    Column("teacher", Text, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("response", Text, nullable=False),
    Column("n_tokens", Integer, nullable=False),
    Column("finish_reason", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("final", Integer, nullable=False),
    Column("created", DOUBLE_PRECISION, nullable=False),
)


def answer_key(review: str, prompt_key: str, teacher_key: str, sampling: dict[str, Any]) -> str:
    """The content digest naming one answer: review text, prompt identity, teacher identity, sampling."""
    return sha256_json(
        {"review": sha256_text(review), "prompt": prompt_key, "teacher": teacher_key, "sampling": sampling}
    )


@dataclass(frozen=True)
class StoredAnswer:
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

    def record(self) -> dict[str, Any]:
        """The entry as an export record: every field, teacher id and prompt version included."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StoredAnswer:
        names = {f.name for f in fields(cls)}
        values = {name: record[name] for name in names if name in record}
        values["final"] = bool(values.get("final", True))
        return cls(**values)


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a store method through `AnswerStore._call` (inside `guard`; PostgreSQL also reconnects)."""

    @wraps(method)
    def wrapper(self: AnswerStore, *args: Any, **kwargs: Any) -> Any:
        return self._call(method, *args, **kwargs)

    return wrapper


class AnswerStore:
    """The store's queries, written once for both backends (`_insert` is the dialect's INSERT with ON CONFLICT)."""

    _insert: Callable[[Table], Any]
    location: str  # path or redacted URL: safe to log

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.conn: Connection | None = None

    @contextmanager
    def guard(self) -> Iterator[None]:
        """The backend's own errors become a StoreError naming this store (redacted) and the cause."""
        try:
            yield
        except StoreError:
            raise
        except Exception as error:
            # SQLAlchemy wraps the driver's error, with the statement and its parameters: name the driver's own.
            cause = error.orig if isinstance(error, DBAPIError) and isinstance(error.orig, Exception) else error
            fault = self._fault(cause)
            if fault is None:
                raise
            raise fault from None

    def _fault(self, error: Exception) -> StoreError | None:
        return None

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.guard():
            return method(self, *args, **kwargs)

    def _engine_options(self) -> dict[str, Any]:
        """One connection per store, opened and closed with it (NullPool), as a plain DB-API connect would be;
        closing it discards an open transaction, so no reset on return (a dead connection's reset only logs)."""
        return {"poolclass": NullPool, "pool_reset_on_return": None, "hide_parameters": True}

    def _select(self, table: Table, keys: list[str], *where: Any) -> Iterator[dict[str, Any]]:
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            query = select(table).where(table.c["key"].in_(keys[start : start + _LOOKUP_CHUNK]), *where)
            for row in self.conn.execute(query).mappings().all():
                yield dict(row)

    @_guarded
    def lookup(self, keys: Iterable[str]) -> dict[str, StoredAnswer]:
        """Finished keys: the accepted answer, else the final rejected attempt. Unfinished keys are absent."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, StoredAnswer] = {}
        for row in self._select(REJECTED, keys, REJECTED.c["final"] == 1):
            found[row["key"]] = _entry(row)
        for row in self._select(RESPONSES, keys):  # an accepted answer beats any rejection
            found[row["key"]] = _entry(row)
        self.conn.commit()  # end the read transaction (PostgreSQL): later reads see other writers' commits
        return found

    @_guarded
    def rejected_attempts(self, keys: Iterable[str]) -> list[StoredAnswer]:
        """Every rejected attempt (re-asks included) for these keys, for the rejected dataset."""
        rows = list(self._select(REJECTED, list(dict.fromkeys(keys))))
        self.conn.commit()
        return sorted((_entry(row) for row in rows), key=lambda e: (e.key, e.attempt))

    @_guarded
    def record(self, entries: Iterable[StoredAnswer]) -> int:
        """Write attempts in one transaction (all durable, or none: an error while `entries` is iterated rolls
        everything back); streamed in chunks. Returns how many were new (the rest were already there)."""
        now, stored, pending = time.time(), 0, iter(entries)
        try:
            while chunk := list(islice(pending, _EXPORT_BATCH)):
                rows: dict[Table, list[dict[str, Any]]] = {RESPONSES: [], REJECTED: []}
                for e in chunk:
                    table = RESPONSES if e.valid else REJECTED
                    row = {**asdict(e), "created": now, "final": int(e.final)}
                    rows[table].append({column.name: row[column.name] for column in table.columns})
                for table, values in rows.items():
                    if values:
                        stored += self._insert_new(table, values)
        except BaseException:
            with suppress(DBAPIError):  # a lost connection has nothing to roll back: the first error is the news
                self.conn.rollback()
            raise
        self.conn.commit()
        return stored

    def _insert_new(self, table: Table, rows: list[dict[str, Any]]) -> int:
        """Insert the rows whose key is not stored yet (one executemany); how many it inserted (the driver's
        rowcount, which SQLAlchemy keeps for an executemany only when asked: `preserve_rowcount`)."""
        statement = self._insert(table).on_conflict_do_nothing(index_elements=list(table.primary_key.columns))
        return self.conn.execute(statement.execution_options(preserve_rowcount=True), rows).rowcount

    def entries(self) -> Iterator[StoredAnswer]:
        """Every stored attempt, accepted answers first, streamed in key order (for `cache export`)."""
        for table in (RESPONSES, REJECTED):
            yield from self._stream(select(table).order_by(table.c["key"], table.c["attempt"]))

    def _stream(self, query: Select[Any]) -> Iterator[StoredAnswer]:
        # yield_per streams the rows (a server-side cursor on PostgreSQL): a 2-million-row export never sits in
        # this process's memory.
        with self.guard(), self.conn.execute(query.execution_options(yield_per=_EXPORT_BATCH)) as result:
            for batch in result.mappings().partitions():
                yield from (_entry(row) for row in batch)
            self.conn.commit()

    @_guarded
    def counts(self) -> dict[str, Any]:
        """Rows per table and rejected attempts per reason (whole store, all runs)."""
        accepted = self.conn.execute(select(func.count()).select_from(RESPONSES)).scalar_one()
        rows = self.conn.execute(select(REJECTED.c["reason"], func.count()).group_by(REJECTED.c["reason"]))
        reasons = {reason: n for reason, n in rows}
        self.conn.commit()
        return {"accepted": accepted, "rejected_attempts": sum(reasons.values()), "reasons": reasons}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SQLiteAnswerStore(AnswerStore):
    """The embedded backend: one SQLite file in WAL mode (readers never block, writers queue)."""

    _insert = staticmethod(sqlite.insert)

    def __init__(self, path: Path, timeout_s: float = 60.0) -> None:
        super().__init__()
        self.path = Path(path)
        self.location = str(self.path)
        if self.path.is_dir():
            raise StoreError(f"answer store {self.location}", "is a folder, not an SQLite file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.guard():
            self._open(timeout_s)

    def _open(self, timeout_s: float) -> None:
        self.engine = create_engine(URL.create("sqlite", database=str(self.path)), **self._engine_options(),
                                    # sqlite3's own thread check, which SQLAlchemy turns off for its pools
                                    connect_args={"timeout": timeout_s, "check_same_thread": True})
        # Switching a new file to WAL takes an exclusive lock and SQLite answers "database is locked" at once,
        # without waiting, when two processes do it together (seen in CI): set-up is serialised by a file lock.
        with FileLock(f"{self.path}.init.lock", timeout=timeout_s):
            self.conn = self.engine.connect()
            self.conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            _METADATA.create_all(self.conn)
            self.conn.commit()
        self.conn.exec_driver_sql("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash

    def _fault(self, error: Exception) -> StoreError | None:
        if not isinstance(error, sqlite3.Error):
            return None
        problem = str(error)
        if isinstance(error, sqlite3.DatabaseError) and "not a database" in problem:
            problem = "not an SQLite database (file is not a database)"
        elif "readonly" in problem:
            problem = "read-only: cannot write to this file (attempt to write a readonly database)"
        return StoreError(f"answer store {self.location}", problem)


# Any constant: every writer takes this advisory lock while creating the tables, since two concurrent
# `CREATE TABLE` after the same existence check can both pass the check and one then fails on PostgreSQL's catalog.
_SCHEMA_LOCK_ID = 0x46534144


class AnswerStoreUnreachable(StoreError, ConnectionError):
    """The PostgreSQL store did not answer (down, restarting, no route): transient, so a stage retries it."""


class PostgresAnswerStore(AnswerStore):
    """The shared backend: a PostgreSQL database that every host of a cluster writes (psycopg 3)."""

    _insert = staticmethod(postgresql.insert)

    def __init__(self, url: str, timeout_s: float = 60.0, reconnect_s: float = 120.0) -> None:
        super().__init__()
        self.location = redact_url(url)
        self._url, self._timeout_s, self.reconnect_s = url, timeout_s, reconnect_s
        self.reconnects = 0
        password = url_password(url)
        self._secrets = sorted({password, unquote(password)} - {""}, key=len, reverse=True) if password else []
        with self.guard():
            self._connect()

    def _dbapi_connect(self) -> Any:
        import psycopg  # only when a postgresql:// store is configured

        return psycopg.connect(libpq_url(self._url), connect_timeout=int(self._timeout_s))

    def _connect(self) -> None:
        if self.engine is None:
            # psycopg connects (creator) rather than SQLAlchemy's URL parser, which ends a raw password at its
            # first `#`, `/` or `@`; core/urls.libpq_url encodes the URL as libpq needs it.
            self.engine = create_engine("postgresql+psycopg://", creator=self._dbapi_connect,
                                        **self._engine_options())
        self.conn = self.engine.connect()
        self.conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_ID)))
        _METADATA.create_all(self.conn)
        self.conn.commit()

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A connection lost mid-call (the server restarted or failed over) is reopened and the whole call run
        again, for up to `reconnect_s`. Safe: a call is one transaction and every write is ON CONFLICT DO
        NOTHING, so a replay neither loses nor duplicates an answer (an insert whose commit was acknowledged
        only by the lost connection counts as "already there"). A one-shot iterator argument cannot be replayed:
        that call fails with the StoreError at once."""
        if any(isinstance(arg, Iterator) for arg in (*args, *kwargs.values())):
            return super()._call(method, *args, **kwargs)
        retrying = Retrying(retry=retry_if_exception_type(AnswerStoreUnreachable), reraise=True,
                            stop=stop_after_delay(self.reconnect_s), wait=wait_exponential(0.2, max=5),
                            before_sleep=self._log_reconnect)
        for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self._reopen()
                return super()._call(method, *args, **kwargs)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _lost(self) -> bool:
        """No usable connection: none yet, SQLAlchemy invalidated it, or psycopg saw it close."""
        if self.conn is None or self.conn.closed or self.conn.invalidated:
            return True
        return bool(self.conn.connection.dbapi_connection.closed)

    def _reopen(self) -> None:
        """Roll back a live connection's failed transaction, or open a new connection for a lost one."""
        with self.guard():
            if not self._lost():
                self.conn.rollback()
                return
            if self.conn is not None:
                self.conn.close()
            self._connect()
            self.reconnects += 1

    def _log_reconnect(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        _log.warning("%s; reconnecting (attempt %d)", error, state.attempt_number)

    def _fault(self, error: Exception) -> StoreError | None:
        import psycopg

        if not isinstance(error, psycopg.Error):
            return None
        store = f"answer store {self.location}"
        # The message may quote the URL: never its password. A refused login (SQLSTATE class 28) is not transient.
        problem = redact_text(" ".join(str(error).split()))
        for secret in self._secrets:  # belt and braces: libpq may quote a piece of the conninfo
            problem = problem.replace(secret, REDACTED)
        login_refused = (error.sqlstate or "").startswith("28") or "authentication failed" in problem
        if isinstance(error, psycopg.OperationalError) and not login_refused:
            return AnswerStoreUnreachable(store, problem)
        return StoreError(store, problem)


def open_store(location: str | Path) -> AnswerStore:
    """`postgresql://...` (any case, driver suffix allowed) opens the shared PostgreSQL store; a path or
    `sqlite:///path` a SQLite file; any other URL is an InputError."""
    kind, target = store_target(location)
    if kind == POSTGRES:
        return PostgresAnswerStore(target)
    return SQLiteAnswerStore(Path(target))


def store_location(work_dir: Path, cache_url: str | None) -> str:
    """Where a run's answers live: the configured URL or path, else `<work_dir>/cache/teacher_responses.sqlite`."""
    return cache_url or str(Path(work_dir) / "cache" / "teacher_responses.sqlite")


def _entry(row: Mapping[str, Any]) -> StoredAnswer:
    return StoredAnswer(
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
        reason=row.get("reason"),
        final=bool(row["final"]) if "final" in row else True,
    )
