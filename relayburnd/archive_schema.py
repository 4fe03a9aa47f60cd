"""Tables of the derived archive (``archive.sqlite``) and the record <-> row mapping.

Why a mapping derived from the record structs: the archive must give back
exactly the records the ledger folds to (the file store's query methods are
served from it), so every record field is a column, named after the field.
A field added to a record changes the DDL, hence the schema fingerprint, and
the next build rebuilds the archive instead of silently dropping the field.

Columns beyond the record fields are derived and documented with the table:

* every base table: ``ledger_offset``, the byte offset of the ledger line whose
  snapshot the row holds (the first of equal-rank copies), so two builds from
  one ledger give identical rows;
* ``turns``: ``model_label`` (``reports.model_label``), ``slot`` (the UTC
  15-minute window, ``floor(ts / 900000)``), ``billable`` (0 for a sidechain
  replay of a main-thread response, ``reports.billable``), ``total_tokens``,
  ``has_usage`` (some token count is non-zero: separates a zero-token request
  from a cost-only one), ``priced`` (``cost_usd`` is known) and
  ``tool_call_count``.

Derived tables, functions of the base tables only:

* ``sessions``: one row per session id seen in any kind. Token sums and
  ``cost_usd`` are NULL when the session has no billable turn (tokens
  missing) and 0 when its turns reported zero; ``cost_usd`` is NULL when no
  turn is priced and ``unpriced_turns`` counts the others; ``logged_cost_usd``
  is NULL unless some turn carried a cost in its log. ``relation`` is
  ``root`` or the relationship that made the session (``subagent``, ``fork``,
  ``continuation``, ``sidechain``) with ``parent_session_id``.
* ``usage_15m``: billable-turn sums per (slot, source, project, model label),
  the grain ``summary`` reads so it never scans every turn; ``usage_1h`` the
  same per UTC hour (``floor(slot / 4)``), four times fewer rows, used for
  zones whose offsets are whole hours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .records import (
    Compaction,
    Record,
    SessionRelationship,
    ToolCall,
    ToolResultEvent,
    Turn,
    UserTurn,
)
from .reports import model_label

SCHEMA_VERSION = 1
# The relationship a session shows when it has several (first in this order).
RELATION_ORDER = ("subagent", "fork", "continuation", "sidechain")
SLOT_MS = 900_000  # 15 minutes: every zone offset in use today is a multiple

TABLE_OF_KIND: dict[str, str] = {
    "turn": "turns",
    "user-turn": "user_turns",
    "compaction": "compactions",
    "tool-result": "tool_results",
    "relationship": "relationships",
}
TYPE_OF_KIND: dict[str, type[Record]] = {
    "turn": Turn,
    "user-turn": UserTurn,
    "compaction": Compaction,
    "tool-result": ToolResultEvent,
    "relationship": SessionRelationship,
}

_SQL_TYPE: dict[object, tuple[str, str]] = {
    str: ("TEXT", "str"),
    str | None: ("TEXT", "str"),
    int: ("INTEGER", "int"),
    int | None: ("INTEGER", "int"),
    bool: ("INTEGER", "bool"),
    float: ("REAL", "float"),
    float | None: ("REAL", "float"),
    list[str]: ("TEXT", "list"),
}

TURN_EXTRA = (
    ("model_label", "TEXT NOT NULL"),
    ("slot", "INTEGER NOT NULL"),
    ("billable", "INTEGER NOT NULL DEFAULT 1"),
    ("total_tokens", "INTEGER NOT NULL"),
    ("has_usage", "INTEGER NOT NULL"),
    ("priced", "INTEGER NOT NULL"),
    ("tool_call_count", "INTEGER NOT NULL"),
)


def q(name: str) -> str:
    """Quoted identifier (``rank`` and ``trigger`` are keywords)."""
    return f'"{name}"'


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    codec: str  # str | int | bool | float | list
    nullable: bool


_list_encode = msgspec.json.Encoder().encode
_list_decode = msgspec.json.Decoder(list[str]).decode


class KindTable:
    """One record kind as a table: record fields, then ``ledger_offset`` and extras."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.table = TABLE_OF_KIND[kind]
        self.record_type = TYPE_OF_KIND[kind]
        cols: list[Column] = []
        self._drop: int | None = None
        self._lists: list[int] = []
        for i, f in enumerate(msgspec.structs.fields(self.record_type)):
            if f.type == list[ToolCall]:
                self._drop = i
                continue
            try:
                sql_type, codec = _SQL_TYPE[f.type]
            except KeyError:
                raise TypeError(
                    f"{self.record_type.__name__}.{f.name}: no archive column for {f.type!r}"
                ) from None
            nullable = f.type in (str | None, int | None, float | None)
            if codec == "list":
                self._lists.append(len(cols))
            cols.append(Column(f.name, sql_type, codec, nullable))
        self.columns = tuple(cols)
        self.extra = TURN_EXTRA if kind == "turn" else ()
        self.has_project = any(c.name == "project" for c in cols)

    @property
    def record_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def all_columns(self) -> tuple[str, ...]:
        return (*self.record_columns, "ledger_offset", *(n for n, _ in self.extra))

    def ddl(self) -> str:
        parts = []
        for c in self.columns:
            if c.name == "id":
                parts.append(f"{q('id')} TEXT PRIMARY KEY")
                continue
            null = "" if c.nullable else " NOT NULL"
            parts.append(f"{q(c.name)} {c.sql_type}{null}")
        parts.append(f"{q('ledger_offset')} INTEGER NOT NULL")
        parts.extend(f"{q(n)} {decl}" for n, decl in self.extra)
        return f"CREATE TABLE {self.table} ({', '.join(parts)})"

    def row(self, record: Record, offset: int) -> tuple[Any, ...]:
        """The row of ``record`` found at ledger ``offset`` (all_columns order)."""
        values = list(msgspec.structs.astuple(record))
        if self._drop is not None:
            del values[self._drop]
        for i in self._lists:
            values[i] = _list_encode(values[i]).decode()
        values.append(offset)
        if isinstance(record, Turn):
            values.extend(turn_extras(record))
        return tuple(values)

    def decoder(self) -> Callable[[Sequence[Any], list[ToolCall] | None], Record]:
        """Row (record_columns order) -> record; bools and lists restored."""
        names = self.record_columns
        bools = tuple(c.name for c in self.columns if c.codec == "bool")
        lists = tuple(c.name for c in self.columns if c.codec == "list")
        record_type = self.record_type
        is_turn = record_type is Turn

        def decode(row: Sequence[Any], calls: list[ToolCall] | None = None) -> Record:
            kwargs = dict(zip(names, row, strict=True))
            for name in bools:
                kwargs[name] = bool(kwargs[name])
            for name in lists:
                kwargs[name] = _list_decode(kwargs[name])
            if is_turn:
                kwargs["tool_calls"] = calls or []
            rec: Record = record_type(**kwargs)
            return rec

        return decode


