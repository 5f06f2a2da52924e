"""A real PostgreSQL database per test at 127.0.0.1:5432 (trust auth, user postgres), dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

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
