"""Fixtures for the storage tests: empty stores of every kind, and PostgreSQL databases.

PostgreSQL tests run against the local server (127.0.0.1:5432, user postgres,
or ``RELAYBURN_TEST_PG_ADMIN``): a database ``relayburn_test_<random>`` is
created at the start of the session and dropped at the end; no other
database is touched. Without a server the PostgreSQL tests are skipped,
except in CI (``CI`` set), where they fail.

Slow tests (fault injection, many processes) run in CI, with
``RELAYBURN_SLOW_TESTS=1`` or when selected with ``-m slow``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from storage_support import (
    PgServer,
    StoreFactory,
    Stores,
    file_store,
    postgres_store,
    sqlite_store,
)

from relayburnd.config import Settings, load_settings
from relayburnd.storage import StorageAdapter, open_adapter

# Read at import: the suite-wide autouse fixture clears RELAYBURN_* for each test.
PG_ADMIN = os.environ.get(
    "RELAYBURN_TEST_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
IN_CI = bool(os.environ.get("CI"))
RUN_SLOW = IN_CI or bool(os.environ.get("RELAYBURN_SLOW_TESTS"))




# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
def pg_dsn(pg_server: PgServer) -> str:
    """The session's test database (tables are emptied by the stores that use it)."""
    return pg_server.new_database()


# ------------------------------------------------------------------ stores


# The contract suite runs once per entry: adding an adapter kind is one line
# here (plus its marks), with a factory that may take server fixtures.
STORE_KINDS: dict[str, Callable[[pytest.FixtureRequest], StoreFactory]] = {
    "file": lambda request: file_store,
    "sqlite": lambda request: sqlite_store,
    "postgres": lambda request: postgres_store(request.getfixturevalue("pg_dsn")),
}
STORE_MARKS: dict[str, list[pytest.MarkDecorator]] = {"postgres": [pytest.mark.postgres]}


@pytest.fixture(
    params=[pytest.param(k, marks=STORE_MARKS.get(k, []), id=k) for k in STORE_KINDS]
)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """Empty stores of each adapter kind in turn."""
    kind: str = request.param
    made = Stores(kind, STORE_KINDS[kind](request), tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def store(stores: Stores) -> StorageAdapter:
    """One empty store of each adapter kind in turn."""
    return stores.fresh()


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return load_settings(env={"RELAYBURN_STORAGE": "sqlite", "RELAYBURN_HOME": str(tmp_path),
                              "RELAYBURN_SQLITE_PATH": str(tmp_path / "store.sqlite")})


@pytest.fixture
def sqlite_adapter(sqlite_settings: Settings) -> Iterator[StorageAdapter]:
    """A SQLite store in the test's temporary directory."""
    adapter = open_adapter(sqlite_settings)
    try:
        yield adapter
    finally:
        adapter.close()
