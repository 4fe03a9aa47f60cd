"""The file store: ``ledger.jsonl`` plus ``content/<session>.jsonl`` in RELAYBURN_HOME.

* ``ledger.jsonl``: one JSON object per line with a ``kind`` field. A record
  is appended when it is new or ranks above the stored copy; readers fold by
  id keeping the greatest rank, and skip kinds they do not know.
* ``content/<session>.jsonl``: content records of one session, appended in
  arrival order, read back sorted by time then position.
* ``ledger.index.sqlite``: id -> rank, so a write knows what is new without
  reading the ledger, with the ledger size it covers.
* A write is atomic: before appending, the sizes of the files it will touch are
  recorded in the index (``pending``); the appends are fsynced; then the index
  rows are committed and ``pending`` cleared in one transaction. A crash in
  between is rolled back on the next open by truncating those files to the
  recorded sizes (the batch was never acknowledged, so it will be re-sent). If
  the index is lost, or covers less than the ledger, it is brought up to date
  from the ledger. A backfill into an empty store relies on that: its process
  answers "is it new?" from memory and inserts the index rows once, in key
  order, at ``close`` (one pass over the index instead of one per batch).
* ``store.lock``: an ``flock`` held by writers and by content pruning.
* ``archive.sqlite``: the derived read model of the ledger (``archive.py``).
  ``summary`` and the record queries bring it up to date (applying only the
  ledger's tail, up to the size committed under ``store.lock``) and read it,
  so reports never rescan the ledger. If it cannot be used, they fall back to
  folding the ledger and log why.
* ``prune_content(before_ms)`` rewrites a session's sidecar without its records
  older than ``before_ms``: under the exclusive ``store.lock``, after rolling
  back any ``pending`` append (so a recorded pre-append size can never later
  truncate the rewritten file), to a temp file that is fsynced and renamed.

A write is durable (fsync) before ``write`` returns, so the pipeline may then
advance cursors.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from .. import faults
from ..errors import RelayburnError, SinkRejected, SinkUnavailable
from ..home import HomeLayout, atomic_write_bytes, file_lock, fsync_dir
from ..logging import get_logger
from ..records import (
    KIND_OF,
    TYPE_OF,
    Batch,
    Compaction,
    ContentRecord,
    KindCounts,
    Record,
    SessionRelationship,
    ToolResultEvent,
    Turn,
    UserTurn,
    WriteResult,
    decode,
    encode,
    fold,
)
from ..reports import model_label, summarize
from .base import Filter, SummaryResult, SummarySpec

if TYPE_CHECKING:
    from ..archive import Archive
    from ..config import Settings

log = get_logger("storage.file")

_SAFE_SESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}")


def is_safe_session_id(session_id: str) -> bool:
    """A session id that can name a file: no separators, no ``..``, printable ASCII."""
    return bool(_SAFE_SESSION.fullmatch(session_id)) and ".." not in session_id


class _Head(msgspec.Struct):
    kind: str = ""
    id: str = ""
    rank: str = ""


_head_decoder = msgspec.json.Decoder(_Head)
# index rows whose ids may already be there: the greater rank stays
_UPSERT_GREATER_RANK = (
    "INSERT INTO idx VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
    "rank=excluded.rank, kind=excluded.kind WHERE excluded.rank > idx.rank"
)
_KIND_PREFIX = {kind: b'{"kind":"' + kind.encode() + b'"' for kind in TYPE_OF}


class FileAdapter:
    """JSONL ledger + content sidecars. See the module docstring."""

    name = "file"

    def __init__(self, settings: Settings) -> None:
        self.layout = HomeLayout(settings.home).ensure()
        self._db: sqlite3.Connection | None = None
        self._archive: Archive | None = None
        self._sidecars: dict[str, _SidecarIds] = {}  # least recently used first
        self._mirror: dict[str, str] | None = None
        self._mirror_tried = False
        # (inode, size) of the ledger as this process's last write left it
        self._ledger_left: tuple[int, int] | None = None
        # what the last recovery found: (inode, size), None without a ledger
        self._ledger_seen: tuple[int, int] | None = None
        # id -> index row, appended by this process past the index's coverage
        self._unindexed: dict[str, tuple[str, str, str]] = {}
        self._unindexed_from = 0

    # ------------------------------------------------------------ index

    def _index(self) -> sqlite3.Connection:
        if self._db is None:
            path = self.layout.ledger_index
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            # the daemon writes from its shipper thread and closes from the main one;
            # one thread at a time uses the store (as with the other SQLite handles)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit lost to a power cut would bring back ``pending`` and the
            # next open would roll back records that were already acknowledged.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            # ids are random digests, so each batch touches pages all over the index:
            # a larger page cache than the 2 MB default keeps them from being re-read
            db.execute("PRAGMA cache_size=-16384")
            # WITHOUT ROWID: one b-tree keyed by id instead of a rowid table plus a
            # unique index (indexes made before keep their layout; the SQL is the same)
            db.execute(
                "CREATE TABLE IF NOT EXISTS idx (id TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                "rank TEXT NOT NULL) WITHOUT ROWID"
            )
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self._db = db
        return self._db

    def _meta(self, key: str) -> str | None:
        row = self._index().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _rollback_pending(self) -> None:
        """Undo the appends of a write that crashed before its index commit."""
        db = self._index()
        pending = self._meta("pending")
        if not pending:
            return
        sizes: dict[str, int] = msgspec.json.decode(pending.encode())
        for name, size in sizes.items():
            path = self.layout.root / name
            try:
                if path.stat().st_size > size:
                    os.truncate(path, size)
                    log.warning("store.rolled_back", file=str(path), offset=size)
            except FileNotFoundError:
                continue
        db.execute("DELETE FROM meta WHERE key='pending'")

    def _recover(self) -> None:
        """Make the files and the index agree (called under the store lock).

        The one exception is a ledger exactly as this process's last write left it
        while this process holds the index rows of its tail (``_unindexed``): the
        index is then brought up to date from memory, later (``_flush_unindexed``).
        """
        self._rollback_pending()
        db = self._index()
        path = self.layout.ledger
        try:
            st = path.stat()
        except FileNotFoundError:
            self._ledger_seen = None
            self._unindexed.clear()
            if self._meta("ledger_size") not in (None, "0"):
                db.execute("DELETE FROM idx")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('ledger_size', '0')")
            return
        size = st.st_size
        if size:
            with path.open("rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    cut = _last_newline(fh, size)
                    log.warning("ledger.torn_tail_removed", file=str(path), offset=cut,
                                bytes=size - cut)
                    os.truncate(path, cut)
                    size = cut
        covered = int(self._meta("ledger_size") or 0)
        self._ledger_seen = (st.st_ino, size)
        if self._unindexed:
            if self._ledger_seen == self._ledger_left and covered == self._unindexed_from:
                return
            # another writer came in between: its recovery indexed this process's rows
            # from the ledger, or the code below does
            self._unindexed.clear()
        ino = str(st.st_ino)
        if self._meta("ledger_ino") not in (None, ino) or covered > size:
            db.execute("DELETE FROM idx")
            covered = 0
        if covered < size:
            self._index_ledger_range(covered, size)
        self._commit_coverage(st.st_ino, size)

    def _index_ledger_range(self, start: int, end: int) -> None:
        db = self._index()
        rows: dict[str, tuple[str, str]] = {}
        with self.layout.ledger.open("rb") as fh:
            fh.seek(start)
            for line in _iter_lines(fh, end - start):
                try:
                    head = _head_decoder.decode(line)
                except ValueError:  # msgspec.DecodeError, UnicodeDecodeError
                    continue
                key = head.id
                cur = rows.get(key)
                if cur is None or head.rank > cur[1]:
                    rows[key] = (head.kind, head.rank)
        db.execute("BEGIN")
        db.executemany(
            _UPSERT_GREATER_RANK,
            ((k, v[0], v[1]) for k, v in rows.items()),
        )
        db.execute("COMMIT")

    # ------------------------------------------------------------ write

    def write(self, batch: Batch) -> WriteResult:
        result = WriteResult()
        if not batch.records:
            return result
        sessions = {r.session_id for r in batch.records if type(r) is ContentRecord}
        bad = {sid for sid in sessions if not is_safe_session_id(sid)}
        unsafe = tuple(
            r.id for r in batch.records if type(r) is ContentRecord and r.session_id in bad
        ) if bad else ()
        if unsafe:
            raise SinkRejected(
                f"{len(unsafe)} content record(s) carry a session id that is not safe as a "
                "file name", record_ids=unsafe,
            )
        try:
            with file_lock(self.layout.store_lock, timeout=10.0):
                return self._write_locked(batch, result)
        except TimeoutError as exc:
            raise SinkUnavailable(f"file store busy: {exc}") from exc
        except sqlite3.OperationalError as exc:
            raise SinkUnavailable(f"file store index: {exc}") from exc
        except OSError as exc:
            raise SinkUnavailable(f"file store {self.layout.root}: {exc.strerror or exc}") from exc

    def _write_locked(self, batch: Batch, result: WriteResult) -> WriteResult:
        self._recover()
        db = self._index()
        folded = fold(batch.records)
        # ledger ids: the copy in memory of a backfill, else the index; content ids:
        # each session's sidecar
        mirror = self._current_mirror()
        stored = mirror if mirror is not None else self._index_ranks(
            [rid for rid, rec in folded.items() if type(rec) is not ContentRecord])
        sidecars: dict[str, _SidecarIds] = {}
        ledger_parts: list[bytes] = []
        content_parts: dict[str, list[bytes]] = {}
        index_rows: list[tuple[str, str, str]] = []
        content_rows: list[tuple[str, str, str]] = []
        tallies: dict[type, KindCounts] = {}
        sealed_line = batch.lines.get
        for rid, rec in folded.items():
            rtype = type(rec)
            counts = tallies.get(rtype)
            if counts is None:
                counts = tallies[rtype] = result.kind(KIND_OF[rtype])
            if rtype is ContentRecord:
                sid = rec.session_id
                ids = sidecars.get(sid)
                if ids is None:
                    ids = sidecars[sid] = self._sidecar_ids(sid)
                old = ids.ranks.get(rid)
            else:
                old = stored.get(rid)
            rank = rec.rank
            if old is not None and old >= rank:
                counts.unchanged += 1
                continue
            if old is None:
                counts.inserted += 1
            else:
                counts.updated += 1
            line = sealed_line((rid, rank))  # ``batch.encoded``, without a call per record
            if line is None:
                line = encode(rec)
            if rtype is ContentRecord:
                content_parts.setdefault(rec.session_id, []).append(line)
                content_rows.append((rec.session_id, rid, rank))
            else:
                ledger_parts.append(line)
                index_rows.append((rid, KIND_OF[rtype], rank))
        if not index_rows and not content_rows:
            return result
        targets = {f"content/{sid}.jsonl": lines for sid, lines in content_parts.items()}
        if ledger_parts:
            targets[self.layout.ledger.name] = ledger_parts
        sizes = {name: _size(self.layout.root / name) for name in targets}
        db.execute("INSERT OR REPLACE INTO meta VALUES ('pending', ?)",
                   (msgspec.json.encode(sizes).decode(),))
        ledger_st = None
        appended: dict[str, os.stat_result] = {}
        for name, lines in targets.items():
            lines.append(b"")  # joined with newlines: every line ends with one
            st = _append_durably(self.layout.root / name, b"\n".join(lines))
            if name == self.layout.ledger.name:
                ledger_st = st
            else:
                appended[name] = st
        faults.hit("after_ledger_write")
        db.execute("BEGIN")
        db.execute("DELETE FROM meta WHERE key='pending'")
        defer = mirror is not None and ledger_st is not None
        if defer:
            # a backfill into an empty store: the copy in memory answers lookups, so
            # the index rows wait and go in once, in key order (``_flush_unindexed``)
            if not self._unindexed:
                self._unindexed_from = int(self._meta("ledger_size") or 0)
            unindexed = self._unindexed
            for row in index_rows:
                unindexed[row[0]] = row
        else:
            # key order: each index page is visited once per batch (ids are unique here,
            # and sorting them as strings is much faster than sorting the rows)
            index_rows.sort(key=itemgetter(0))
            db.executemany(_UPSERT_GREATER_RANK, index_rows)
            if ledger_st is not None:
                self._commit_coverage(ledger_st.st_ino, ledger_st.st_size)
        db.execute("COMMIT")
        if ledger_st is not None:
            self._ledger_left = (ledger_st.st_ino, ledger_st.st_size)
        if mirror is not None:
            mirror.update({rid: rank for rid, _kind, rank in index_rows})
            if len(mirror) > _MIRROR_MAX:
                # too large to keep: the index answers from now on, so it must be whole
                self._flush_unindexed()
                self._mirror = None
        # only now, with the write committed, do the cached sidecar ids include it
        for sid, rid, rank in content_rows:
            sidecars[sid].ranks[rid] = rank
        for sid, ids in sidecars.items():
            after = appended.get(f"content/{sid}.jsonl")
            if after is not None:
                ids.revalidate(self.layout.content_dir / f"{sid}.jsonl", after)
        return result

    def _index_ranks(self, ids: list[str]) -> dict[str, str]:
        """id -> rank of those ``ids`` that the index holds."""
        db = self._index()
        stored: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            marks = ",".join("?" * len(part))
            stored.update(db.execute(f"SELECT id, rank FROM idx WHERE id IN ({marks})", part))
        return stored

    def _current_mirror(self) -> dict[str, str] | None:
        """An in-memory copy of the index, for a store this process filled from empty.

        A first backfill writes only new ids, and asking the index about each of
        them, then inserting them batch by batch at random places, was a large part
        of its cost. The copy is made only when the index is empty at this
        process's first write, stays bounded (``_MIRROR_MAX``), and is used only
        while the ledger is exactly as this process's last write left it: any
        other writer changes the ledger, and the copy is dropped. Call after
        ``_recover``.
        """
        if self._mirror is not None:
            if self._ledger_seen == self._ledger_left:
                return self._mirror
            self._mirror = None
        if not self._mirror_tried:
            self._mirror_tried = True
            if self._index().execute("SELECT 1 FROM idx LIMIT 1").fetchone() is None:
                self._mirror, self._ledger_left = {}, self._ledger_seen
                return self._mirror
        return None

    def _commit_coverage(self, ino: int, size: int) -> None:
        """Record, inside the caller's transaction, the ledger the index now covers."""
        db = self._index()
        db.execute("INSERT OR REPLACE INTO meta VALUES ('ledger_size', ?)", (str(size),))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('ledger_ino', ?)", (str(ino),))

    def _flush_unindexed(self) -> None:
        """Insert the index rows of this process's deferred appends, in key order.

        The caller holds the store lock and has just run ``_recover``, which kept
        the rows only if the ledger is still as this process left it.
        """
        if not self._unindexed or self._ledger_left is None:
            return
        db = self._index()
        db.execute("BEGIN")
        db.executemany(
            _UPSERT_GREATER_RANK,
            # ids sort as plain strings, which is much faster than sorting the rows
            [self._unindexed[rid] for rid in sorted(self._unindexed)],
        )
        self._commit_coverage(*self._ledger_left)
        db.execute("COMMIT")
        self._unindexed.clear()

    def _sidecar_ids(self, session_id: str) -> _SidecarIds:
        """id -> rank of a session's stored content, read once and then only its tail.

        Content ids are not in the index: a session's sidecar is the index of its
        own content. The cache is keyed by the sidecar's inode, size and first
        bytes, so appends by another process are read from where the cache left
        off, and a rewritten (pruned) or replaced sidecar is read again whole.
        """
        path = self.layout.content_dir / f"{session_id}.jsonl"
        cached = self._sidecars.pop(session_id, None)
        ids = _SidecarIds.load(path, cached)
        self._sidecars[session_id] = ids
        while len(self._sidecars) > _SIDECAR_CACHE:
            self._sidecars.pop(next(iter(self._sidecars)))
        return ids

    # ------------------------------------------------------------ read

    def _scan(self, kinds: Iterable[str]) -> Iterator[Record]:
        """Every ledger record of the given kinds, not yet folded."""
        prefixes = tuple(_KIND_PREFIX[k] for k in kinds)
        path = self.layout.ledger
        if not path.exists():
            return
        with path.open("rb") as fh:
            for line in _iter_lines(fh, None):
                if not line.startswith(prefixes):
                    continue
                try:
                    yield decode(line)
                except ValueError:  # msgspec.DecodeError, UnicodeDecodeError
                    continue

    def _folded(self, kind: str) -> list[Record]:
        return list(fold(self._scan([kind])).values())  # type: ignore[arg-type]

    # The query methods read the archive; ``_ledger_*`` is the same answer from
    # a full fold of the ledger, used when the archive cannot be.

    def _ledger_records(self, kind: str, flt: Filter) -> Iterator[Record]:
        for rec in self._folded(kind):
            if isinstance(rec, SessionRelationship):
                if (flt.session_id is None or flt.session_id in (
                        rec.session_id, rec.parent_session_id)) and (
                        not flt.sources or rec.source in flt.sources):
                    yield rec
                continue
            project = getattr(rec, "project", None)
            if not flt.matches(ts=rec.ts, source=rec.source, session_id=rec.session_id,
                               project=project):
                continue
            if (isinstance(rec, Turn) and flt.model is not None
                    and model_label(rec.model, rec.speed) != flt.model):
                continue
            yield rec

    def _records(self, kind: str, flt: Filter | None) -> Iterator[Record]:
        flt = flt or Filter()
        archive = self.fresh_archive()
        if archive is None:
            yield from self._ledger_records(kind, flt)
        else:
            yield from archive.records(kind, flt)

    def turns(self, flt: Filter | None = None) -> Iterator[Turn]:
        return self._records("turn", flt)  # type: ignore[return-value]

    def user_turns(self, flt: Filter | None = None) -> Iterator[UserTurn]:
        return self._records("user-turn", flt)  # type: ignore[return-value]

    def compactions(self, flt: Filter | None = None) -> Iterator[Compaction]:
        return self._records("compaction", flt)  # type: ignore[return-value]

    def tool_results(self, flt: Filter | None = None) -> Iterator[ToolResultEvent]:
        return self._records("tool-result", flt)  # type: ignore[return-value]

    def relationships(self, flt: Filter | None = None) -> Iterator[SessionRelationship]:
        """Relationships where the filter's session is the child or the parent."""
        return self._records("relationship", flt)  # type: ignore[return-value]

    def content(self, session_id: str) -> list[ContentRecord]:
        if not is_safe_session_id(session_id):
            return []
        path = self.layout.content_dir / f"{session_id}.jsonl"
        if not path.exists():
            return []
        records: list[Record] = []
        with path.open("rb") as fh:
            for line in _iter_lines(fh, None):
                try:
                    records.append(decode(line))
                except ValueError:  # msgspec.DecodeError, UnicodeDecodeError
                    continue
        out = [r for r in fold(records).values() if isinstance(r, ContentRecord)]
        out.sort(key=lambda r: (r.ts, r.message_id, r.seq, r.id))
        return out

    def content_sessions(self) -> list[str]:
        return sorted(p.stem for p in self.layout.content_dir.glob("*.jsonl"))

    def iter_records(self) -> Iterator[Record]:
        """Every stored record of every kind, folded; content last, by session."""
        folded: dict[str, Record] = fold(  # type: ignore[assignment]
            self._scan(k for k in TYPE_OF if k != "content"))
        yield from folded.values()
        for session_id in self.content_sessions():
            yield from self.content(session_id)

    def summary(self, spec: SummarySpec) -> SummaryResult:
        archive = self.fresh_archive()
        if archive is None:
            return summarize(self._ledger_records("turn", Filter()), spec)  # type: ignore[arg-type]
        return archive.summary(spec)

    # ------------------------------------------------------------ archive

    def archive(self) -> Archive:
        """The derived archive of this store (built on demand)."""
        if self._archive is None:
            from ..archive import Archive

            self._archive = Archive(self.layout, self.committed_ledger_size)
        return self._archive

    def fresh_archive(self) -> Archive | None:
        """The archive brought up to date, or None (logged) when it cannot be used."""
        archive = self.archive()
        try:
            archive.build()
        except RelayburnError as exc:
            log.warning("archive.unavailable", file=str(archive.path), reason=str(exc))
            archive.close()
            return None
        return archive

    def committed_ledger_size(self) -> int:
        """The ledger size covering every acknowledged write and nothing else.

        Taken under the store lock after recovery, so the bytes of a write
        that crashed before its commit are rolled back, never read. When the
        index already covers the whole ledger and no write is pending there is
        nothing to recover, and the index is not written (a report costs no fsync).
        """
        try:
            with file_lock(self.layout.store_lock, timeout=10.0):
                try:
                    st = self.layout.ledger.stat()
                except FileNotFoundError:
                    st = None
                if (st is not None and self._meta("pending") is None
                        and self._meta("ledger_size") == str(st.st_size)
                        and self._meta("ledger_ino") == str(st.st_ino)):
                    return st.st_size
                self._recover()
                return _size(self.layout.ledger)
        except TimeoutError as exc:
            raise SinkUnavailable(f"file store busy: {exc}") from exc
        except sqlite3.OperationalError as exc:
            raise SinkUnavailable(f"file store index: {exc}") from exc

    # ------------------------------------------------------------ retention

    def prune_content(self, before_ms: int) -> int:
        """Remove content records older than ``before_ms``; returns how many.

        Each sidecar is rewritten under the exclusive store lock, so no append
        runs meanwhile, and only after pending appends were rolled back: the
        ``pending`` sizes a crashed write recorded describe the old file and
        must never be applied to the rewritten one.
        """
        removed = 0
        for leftover in self.layout.content_dir.glob("*.jsonl.new"):
            with file_lock(self.layout.store_lock, timeout=10.0):
                leftover.unlink(missing_ok=True)  # a rewrite that crashed before its rename
        for session_id in self.content_sessions():
            try:
                with file_lock(self.layout.store_lock, timeout=10.0):
                    self._recover()
                    removed += _prune_file(
                        self.layout.content_dir / f"{session_id}.jsonl", before_ms
                    )
            except TimeoutError as exc:
                raise SinkUnavailable(f"file store busy: {exc}") from exc
            except sqlite3.OperationalError as exc:
                raise SinkUnavailable(f"file store index: {exc}") from exc
            except OSError as exc:
                raise SinkUnavailable(
                    f"file store {self.layout.content_dir}: {exc.strerror or exc}"
                ) from exc
        return removed

    def healthcheck(self) -> None:
        root = self.layout.root
        if not os.access(root, os.W_OK):
            raise SinkUnavailable(f"file store {root} is not writable")

    def release_memory(self) -> bool:
        """After a burst of writes (a backlog): index the deferred rows, then drop the
        in-memory index copy, the sidecar id caches and SQLite's page cache.

        A first backfill keeps up to ``_MIRROR_MAX`` ids in memory to answer "is it
        new?" quickly; a daemon that goes quiet afterwards would hold them, and the
        pages it read, for as long as it runs. Later writes ask the index instead.
        False when another writer held the store (the next quiet spell tries again).
        """

        def release() -> None:
            self._flush_unindexed()
            self._mirror = None
            self._sidecars.clear()
            if self._db is not None:
                self._db.execute("PRAGMA shrink_memory")

        reason = self._if_lock_free(release)
        if reason is not None:
            log.info("store.release_skipped", reason=reason, stage="idle")
        return reason is None

    def _if_lock_free(self, work: Callable[[], None]) -> str | None:
        """``work`` after ``_recover``, under the store lock if it is free right now; why
        not, otherwise. Whoever holds the lock is a writer, and every writer indexes the
        ledger's tail itself."""
        try:
            with file_lock(self.layout.store_lock, timeout=0.0):
                self._recover()
                work()
        except (TimeoutError, OSError, sqlite3.Error) as exc:
            return str(exc)
        return None

    def close(self) -> None:
        if self._unindexed:
            # never wait for the lock here: a shutdown may have seconds left
            reason = self._if_lock_free(self._flush_unindexed)
            if reason is not None:
                log.warning("store.index_deferred", rows=len(self._unindexed),
                            reason=reason, stage="close",
                            hint="nothing is lost: the next write indexes them")
            self._unindexed.clear()
        if self._archive is not None:
            self._archive.close()
            self._archive = None
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


