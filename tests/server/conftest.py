"""Fixtures for the server tests: real ``relayburnd serve`` processes and PostgreSQL databases.

PostgreSQL databases come from the storage tests' ``PgServer`` (a
``relayburn_test_<random>`` database per use, all dropped at the end of the
session); without a reachable server those tests are skipped (failed in CI).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "storage"))

from server_support import FaultProxy, ServerProcess, postgres_env, sqlite_env
from storage_support import PgServer

PG_ADMIN = os.environ.get(
    "RELAYBURN_TEST_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
IN_CI = bool(os.environ.get("CI"))
RUN_SLOW = IN_CI or bool(os.environ.get("RELAYBURN_SLOW_TESTS"))




@pytest.fixture(scope="session")
def pg(pg_server: PgServer) -> PgServer:
    """The local PostgreSQL server, handing out scratch databases."""
    return pg_server


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on a SQLite file, shared by a module's tests."""
    root = tmp_path_factory.mktemp("sqlite-server")
    server = ServerProcess(sqlite_env(root), root / "server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg_server_process(pg: PgServer, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[tuple[ServerProcess, str]]:
    """A server on a fresh PostgreSQL database, and that database's DSN."""
    root = tmp_path_factory.mktemp("pg-server")
    dsn = pg.new_database("srv")
    server = ServerProcess(postgres_env(root, dsn), root / "server.log")
    try:
        yield server, dsn
    finally:
        server.stop()


@pytest.fixture
def proxy(pg_server_process: tuple[ServerProcess, str]) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the PostgreSQL-backed server."""
    server, _ = pg_server_process
    fault = FaultProxy(server.port)
    try:
        yield fault
    finally:
        fault.close()
