"""Applying ledger lines to the archive, and keeping its derived tables in step.

Why this shape: the ledger is append-only and folded by id (greatest ``rank``
wins), so a chunk of new lines is folded on its own, compared with the stored
ranks, and only the winners are written; rows the chunk does not beat are not
touched. The derived tables (``billable`` flags, ``sessions``, ``usage_*``)
are then recomputed for exactly what changed: the sessions, message ids and
15-minute slots of the rows written, before and after. A large tail (a cold
build) skips that per-chunk work and re-derives everything once at the end.

Derived sums of ``cost_usd`` use an exactly rounded sum (``math.fsum``), so
they do not depend on the order SQLite visits rows: an archive built in many
small steps and one rebuilt in one pass hold identical values.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .archive_schema import (
    HOUR_SLOTS,
    INDEX_NAMES,
    INDEXES,
    KINDS,
    RELATION_ORDER,
    SESSION_COLUMNS,
    USAGE_METRICS,
    q,
    slot_of,
)
from .records import KIND_OF, Turn, decode

_IN_CHUNK = 5000  # ids per IN (...) list, below SQLite's variable limit

class ExactSum:
    """SQLite aggregate ``fsum(x)``: exactly rounded float sum, NULL when no value."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def step(self, value: float | None) -> None:
        if value is not None:
            self.values.append(value)

    def finalize(self) -> float | None:
        return math.fsum(self.values) if self.values else None


def register_functions(conn: sqlite3.Connection) -> None:
    conn.create_aggregate("fsum", 1, ExactSum)  # type: ignore[arg-type]


@dataclass
class KindStats:
    inserted: int = 0
    replaced: int = 0
    unchanged: int = 0


@dataclass
class ApplyStats:
    """What one or more chunks did: per kind, plus lines that were not records."""

    kinds: dict[str, KindStats] = field(default_factory=dict)
    lines: int = 0
    skipped: int = 0

    def kind(self, kind: str) -> KindStats:
        return self.kinds.setdefault(kind, KindStats())

    def add(self, other: ApplyStats) -> None:
        self.lines += other.lines
        self.skipped += other.skipped
        for kind, s in other.kinds.items():
            mine = self.kind(kind)
            mine.inserted += s.inserted
            mine.replaced += s.replaced
            mine.unchanged += s.unchanged

    @property
    def written(self) -> int:
        return sum(s.inserted + s.replaced for s in self.kinds.values())


@dataclass
class Touched:
    """Keys whose derived rows must be recomputed after a chunk."""

    sessions: set[str] = field(default_factory=set)
    messages: set[str] = field(default_factory=set)
    slots: set[int] = field(default_factory=set)


def _chunks(items: list[Any], size: int = _IN_CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _upsert_sql(table: str, columns: tuple[str, ...]) -> str:
    cols = ", ".join(q(c) for c in columns)
    marks = ", ".join("?" for _ in columns)
    sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in columns if c != "id")
    return (
        f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT (id) DO UPDATE SET {sets} "
        f'WHERE excluded."rank" > {table}."rank"'
    )


_UPSERTS = {kind: _upsert_sql(t.table, t.all_columns) for kind, t in KINDS.items()}


def fold_lines(data: bytes, base: int, stats: ApplyStats) -> dict[str, dict[str, tuple[Any, int]]]:
    """Per kind, per id: the greatest-rank record among ``data``'s lines and its offset."""
    best: dict[str, dict[str, tuple[Any, int]]] = {kind: {} for kind in KINDS}
    pos = 0
    size = len(data)
    while pos < size:
        nl = data.find(b"\n", pos)
        if nl < 0:
            nl = size
        if nl > pos:
            stats.lines += 1
            try:
                rec = decode(data[pos:nl])
            except msgspec.DecodeError:
                stats.skipped += 1
                pos = nl + 1
                continue
            per_kind = best.get(KIND_OF[type(rec)])
            if per_kind is None:  # content belongs in the sidecars, not the ledger
                stats.skipped += 1
            else:
                cur = per_kind.get(rec.id)
                if cur is None or rec.rank > cur[0].rank:
                    per_kind[rec.id] = (rec, base + pos)
        pos = nl + 1
    return best


