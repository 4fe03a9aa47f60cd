"""One logical schema: the migrations of both dialects create exactly the columns the
record mapping reads and writes, so a new record field cannot be silently dropped."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import psycopg
import pytest
from storage_support import pg_settings

from relayburnd.config import Settings
from relayburnd.records import RECORD_TYPES
from relayburnd.storage.migrations import load, migrate
from relayburnd.storage.sql_common import SPECS

EXPECTED = {spec.table: list(spec.sql_columns) for spec in SPECS.values()}


def test_both_dialects_have_the_same_migrations() -> None:
    """Versions and names match between SQLite and PostgreSQL."""
    assert [m.name for m in load("sqlite")] == [m.name for m in load("postgres")]


def test_every_record_field_has_a_column() -> None:
    """Each struct field is stored in a column of its own (a turn's tool calls as JSON)."""
    for rtype in RECORD_TYPES:
        spec = next(s for s in SPECS.values() if s.record_type is rtype)
        stored = {c.name for c in spec.fields}
        fields = {f.name for f in msgspec.structs.fields(rtype)}
        assert stored == fields, rtype.__name__


def test_sqlite_columns_match_the_mapping(sqlite_settings: Settings) -> None:
    """The SQLite tables have exactly the mapped columns."""
    migrate(sqlite_settings)
    conn = sqlite3.connect(sqlite_settings.sqlite_file)
    for table, cols in EXPECTED.items():
        got = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        assert got == set(cols), table
    conn.close()


@pytest.mark.postgres
def test_postgres_columns_match_the_mapping(pg_dsn: str, tmp_path: Path) -> None:
    """The PostgreSQL tables have exactly the mapped columns."""
    migrate(pg_settings(pg_dsn, tmp_path))
    with psycopg.connect(pg_dsn) as conn:
        for table, cols in EXPECTED.items():
            got = {r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                [table])}
            assert got == set(cols), table
