"""The HTTP wire format shared by the ``http`` adapter and ``relayburnd serve``.

Both ends import this module, so paths, query parameters, bodies and error
codes cannot drift apart; the OpenAPI document (``server/openapi.py``) is
built from the same structs. It imports neither httpx nor Starlette: the
client needs no server dependency and the server no client one.

Wire rules:

* A batch is ``POST /v1/batches`` with ``{"records": [<record>, ...]}``, each
  record the JSON of ``records.encode`` (its ``kind`` tag first), optionally
  compressed (``Content-Encoding: zstd`` or ``gzip``; a server that knows
  neither answers 415). The answer is ``BatchAccepted``; a refusal is ``ErrorBody``
  whose ``records`` name the offending indexes in the request (and the id
  when one could be read), so a client can dead-letter exactly those.
* Listings (``/v1/turns`` ...) are NDJSON: one encoded record per line, then
  one ``StreamEnd`` line. A stream that stops without that line was cut (a
  dropped connection, a server stopped mid-way), so the client can tell a
  complete listing from a truncated one even after a 200. A store that fails
  mid-listing ends the stream with an ``ErrorBody`` line instead.
* ``POST /v1/content/prune?before_ms=N`` deletes the stored content records
  older than ``N`` (epoch ms) and answers ``ContentPruned``. Only a token
  without a ``:read`` or ``:write`` limit may: a host's write-only token
  cannot delete the others' content.
* Filters travel as query parameters: an absent parameter means "any", a
  present empty one means "equal to the empty string" (``project=`` selects
  records without a project), exactly as ``Filter`` distinguishes None from "".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from ..records import Record, WriteResult
from .base import DIMENSIONS, Filter, SummaryResult, SummarySpec

API = "/v1"
BATCHES_PATH = f"{API}/batches"
SUMMARY_PATH = f"{API}/summary"
HEALTH_PATH = f"{API}/health"
CONTENT_PATH = API + "/sessions/{session_id}/content"
PRUNE_PATH = f"{API}/content/prune"
# record kind -> (listing path, adapter method); the order is the API's.
LISTINGS: dict[str, tuple[str, str]] = {
    "turn": (f"{API}/turns", "turns"),
    "user-turn": (f"{API}/user-turns", "user_turns"),
    "compaction": (f"{API}/compactions", "compactions"),
    "tool-result": (f"{API}/tool-results", "tool_results"),
    "relationship": (f"{API}/relationships", "relationships"),
}

JSON = "application/json"
NDJSON = "application/x-ndjson"

# Query parameters of listings and the summary (``source`` may repeat).
FILTER_PARAMS = ("since_ms", "until_ms", "session", "project", "model", "source")
SUMMARY_PARAMS = (*FILTER_PARAMS, "by", "tz")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SOURCE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


# ------------------------------------------------------------------ bodies


class BatchBody(msgspec.Struct):
    """The request body of ``POST /v1/batches``."""

    records: list[Record]


class KindCounts(msgspec.Struct):
    """What the store did with the records of one kind."""

    inserted: int
    updated: int
    unchanged: int


class BatchAccepted(msgspec.Struct):
    """The answer to a stored batch: records received and counts per kind."""

    records: int
    counts: dict[str, KindCounts]


class RecordProblem(msgspec.Struct, omit_defaults=True):
    """One refused record: its index in the request, its id if readable, and why."""

    index: int
    reason: str
    id: str | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error answer: a stable code, a sentence, and the refused records if any."""

    error: str
    message: str
    records: list[RecordProblem] = []


class StreamEnd(msgspec.Struct):
    """The last line of a complete listing, with the number of records sent."""

    end: bool
    count: int


class ContentPruned(msgspec.Struct):
    """The answer to ``POST /v1/content/prune``: content records deleted, and the cutoff."""

    removed: int
    before_ms: int


class Health(msgspec.Struct):
    """``GET /v1/health``: the token's name and scopes and the backing store."""

    ok: bool
    token: str
    scopes: list[str]
    storage: str


# ------------------------------------------------------------------ batches

_encoder = msgspec.json.Encoder()


def batch_accepted(result: WriteResult, received: int) -> bytes:
    counts = {k: KindCounts(c.inserted, c.updated, c.unchanged) for k, c in result.counts.items()}
    return _encoder.encode(BatchAccepted(records=received, counts=counts))


def write_result(body: BatchAccepted) -> WriteResult:
    out = WriteResult()
    for kind, c in body.counts.items():
        counts = out.kind(kind)
        counts.inserted += c.inserted
        counts.updated += c.updated
        counts.unchanged += c.unchanged
    return out


def error_body(code: str, message: str, problems: Iterable[RecordProblem] = ()) -> bytes:
    return _encoder.encode(ErrorBody(error=code, message=message, records=list(problems)))


# ------------------------------------------------------------------ filters


def filter_params(flt: Filter | None) -> list[tuple[str, str]]:
    """Query parameters for ``flt`` (None and an empty filter give none)."""
    if flt is None:
        return []
    out: list[tuple[str, str]] = []
    if flt.since_ms is not None:
        out.append(("since_ms", str(flt.since_ms)))
    if flt.until_ms is not None:
        out.append(("until_ms", str(flt.until_ms)))
    for name, value in (("session", flt.session_id), ("project", flt.project),
                        ("model", flt.model)):
        if value is not None:
            out.append((name, value))
    out.extend(("source", s) for s in flt.sources)
    return out