def apply_folded(
    conn: sqlite3.Connection,
    best: dict[str, dict[str, tuple[Any, int]]],
    stats: ApplyStats,
    touched: Touched | None,
) -> None:
    """Write the winners of a folded chunk; note what changed in ``touched``."""
    for kind, recs in best.items():
        if not recs:
            continue
        table = KINDS[kind]
        is_turn = kind == "turn"
        extra = ", message_id, slot, ts" if is_turn else ""
        stored: dict[str, tuple[Any, ...]] = {}
        for part in _chunks(list(recs)):
            marks = ", ".join("?" for _ in part)
            sql = (f'SELECT id, "rank", session_id{extra} FROM {table.table} '
                   f"WHERE id IN ({marks})")
            for row in conn.execute(sql, part):
                stored[row[0]] = row
        counts = stats.kind(kind)
        rows: list[tuple[Any, ...]] = []
        replaced_turns: list[tuple[int, str]] = []
        calls: list[tuple[Any, ...]] = []
        for rid, (rec, offset) in recs.items():
            old = stored.get(rid)
            if old is not None and rec.rank <= old[1]:
                counts.unchanged += 1
                continue
            rows.append(table.row(rec, offset))
            if old is None:
                counts.inserted += 1
            else:
                counts.replaced += 1
            if touched is not None:
                touched.sessions.add(rec.session_id)
                if old is not None:
                    touched.sessions.add(old[2])
            if is_turn:
                assert isinstance(rec, Turn)
                if old is not None:
                    replaced_turns.append((old[5], rid))
                calls.extend(
                    (rid, seq, c.id, c.name, c.args_sha256, c.args_bytes, rec.session_id, rec.ts)
                    for seq, c in enumerate(rec.tool_calls)
                )
                if touched is not None:
                    touched.slots.add(slot_of(rec.ts))
                    if rec.message_id:
                        touched.messages.add(rec.message_id)
                    if old is not None:
                        touched.slots.add(old[4])
                        if old[3]:
                            touched.messages.add(old[3])
        if not rows:
            continue
        conn.executemany(_UPSERTS[kind], rows)
        if is_turn:
            conn.executemany("DELETE FROM tool_calls WHERE ts = ? AND turn_id = ?",
                             replaced_turns)
            conn.executemany("INSERT INTO tool_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)", calls)


# ------------------------------------------------------------------ derived tables

# A sidechain turn whose message id has a main-thread turn is a replay (records.is_replay).
_REPLAY = (
    "CASE WHEN turns.is_sidechain = 1 AND turns.message_id <> '' AND EXISTS (SELECT 1 "
    "FROM turns m WHERE m.message_id = turns.message_id AND m.is_sidechain = 0) "
    "THEN 0 ELSE 1 END"
)


def _fill_temp(conn: sqlite3.Connection, name: str, values: Iterable[Any]) -> None:
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (v PRIMARY KEY) WITHOUT ROWID")
    conn.execute(f"DELETE FROM temp.{name}")
    conn.executemany(f"INSERT OR IGNORE INTO temp.{name} VALUES (?)", ((v,) for v in values))


