"""SQLite adapter beyond the contract: WAL, locking, migrations, errors."""

from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path

import pytest
from storage_corpus import corpus, turn

from relayburnd.config import Settings
from relayburnd.errors import SchemaTooNew, SinkMisconfigured, SinkUnavailable
from relayburnd.records import Batch, ContentRecord, ToolCall, make_id, seal
from relayburnd.storage.migrations import load, migrate
from relayburnd.storage.sql_common import SPECS, RowCodec, q
from relayburnd.storage.sqlite import SqliteAdapter

ALL_MIGRATIONS = [m.name for m in load("sqlite")]


class TestSqlite:
    def test_wal_mode_and_rowid_tables(self, sqlite_adapter: SqliteAdapter,
                                       sqlite_settings: Settings) -> None:
        """The file is in WAL mode and record tables are ordinary rowid tables."""
        conn = sqlite3.connect(sqlite_settings.sqlite_file)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE sql NOT NULL")
        sql = " ".join(r[0] for r in rows)
        assert "WITHOUT ROWID" not in sql.upper()
        conn.close()

    def test_migrate_applies_each_version_once(self, sqlite_settings: Settings) -> None:
        """The first run applies every migration, the next none."""
        assert migrate(sqlite_settings) == ALL_MIGRATIONS
        assert migrate(sqlite_settings) == []

    def test_tool_calls_move_onto_their_turns(self, sqlite_settings: Settings) -> None:
        """Schema 3 copies each turn's tool calls from the child table, in call order."""
        rnd = random.Random(31)
        calls = [ToolCall(id="b", name="Read", args_sha256="ab" * 32, args_bytes=2**40),
                 ToolCall(id="a", name="Bash")]
        with_calls, without = turn(rnd, 1, tool_calls=calls), turn(rnd, 2, tool_calls=[])
        conn = sqlite3.connect(sqlite_settings.sqlite_file)
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                     "name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        for mig in load("sqlite")[:2]:
            conn.executescript(mig.sql)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 'then')",
                         (mig.version, mig.name))
        codec = RowCodec(SPECS["turn"], "sqlite")
        names = [c for c in SPECS["turn"].sql_columns if c != "tool_calls"]
        at = SPECS["turn"].sql_columns.index("tool_calls")
        for t in (with_calls, without):
            row = codec.encode(t)
            conn.execute(f"INSERT INTO turns ({', '.join(q(n) for n in names)}) "
                         f"VALUES ({', '.join('?' for _ in names)})", (*row[:at], *row[at + 1:]))
        for seq, c in reversed(list(enumerate(calls))):  # out of call order: seq decides
            conn.execute("INSERT INTO tool_calls VALUES (?, ?, ?, ?, ?, ?)",
                         (with_calls.id, seq, c.id, c.name, c.args_sha256, c.args_bytes))
        conn.commit()
        conn.close()
        assert migrate(sqlite_settings) == ALL_MIGRATIONS[2:]
        adapter = SqliteAdapter(sqlite_settings)
        assert sorted(adapter.turns(), key=lambda t: t.id) == sorted(
            [with_calls, without], key=lambda t: t.id)
        adapter.close()

    def test_concurrent_migrations(self, sqlite_settings: Settings) -> None:
        """Threads migrating one new file at once apply each migration exactly once."""
        barrier = threading.Barrier(6)
        results: list[list[str]] = []

        def run() -> None:
            barrier.wait()
            results.append(migrate(sqlite_settings))

        threads = [threading.Thread(target=run) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(n for r in results for n in r) == sorted(ALL_MIGRATIONS)

    def test_schema_newer_than_the_code_is_refused(self, sqlite_settings: Settings) -> None:
        """A file migrated by a newer relayburnd is refused in one line."""
        migrate(sqlite_settings)
        conn = sqlite3.connect(sqlite_settings.sqlite_file)
        conn.execute("INSERT INTO schema_migrations VALUES (42, '0042_x', 'now')")
        conn.commit()
        conn.close()
        with pytest.raises(SchemaTooNew, match=r"version 42 .* upgrade relayburnd") as err:
            SqliteAdapter(sqlite_settings)
        assert "\n" not in str(err.value)

    def test_locked_file_is_transient(self, sqlite_settings: Settings) -> None:
        """A write lock held elsewhere past the busy timeout is SinkUnavailable, then heals."""
        adapter = SqliteAdapter(sqlite_settings, busy_timeout=0.2)
        other = sqlite3.connect(sqlite_settings.sqlite_file, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(SinkUnavailable, match="locked"):
            adapter.write(Batch(corpus(n=3)))
        other.execute("ROLLBACK")
        other.close()
        rnd = random.Random(1)
        assert adapter.write(Batch([turn(rnd, 1)])).inserted == 1
        adapter.close()

    def test_unusable_path_is_misconfigured(
        self, tmp_path: Path, sqlite_settings: Settings
    ) -> None:
        """A path that cannot hold a database is a settings problem."""
        (tmp_path / "dir.sqlite").mkdir()
        settings = sqlite_settings.replace(sqlite_path=str(tmp_path / "dir.sqlite"))
        with pytest.raises(SinkMisconfigured):
            SqliteAdapter(settings)

    def test_two_adapters_on_one_file(self, sqlite_settings: Settings) -> None:
        """Two adapters (two processes' worth) share the file and agree."""
        first, second = SqliteAdapter(sqlite_settings), SqliteAdapter(sqlite_settings)
        recs = corpus(seed=2, n=20)
        first.write(Batch(recs[:200]))
        result = second.write(Batch(recs))
        assert result.inserted + result.updated + result.unchanged > 0
        assert sorted(t.id for t in first.turns()) == sorted(t.id for t in second.turns())
        first.close()
        second.close()


def _contents(n: int) -> list[ContentRecord]:
    rnd = random.Random(3)
    out = []
    for i in range(n):
        rec = seal(ContentRecord(id=make_id("prune", i), source="claude", session_id=f"s{i % 3}",
                                 ts=1_000 + rnd.randrange(20), message_id="m", seq=i,
                                 role="user", block_type="text", text=f"text {i}"))
        assert isinstance(rec, ContentRecord)
        out.append(rec)
    return out


def _left(adapter: SqliteAdapter) -> list[ContentRecord]:
    return sorted((r for s in ("s0", "s1", "s2") for r in adapter.content(s)),
                  key=lambda r: (r.ts, r.id))


class TestPrune:
    def test_chunks(self, sqlite_adapter: SqliteAdapter) -> None:
        """Deleting in chunks removes and counts every old row, a last full chunk included."""
        recs = _contents(28)
        sqlite_adapter.write(Batch(recs))  # type: ignore[arg-type]
        sqlite_adapter.prune_chunk = 7
        assert sqlite_adapter.prune_content(1_010) == sum(r.ts < 1_010 for r in recs)
        assert sqlite_adapter.prune_content(2_000) == sum(r.ts >= 1_010 for r in recs)
        assert _left(sqlite_adapter) == []

    def test_interrupted_prune_leaves_the_newest(self, sqlite_adapter: SqliteAdapter,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
        """A prune failing after two chunks has deleted exactly the oldest two chunks."""
        recs = _contents(30)
        sqlite_adapter.write(Batch(recs))  # type: ignore[arg-type]
        sqlite_adapter.prune_chunk = 5
        conn = sqlite_adapter._connection()
        deletes = 0

        class Failing:
            def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
                nonlocal deletes
                if sql.startswith("DELETE"):
                    deletes += 1
                    if deletes == 3:
                        raise sqlite3.OperationalError("disk I/O error")
                return conn.execute(sql, *args)

            @property
            def in_transaction(self) -> bool:
                return conn.in_transaction

        monkeypatch.setattr(sqlite_adapter, "_connection", lambda: Failing())
        with pytest.raises(SinkMisconfigured, match="prune content"):
            sqlite_adapter.prune_content(10_000)
        monkeypatch.undo()
        assert _left(sqlite_adapter) == sorted(recs, key=lambda r: (r.ts, r.id))[10:]
