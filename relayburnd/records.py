"""Shared record types, their content-addressed ids and the merge order.

Every shared record has an ``id`` built only from fields that survive copying
(resume copies, progress copies, sub-agent files, archive moves), so N hosts
ingesting the same session converge to one row per record. Ids are 128-bit
BLAKE2b digests written as 32 hex characters (a ``uuid`` in Postgres).

Records also carry ``rank``: a text key whose lexicographic order is the merge
order. A store keeps, per id, the record with the greatest rank. The rank starts
with zero-padded numbers that say "more complete" (a Claude response's output
count grows while it streams) and ends with a digest of the whole record, so
the order is total: whatever order batches arrive in, every store converges to
the same row. Equal rank means identical content, so re-delivery is a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import ClassVar

import msgspec

SOURCES = ("claude", "codex", "opencode")


# Hashes are started from copies of these: the constructor's keyword parsing cost more
# than hashing an id's few dozen bytes.
_ID_HASH = hashlib.blake2b(digest_size=16)
_RANK_HASH = hashlib.blake2b(digest_size=8)
_SHA256 = hashlib.sha256()


ID_SEP = "\x1f"


def make_id(*parts: object) -> str:
    """Content-addressed id from the identity fields of a record."""
    try:
        text = ID_SEP.join(parts)  # type: ignore[arg-type]  # all str: the common case
    except TypeError:
        text = ID_SEP.join("" if p is None else str(p) for p in parts)
    return id_of_joined(text)


def id_prefix(*parts: str) -> str:
    """The leading ``parts`` as ``make_id`` joins them, for ``id_of_joined``."""
    return ID_SEP.join(parts) + ID_SEP


def id_of_joined(text: str) -> str:
    """``make_id`` of parts already joined (``id_prefix`` + the rest): records of one
    message share a prefix, which is then joined once."""
    h = _ID_HASH.copy()
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def short_hash(data: bytes | str | msgspec.Raw) -> str:
    """SHA-256 (hex) used for tool arguments and content text."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    h = _SHA256.copy()  # OpenSSL looks the algorithm up by name on each construction
    h.update(data)
    return h.hexdigest()


class _Record(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="kind", gc=False):
    """Fields every shared record has.

    ``gc=False``: records hold strings, numbers and lists of tool calls, never
    themselves, so the cyclic collector need not track the many a backfill makes.
    """

    id: str
    rank: str = ""
    source: str
    session_id: str

    rank_fields: ClassVar[tuple[str, ...]] = ()

    def rank_basis(self) -> tuple[int, ...]:
        fields = self.rank_fields
        return tuple(int(getattr(self, name) or 0) for name in fields) if fields else ()


