"""SQLite adapter: the shared schema in one local file (WAL mode).

One connection guarded by a lock (the server may call from several threads);
a write is one ``BEGIN IMMEDIATE`` transaction, so it takes the write lock
before reading what is stored and its inserted/updated/unchanged counts are
exact even with another process writing the same file. ``synchronous=FULL``
makes a returned write durable, as the adapter contract requires.

``prune_content(before_ms)`` deletes content older than the cutoff oldest
first, ``PRUNE_CHUNK`` rows per ``BEGIN IMMEDIATE`` transaction: a writer
waits for one chunk at most, never for a whole first prune of a large store,
and whatever a failure interrupts, the store holds all content from some
(ts, id) on, never a hole in a conversation.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SinkError, SinkMisconfigured, SinkRejected, SinkUnavailable
from ..records import (
    Batch,
    ContentRecord,
    Record,
    WriteResult,
)
from .base import Filter, SummaryResult, SummarySpec
from .migrations import SCHEMA_TABLE, check_not_newer, pending
from .sql_common import (
    SPECS,
    RowCodec,
    TableSpec,
    check_ids,
    column_list,
    fold_by_kind,
    unstorable_ids,
)
from .sql_query import (
    PAGE_SIZE,
    SQLITE,
    Page,
    RecordQueries,
    content_query,
    page_query,
    update_set,
)
from .sql_summary import summarize_sql

if TYPE_CHECKING:
    from ..config import Settings

BUSY_TIMEOUT_S = 5.0
_CHUNK = 500  # ids per IN (...) list, far below SQLite's variable limit
PRUNE_CHUNK = 10_000  # content rows deleted per transaction

# Primary result codes (sqlite3 exceptions carry the extended code).
_TRANSIENT = {5, 6, 10, 13, 15}  # BUSY, LOCKED, IOERR, FULL, PROTOCOL
_REJECTED = {18, 19, 20, 25}  # TOOBIG, CONSTRAINT, MISMATCH, RANGE


def _translate(exc: sqlite3.Error, where: str) -> SinkError:
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    msg = f"{where}: {exc}"
    if code in _TRANSIENT:
        return SinkUnavailable(msg)
    if code in _REJECTED or isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return SinkRejected(msg)
    # CANTOPEN, NOTADB, CORRUPT, READONLY, PERM, missing tables: the file or its
    # permissions are wrong; retrying the same bytes soon will not help.
    return SinkMisconfigured(msg)


@contextlib.contextmanager
def _map_errors(where: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise _translate(exc, where) from exc
    except OSError as exc:
        raise SinkMisconfigured(f"{where}: {exc}") from exc


def _split_statements(script: str) -> list[str]:
    """Statements of a migration file (``executescript`` would commit on its own)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA_TABLE}").fetchone()
    return int(row[0])