def slot_of(ts: int) -> int:
    """The UTC 15-minute window holding ``ts`` (floor, also before 1970)."""
    return ts // SLOT_MS


def turn_extras(t: Turn) -> tuple[Any, ...]:
    total = t.input_tokens + t.output_tokens + t.cache_write_tokens + t.cache_read_tokens
    has_usage = total > 0 or t.reasoning_tokens > 0
    return (
        model_label(t.model, t.speed),
        slot_of(t.ts),
        1,
        total,
        int(has_usage),
        int(t.cost_usd is not None),
        len(t.tool_calls),
    )


KINDS: dict[str, KindTable] = {kind: KindTable(kind) for kind in TABLE_OF_KIND}

# Clustered by the turn's time: turns are read back in time order, so the calls of
# a page of turns are one range of this table.
TOOL_CALLS_DDL = (
    "CREATE TABLE tool_calls (turn_id TEXT NOT NULL, seq INTEGER NOT NULL, "
    "call_id TEXT NOT NULL, name TEXT NOT NULL, args_sha256 TEXT NOT NULL, "
    "args_bytes INTEGER NOT NULL, session_id TEXT NOT NULL, ts INTEGER NOT NULL, "
    "PRIMARY KEY (ts, turn_id, seq)) WITHOUT ROWID"
)