class ToolCall(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One tool invocation requested by a model response (arguments hashed, never stored)."""

    id: str
    name: str
    args_sha256: str = ""
    args_bytes: int = 0


class Turn(_Record, tag="turn", kw_only=True, omit_defaults=True):
    """One billed model request, with tokens normalised as in the format spec section 1.

    ``input_tokens`` is uncached prompt input; ``cache_read_tokens`` and
    ``cache_write_tokens`` are the cached parts; ``output_tokens`` includes
    reasoning, of which ``reasoning_tokens`` is the reported subset.
    """

    project: str = ""
    ts: int  # epoch milliseconds, UTC
    model: str | None = None
    model_fallback: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    cost_usd: float | None = None
    price_version: str | None = None
    logged_cost_usd: float | None = None
    stop_reason: str | None = None
    service_tier: str | None = None
    speed: str | None = None
    is_sidechain: bool = False
    agent_id: str | None = None
    message_id: str | None = None
    request_id: str | None = None
    tool_calls: list[ToolCall] = []
    snapshot_lines: int = 1
    complete: bool = False
    # which copy is authoritative when copies disagree: a higher value wins whatever
    # the counts (OpenCode's database row over a stale JSON copy of the same message)
    authority: int = 0

    rank_fields: ClassVar[tuple[str, ...]] = ("authority", "output_tokens", "snapshot_lines")

    def rank_basis(self) -> tuple[int, ...]:
        return (self.authority, self.output_tokens, self.snapshot_lines)

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_write_tokens
            + self.cache_read_tokens
        )


class UserTurn(_Record, tag="user-turn", kw_only=True, omit_defaults=True):
    """A message the user typed (harness-injected lines excluded)."""

    project: str = ""
    ts: int
    message_id: str
    text_chars: int = 0
    block_types: list[str] = []
    tool_result_count: int = 0
    tool_result_bytes: int = 0
    image_count: int = 0
    is_command: bool = False
    is_sidechain: bool = False
    agent_id: str | None = None
    prev_message_id: str | None = None
    next_message_id: str | None = None

    def rank_basis(self) -> tuple[int, ...]:
        # a copy that knows the following message is more complete
        return (1 if self.next_message_id else 0,)


class Compaction(_Record, tag="compaction", kw_only=True, omit_defaults=True):
    """A context compaction (Claude compact_boundary, Codex compacted, OpenCode compaction)."""

    project: str = ""
    ts: int
    message_id: str | None = None
    trigger: str | None = None
    pre_tokens: int | None = None


class ToolResultEvent(_Record, tag="tool-result", kw_only=True, omit_defaults=True):
    """The outcome of one tool call (success or error, size of the output)."""

    ts: int
    tool_use_id: str
    tool_name: str | None = None
    is_error: bool = False
    exit_code: int | None = None
    output_bytes: int = 0
    is_sidechain: bool = False


class ContentRecord(_Record, tag="content", kw_only=True, omit_defaults=True):
    """One piece of conversation text, in order within its message.

    With ``content.store = hash-only`` the ``text`` is dropped before the record
    leaves the pipeline; ``sha256`` and ``chars`` remain.
    """

    ts: int
    message_id: str
    seq: int = 0
    role: str  # user | assistant | tool
    block_type: str  # text | thinking | tool_use | tool_result | reasoning | ...
    text: str | None = None
    sha256: str = ""
    chars: int = 0
    tool_use_id: str | None = None
    tool_name: str | None = None
    redactions: int = 0


class SessionRelationship(_Record, tag="relationship", kw_only=True, omit_defaults=True):
    """A session derived from another: sub-agent, fork, continuation, side question."""

    ts: int = 0
    parent_session_id: str
    relation: str  # subagent | fork | continuation | sidechain
    agent_id: str | None = None
    tool_use_id: str | None = None

    def rank_basis(self) -> tuple[int, ...]:
        # the copy that names the spawning tool call is more complete
        return (1 if self.tool_use_id else 0,)


Record = Turn | UserTurn | Compaction | ToolResultEvent | ContentRecord | SessionRelationship

RECORD_TYPES: tuple[type[_Record], ...] = (
    Turn,
    UserTurn,
    Compaction,
    ToolResultEvent,
    ContentRecord,
    SessionRelationship,
)
KIND_OF: dict[type[_Record], str] = {t: str(t.__struct_config__.tag) for t in RECORD_TYPES}
TYPE_OF: dict[str, type[_Record]] = {k: t for t, k in KIND_OF.items()}
KINDS: tuple[str, ...] = tuple(KIND_OF.values())

_encoder = msgspec.json.Encoder()
_record_decoder: msgspec.json.Decoder[Record] = msgspec.json.Decoder(Record)


def kind_of(record: _Record) -> str:
    return KIND_OF[type(record)]


def encode(record: _Record) -> bytes:
    """JSON bytes of a record, with its ``kind`` tag."""
    return _encoder.encode(record)


def decode(data: bytes | str) -> Record:
    """Decode one record; raises msgspec.ValidationError on unknown kinds."""
    return _record_decoder.decode(data)


def to_dict(record: _Record) -> dict[str, object]:
    out = msgspec.to_builtins(record)
    assert isinstance(out, dict)
    return out


def seal(record: _Record) -> _Record:
    """Set ``rank`` from the record's completeness numbers and its full content."""
    seal_line(record)
    return record


_PLAIN_ID = frozenset("0123456789abcdefABCDEF-_.:")
# "%015d" per completeness number, then the digest: ``seal``'s format, in one operation
_RANK_FORMAT = {n: "%015d" * n + ":%s" for n in range(1, 8)}
# where a record's id starts in its encoding, by record type
_ID_OFFSET = {t: len(b'{"kind":"' + kind.encode() + b'","id":"') for kind, t in TYPE_OF.items()}
_VIEW_FROM = 4096  # splice larger encodings through a view, so they are copied once


def seal_line(record: _Record) -> bytes:
    """``seal`` the record and return its JSON encoding (what ``encode`` would give).

    The digest is taken over the encoding without a rank (``rank`` is omitted while
    empty); the rank is then spliced in after ``id``, where the field order puts it,
    so a record is encoded once on its way to a ledger instead of twice.
    """
    record.rank = ""
    body = _encoder.encode(record)
    h = _RANK_HASH.copy()
    h.update(body)
    digest = h.hexdigest()
    basis = record.rank_basis()
    rank = _RANK_FORMAT[len(basis)] % (*basis, digest) if basis else digest
    record.rank = rank
    rid = record.id
    # ids are hex digests (isalnum and isascii are single C loops); anything else is
    # checked character by character
    if not (rid.isalnum() and rid.isascii()) and not _PLAIN_ID.issuperset(rid):
        return _encoder.encode(record)  # an id JSON would escape: no splicing
    cut = _ID_OFFSET[type(record)] + len(rid) + 1
    if len(body) < _VIEW_FROM:  # copying a short encoding costs less than making views
        return b"".join((body[:cut], b',"rank":"', rank.encode(), b'"', body[cut:]))
    view = memoryview(body)  # slices of a view are not copies: a content line is copied once
    return b"".join((view[:cut], b',"rank":"', rank.encode(), b'"', view[cut:]))


def fold(records: Iterable[_Record]) -> dict[str, _Record]:
    """Keep, per id, the record with the greatest rank (the store's merge rule)."""
    best: dict[str, _Record] = {}
    for rec in records:
        cur = best.get(rec.id)
        if cur is None or rec.rank > cur.rank:
            best[rec.id] = rec
    return best


def replay_message_ids(turns: Iterable[Turn]) -> set[str]:
    """Message ids that have a main-thread (non-sidechain) turn.

    A sidechain turn whose ``message_id`` is in this set and whose id differs
    is a replay of the main thread's response (Claude ``/btw`` side questions,
    format spec 2.10 rule 5) and is not billed again.
    """
    return {t.message_id for t in turns if not t.is_sidechain and t.message_id}


def is_replay(turn: Turn, main_message_ids: set[str]) -> bool:
    return bool(turn.is_sidechain and turn.message_id and turn.message_id in main_message_ids)


class KindCounts(msgspec.Struct):
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, other: KindCounts) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged


