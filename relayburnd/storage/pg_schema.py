"""PostgreSQL schema: migrations under an advisory lock, and per-connection staging tables.

Many hosts may start at once against an empty database. Each migration runs
in its own transaction that first takes a transaction-level advisory lock, so
exactly one host applies it (with its ``schema_migrations`` row) while the
others wait, then see it applied and skip it. The lock is released by commit,
rollback or a lost connection alike.
"""

from __future__ import annotations

import hashlib

import psycopg

from .migrations import SCHEMA_TABLE, check_not_newer, latest, load
from .sql_common import SPECS

Conn = psycopg.Connection[tuple[object, ...]]

LOCK_KEY = int.from_bytes(
    hashlib.blake2b(b"relayburnd schema_migrations", digest_size=8).digest(), "big", signed=True
)

STAGE_PREFIX = "rb_stage_"


def stage_table(table: str) -> str:
    return STAGE_PREFIX + table


def schema_version(conn: Conn) -> int | None:
    """The applied version, or None when the database has no relayburnd schema yet."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [SCHEMA_TABLE]).fetchone()
    if not row or not row[0]:
        return None
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA_TABLE}").fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def apply_migrations(conn: Conn, where: str) -> list[str]:
    """Apply every missing migration, one locked transaction each; the names applied."""
    applied: list[str] = []
    for mig in load("postgres"):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} ("
                "version integer PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = schema_version(conn) or 0
            check_not_newer("postgres", current, where)
            if mig.version <= current:
                continue
            conn.execute(mig.sql)
            conn.execute(
                f"INSERT INTO {SCHEMA_TABLE} (version, name) VALUES (%s, %s)",
                [mig.version, mig.name],
            )
        applied.append(mig.name)
    conn.commit()
    return applied


def ensure_schema(conn: Conn, where: str) -> list[str]:
    """Check the schema without locking when current; migrate when behind; refuse when newer."""
    current = schema_version(conn)
    conn.commit()
    if current is not None:
        check_not_newer("postgres", current, where)
        if current == latest("postgres"):
            return []
    return apply_migrations(conn, where)


def create_staging(conn: Conn) -> None:
    """Session-local tables the batch is copied into before the merge; emptied at commit."""
    statements = [
        f"CREATE TEMP TABLE IF NOT EXISTS {stage_table(spec.table)} "
        f"(LIKE {spec.table}) ON COMMIT DELETE ROWS"
        for spec in SPECS.values()
    ]
    with conn.transaction():
        conn.execute("; ".join(statements))
    conn.commit()