# ------------------------------------------------------------ helpers


class _Ts(msgspec.Struct):
    ts: int


_ts_decoder = msgspec.json.Decoder(_Ts)


def _prune_file(path: Path, before_ms: int) -> int:
    """Rewrite ``path`` without records older than ``before_ms`` (caller holds the lock).

    Lines that are not records are kept as they are; a file left empty is
    removed. Temp file, fsync, rename, fsync of the directory: a crash leaves
    the old file or the new one.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    kept: list[bytes] = []
    removed = 0
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("content.torn_tail_removed", file=str(path), offset=end,
                    bytes=len(data) - end)
    for line in data[:end].split(b"\n"):
        if not line:
            continue
        try:
            ts = _ts_decoder.decode(line).ts
        except msgspec.DecodeError:
            kept.append(line)
            continue
        if ts < before_ms:
            removed += 1
        else:
            kept.append(line)
    if not removed and end == len(data):
        return 0
    if not kept:
        path.unlink()
        fsync_dir(path.parent)
    else:
        kept.append(b"")  # joined with newlines: every line ends with one
        atomic_write_bytes(path, b"\n".join(kept), keep_prev=False, fault_points=False)
    return removed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _append_durably(path: Path, data: bytes) -> os.stat_result:
    """Append and fsync; returns the file's status after the append."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fdatasync(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


