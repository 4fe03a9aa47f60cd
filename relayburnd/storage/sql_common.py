"""The one logical schema of the SQL adapters: record <-> row mapping.

SQLite and PostgreSQL store the same tables with the same column names (the
record's field names), so the mapping is derived once from the record structs
and a test keeps it equal to what the migrations create. A record field the
schema does not know makes the mapping fail at import, not silently drop data.

Dialect differences handled here: ids are ``uuid`` in PostgreSQL and text in
SQLite (both read back as 32 hex characters); lists are ``text[]`` in
PostgreSQL and JSON text in SQLite; booleans come back from SQLite as ints.
Content text that PostgreSQL cannot hold (NUL, lone surrogates) goes to a
``text_raw`` byte column instead, so every record round-trips exactly.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from ..errors import SinkRejected
from ..records import (
    KIND_OF,
    RECORD_TYPES,
    ContentRecord,
    Record,
    ToolCall,
    Turn,
    fold,
)

Row = tuple[Any, ...]


class ColType(enum.Enum):
    """How a record field is stored."""

    ID = "id"
    TEXT = "text"
    INT = "int"
    BOOL = "bool"
    FLOAT = "float"
    TEXT_LIST = "text_list"
    CONTENT_TEXT = "content_text"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColType
    nullable: bool


TABLE_OF_KIND: dict[str, str] = {
    "turn": "turns",
    "user-turn": "user_turns",
    "compaction": "compactions",
    "tool-result": "tool_results",
    "content": "content",
    "relationship": "relationships",
}

# Tool calls live in a child table keyed by (turn id, position in the turn).
TOOL_CALL_TABLE = "tool_calls"
TOOL_CALL_COLUMNS = ("turn_id", "seq", "id", "name", "args_sha256", "args_bytes")
RAW_TEXT_COLUMN = "text_raw"

_SCALARS: dict[object, tuple[ColType, bool]] = {
    str: (ColType.TEXT, False),
    str | None: (ColType.TEXT, True),
    int: (ColType.INT, False),
    int | None: (ColType.INT, True),
    bool: (ColType.BOOL, False),
    float: (ColType.FLOAT, False),
    float | None: (ColType.FLOAT, True),
    list[str]: (ColType.TEXT_LIST, False),
}


def _column(record_type: type[Record], name: str, annotation: object) -> Column:
    if name == "id":
        return Column(name, ColType.ID, False)
    if record_type is ContentRecord and name == "text":
        return Column(name, ColType.CONTENT_TEXT, True)
    try:
        col_type, nullable = _SCALARS[annotation]
    except KeyError:
        raise TypeError(
            f"{record_type.__name__}.{name}: type {annotation!r} has no SQL column mapping; "
            "add one here and a migration for it"
        ) from None
    return Column(name, col_type, nullable)


@dataclass(frozen=True)
class TableSpec:
    """One record kind as a table: its record fields and SQL columns, in order."""

    kind: str
    table: str
    record_type: type[Record]
    fields: tuple[Column, ...]  # stored record fields, struct order (tool calls excluded)

    @property
    def sql_columns(self) -> tuple[str, ...]:
        out: list[str] = []
        for col in self.fields:
            out.append(col.name)
            if col.type is ColType.CONTENT_TEXT:
                out.append(RAW_TEXT_COLUMN)
        return tuple(out)

    @property
    def has_project(self) -> bool:
        return any(c.name == "project" for c in self.fields)

    @property
    def is_turns(self) -> bool:
        return self.record_type is Turn


def _spec(record_type: type[Record]) -> TableSpec:
    cols = [
        _column(record_type, f.name, f.type)
        for f in msgspec.structs.fields(record_type)
        if f.type != list[ToolCall]  # stored in the child table
    ]
    kind = KIND_OF[record_type]
    return TableSpec(kind, TABLE_OF_KIND[kind], record_type, tuple(cols))


SPECS: dict[str, TableSpec] = {
    KIND_OF[t]: _spec(cast("type[Record]", t)) for t in RECORD_TYPES
}


def q(name: str) -> str:
    """A quoted identifier (``trigger`` and ``rank`` are keywords somewhere)."""
    return f'"{name}"'


def column_list(names: Iterable[str], prefix: str = "") -> str:
    return ", ".join(prefix + q(n) for n in names)


# ------------------------------------------------------------------ codecs

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL text holds neither
_SURROGATE = re.compile("[\ud800-\udfff]")  # not UTF-8 at all


def split_content_text(text: str | None) -> tuple[str | None, bytes | None]:
    """Text PostgreSQL can hold goes in ``text``; anything else, byte-exact, in ``text_raw``."""
    if text is None or not _UNSTORABLE.search(text):
        return text, None
    return None, text.encode("utf-8", "surrogatepass")


def join_content_text(text: str | None, raw: bytes | None) -> str | None:
    if raw is None:
        return text
    return bytes(raw).decode("utf-8", "surrogatepass")


_json_encode = msgspec.json.Encoder().encode
_json_list_decoder = msgspec.json.Decoder(list[str])


def _list_to_json(value: list[str]) -> str:
    return _json_encode(value).decode()


def id_bytes(record_id: str) -> bytes:
    """A record id as the 16 bytes of its binary ``uuid`` (PostgreSQL COPY)."""
    return bytes.fromhex(record_id)


class RowCodec:
    """Record -> row tuple (in ``spec.sql_columns`` order) and back, for one dialect.

    Writes are the hot path, so ``encode`` slices the struct's tuple when only
    the id and the tool calls need attention, and loops only for content and
    SQLite lists. PostgreSQL rows carry the id as 16 bytes: the binary COPY
    format of a ``uuid`` is exactly those bytes.
    """

    __slots__ = ("_cut", "_decoders", "_encoders", "_fast", "_id_bytes", "_names", "spec")

    def __init__(self, spec: TableSpec, dialect: str) -> None:
        self.spec = spec
        self._names = tuple(c.name for c in spec.fields)
        sqlite = dialect == "sqlite"
        self._id_bytes = not sqlite
        # One entry per struct field: None = as is, "drop" = not a column.
        encoders: list[Callable[[Any], tuple[Any, ...]] | str | None] = []
        decoders: list[Callable[..., Any] | None] = []
        cols = iter(spec.fields)
        for f in msgspec.structs.fields(spec.record_type):
            if f.type == list[ToolCall]:
                encoders.append("drop")
                continue
            col = next(cols)
            if col.type is ColType.ID and not sqlite:
                encoders.append(lambda v: (id_bytes(v),))
                decoders.append(None)
            elif col.type is ColType.CONTENT_TEXT:
                encoders.append(split_content_text)
                decoders.append(join_content_text)
            elif col.type is ColType.TEXT_LIST and sqlite:
                encoders.append(lambda v: (_list_to_json(v),))
                decoders.append(_json_list_decoder.decode)
            elif col.type is ColType.BOOL and sqlite:
                encoders.append(None)
                decoders.append(bool)
            elif col.type is ColType.TEXT_LIST:
                encoders.append(None)
                decoders.append(list)
            else:
                encoders.append(None)
                decoders.append(None)
        self._encoders = tuple(encoders)
        self._decoders = tuple(decoders)
        rest = [e for i, e in enumerate(encoders) if i != 0 and e != "drop"]
        self._fast = all(e is None for e in rest) and encoders.count("drop") <= 1
        self._cut = encoders.index("drop") if "drop" in encoders else None

    def encode(self, record: Record) -> Row:
        values = msgspec.structs.astuple(record)
        if self._fast:
            head = (id_bytes(values[0]),) if self._id_bytes else values[:1]
            cut = self._cut
            if cut is None:
                return head + values[1:]
            return head + values[1:cut] + values[cut + 1 :]
        out: list[Any] = []
        for value, enc in zip(values, self._encoders, strict=True):
            if enc is None:
                out.append(value)
            elif callable(enc):
                out.extend(enc(value))
        return tuple(out)

    def decode(self, row: Sequence[Any], tool_calls: list[ToolCall] | None = None) -> Record:
        kwargs: dict[str, Any] = {}
        i = 0
        for name, dec in zip(self._names, self._decoders, strict=True):
            if dec is join_content_text:
                kwargs[name] = join_content_text(row[i], row[i + 1])
                i += 2
                continue
            value = row[i]
            kwargs[name] = value if dec is None or value is None else dec(value)
            i += 1
        if self.spec.is_turns:
            kwargs["tool_calls"] = tool_calls or []
        return self.spec.record_type(**kwargs)

    def tool_call_rows(self, turn: Turn, turn_id: str | bytes | None = None) -> list[Row]:
        """Child rows of a turn's tool calls: (turn id, position, call fields).

        ``turn_id`` is the id as the turn's own row holds it, when already encoded.
        """
        if turn_id is None:
            turn_id = id_bytes(turn.id) if self._id_bytes else turn.id
        return [
            (turn_id, seq, c.id, c.name, c.args_sha256, c.args_bytes)
            for seq, c in enumerate(turn.tool_calls)
        ]


def tool_call_from_row(row: Sequence[Any]) -> ToolCall:
    """``row`` is (id, name, args_sha256, args_bytes)."""
    return ToolCall(id=row[0], name=row[1], args_sha256=row[2], args_bytes=row[3])


_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX32_LINES = re.compile(r"(?:[0-9a-f]{32}\n)*")


def check_ids(records: Sequence[Record]) -> None:
    """Refuse ids that are not 32 lowercase hex characters (128-bit digests)."""
    if _HEX32_LINES.fullmatch("".join(r.id + "\n" for r in records)):
        return
    bad = tuple(r.id for r in records if not _HEX32.fullmatch(r.id))
    if bad:
        shown = ", ".join(repr(b) for b in bad[:3])
        raise SinkRejected(
            f"{len(bad)} record id(s) are not 32 lowercase hex characters: {shown}",
            record_ids=bad,
        )


def _field_values(record: Record) -> Iterable[object]:
    for f in msgspec.structs.fields(record):
        if isinstance(record, ContentRecord) and f.name == "text":
            continue  # any text fits: see split_content_text
        value = getattr(record, f.name)
        if isinstance(value, list):
            for item in value:
                if isinstance(item, ToolCall):
                    yield from (item.id, item.name, item.args_sha256, item.args_bytes)
                else:
                    yield item
        else:
            yield value


def _storable(value: object, bad_text: re.Pattern[str]) -> bool:
    if isinstance(value, str):
        return not bad_text.search(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    return True


def unstorable_ids(records: Iterable[Record], *, nul_ok: bool = False) -> tuple[str, ...]:
    """Ids of records holding a value a SQL column cannot take: a lone surrogate, an
    integer beyond 64 bits, or (unless ``nul_ok``, as in SQLite) a NUL character.

    Used only after a batch was refused, to name the records to dead-letter.
    """
    bad_text = _SURROGATE if nul_ok else _UNSTORABLE
    return tuple(
        r.id for r in records if not all(_storable(v, bad_text) for v in _field_values(r))
    )


def fold_by_kind(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Per kind (in a fixed order), the batch folded by id (``records.fold``), sorted by id.

    Write counts are per distinct id, as the file store counts them. The fixed
    order of kinds and ids makes every writer take row locks in the same
    order, so hosts writing overlapping batches at once cannot deadlock.
    """
    by_kind: dict[str, list[Record]] = {}
    for rec in records:
        by_kind.setdefault(KIND_OF[type(rec)], []).append(rec)
    out: dict[str, list[Record]] = {}
    for kind, recs in sorted(by_kind.items()):
        folded = fold(recs)
        out[kind] = [cast(Record, folded[i]) for i in sorted(folded)]
    return out
