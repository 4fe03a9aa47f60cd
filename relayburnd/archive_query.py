"""Reading records back from the archive, as the file store's query methods return them.

Why the filters differ by kind: they reproduce what a fold of the ledger
gave (``Filter.matches`` per record), so serving the query methods from the
archive changes nothing for their callers: relationships match a session as
child or parent and ignore time and project; kinds without a project match
no project filter; the model filter (a ``summary`` model label) applies to
turns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from .archive_schema import KINDS, q
from .records import Record, ToolCall
from .storage.base import Filter

_PAGE = 5000


def _record_where(kind: str, flt: Filter) -> tuple[list[str], list[Any]]:
    """Conditions equal to what the file store's ledger scan applied for ``kind``."""
    parts: list[str] = []
    params: list[Any] = []
    if kind == "relationship":
        # relationships match a session as child or parent; time and project do not apply
        if flt.session_id is not None:
            parts.append("(session_id = ? OR parent_session_id = ?)")
            params += [flt.session_id, flt.session_id]
        if flt.sources:
            parts.append(f"source IN ({', '.join('?' for _ in flt.sources)})")
            params.extend(flt.sources)
        return parts, params
    if flt.since_ms is not None:
        parts.append("ts >= ?")
        params.append(flt.since_ms)
    if flt.until_ms is not None:
        parts.append("ts < ?")
        params.append(flt.until_ms)
    if flt.sources:
        parts.append(f"source IN ({', '.join('?' for _ in flt.sources)})")
        params.extend(flt.sources)
    if flt.session_id is not None:
        parts.append("session_id = ?")
        params.append(flt.session_id)
    if flt.project is not None:
        if KINDS[kind].has_project:
            parts.append("project = ?")
            params.append(flt.project)
        else:
            parts.append("0")
    if kind == "turn" and flt.model is not None:
        parts.append("model_label = ?")
        params.append(flt.model)
    return parts, params


def iter_records(
    connect: Callable[[], sqlite3.Connection], kind: str, flt: Filter | None,
    lock: AbstractContextManager[Any],
) -> Iterator[Record]:
    """Folded records of ``kind`` matching ``flt``, in (ts, id) order, a page at a time.

    Each page is read in its own short snapshot, so a slow consumer never holds
    a read transaction that keeps the archive's write-ahead log from shrinking.
    """
    table = KINDS[kind]
    decode = table.decoder()
    cols = ", ".join(q(c) for c in table.record_columns)
    base_parts, base_params = _record_where(kind, flt or Filter())
    after: tuple[int, str] | None = None
    ts_at = table.record_columns.index("ts")
    while True:
        parts, params = list(base_parts), list(base_params)
        if after is not None:
            parts.append("(ts > ? OR (ts = ? AND id > ?))")
            params += [after[0], after[0], after[1]]
        where = " AND ".join(parts) or "1"
        sql = (f"SELECT {cols} FROM {table.table} WHERE {where} "
               f"ORDER BY ts, id LIMIT {_PAGE}")
        with lock:
            conn = connect()
            conn.execute("BEGIN")
            try:
                rows = conn.execute(sql, params).fetchall()
                calls = _tool_calls(conn, rows, ts_at) if kind == "turn" and rows else {}
            finally:
                conn.execute("COMMIT")
        for row in rows:
            yield decode(row, calls.get(row[0]))
        if len(rows) < _PAGE:
            return
        after = (rows[-1][ts_at], rows[-1][0])


def _tool_calls(
    conn: sqlite3.Connection, rows: list[Any], ts_at: int
) -> dict[str, list[ToolCall]]:
    """Tool calls of a page of turns (in time order): one range of the clustered table."""
    out: dict[str, list[ToolCall]] = {}
    ids = [r[0] for r in rows]
    marks = ", ".join("?" for _ in ids)
    for turn_id, call_id, name, sha, nbytes in conn.execute(
        "SELECT turn_id, call_id, name, args_sha256, args_bytes FROM tool_calls "
        f"WHERE ts >= ? AND ts <= ? AND turn_id IN ({marks}) ORDER BY ts, turn_id, seq",
        [rows[0][ts_at], rows[-1][ts_at], *ids],
    ):
        out.setdefault(turn_id, []).append(
            ToolCall(id=call_id, name=name, args_sha256=sha, args_bytes=nbytes)
        )
    return out