class WriteResult(msgspec.Struct):
    """What a sink did with a batch, per record kind."""

    counts: dict[str, KindCounts] = msgspec.field(default_factory=dict)

    def kind(self, kind: str) -> KindCounts:
        return self.counts.setdefault(kind, KindCounts())

    def add(self, other: WriteResult) -> None:
        for kind, c in other.counts.items():
            self.kind(kind).add(c)

    @property
    def inserted(self) -> int:
        return sum(c.inserted for c in self.counts.values())

    @property
    def updated(self) -> int:
        return sum(c.updated for c in self.counts.values())

    @property
    def unchanged(self) -> int:
        return sum(c.unchanged for c in self.counts.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            k: {"inserted": c.inserted, "updated": c.updated, "unchanged": c.unchanged}
            for k, c in sorted(self.counts.items())
        }


class Batch(msgspec.Struct):
    """Records on their way to a sink. Sealed records only.

    ``lines`` holds the JSON encoding of records that were encoded when sealed,
    keyed by (id, rank); the rank ends with a digest of the content, so a line
    found under a record's key is that record's encoding. Sinks that write
    JSON lines reuse them; others ignore them.
    """

    records: list[Record] = msgspec.field(default_factory=list)
    nbytes: int = 0
    lines: dict[tuple[str, str], bytes] = msgspec.field(default_factory=dict)

    def add(self, record: Record, size: int = 0, *, line: bytes | None = None) -> None:
        self.records.append(record)
        if line is not None:
            self.lines[(record.id, record.rank)] = line
            size = size or len(line)
        self.nbytes += size or 200

    def add_sealed(self, records: list[Record], lines: list[bytes]) -> None:
        """``add`` of each record with its line (``seal_line``), in one loop."""
        self.records += records
        by_key = self.lines
        size = 0
        for rec, line in zip(records, lines, strict=True):
            by_key[(rec.id, rec.rank)] = line
            size += len(line)
        self.nbytes += size

    def encoded(self, record: _Record) -> bytes:
        """The record's JSON encoding, reused from sealing when there is one."""
        line = self.lines.get((record.id, record.rank))
        return line if line is not None else encode(record)

    def __len__(self) -> int:
        return len(self.records)

    def by_kind(self) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = {}
        for rec in self.records:
            out.setdefault(KIND_OF[type(rec)], []).append(rec)
        return out


def sorted_records(records: Sequence[_Record]) -> list[_Record]:
    """Deterministic order for comparisons in tests and exports."""
    return sorted(records, key=lambda r: (KIND_OF[type(r)], r.id))
