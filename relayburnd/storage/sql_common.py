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

A turn's tool calls are stored on its row, as JSON text (an array of
objects in call order; NULL when it has none), in both dialects: written in
the same row as the turn and replaced wholesale with it. JSON escapes NUL, so
any tool call that can be encoded at all can be stored.
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
    TOOL_CALLS = "tool_calls"


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
    if annotation == list[ToolCall]:
        return Column(name, ColType.TOOL_CALLS, True)
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
    fields: tuple[Column, ...]  # stored record fields, struct order

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
    cols = [_column(record_type, f.name, f.type) for f in msgspec.structs.fields(record_type)]
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


_calls_decoder = msgspec.json.Decoder(list[ToolCall])


def _calls_to_json(calls: list[ToolCall]) -> str | None:
    """SQLite: a turn's tool calls as JSON text; NULL for none."""
    return _json_encode(calls).decode() if calls else None


def _calls_to_json_bytes(calls: list[ToolCall]) -> bytes | None:
    """PostgreSQL: the same JSON as UTF-8 bytes, the binary COPY format of ``text``."""
    return _json_encode(calls) if calls else None


def calls_from_json(value: str | bytes | None) -> list[ToolCall]:
    """Tool calls as stored: NULL or JSON text."""
    return [] if value is None else _calls_decoder.decode(value)


class RowCodec:
    """Record -> row tuple (in ``spec.sql_columns`` order) and back, for one dialect.

    Writes are the hot path, so ``encode`` slices the struct's tuple when only
    the id and at most one other field (a turn's tool calls) need attention,
    and loops only for content and SQLite lists. PostgreSQL rows carry the id
    as 16 bytes: the binary COPY format of a ``uuid`` is exactly those bytes.
    """

    __slots__ = ("_cut", "_cut_encode", "_decoders", "_encoders", "_fast", "_id_bytes",
                 "_names", "spec")

    def __init__(self, spec: TableSpec, dialect: str) -> None:
        self.spec = spec
        self._names = tuple(c.name for c in spec.fields)
        sqlite = dialect == "sqlite"
        self._id_bytes = not sqlite
        # One entry per struct field (= column): None = as is, else value -> values.
        encoders: list[Callable[[Any], tuple[Any, ...]] | None] = []
        decoders: list[Callable[..., Any] | None] = []
        cut: tuple[int, Callable[[Any], Any]] | None = None
        for i, col in enumerate(spec.fields):
            if col.type is ColType.ID and not sqlite:
                encoders.append(lambda v: (id_bytes(v),))
                decoders.append(None)
            elif col.type is ColType.TOOL_CALLS:
                one = _calls_to_json if sqlite else _calls_to_json_bytes
                cut = (i, one)
                encoders.append(lambda v, one=one: (one(v),))  # type: ignore[misc]
                decoders.append(calls_from_json)
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
        rest = [e for i, e in enumerate(encoders) if i != 0 and (cut is None or i != cut[0])]
        self._fast = all(e is None for e in rest)
        self._cut = cut[0] if cut else None
        self._cut_encode = cut[1] if cut else None

    def encode(self, record: Record) -> Row:
        values = msgspec.structs.astuple(record)
        if self._fast:
            head = (id_bytes(values[0]),) if self._id_bytes else values[:1]
            cut = self._cut
            if cut is None:
                return head + values[1:]
            return (
                head + values[1:cut] + (self._cut_encode(values[cut]),)  # type: ignore[misc]
                + values[cut + 1 :]
            )
        out: list[Any] = []
        for value, enc in zip(values, self._encoders, strict=True):
            if enc is None:
                out.append(value)
            else:
                out.extend(enc(value))
        return tuple(out)

    def decode(self, row: Sequence[Any]) -> Record:
        kwargs: dict[str, Any] = {}
        i = 0
        for name, dec in zip(self._names, self._decoders, strict=True):
            if dec is join_content_text:
                kwargs[name] = join_content_text(row[i], row[i + 1])
                i += 2
                continue
            value = row[i]
            if dec is calls_from_json:
                kwargs[name] = calls_from_json(value)
            else:
                kwargs[name] = value if dec is None or value is None else dec(value)
            i += 1
        return self.spec.record_type(**kwargs)


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
            yield from value
        else:
            yield value


def _storable(value: object, bad_text: re.Pattern[str]) -> bool:
    if isinstance(value, ToolCall):  # JSON text: any integer, and NUL escaped
        return not any(_SURROGATE.search(s) for s in (value.id, value.name, value.args_sha256))
    if isinstance(value, str):
        return not bad_text.search(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    return True


def unstorable_ids(records: Iterable[Record], *, nul_ok: bool = False) -> tuple[str, ...]:
    """Ids of records holding a value a SQL column cannot take: a lone surrogate, an
    integer beyond 64 bits, or (unless ``nul_ok``, as in SQLite) a NUL character.
    Tool calls are JSON text, which holds any integer and escapes NUL: only a
    lone surrogate in them (which no UTF-8 encoder takes) makes a turn unstorable.

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