SESSION_COLUMNS = (
    "session_id", "source", "project", "first_ts", "last_ts", "turns", "user_turns",
    "compactions", "tool_calls", "tool_results", "tool_errors", "input_tokens",
    "output_tokens", "cache_write_tokens", "cache_read_tokens", "reasoning_tokens",
    "total_tokens", "cost_usd", "unpriced_turns", "logged_cost_usd", "models", "relation",
    "parent_session_id", "has_content",
)
SESSIONS_DDL = (
    "CREATE TABLE sessions (session_id TEXT PRIMARY KEY, source TEXT NOT NULL, "
    "project TEXT NOT NULL, first_ts INTEGER, last_ts INTEGER, turns INTEGER NOT NULL, "
    "user_turns INTEGER NOT NULL, compactions INTEGER NOT NULL, tool_calls INTEGER NOT NULL, "
    "tool_results INTEGER NOT NULL, tool_errors INTEGER NOT NULL, input_tokens INTEGER, "
    "output_tokens INTEGER, cache_write_tokens INTEGER, cache_read_tokens INTEGER, "
    "reasoning_tokens INTEGER, total_tokens INTEGER, cost_usd REAL, "
    "unpriced_turns INTEGER NOT NULL, logged_cost_usd REAL, models TEXT NOT NULL, "
    "relation TEXT NOT NULL, parent_session_id TEXT, has_content INTEGER NOT NULL)"
)

USAGE_METRICS = (
    "requests", "input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens",
    "reasoning_tokens", "cost_usd", "unpriced",
)
HOUR_SLOTS = 4
# table -> its time column; the column counts slots (15 min) or hours
USAGE_TABLES = {"usage_15m": "slot", "usage_1h": "hour"}


def _usage_ddl(table: str, col: str) -> str:
    return (
        f"CREATE TABLE {table} ({col} INTEGER NOT NULL, source TEXT NOT NULL, "
        "project TEXT NOT NULL, model_label TEXT NOT NULL, requests INTEGER NOT NULL, "
        "input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, "
        "cache_write_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL, "
        "reasoning_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, unpriced INTEGER NOT NULL, "
        f"PRIMARY KEY ({col}, source, project, model_label)) WITHOUT ROWID"
    )


USAGE_DDL = tuple(_usage_ddl(t, c) for t, c in USAGE_TABLES.items())

STATE_DDL = "CREATE TABLE archive_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)"

# Secondary indexes: dropped while a large tail is bulk-loaded, created after.
INDEXES = (
    "CREATE INDEX IF NOT EXISTS turns_session ON turns (session_id, ts, id)",
    "CREATE INDEX IF NOT EXISTS turns_ts ON turns (ts, id)",
    "CREATE INDEX IF NOT EXISTS turns_slot ON turns (slot)",
    "CREATE INDEX IF NOT EXISTS turns_message ON turns (message_id, is_sidechain)",
    "CREATE INDEX IF NOT EXISTS tool_calls_call ON tool_calls (call_id)",
    "CREATE INDEX IF NOT EXISTS user_turns_session ON user_turns (session_id)",
    "CREATE INDEX IF NOT EXISTS user_turns_ts ON user_turns (ts, id)",
    "CREATE INDEX IF NOT EXISTS compactions_session ON compactions (session_id)",
    "CREATE INDEX IF NOT EXISTS compactions_ts ON compactions (ts, id)",
    "CREATE INDEX IF NOT EXISTS tool_results_session ON tool_results (session_id)",
    "CREATE INDEX IF NOT EXISTS tool_results_ts ON tool_results (ts, id)",
    "CREATE INDEX IF NOT EXISTS tool_results_call ON tool_results (tool_use_id)",
    "CREATE INDEX IF NOT EXISTS relationships_session ON relationships (session_id)",
    "CREATE INDEX IF NOT EXISTS relationships_parent ON relationships (parent_session_id)",
    "CREATE INDEX IF NOT EXISTS relationships_ts ON relationships (ts, id)",
    "CREATE INDEX IF NOT EXISTS sessions_first ON sessions (first_ts)",
)
INDEX_NAMES = tuple(stmt.split()[5] for stmt in INDEXES)

TABLES = (*TABLE_OF_KIND.values(), "tool_calls", "sessions", *USAGE_TABLES)


def table_ddl() -> tuple[str, ...]:
    return (*(k.ddl() for k in KINDS.values()), TOOL_CALLS_DDL, SESSIONS_DDL, *USAGE_DDL)


def fingerprint() -> str:
    """Changes whenever the tables would: a stored archive with another one is rebuilt."""
    text = "\n".join((str(SCHEMA_VERSION), *table_ddl(), *INDEXES))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
