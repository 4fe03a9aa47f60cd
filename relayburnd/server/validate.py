"""Strict validation of a batch before anything is written.

The body is decoded in one pass by msgspec into the record structs themselves
(``records.Record``, a union tagged by ``kind``): unknown kinds, missing
fields and wrong types (no coercion: ``"5"`` is not an int) fail there. Fields
a record type does not declare are ignored, so a newer client's additions do
not get its records refused by an older server. Then the rules the structs
cannot say: ids are 32 lowercase hex characters (the stores' primary key), and
session ids are safe as file names (``is_safe_session_id``), since stores and
clients use them to name content files.

Text outside conversation content may not hold NUL (SQL text columns cannot;
refusing it here makes the answer the same whichever store is behind).

The fast path costs one decode, a few passes in C over the records and at most
two byte searches. Only when it fails is the body decoded again record by
record, to name every offending index (and id), so a client can dead-letter
exactly those records and send the rest.
"""

from __future__ import annotations

import operator
import re
from array import array
from collections.abc import Callable
from itertools import chain
from operator import attrgetter
from typing import Any

import msgspec

from ..records import RECORD_TYPES, ContentRecord, Record, SessionRelationship, ToolCall, Turn
from ..storage import http_wire as wire
from ..storage.file import is_safe_session_id
from ..storage.http_wire import INT64_MAX, INT64_MIN
from .errors import ApiError

MAX_PROBLEMS = 1000

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX32_LINES = re.compile(r"(?:[0-9a-f]{32}\n)*")

_batch_decoder = msgspec.json.Decoder(wire.BatchBody)
_record_decoder: msgspec.json.Decoder[Record] = msgspec.json.Decoder(Record)


class _RawBatch(msgspec.Struct):
    records: list[msgspec.Raw]


class _Head(msgspec.Struct):
    id: str | None = None


_raw_decoder = msgspec.json.Decoder(_RawBatch)
_head_decoder = msgspec.json.Decoder(_Head)


def _int_getters() -> dict[type, tuple[Callable[[Any], tuple[int, ...]], tuple[str, ...]]]:
    """Per record type: a getter of its int fields' values, and its optional int fields."""
    out: dict[type, tuple[Callable[[Any], tuple[int, ...]], tuple[str, ...]]] = {}
    for cls in RECORD_TYPES:
        fields = msgspec.structs.fields(cls)
        required = [f.name for f in fields if f.type is int]
        optional = tuple(f.name for f in fields if f.type == (int | None))
        get: Callable[[Any], Any] = operator.attrgetter(*required)
        if len(required) == 1:
            get = _as_tuple(get)
        out[cls] = (get, optional)
    return out


def _as_tuple(get: Callable[[Any], int]) -> Callable[[Any], tuple[int, ...]]:
    return lambda rec: (get(rec),)


_INTS = _int_getters()
_ID = attrgetter("id")
_SESSION_ID = attrgetter("session_id")
_PARENT_SESSION_ID = attrgetter("parent_session_id")
_TOOL_CALLS = attrgetter("tool_calls")
_ARGS_BYTES = attrgetter("args_bytes")


def _int_field(rec: Record) -> str | None:
    """The first integer field outside 64 bits (the stores' bigint), else None."""
    get, optional = _INTS[type(rec)]
    values = get(rec)
    if max(values) > INT64_MAX or min(values) < INT64_MIN:
        for f in msgspec.structs.fields(rec):
            value = getattr(rec, f.name)
            if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
                return f.name
    for name in optional:
        value = getattr(rec, name)
        if value is not None and not INT64_MIN <= value <= INT64_MAX:
            return name
    if isinstance(rec, Turn) and any(not INT64_MIN <= c.args_bytes <= INT64_MAX
                                     for c in rec.tool_calls):
        return "tool_calls"
    return None


def _by_type(records: list[Record]) -> dict[type, list[Record]]:
    kinds = set(map(type, records))
    if len(kinds) == 1:  # the usual batch: no loop in Python
        return {kinds.pop(): records}
    by_type: dict[type, list[Record]] = {}
    for rec in records:
        by_type.setdefault(type(rec), []).append(rec)
    return by_type


def _ints_in_range(by_type: dict[type, list[Record]]) -> bool:
    """Whether every integer of every record fits in 64 bits (loops in C, by type).

    The values of a type are gathered into one list and converted to a signed
    64-bit array, which refuses any that does not fit (cheaper than taking the
    list's maximum and minimum).
    """
    try:
        for cls, group in by_type.items():
            get, optional = _INTS[cls]
            values = list(chain.from_iterable(map(get, group)))
            for name in optional:
                values += [v for v in map(attrgetter(name), group) if v is not None]
            if cls is Turn:
                values += map(_ARGS_BYTES, chain.from_iterable(map(_TOOL_CALLS, group)))
            array("q", values)
    except OverflowError:
        return False
    return True