_SIDECAR_CACHE = 128  # sessions whose content ids are kept between writes
_MIRROR_MAX = 100_000  # ids in the in-memory copy of an index filled from empty
_HEAD_BYTES = 256


class _SidecarIds:
    """The content ids (with ranks) of one sidecar, valid for its inode, size and head."""

    def __init__(self, ino: int | None, size: int, head: bytes, ranks: dict[str, str]) -> None:
        self.ino = ino
        self.size = size
        self.head = head
        self.ranks = ranks

    @classmethod
    def load(cls, path: Path, cached: _SidecarIds | None) -> _SidecarIds:
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return cls(None, 0, b"", {})
        with fh:
            st = os.fstat(fh.fileno())
            head = os.pread(fh.fileno(), _HEAD_BYTES, 0)
            start = 0
            ranks: dict[str, str] = {}
            if (cached is not None and cached.ino == st.st_ino and cached.size <= st.st_size
                    and head.startswith(cached.head)):
                start, ranks = cached.size, cached.ranks
            end = max(start, _last_newline(fh, st.st_size))  # a torn tail is not a record
            if start < end:
                fh.seek(start)
                for line in _iter_lines(fh, end - start):
                    try:
                        rec = _head_decoder.decode(line)
                    except ValueError:  # msgspec.DecodeError, UnicodeDecodeError
                        continue
                    cur = ranks.get(rec.id)
                    if cur is None or rec.rank > cur:
                        ranks[rec.id] = rec.rank
            return cls(st.st_ino, end, head, ranks)

    def revalidate(self, path: Path, st: os.stat_result) -> None:
        """After this process appended to the sidecar: the cache now covers ``st``."""
        self.ino = st.st_ino
        self.size = st.st_size
        if len(self.head) < _HEAD_BYTES:
            with path.open("rb") as fh:
                self.head = os.pread(fh.fileno(), _HEAD_BYTES, 0)


def _last_newline(fh: object, size: int) -> int:
    """Offset just after the last newline before ``size`` (0 when there is none)."""
    assert hasattr(fh, "seek") and hasattr(fh, "read")
    pos = size
    step = 65536
    while pos > 0:
        start = max(0, pos - step)
        fh.seek(start)
        block = fh.read(pos - start)
        nl = block.rfind(b"\n")
        if nl >= 0:
            return start + int(nl) + 1
        pos = start
    return 0


def _iter_lines(fh: object, limit: int | None) -> Iterator[bytes]:
    """Complete lines from the current position (up to ``limit`` bytes)."""
    assert hasattr(fh, "read")
    remaining = limit
    carry = b""
    while True:
        want = 8 * 1024 * 1024 if remaining is None else min(8 * 1024 * 1024, remaining)
        if want <= 0:
            break
        block = fh.read(want)
        if not block:
            break
        if remaining is not None:
            remaining -= len(block)
        buf = carry + block if carry else block
        lines = buf.split(b"\n")
        carry = lines.pop()
        for line in lines:
            if line:
                yield line
