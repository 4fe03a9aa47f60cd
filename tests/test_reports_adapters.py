"""Every report prints the same numbers on the file, SQLite and PostgreSQL stores, since all
of them read through the StorageAdapter query API."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relayburnd.config import load_settings
from relayburnd.storage import open_adapter
from tests.conftest import run_cli
from tests.support import rounded
from tests.test_archive import turn, write
from tests.test_reports_handchecked import D0, H, dataset

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"

REPORTS = [
    ("sessions",), ("sessions", "--sort", "cost", "--since", "2026-03-03"),
    ("compare",), ("compare", "--model", "gpt-5"), ("tools",), ("tools", "--project", "/p/one"),
    ("blocks", "--now", "2026-03-03T04:00:00Z"), ("summary", "--by", "day,model"),
]


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards (skipped when no server listens)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable: {exc}")
    name = f"relayburn_reports_{os.getpid()}_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    finally:
        with contextlib.suppress(psycopg.Error):
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def env_for(kind: str, tmp: Path, dsn: str | None) -> dict[str, str]:
    env = {"RELAYBURN_STORAGE": kind, "RELAYBURN_HOME": str(tmp / kind)}
    if kind == "sqlite":
        env["RELAYBURN_SQLITE_PATH"] = str(tmp / "store.sqlite")
    if dsn:
        env["RELAYBURN_PG_DSN"] = dsn
    return env


def load(env: dict[str, str], records: list[Any]) -> None:
    adapter = open_adapter(load_settings(env))
    try:
        write(adapter, *records)
    finally:
        adapter.close()


def outputs(env: dict[str, str]) -> dict[str, Any]:
    out = {}
    for args in REPORTS:
        doc = json.loads(run_cli(*args, "--json", "--tz", "UTC", env=env).stdout)
        out[" ".join(args)] = rounded(doc)
    return out


class TestSameNumbers:
    """The hand-checked dataset in each store."""

    def test_sqlite_equals_file(self, tmp_path: Path) -> None:
        """SQLite prints exactly what the file store prints."""
        file_env, sqlite_env = env_for("file", tmp_path, None), env_for("sqlite", tmp_path, None)
        load(file_env, dataset())
        load(sqlite_env, dataset())
        want = outputs(file_env)
        assert want["sessions"]["rows"]
        assert outputs(sqlite_env) == want

    @pytest.mark.postgres
    def test_postgres_equals_file(self, tmp_path: Path, pg_database: str) -> None:
        """PostgreSQL prints exactly what the file store prints."""
        file_env, pg_env = env_for("file", tmp_path, None), env_for("postgres", tmp_path,
                                                                       pg_database)
        load(file_env, dataset())
        load(pg_env, dataset())
        assert outputs(pg_env) == outputs(file_env)


class TestReplayOutsideTheRange:
    """A replay whose main copy lies outside the report's range is still not counted."""

    @pytest.mark.parametrize("kind", ["file", "sqlite"])
    def test_cross_session_replay(self, tmp_path: Path, kind: str) -> None:
        """The main copy is a day earlier in another session; --since excludes it."""
        env = env_for(kind, tmp_path, None)
        load(env, [
            turn("main", "resumed", D0 + 9 * H, inp=100, cost=1.0, message="M"),
            turn("replay", "original", D0 + 33 * H, inp=100, cost=1.0, sidechain=True,
                 message="M"),
            turn("real", "original", D0 + 34 * H, inp=7, cost=0.5, sidechain=True),
        ])
        for cmd in ("sessions", "compare", "blocks"):
            doc = json.loads(run_cli(cmd, "--json", "--tz", "UTC", "--since", "2026-03-03",
                                     env=env).stdout)
            requests = sum(r["requests"] for r in doc["rows"]
                           if r.get("activity", "all") == "all")
            assert requests == 1, cmd