def _nul_field(rec: Record) -> str | None:
    """The first text field outside conversation content holding a NUL character."""
    for name in rec.__struct_fields__:
        if name == "text" and isinstance(rec, ContentRecord):
            continue
        value = getattr(rec, name)
        if isinstance(value, str) and "\x00" in value:
            return name
        if isinstance(value, list):
            for item in value:
                if isinstance(item, str) and "\x00" in item:
                    return name
                if isinstance(item, ToolCall) and "\x00" in item.id + item.name + item.args_sha256:
                    return name
    return None


def _record_problem(rec: Record, nul: bool = True) -> str | None:
    if nul and (field := _nul_field(rec)):
        return f"{field} holds a NUL character (only content text may)"
    if field := _int_field(rec):
        return f"{field} is outside the 64-bit integer range"
    if not _HEX32.fullmatch(rec.id):
        return "id is not 32 lowercase hex characters"
    if not is_safe_session_id(rec.session_id):
        return "session_id is not a safe session id (A-Z a-z 0-9 . _ : @ + = -, no '..')"
    if isinstance(rec, SessionRelationship) and not is_safe_session_id(rec.parent_session_id):
        return "parent_session_id is not a safe session id"
    return None


def _all_valid(records: list[Record]) -> bool:
    if not records:
        return True
    if not _HEX32_LINES.fullmatch("\n".join(map(_ID, records)) + "\n"):
        return False
    by_type = _by_type(records)
    if not _ints_in_range(by_type):
        return False
    sessions = set(map(_SESSION_ID, records))
    sessions.update(map(_PARENT_SESSION_ID, by_type.get(SessionRelationship, ())))
    return all(is_safe_session_id(s) for s in sessions)


def _head_id(raw: bytes) -> str | None:
    try:
        found = _head_decoder.decode(raw).id
    except msgspec.DecodeError:
        return None
    return None if found is None else found[:64]


def _reason(exc: Exception) -> str:
    return str(exc)[:200]


def _refuse(problems: list[wire.RecordProblem], total: int) -> ApiError:
    shown = problems[:MAX_PROBLEMS]
    first = shown[0]
    more = f" ({len(problems) - len(shown)} more not listed)" if len(problems) > len(shown) else ""
    return ApiError(
        422, "invalid_records",
        f"{len(problems)} of {total} record(s) refused{more}; first: record {first.index}: "
        f"{first.reason}",
        problems=shown,
    )


def _locate(data: bytes) -> ApiError:
    """Decode record by record to name every bad one (the slow path)."""
    try:
        raw = _raw_decoder.decode(data)
    except UnicodeDecodeError as exc:
        return ApiError(400, "malformed_json", f"the body is not valid JSON: {_reason(exc)}")
    except msgspec.ValidationError as exc:
        return ApiError(422, "invalid_batch",
                        f"the body must be an object {{\"records\": [...]}}: {_reason(exc)}")
    problems: list[wire.RecordProblem] = []
    for index, item in enumerate(raw.records):
        try:
            rec = _record_decoder.decode(item)
        except (msgspec.ValidationError, UnicodeDecodeError) as exc:
            problems.append(wire.RecordProblem(index=index, reason=_reason(exc),
                                                id=_head_id(item)))
            continue
        reason = _record_problem(rec)
        if reason:
            problems.append(wire.RecordProblem(index=index, reason=reason, id=rec.id[:64]))
    if not problems:  # cannot happen: the fast path failed on something
        return ApiError(422, "invalid_batch", "the batch does not match the record schema")
    return _refuse(problems, len(raw.records))


def validate_batch(data: bytes) -> list[Record]:
    """The records of a batch body, or ``ApiError`` 400/422 naming what is wrong."""
    try:
        body = _batch_decoder.decode(data)
    except msgspec.ValidationError:
        raise _locate(data) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {_reason(exc)}"
                       ) from None
    records = body.records
    # JSON can only carry NUL as an escape: no escape, no NUL anywhere. A body without
    # a backslash (most batches without content text) needs no search for the escape.
    nul = b"\\" in data and b"\\u0000" in data
    if not nul and _all_valid(records):
        return records
    problems = []
    for index, rec in enumerate(records):
        reason = _record_problem(rec, nul)
        if reason:
            problems.append(wire.RecordProblem(index=index, reason=reason, id=rec.id[:64]))
    if not problems:  # the NUL escapes were all in content text
        return records
    raise _refuse(problems, len(records))
