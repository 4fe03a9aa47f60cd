"""The StorageAdapter contract over HTTP: the suite of ``test_contract.py``, run on
``HttpAdapter`` talking to a real ``relayburnd serve`` process on loopback, once
backed by SQLite and once by PostgreSQL (a fresh database of its own).

The suite's classes are imported so they are collected here too; this module's
``stores`` fixture replaces the directory's, so they run on the HTTP stores.
Emptying a store between tests empties the server's database directly: the
server keeps no state of its own.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from storage_support import PgServer, Stores, truncate_all
from test_contract import (  # noqa: F401  (collected here on the HTTP stores)
    TestContent,
    TestConvergence,
    TestFilters,
    TestHealth,
    TestPrune,
    TestRoundTrip,
    TestSummary,
    TestWrite,
)

from relayburnd.config import Settings
from relayburnd.storage.sql_common import SPECS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from server_support import (
    TOKENS,
    ServerProcess,
    client_settings,
    postgres_env,
    sqlite_env,
)


@dataclass
class Backend:
    """A running server and how to empty its store."""

    server: ServerProcess
    empty: Callable[[], None]


def _empty_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table in [s.table for s in SPECS.values()]:
            conn.execute(f"DELETE FROM {table}")
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def http_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp("http-sqlite")
    server = ServerProcess(sqlite_env(root), root / "server.log")
    try:
        yield Backend(server, lambda: _empty_sqlite(root / "server.sqlite"))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def http_postgres(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp("http-postgres")
    dsn = pg_server.new_database("http")
    server = ServerProcess(postgres_env(root, dsn), root / "server.log")
    try:
        yield Backend(server, lambda: truncate_all(dsn))
    finally:
        server.stop()


@pytest.fixture(params=[
    pytest.param("http_sqlite", id="http-sqlite"),
    pytest.param("http_postgres", id="http-postgres", marks=[pytest.mark.postgres]),
])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """Empty HTTP stores, on the SQLite-backed and the PostgreSQL-backed server."""
    backend: Backend = request.getfixturevalue(request.param)

    def factory(home: Path) -> Settings:
        backend.empty()
        return client_settings(backend.server.url, home, TOKENS["ops"])

    made = Stores(request.param, factory, tmp_path)
    try:
        yield made
    finally:
        made.close()