def summary_params(spec: SummarySpec) -> list[tuple[str, str]]:
    return [("by", ",".join(spec.by)), ("tz", spec.tz), *filter_params(spec.filter)]


class BadParameter(ValueError):
    """A query parameter the server cannot use; the message names it."""


def _one(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadParameter(f"{name}: given {len(values)} times; give it once")
    return values[0]


def _int64(params: Mapping[str, list[str]], name: str) -> int | None:
    raw = _one(params, name)
    if raw is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,19}", raw) or not INT64_MIN <= int(raw) <= INT64_MAX:
        raise BadParameter(f"{name}={raw[:40]!r}: expected epoch milliseconds (an integer)")
    return int(raw)


def parse_filter(params: Mapping[str, list[str]], allowed: Sequence[str] = FILTER_PARAMS
                 ) -> Filter:
    """The ``Filter`` a listing's query parameters ask for; ``BadParameter`` if invalid."""
    unknown = sorted(set(params) - set(allowed))
    for name, values in params.items():
        if any("\x00" in v or len(v) > 1000 for v in values):
            raise BadParameter(f"{name[:40]}: values hold no NUL and at most 1000 characters")
    if unknown:
        raise BadParameter(
            f"unknown parameter(s) {', '.join(u[:40] for u in unknown[:5])}; "
            f"valid: {', '.join(allowed)}"
        )
    sources: list[str] = []
    for raw in params.get("source", []):
        for name in raw.split(","):
            if not SOURCE_NAME.fullmatch(name):
                raise BadParameter(f"source={name[:40]!r}: expected an agent name such as claude")
            sources.append(name)
    return Filter(
        since_ms=_int64(params, "since_ms"),
        until_ms=_int64(params, "until_ms"),
        session_id=_one(params, "session"),
        project=_one(params, "project"),
        model=_one(params, "model"),
        sources=tuple(dict.fromkeys(sources)),
    )


def parse_prune(params: Mapping[str, list[str]]) -> int:
    """The ``before_ms`` of ``POST /v1/content/prune``; ``BadParameter`` if missing or invalid."""
    unknown = sorted(set(params) - {"before_ms"})
    if unknown:
        raise BadParameter(
            f"unknown parameter(s) {', '.join(u[:40] for u in unknown[:5])}; valid: before_ms"
        )
    before = _int64(params, "before_ms")
    if before is None:
        raise BadParameter("before_ms: required (epoch milliseconds; older content is deleted)")
    return before


def parse_summary(params: Mapping[str, list[str]]) -> SummarySpec:
    """The ``SummarySpec`` of ``GET /v1/summary``; ``BadParameter`` if invalid.

    The time zone is checked by the caller (it needs the zone database).
    """
    flt = parse_filter(params, SUMMARY_PARAMS)
    by_raw = _one(params, "by")
    by_raw = "day" if by_raw is None else by_raw
    by = tuple(d.strip() for d in by_raw.split(","))
    bad = [d for d in by if d not in DIMENSIONS]
    if bad or not by:
        raise BadParameter(
            f"by={by_raw[:60]!r}: expected comma-separated dimensions from {','.join(DIMENSIONS)}"
        )
    if len(set(by)) != len(by):
        raise BadParameter(f"by={by_raw[:60]!r}: a dimension is repeated")
    tz = _one(params, "tz")
    return SummarySpec(by=by, filter=flt, tz="UTC" if tz is None else tz)


# ------------------------------------------------------------------ summaries and listings


def encode_summary(result: SummaryResult) -> bytes:
    """A ``SummaryResult`` exactly (floats round-trip, unpriced counts kept)."""
    return _encoder.encode(result)


class _Closing(msgspec.Struct):
    """Either closing line of a listing, read leniently to tell them apart."""

    end: bool = False
    count: int = -1
    error: str = ""
    message: str = ""


_summary_decoder = msgspec.json.Decoder(SummaryResult)
_closing_decoder = msgspec.json.Decoder(_Closing)


def decode_summary(data: bytes) -> SummaryResult:
    return _summary_decoder.decode(data)


def stream_end(count: int) -> bytes:
    return _encoder.encode(StreamEnd(end=True, count=count)) + b"\n"


def decode_stream_end(line: bytes) -> StreamEnd | ErrorBody | None:
    """The closing line of a listing; None when the line is neither kind."""
    try:
        closing = _closing_decoder.decode(line)
    except msgspec.DecodeError:
        return None
    if closing.error:
        return ErrorBody(error=closing.error, message=closing.message)
    if closing.end and closing.count >= 0:
        return StreamEnd(end=True, count=closing.count)
    return None


def is_record_line(line: bytes) -> bool:
    """Records are encoded with their ``kind`` tag first; the closing line has none."""
    return line.startswith(b'{"kind":')


__all__ = [
    "API",
    "BATCHES_PATH",
    "CONTENT_PATH",
    "HEALTH_PATH",
    "JSON",
    "LISTINGS",
    "NDJSON",
    "PRUNE_PATH",
    "SUMMARY_PATH",
    "BadParameter",
    "BatchAccepted",
    "BatchBody",
    "ContentPruned",
    "ErrorBody",
    "Health",
    "KindCounts",
    "RecordProblem",
    "StreamEnd",
    "filter_params",
    "parse_filter",
    "parse_prune",
    "parse_summary",
    "summary_params",
]
