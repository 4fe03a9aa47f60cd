"""Stores, PostgreSQL databases and the expected-state model for the storage tests."""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from relayburnd.config import Settings, load_settings
from relayburnd.records import (
    Batch,
    Compaction,
    ContentRecord,
    Record,
    SessionRelationship,
    ToolResultEvent,
    Turn,
    UserTurn,
    fold,
)
from relayburnd.reports import model_label
from relayburnd.storage import StorageAdapter, open_adapter
from relayburnd.storage.base import Filter, SummaryResult, SummaryRow
from relayburnd.storage.sql_common import SPECS


@dataclass
class PgServer:
    """The local server; hands out scratch databases and drops them all at the end."""

    admin_dsn: str
    created: list[str] = field(default_factory=list)

    def dsn(self, name: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=name)

    def new_database(self, tag: str = "") -> str:
        """A new empty database; its DSN."""
        name = f"relayburn_test_{tag + '_' if tag else ''}{secrets.token_hex(6)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.dsn(name)

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            for name in self.created:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


def pg_settings(dsn: str, home: Path) -> Settings:
    return load_settings(env={"RELAYBURN_STORAGE": "postgres", "RELAYBURN_PG_DSN": dsn,
                              "RELAYBURN_HOME": str(home)})


def truncate_all(dsn: str) -> None:
    tables = ", ".join(s.table for s in SPECS.values())
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('turns')").fetchone() != (None,):
            conn.execute(f"TRUNCATE {tables}")


# How to make an empty store of one kind: settings for a store rooted at a new
# directory (the factory empties shared servers first).
StoreFactory = Callable[[Path], Settings]


class Stores:
    """Empty stores of one kind for a test; closes what it opened."""

    def __init__(self, kind: str, factory: StoreFactory, root: Path) -> None:
        self.kind = kind
        self._factory = factory
        self._root = root
        self._open: list[tuple[StorageAdapter, Settings]] = []

    def fresh(self) -> StorageAdapter:
        """A new adapter on an empty store (earlier ones are closed)."""
        self.close()
        settings = self._factory(self._root / f"store-{secrets.token_hex(4)}")
        adapter = open_adapter(settings)
        self._open.append((adapter, settings))
        return adapter

    def reopen(self, adapter: StorageAdapter) -> StorageAdapter:
        """Another adapter on the same store as ``adapter``."""
        settings = next(s for a, s in self._open if a is adapter)
        again = open_adapter(settings)
        self._open.append((again, settings))
        return again

    def close(self) -> None:
        for adapter, _ in self._open:
            with contextlib.suppress(Exception):
                adapter.close()
        self._open.clear()


def file_store(home: Path) -> Settings:
    return load_settings(env={"RELAYBURN_STORAGE": "file", "RELAYBURN_HOME": str(home)})


def sqlite_store(home: Path) -> Settings:
    return load_settings(env={"RELAYBURN_STORAGE": "sqlite", "RELAYBURN_HOME": str(home),
                              "RELAYBURN_SQLITE_PATH": str(home / "store.sqlite")})


def postgres_store(dsn: str) -> StoreFactory:
    def make(home: Path) -> Settings:
        truncate_all(dsn)
        return pg_settings(dsn, home)

    return make




# ------------------------------------------------------------------ the model

QUERIES = {
    "turn": "turns",
    "user-turn": "user_turns",
    "compaction": "compactions",
    "tool-result": "tool_results",
    "relationship": "relationships",
}
KIND_OF_TYPE = {Turn: "turn", UserTurn: "user-turn", Compaction: "compaction",
                ToolResultEvent: "tool-result", SessionRelationship: "relationship",
                ContentRecord: "content"}


def write(adapter: StorageAdapter, records: Iterable[Record], size: int = 500) -> None:
    recs = list(records)
    for i in range(0, len(recs), size):
        adapter.write(Batch(recs[i : i + size]))


def query(adapter: StorageAdapter, kind: str, flt: Filter | None = None) -> list[Record]:
    return sorted(getattr(adapter, QUERIES[kind])(flt), key=lambda r: r.id)


def content_sessions(records: Iterable[Record]) -> set[str]:
    return {r.session_id for r in records if isinstance(r, ContentRecord)}


def state(adapter: StorageAdapter, sessions: Iterable[str]) -> dict[str, object]:
    """Everything the store returns: each kind by id, content per session in order."""
    out: dict[str, object] = {kind: query(adapter, kind) for kind in QUERIES}
    out["content"] = {s: adapter.content(s) for s in sorted(sessions)}
    return out


def expected_state(records: Iterable[Record], sessions: Iterable[str]) -> dict[str, object]:
    best = list(fold(records).values())
    out: dict[str, object] = {
        kind: sorted((r for r in best if KIND_OF_TYPE[type(r)] == kind), key=lambda r: r.id)
        for kind in QUERIES
    }
    out["content"] = {
        s: sorted((r for r in best if isinstance(r, ContentRecord) and r.session_id == s),
                  key=lambda r: (r.ts, r.message_id, r.seq, r.id))
        for s in sorted(sessions)
    }
    return out


def matches(rec: Record, flt: Filter) -> bool:
    """What a query with ``flt`` returns, per record (the file store's ledger scan)."""
    if isinstance(rec, SessionRelationship):
        return (flt.session_id is None or flt.session_id in (rec.session_id, rec.parent_session_id)
                ) and (not flt.sources or rec.source in flt.sources)
    if not flt.matches(ts=rec.ts, source=rec.source, session_id=rec.session_id,
                       project=getattr(rec, "project", None)):
        return False
    return not (isinstance(rec, Turn) and flt.model is not None
                and model_label(rec.model, rec.speed) != flt.model)


def assert_same_summary(got: SummaryResult, want: SummaryResult) -> None:
    """Same rows in the same order, exact tokens, costs within 1e-9."""
    assert got.by == want.by
    assert [r.keys for r in got.rows] == [r.keys for r in want.rows]
    def ints(r: SummaryRow) -> tuple[int, ...]:
        return (r.requests, r.input_tokens, r.output_tokens, r.cache_write_tokens,
                r.cache_read_tokens, r.reasoning_tokens, r.total_tokens, r.unpriced_requests)

    for g, w in [*zip(got.rows, want.rows, strict=True), (got.totals, want.totals)]:
        assert ints(g) == ints(w), g.keys
        assert math.isclose(g.cost_usd, w.cost_usd, rel_tol=1e-9, abs_tol=1e-9), g.keys
