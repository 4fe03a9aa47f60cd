"""OpenCode: a poll source over the JSON storage tree and the SQLite database.

Each OpenCode data directory may hold both: current releases keep everything in
``opencode.db`` (or ``opencode-<channel>.db``), and the JSON files written by
earlier releases stay on disk after OpenCode migrates them. Both are read; when
both hold a message, the database row wins (the JSON copy is stale).

A poll finds the messages whose files or rows changed since the state it was
given, rebuilds each such message whole (``_opencode_records``) and returns its
records with the next state. Ids come from OpenCode's own ids (message, part,
session), never from the backend or the path, so re-reading converges.

What goes wrong is reported, one line per problem, and skipped: a locked or
corrupt database (the JSON tree is still read, the database retried on the next
poll), truncated JSON files (retried until they parse), unknown part types.
The state holds sizes, mtimes, hashes and watermarks, never content.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ..records import Record, SessionRelationship, make_id
from ._opencode_state import DbMark, RootState, load_state
from .base import JSONState, PollResult

if TYPE_CHECKING:
    from collections import Counter

    from ._opencode_db import Database

SOURCE = "opencode"
_CHANNEL_DB = r"^opencode-[A-Za-z0-9_-]+\.db$"


def _relationship(child: str, parent: str, ts: int | None) -> SessionRelationship:
    return SessionRelationship(
        id=make_id("relationship", SOURCE, child, parent, "subagent"),
        source=SOURCE,
        session_id=child,
        ts=ts or 0,
        parent_session_id=parent,
        relation="subagent",
    )


def find_databases(root: Path) -> list[Path]:
    """``opencode.db`` first, then every ``opencode-<channel>.db``, in name order."""
    try:
        names = sorted(p.name for p in root.iterdir() if p.is_file())
    except OSError:
        return []
    found = [root / "opencode.db"] if "opencode.db" in names else []
    return found + [root / n for n in names if re.match(_CHANNEL_DB, n)]


class OpenCodeSource:
    """OpenCode data directories (``$XDG_DATA_HOME/opencode``)."""

    name = SOURCE

    def __init__(self, *, busy_timeout_s: float = 2.0, write_grace_s: float = 60.0) -> None:
        self.busy_timeout_s = busy_timeout_s
        self.write_grace_ns = int(write_grace_s * 1e9)

    def poll(self, roots: Sequence[Path], state: JSONState) -> PollResult:
        st = load_state(state)
        result = PollResult(records=[], state={})
        for root in roots:
            rs = st.roots.setdefault(str(root), RootState())
            databases = find_databases(root)
            if databases or (root / "storage").is_dir():
                self._poll_root(root, rs, databases, result)
            else:
                # Nothing to read, as a scan of the (missing) storage tree would find:
                # the files it listed are gone, their records stay delivered.
                rs.files.clear()
                rs.bad.clear()
        result.state = msgspec.to_builtins(st)
        return result

    def _poll_root(
        self, root: Path, rs: RootState, databases: list[Path], result: PollResult
    ) -> None:
        # The readers are imported here, on the first poll that has something to read:
        # a host without OpenCode data never loads them.
        import sqlite3

        from ._opencode_db import Database
        from ._opencode_files import JsonTree
        from ._opencode_records import UnitContext, unit_records
        from ._opencode_shapes import ms, text_or_none

        tree = JsonTree(root, rs, grace_ns=self.write_grace_ns, now_ns=time.time_ns())
        tree.scan()
        owned_messages: set[str] = set()
        owned_sessions: set[str] = set()
        for db_path in databases:
            mark = rs.dbs.get(db_path.name, DbMark())
            try:
                with Database(db_path, self.busy_timeout_s) as db:
                    records, new_mark = self._read_db(db, mark, result.skipped)
                    owned_messages |= db.existing("message", tree.candidates)
                    owned_sessions |= db.existing("session", tree.changed_sessions)
                    result.errors.extend(db.errors)
                    result.skipped.update(db.skipped)
            except sqlite3.Error as exc:
                result.errors.append(
                    f"{db_path}: cannot read the OpenCode database ({exc}); "
                    "skipped this poll, the JSON storage is still read"
                )
                continue
            result.records.extend(records)
            rs.dbs[db_path.name] = new_mark
            result.files_read += 1
        ctx = UnitContext(tree.project_of, tree.has_compaction_part, result.skipped)
        for message_id in sorted(tree.candidates):
            if message_id in owned_messages:
                tree.mark_unread(message_id)
                continue
            unit, changed = tree.load_unit(message_id)
            if unit is not None and changed:
                result.records.extend(unit_records(unit, ctx))
        for session_id in sorted(tree.changed_sessions - owned_sessions):
            session = tree.read_session(session_id)
            parent = text_or_none(session.parentID) if session else None
            if session is not None and parent:
                created = ms(session.time.created) if session.time else None
                result.records.append(_relationship(session_id, parent, created))
        result.errors.extend(tree.errors)
        result.skipped.update(tree.skipped)
        result.files_read += tree.files_read

    def _read_db(
        self, db: Database, mark: DbMark, skipped: Counter[str]
    ) -> tuple[list[Record], DbMark]:
        """Records of every message whose row or any of whose part rows changed."""
        from ._opencode_records import UnitContext, unit_records

        messages = db.changes("message", mark.message)
        parts = db.changes("part", mark.part)
        sessions = db.changes("session", mark.session)
        ctx = UnitContext(db.project_of, db.has_compaction_part, skipped)
        records: list[Record] = []
        for unit in db.units(messages.keys | parts.keys, parts.rows):
            records.extend(unit_records(unit, ctx))
        for session_id, parent, created in db.sessions(sessions.keys):
            if parent:
                records.append(_relationship(session_id, parent, created))
        return records, DbMark(message=messages.mark, part=parts.mark, session=sessions.mark)
