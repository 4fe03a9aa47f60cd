"""Read-only, WAL-aware access to OpenCode's SQLite database.

The database is opened with ``mode=ro`` and a busy timeout, never with
``immutable=1`` and never copied: recent rows live in the ``-wal`` file, and an
immutable or copied view would miss them. Each poll reads inside one
transaction, so messages and parts come from the same snapshot.

Rows change in place (``time_updated``). A table is polled from slightly before
its watermark with ``>=`` (equal milliseconds, a writer that committed late);
rows already read with the same ``time_updated`` are remembered in the
watermark and not emitted again.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import msgspec

from ._opencode_records import Unit
from ._opencode_shapes import (
    KNOWN_PART_TYPES,
    Part,
    message_decoder,
    ms,
    part_decoder,
    text_or_none,
)
from ._opencode_state import Watermark

LOOKBACK_MS = 2000
CHUNK = 400
_KEY_COLUMN = {"message": "id", "part": "message_id", "session": "id"}


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


class Changes(msgspec.Struct):
    """What changed in one table since its watermark."""

    keys: set[str]  # message ids (message, part tables) or session ids
    rows: set[str]  # ids of the changed rows themselves
    mark: Watermark  # the watermark to save once the changes are delivered


class Database:
    """One read transaction on one database file."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.errors: list[str] = []
        self.skipped: Counter[str] = Counter()
        self._projects: dict[str, str] = {}
        uri = f"file:{quote(str(path.absolute()))}?mode=ro"
        self.conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
        try:
            self.conn.execute("BEGIN")
            self.conn.execute("SELECT 1 FROM message LIMIT 1").fetchall()
        except BaseException:
            self.conn.close()
            raise

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            pass
        finally:
            self.conn.close()

    def changes(self, table: str, mark: Watermark) -> Changes:
        key = _KEY_COLUMN[table]
        since = max(mark.wm - LOOKBACK_MS, 0)
        cursor = self.conn.execute(
            f"SELECT id, {key}, time_updated FROM {table} WHERE time_updated >= ?"
            " ORDER BY time_updated",
            (since,),
        )
        keys: set[str] = set()
        rows: set[str] = set()
        top = mark.wm
        recent: dict[str, int] = {}
        for rid, kid, updated in cursor:
            tu = int(updated or 0)
            if mark.seen.get(rid) != tu:
                rows.add(rid)
                if kid:
                    keys.add(kid)
            top = max(top, tu)
            recent[rid] = tu
            if len(recent) > 4096:
                recent = {k: v for k, v in recent.items() if v >= top - LOOKBACK_MS}
        seen = {k: v for k, v in recent.items() if v >= top - LOOKBACK_MS}
        return Changes(keys, rows, Watermark(wm=top, seen=seen))

    def existing(self, table: str, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` the table holds (the database wins over JSON copies)."""
        found: set[str] = set()
        for chunk in _chunks(sorted(ids)):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return found

    def _part(self, rid: str, mid: str, sid: str, data: str | bytes, report: bool) -> Part | None:
        try:
            part = part_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            if report:
                self.errors.append(f"{self.path}: part {rid}: unreadable data ({exc}); skipped")
                self.skipped["invalid_json"] += 1
            return None
        part.id, part.messageID, part.sessionID = rid, mid, sid
        if report and part.type not in KNOWN_PART_TYPES:
            self.errors.append(f"{self.path}: part {rid}: unknown part type {part.type!r}; skipped")
            self.skipped["unknown_part_type"] += 1
        return part

    def units(self, message_ids: Iterable[str], changed_parts: set[str]) -> Iterator[Unit]:
        """Each message with all its parts; errors go to ``self.errors`` (reported for
        rows that changed, so an unreadable row is named once, not on every poll)."""
        for chunk in _chunks(sorted(message_ids)):
            marks = ",".join("?" * len(chunk))
            parts: dict[str, list[Part]] = {}
            for rid, mid, sid, data in self.conn.execute(
                f"SELECT id, message_id, session_id, data FROM part"
                f" WHERE message_id IN ({marks}) ORDER BY message_id, id",
                chunk,
            ):
                part = self._part(rid, mid, sid, data, rid in changed_parts)
                if part is not None:
                    parts.setdefault(mid, []).append(part)
            for mid, sid, created, data in self.conn.execute(
                f"SELECT id, session_id, time_created, data FROM message WHERE id IN ({marks})",
                chunk,
            ):
                try:
                    msg = message_decoder.decode(data)
                except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
                    self.errors.append(f"{self.path}: message {mid}: unreadable data ({exc})")
                    self.skipped["invalid_json"] += 1
                    continue
                msg.id, msg.sessionID = mid, sid
                yield Unit(msg, parts.get(mid, []), row_created=ms(created), from_db=True)

    def has_compaction_part(self, message_id: str) -> bool:
        rows = self.conn.execute("SELECT data FROM part WHERE message_id = ?", (message_id,))
        for (data,) in rows:
            try:
                if part_decoder.decode(data).type == "compaction":
                    return True
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
                continue
        return False

    def project_of(self, session_id: str) -> str:
        """The session's directory, else its project's worktree; '' when unknown."""
        if session_id in self._projects:
            return self._projects[session_id]
        try:
            row = self.conn.execute(
                "SELECT s.directory, p.worktree FROM session s"
                " LEFT JOIN project p ON p.id = s.project_id WHERE s.id = ?",
                (session_id,),
            ).fetchone()
        except sqlite3.Error:
            return ""
        found = (text_or_none(row[0]) or text_or_none(row[1]) or "") if row else ""
        self._projects[session_id] = found
        return found

    def sessions(self, ids: Iterable[str]) -> Iterator[tuple[str, str | None, int | None]]:
        """(session id, parent session id, created ms) of the given sessions."""
        for chunk in _chunks(sorted(ids)):
            marks = ",".join("?" * len(chunk))
            for sid, parent, created in self.conn.execute(
                f"SELECT id, parent_id, time_created FROM session WHERE id IN ({marks})", chunk
            ):
                yield sid, text_or_none(parent), ms(created)