def _migrate(conn: sqlite3.Connection, where: str) -> list[str]:
    """Apply missing migrations, each with its ``schema_migrations`` row in one transaction."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    current = _version(conn)
    check_not_newer("sqlite", current, where)
    applied: list[str] = []
    for mig in pending("sqlite", current):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _version(conn) >= mig.version:  # another process got there first
                conn.execute("ROLLBACK")
                continue
            for stmt in _split_statements(mig.sql):
                conn.execute(stmt)
            conn.execute(
                f"INSERT INTO {SCHEMA_TABLE} (version, name, applied_at) VALUES (?, ?, ?)",
                (mig.version, mig.name, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(mig.name)
    return applied


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def migrate_sqlite(settings: Settings, busy_timeout: float = BUSY_TIMEOUT_S) -> list[str]:
    """Apply missing migrations to ``settings.sqlite_file``; return the names applied."""
    where = f"sqlite {settings.sqlite_file}"
    with _map_errors(where):
        conn = _connect(settings.sqlite_file, busy_timeout)
        try:
            return _migrate(conn, where)
        finally:
            conn.close()


class SqliteAdapter(RecordQueries):
    """The shared schema in one SQLite file; see the module docstring."""

    name = "sqlite"

    def __init__(self, settings: Settings, *, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = settings.sqlite_file
        self._where = f"sqlite {self.path}"
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._codecs = {kind: RowCodec(spec, "sqlite") for kind, spec in SPECS.items()}
        self._upserts = {kind: _upsert_sql(spec) for kind, spec in SPECS.items()}
        self._conn: sqlite3.Connection | None = None
        self.page_size = PAGE_SIZE
        self.prune_chunk = PRUNE_CHUNK
        with self._lock:
            self._connection()

    def __repr__(self) -> str:
        return f"SqliteAdapter({str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            with _map_errors(self._where):
                conn = _connect(self.path, self._busy_timeout)
                try:
                    _migrate(conn, self._where)
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
        return self._conn

    # ------------------------------------------------------------ writes

    def write(self, batch: Batch) -> WriteResult:
        check_ids(batch.records)
        folded = fold_by_kind(batch.records)
        result = WriteResult()
        if not folded:
            return result
        with self._lock, _map_errors(f"{self._where}: write"):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for kind, records in folded.items():
                    inserted, updated = self._merge(conn, SPECS[kind], records)
                    counts = result.kind(kind)
                    counts.inserted += inserted
                    counts.updated += updated
                    counts.unchanged += len(records) - inserted - updated
                conn.execute("COMMIT")
            except (UnicodeEncodeError, OverflowError) as exc:
                conn.execute("ROLLBACK")
                bad = unstorable_ids(batch.records, nul_ok=True)
                if not bad:
                    raise  # not the data's fault: a bug, not something to dead-letter
                raise SinkRejected(
                    f"{self._where}: a record holds a value SQLite cannot store ({exc})",
                    record_ids=bad,
                ) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return result

    def _merge(
        self, conn: sqlite3.Connection, spec: TableSpec, records: Sequence[Record]
    ) -> tuple[int, int]:
        """Insert new ids, replace stored ones of lower rank; (inserted, updated)."""
        stored: dict[str, str] = {}
        for i in range(0, len(records), _CHUNK):
            ids = [r.id for r in records[i : i + _CHUNK]]
            marks = ", ".join("?" for _ in ids)
            rows = conn.execute(f"SELECT id, rank FROM {spec.table} WHERE id IN ({marks})", ids)
            stored.update(rows)
        new = [r for r in records if r.id not in stored]
        newer = [r for r in records if r.id in stored and r.rank > stored[r.id]]
        codec = self._codecs[spec.kind]
        conn.executemany(self._upserts[spec.kind], [codec.encode(r) for r in (*new, *newer)])
        return len(new), len(newer)

    # ------------------------------------------------------------ reads

    def _fetch_page(self, spec: TableSpec, flt: Filter | None, after: Any) -> Page:
        sql, params = page_query(SQLITE, spec, flt, after, self.page_size)
        with self._lock, _map_errors(f"{self._where}: read {spec.table}"):
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                rows = conn.execute(sql, params).fetchall()
            finally:
                conn.execute("COMMIT")
        return rows

    def content(self, session_id: str) -> list[ContentRecord]:
        codec = self._codecs["content"]
        with self._lock, _map_errors(f"{self._where}: read content"):
            rows = self._connection().execute(content_query(SQLITE), (session_id,)).fetchall()
        return [codec.decode(r) for r in rows]  # type: ignore[misc]

    def summary(self, spec: SummarySpec) -> SummaryResult:
        with self._lock, _map_errors(f"{self._where}: summary"):
            conn = self._connection()
            conn.execute("BEGIN")  # one snapshot for every query of the report
            try:
                return summarize_sql(
                    SQLITE, spec, lambda sql, params: conn.execute(sql, params).fetchall()
                )
            finally:
                conn.execute("COMMIT")

    # ------------------------------------------------------------ retention

    def prune_content(self, before_ms: int) -> int:
        """Delete content records with ``ts < before_ms``; how many were deleted."""
        removed = 0
        while True:
            with self._lock, _map_errors(f"{self._where}: prune content"):
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    n = conn.execute(_PRUNE_SQL, (before_ms, self.prune_chunk)).rowcount
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            removed += n
            if n < self.prune_chunk:
                return removed

    # ------------------------------------------------------------ lifecycle

    def healthcheck(self) -> None:
        with self._lock, _map_errors(f"{self._where}: healthcheck"):
            check_not_newer("sqlite", _version(self._connection()), self._where)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# The oldest rows first (the content_ts index), so an interrupted prune leaves no gap.
_PRUNE_SQL = (
    "DELETE FROM content WHERE id IN "
    "(SELECT id FROM content WHERE ts < ? ORDER BY ts, id LIMIT ?)"
)


def _upsert_sql(spec: TableSpec) -> str:
    cols = spec.sql_columns
    marks = ", ".join("?" for _ in cols)
    return (
        f"INSERT INTO {spec.table} ({column_list(cols)}) VALUES ({marks}) "
        f'ON CONFLICT (id) DO UPDATE SET {update_set(spec)} '
        f'WHERE excluded."rank" > {spec.table}."rank"'
    )
