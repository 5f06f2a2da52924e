"""A real PostgreSQL database per test at 127.0.0.1:5432 (trust auth, user postgres), dropped afterwards; and a
private PostgreSQL server for drills that restart it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_HOST = os.environ.get("FSA_TEST_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("FSA_TEST_PG_PORT", "5432")
PG_ADMIN_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a brand-new, uniquely named database; it is dropped (connections and all) after the test."""
    import psycopg

    name = f"fsa_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as error:
        pytest.skip(f"no PostgreSQL at {PG_HOST}:{PG_PORT}: {error}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PrivatePostgres:
    """A PostgreSQL server of the test's own: `initdb` into a temporary folder, `pg_ctl` on a free loopback port.

    For drills that stop or restart the server, which must never happen to the machine's shared one. As root
    (this sandbox) the server runs as the `postgres` user, which cannot enter pytest's 0700 tmp folders, so the
    data folder is a `tempfile` folder handed to that user."""

    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self.bin_dir, self.root, self.port = bin_dir, root, port
        self.data, self.log = root / "data", root / "server.log"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._as_server_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        command = [*self._as_server_user, str(self.bin_dir / args[0]), *args[1:]]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stdout}{result.stderr}\n{log}")

    def init_and_start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options,
                  *extra)

    def restart(self) -> None:
        """Restart as `systemctl restart postgresql` does: a fast shutdown cuts every session, then start (-w:
        returns once the server accepts connections again)."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60")

    def scalar(self, sql: str) -> Any:
        import psycopg

        with psycopg.connect(self.url, connect_timeout=10) as connection:
            return connection.execute(sql).fetchone()[0]


def _postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian keeps them out of PATH), else initdb on PATH."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private PostgreSQL (see PrivatePostgres); stopped and deleted after the test."""
    from tests.teacher_fixtures import free_port

    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    root = Path(tempfile.mkdtemp(prefix="fsa-pg-"))
    server = PrivatePostgres(bin_dir, root, free_port())
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        server.init_and_start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