def derive_touched(
    conn: sqlite3.Connection, touched: Touched, has_content: Callable[[str], bool]
) -> None:
    """Recompute billable flags, slot sums and session rows for what a chunk changed."""
    if touched.messages:
        _fill_temp(conn, "t_messages", touched.messages)
        flipped = conn.execute(
            f"UPDATE turns SET billable = {_REPLAY} "
            "WHERE message_id IN (SELECT v FROM temp.t_messages) "
            "AND (is_sidechain = 1 OR billable = 0) "
            f"AND billable <> {_REPLAY} RETURNING session_id, slot"
        ).fetchall()
        for session_id, slot in flipped:
            touched.sessions.add(session_id)
            touched.slots.add(slot)
    if touched.slots:
        hours = {s // HOUR_SLOTS for s in touched.slots}
        _fill_temp(conn, "t_hours", hours)
        _fill_temp(conn, "t_slots", (h * HOUR_SLOTS + i for h in hours for i in range(HOUR_SLOTS)))
        derive_usage(conn, "slot IN (SELECT v FROM temp.t_slots)",
                     "hour IN (SELECT v FROM temp.t_hours)")
    if touched.sessions:
        _fill_temp(conn, "t_sessions", touched.sessions)
        derive_sessions(conn, "session_id IN (SELECT v FROM temp.t_sessions)", has_content)


def derive_all(conn: sqlite3.Connection, has_content: Callable[[str], bool]) -> None:
    """Create missing indexes and recompute every derived row (after a bulk load)."""
    for stmt in INDEXES:
        conn.execute(stmt)
    conn.execute(f"UPDATE turns SET billable = {_REPLAY} WHERE billable <> {_REPLAY}")
    derive_usage(conn, "1", "1")
    derive_sessions(conn, "1", has_content)


def drop_indexes(conn: sqlite3.Connection) -> None:
    """Bulk loads are faster without secondary indexes; ``derive_all`` puts them back."""
    for name in INDEX_NAMES:
        conn.execute(f"DROP INDEX IF EXISTS {name}")


_HOUR = f"((slot - (((slot % {HOUR_SLOTS}) + {HOUR_SLOTS}) % {HOUR_SLOTS})) / {HOUR_SLOTS})"


def derive_usage(conn: sqlite3.Connection, scope: str, hour_scope: str) -> None:
    """Recompute ``usage_15m`` rows whose slot is in ``scope`` and ``usage_1h`` rows in
    ``hour_scope`` (SQL on ``slot`` and ``hour``; ``scope`` must cover those hours)."""
    metrics = ", ".join(q(m) for m in USAGE_METRICS)
    sums = ("count(*), sum(input_tokens), sum(output_tokens), sum(cache_write_tokens), "
            "sum(cache_read_tokens), sum(reasoning_tokens), coalesce(fsum(cost_usd), 0.0), "
            "sum(1 - priced)")
    for table, col, key in (("usage_15m", "slot", "slot"), ("usage_1h", "hour", _HOUR)):
        conn.execute(f"DELETE FROM {table} WHERE {scope if col == 'slot' else hour_scope}")
        conn.execute(
            f"INSERT INTO {table} ({col}, source, project, model_label, {metrics}) "
            f"SELECT {key}, source, project, model_label, {sums} "
            f"FROM turns WHERE billable = 1 AND {scope} GROUP BY 1, source, project, model_label"
        )


def _first_of(
    conn: sqlite3.Connection, table: str, cols: str, scope: str
) -> dict[str, tuple[Any, ...]]:
    """Per session: ``cols`` of its earliest row (by ts, then id) in ``table``."""
    sql = (
        f"SELECT session_id, {cols} FROM (SELECT session_id, {cols}, row_number() OVER "
        f"(PARTITION BY session_id ORDER BY ts, id) AS rn FROM {table} WHERE {scope}) "
        "WHERE rn = 1"
    )
    return {row[0]: row[1:] for row in conn.execute(sql)}


def derive_sessions(
    conn: sqlite3.Connection, scope: str, has_content: Callable[[str], bool]
) -> None:
    """Recompute the ``sessions`` rows of the sessions in ``scope`` (SQL on ``session_id``)."""
    conn.execute(f"DELETE FROM sessions WHERE {scope}")
    ids: set[str] = set()
    turns: dict[str, tuple[Any, ...]] = {}
    for row in conn.execute(
        "SELECT session_id, count(*), sum(input_tokens), sum(output_tokens), "
        "sum(cache_write_tokens), sum(cache_read_tokens), sum(reasoning_tokens), "
        "sum(total_tokens), fsum(cost_usd), sum(1 - priced), fsum(logged_cost_usd), "
        "min(ts), max(ts), sum(tool_call_count) "
        f"FROM turns WHERE billable = 1 AND {scope} GROUP BY session_id"
    ):
        turns[row[0]] = row[1:]
    models: dict[str, list[str]] = {}
    for sid, label in conn.execute(
        f"SELECT DISTINCT session_id, model_label FROM turns WHERE billable = 1 AND {scope} "
        "ORDER BY session_id, model_label"
    ):
        models.setdefault(sid, []).append(label)
    firsts = {
        t: _first_of(conn, t, "source, project", scope)
        for t in ("turns", "user_turns", "compactions")
    }
    firsts["tool_results"] = _first_of(conn, "tool_results", "source, ''", scope)
    counts: dict[str, dict[str, tuple[Any, ...]]] = {}
    for table, extra in (("user_turns", "0"), ("compactions", "0"),
                         ("tool_results", "sum(is_error)")):
        counts[table] = {
            row[0]: row[1:]
            for row in conn.execute(
                f"SELECT session_id, count(*), {extra}, min(ts), max(ts) FROM {table} "
                f"WHERE {scope} GROUP BY session_id"
            )
        }
    order = " ".join(f"WHEN '{r}' THEN {i}" for i, r in enumerate(RELATION_ORDER))
    relations: dict[str, tuple[Any, ...]] = {}
    for sid, relation, parent, source in conn.execute(
        "SELECT session_id, relation, parent_session_id, source FROM relationships "
        f"WHERE {scope} ORDER BY session_id, CASE relation {order} ELSE 99 END, relation, "
        "parent_session_id, id"
    ):
        relations.setdefault(sid, (relation, parent, source))
    ids.update(turns, relations, *firsts.values())
    rows = []
    for sid in sorted(ids):
        rows.append(_session_row(sid, turns.get(sid), models.get(sid, []), firsts, counts,
                                 relations.get(sid), has_content(sid)))
    cols = ", ".join(SESSION_COLUMNS)
    marks = ", ".join("?" for _ in SESSION_COLUMNS)
    conn.executemany(f"INSERT INTO sessions ({cols}) VALUES ({marks})", rows)


def _session_row(
    sid: str,
    t: tuple[Any, ...] | None,
    models: list[str],
    firsts: dict[str, dict[str, tuple[Any, ...]]],
    counts: dict[str, dict[str, tuple[Any, ...]]],
    relation: tuple[Any, ...] | None,
    content: bool,
) -> tuple[Any, ...]:
    source = ""
    project = ""
    for table in ("turns", "user_turns", "compactions", "tool_results"):
        first = firsts[table].get(sid)
        if first is None:
            continue
        source = source or first[0]
        project = project or first[1]
    if not source and relation is not None:
        source = relation[2]
    u = counts["user_turns"].get(sid)
    c = counts["compactions"].get(sid)
    r = counts["tool_results"].get(sid)
    times = [x for row in (t and t[10:12], u and u[2:4], c and c[2:4], r and r[2:4]) if row
             for x in row]
    if t is None:
        tokens: tuple[Any, ...] = (None,) * 6
        cost: Any = None
        unpriced = 0
        logged: Any = None
        n_turns = 0
        calls = 0
    else:
        n_turns, *sums = t[:7]
        tokens = tuple(sums)
        cost, unpriced, logged = t[7], t[8], t[9]
        calls = t[12]
    return (
        sid, source, project,
        min(times) if times else None, max(times) if times else None,
        n_turns, u[0] if u else 0, c[0] if c else 0, calls,
        r[0] if r else 0, r[1] if r else 0,
        *tokens, cost, unpriced, logged,
        msgspec.json.encode(models).decode(),
        relation[0] if relation else "root",
        relation[1] if relation else None,
        int(content),
    )


def refresh_content_flags(conn: sqlite3.Connection, with_content: set[str]) -> None:
    """Set ``sessions.has_content`` from the sidecar files that exist now."""
    rows = conn.execute("SELECT session_id FROM sessions WHERE has_content = 1")
    flagged = {row[0] for row in rows}
    conn.executemany("UPDATE sessions SET has_content = 0 WHERE session_id = ?",
                     ((s,) for s in sorted(flagged - with_content)))
    conn.executemany("UPDATE sessions SET has_content = 1 WHERE session_id = ?",
                     ((s,) for s in sorted(with_content - flagged)))


def content_sessions(content_dir: os.PathLike[str]) -> set[str]:
    """Session ids that have a content sidecar."""
    try:
        names = os.listdir(content_dir)
    except FileNotFoundError:
        return set()
    return {n[: -len(".jsonl")] for n in names if n.endswith(".jsonl")}
