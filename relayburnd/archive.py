"""The derived analytics archive of the file store: ``RELAYBURN_HOME/archive.sqlite``.

Why it exists: ``ledger.jsonl`` is the source of truth, but folding a ledger of
millions of lines for every report takes seconds. The archive is a read model
of the ledger (tables per record kind, per session and per 15-minute usage
slot, see ``archive_schema``) kept up to date by applying only the ledger's
tail, so reports read a few thousand pre-summed rows instead.

It is disposable: deleting it loses nothing, ``archive rebuild`` recreates it,
and any doubt about what it reflects triggers a rebuild. ``archive_state``
records the ledger byte offset applied and the ledger's identity (inode and a
hash of its first bytes). A build reads the committed ledger size under the
file store's lock (so it never applies a batch a crashed writer left behind),
then applies ``[offset, size)`` one transaction per step: the rows a step
beats are replaced, its offset advances in the same transaction. A replaced
or truncated ledger (other inode, other first bytes, size below the offset)
makes the next build start from an empty archive. Two builders serialize on
SQLite's write lock and each step re-reads the offset, so they never apply a
line twice; readers see whole steps only (WAL mode).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .archive_apply import (
    ApplyStats,
    Touched,
    apply_folded,
    content_sessions,
    derive_all,
    derive_touched,
    drop_indexes,
    fold_lines,
    refresh_content_flags,
    register_functions,
)
from .archive_query import iter_records
from .archive_schema import (
    INDEXES,
    SCHEMA_VERSION,
    STATE_DDL,
    TABLES,
    fingerprint,
    table_ddl,
)
from .archive_summary import summarize_archive
from .errors import StateError
from .home import HomeLayout
from .logging import get_logger
from .records import Record
from .storage.base import Filter, SummaryResult, SummarySpec

log = get_logger("archive")

ARCHIVE_FILE = "archive.sqlite"
HEAD_BYTES = 4096
STEP_BYTES = 8 * 1024 * 1024
BULK_STEP_BYTES = 32 * 1024 * 1024
BULK_THRESHOLD = 32 * 1024 * 1024  # a tail this large is loaded in bulk, derived once
BUSY_TIMEOUT_S = 60.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _head_hash(fh: BinaryIO, length: int) -> str:
    data = os.pread(fh.fileno(), length, 0)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _read_chunk(fh: BinaryIO, start: int, end: int, step: int) -> tuple[bytes, int]:
    """Complete lines from ``start``, about ``step`` bytes (more for one long line)."""
    fh.seek(start)
    data = fh.read(min(step, end - start))
    cut = data.rfind(b"\n")
    while cut < 0 and start + len(data) < end:
        more = fh.read(min(step, end - start - len(data)))
        if not more:
            break
        data += more
        cut = data.rfind(b"\n")
    if cut < 0:
        return b"", start
    return data[: cut + 1], start + cut + 1


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cycle collector while millions of acyclic records are made and dropped.

    Each collection walks every live object; during a cold build that is a
    third of the time, and none of these objects can form a cycle.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class BuildReport:
    """What one ``build`` did."""

    start_offset: int = 0
    end_offset: int = 0
    ledger_size: int = 0
    steps: int = 0
    stats: ApplyStats = field(default_factory=ApplyStats)
    rebuilt: str | None = None
    seconds: float = 0.0

    def one_line(self) -> str:
        applied = self.end_offset - self.start_offset
        parts = [
            f"applied {applied:,} ledger bytes ({self.stats.lines:,} lines, "
            f"{self.stats.written:,} rows written) in {self.seconds:.2f} s",
            f"archive at offset {self.end_offset:,} of {self.ledger_size:,}",
        ]
        if self.rebuilt:
            parts.insert(0, f"rebuilt ({self.rebuilt})")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "start_offset": self.start_offset,
            "end_offset": self.end_offset,
            "ledger_size": self.ledger_size,
            "steps": self.steps,
            "lines": self.stats.lines,
            "lines_skipped": self.stats.skipped,
            "rows": {k: vars(s) for k, s in sorted(self.stats.kinds.items())},
            "rebuilt": self.rebuilt,
            "seconds": round(self.seconds, 3),
        }


class Archive:
    """``archive.sqlite`` next to a file store; see the module docstring.

    ``committed_size`` returns the ledger size every acknowledged write is
    within, taken under the store lock (``FileAdapter.committed_ledger_size``).
    """

    def __init__(self, layout: HomeLayout, committed_size: Callable[[], int]) -> None:
        self.layout = layout
        self.path = layout.root / ARCHIVE_FILE
        self._committed_size = committed_size
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()  # one connection, shared by the callers' threads

    # ------------------------------------------------------------ connection

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                                   check_same_thread=False)
            try:
                with contextlib.suppress(OSError):
                    os.chmod(self.path, 0o600)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA temp_store=MEMORY")
                conn.execute("PRAGMA cache_size=-65536")
                register_functions(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StateError(
                f"archive {self.path}: {what} failed ({exc}); it is derived from the ledger: "
                "run `relayburnd archive rebuild`"
            ) from exc
        except OSError as exc:
            raise StateError(f"archive {self.path}: {what} failed ({exc.strerror or exc})") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    # ------------------------------------------------------------ state

    @staticmethod
    def _state(conn: sqlite3.Connection) -> dict[str, str]:
        try:
            return dict(conn.execute("SELECT key, value FROM archive_state").fetchall())
        except sqlite3.OperationalError:
            return {}

    @staticmethod
    def _set_state(conn: sqlite3.Connection, **values: object) -> None:
        conn.executemany("INSERT OR REPLACE INTO archive_state VALUES (?, ?)",
                         [(k, str(v)) for k, v in values.items()])

    def _reset(self, conn: sqlite3.Connection, reason: str) -> None:
        """Drop and recreate every table (inside the caller's transaction)."""
        for table in (*TABLES, "archive_state"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        for stmt in (STATE_DDL, *table_ddl(), *INDEXES):
            conn.execute(stmt)
        self._set_state(
            conn, schema_version=SCHEMA_VERSION, fingerprint=fingerprint(), ledger_offset=0,
            ledger_ino="", ledger_head_len=0, ledger_head_hash="", derived_dirty=0,
            content_mtime_ns="", last_rebuild_ms=_now_ms(), rebuild_reason=reason,
            last_build_ms="",
        )
        log.info("archive.reset", file=str(self.path), reason=reason)

    def _identity_problem(
        self, state: dict[str, str], fh: BinaryIO | None, end: int
    ) -> str | None:
        """Why the archived part is no longer the ledger's beginning, or None."""
        if state.get("fingerprint") != fingerprint():
            return "new archive" if not state else "schema changed"
        offset = int(state.get("ledger_offset") or 0)
        if offset == 0:
            return None
        if fh is None:
            return "the ledger is gone"
        st = os.fstat(fh.fileno())
        if str(st.st_ino) != state.get("ledger_ino"):
            return "the ledger was replaced"
        if end < offset:
            return "the ledger is shorter than the archived part"
        head_len = int(state.get("ledger_head_len") or 0)
        if _head_hash(fh, head_len) != state.get("ledger_head_hash"):
            return "the ledger's first bytes changed"
        return None

    def _has_content(self, session_id: str) -> bool:
        from .storage.file import is_safe_session_id

        if not is_safe_session_id(session_id):
            return False
        return (self.layout.content_dir / f"{session_id}.jsonl").exists()

    # ------------------------------------------------------------ build

    def build(self, *, force_reset: str | None = None) -> BuildReport:
        """Apply the ledger tail since the archived offset (rebuilding when it must)."""
        t0 = time.monotonic()
        end = self._committed_size()
        report = BuildReport(ledger_size=end)
        with self._lock, self._errors("build"), _no_cyclic_gc():
            conn = self._connect()
            try:
                fh: BinaryIO | None = self.layout.ledger.open("rb")
            except FileNotFoundError:
                fh = None
            try:
                if fh is not None:
                    end = min(end, os.fstat(fh.fileno()).st_size)
                self._apply_tail(conn, fh, end, report, force_reset)
            finally:
                if fh is not None:
                    fh.close()
            self._finish(conn, report)
        report.seconds = time.monotonic() - t0
        return report

    def rebuild(self) -> BuildReport:
        """Drop every row and apply the whole ledger.

        A file SQLite cannot read at all (not a database, malformed) is deleted
        first: nothing in it is the only copy of anything.
        """
        try:
            return self.build(force_reset="rebuild requested")
        except StateError as exc:
            cause = exc.__cause__
            code = getattr(cause, "sqlite_errorcode", 0) & 0xFF
            if not isinstance(cause, sqlite3.DatabaseError) or code not in (11, 26):
                raise
        log.warning("archive.unreadable_removed", file=str(self.path))
        self.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")
        return self.build(force_reset="the archive file was unreadable")

    def _apply_tail(
        self, conn: sqlite3.Connection, fh: BinaryIO | None, end: int, report: BuildReport,
        force_reset: str | None,
    ) -> None:
        state = self._state(conn)
        offset = int(state.get("ledger_offset") or 0)
        if force_reset is None and self._identity_problem(state, fh, end) is None and (
                fh is None or offset >= end):
            report.start_offset = report.end_offset = offset  # up to date: no write lock
            return
        first = True
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                state = self._state(conn)
                reason = force_reset if first and force_reset else self._identity_problem(
                    state, fh, end)
                if reason is not None:
                    self._reset(conn, reason)
                    report.rebuilt = reason
                    state = self._state(conn)
                start = int(state["ledger_offset"])
                if first:
                    report.start_offset = report.end_offset = start
                    first = False
                if fh is None or start >= end:
                    conn.execute("COMMIT")
                    return
                dirty = state.get("derived_dirty") == "1"
                bulk = dirty or end - start > BULK_THRESHOLD
                if bulk and not dirty:
                    drop_indexes(conn)
                    self._set_state(conn, derived_dirty=1)
                data, stop = _read_chunk(fh, start, end, BULK_STEP_BYTES if bulk else STEP_BYTES)
                if stop == start:
                    conn.execute("COMMIT")
                    return
                touched = None if bulk else Touched()
                best = fold_lines(data, start, report.stats)
                apply_folded(conn, best, report.stats, touched)
                if touched is not None:
                    derive_touched(conn, touched, self._has_content)
                head_len = min(stop, HEAD_BYTES)
                self._set_state(
                    conn, ledger_offset=stop, ledger_ino=os.fstat(fh.fileno()).st_ino,
                    ledger_head_len=head_len, ledger_head_hash=_head_hash(fh, head_len),
                    last_build_ms=_now_ms(),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            report.steps += 1
            report.end_offset = stop

    def _finish(self, conn: sqlite3.Connection, report: BuildReport) -> None:
        """Derive everything after a bulk load; follow content files created or pruned."""
        state = self._state(conn)
        try:
            st = os.stat(self.layout.content_dir)
        except FileNotFoundError:
            mtime = "none"
        else:
            # a file created in the same clock tick may not move the mtime: trust
            # only an mtime old enough that no such change can be pending
            settled = time.time() - st.st_mtime > 2.0
            mtime = str(st.st_mtime_ns) if settled else "recent"
        if (state.get("derived_dirty") != "1" and mtime != "recent"
                and state.get("content_mtime_ns") == mtime):
            return
        listing = content_sessions(self.layout.content_dir)
        conn.execute("BEGIN IMMEDIATE")
        try:
            state = self._state(conn)
            if state.get("derived_dirty") == "1":
                derive_all(conn, listing.__contains__)
            else:
                refresh_content_flags(conn, listing)
            self._set_state(conn, derived_dirty=0, content_mtime_ns=mtime)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------ queries

    def summary(self, spec: SummarySpec) -> SummaryResult:
        with self._lock, self._errors("summary"):
            return summarize_archive(self._connect(), spec)

    def records(self, kind: str, flt: Filter | None = None) -> Iterator[Record]:
        """Folded records of one kind (as the file store's ledger scan gives them)."""
        with self._errors(f"reading {kind} records"):
            yield from iter_records(self._connect, kind, flt, self._lock)

    # ------------------------------------------------------------ maintenance

    def files(self) -> dict[str, int]:
        """Sizes of the archive's files and of the ledger it reflects."""
        out: dict[str, int] = {}
        for path in (self.path, Path(f"{self.path}-wal"), self.layout.ledger):
            with contextlib.suppress(FileNotFoundError):
                out[path.name] = path.stat().st_size
        return out

    def status(self) -> dict[str, Any]:
        """Schema, sync point, row counts and file sizes; builds nothing."""
        try:
            ledger_size = self.layout.ledger.stat().st_size
        except FileNotFoundError:
            ledger_size = 0
        out: dict[str, Any] = {"path": str(self.path), "exists": self.path.exists()}
        if not out["exists"]:
            out.update(ledger_size=ledger_size, files=self.files())
            return out
        with self._lock, self._errors("status"):
            conn = self._connect()
            conn.execute("BEGIN")
            try:
                state = self._state(conn)
                rows = {}
                if state.get("fingerprint") == fingerprint():
                    for table in TABLES:
                        rows[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            finally:
                conn.execute("COMMIT")
        offset = int(state.get("ledger_offset") or 0)
        out.update(
            schema_version=int(state.get("schema_version") or 0),
            schema_current=state.get("fingerprint") == fingerprint(),
            ledger_offset=offset,
            ledger_size=ledger_size,
            behind_bytes=max(0, ledger_size - offset),
            ledger_inode=state.get("ledger_ino") or None,
            derived_dirty=state.get("derived_dirty") == "1",
            last_build_ms=int(state["last_build_ms"]) if state.get("last_build_ms") else None,
            last_rebuild_ms=(int(state["last_rebuild_ms"]) if state.get("last_rebuild_ms")
                             else None),
            rebuild_reason=state.get("rebuild_reason") or None,
            rows=rows,
            files=self.files(),
        )
        return out

    def vacuum(self) -> tuple[int, int]:
        """Checkpoint the write-ahead log and compact the file; (bytes before, after)."""
        before = sum(v for k, v in self.files().items() if k.startswith(ARCHIVE_FILE))
        with self._lock, self._errors("vacuum"):
            conn = self._connect()
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        after = sum(v for k, v in self.files().items() if k.startswith(ARCHIVE_FILE))
        return before, after
