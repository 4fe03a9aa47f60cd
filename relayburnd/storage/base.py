"""The StorageAdapter seam: one contract, four adapters (file, sqlite, postgres, http).

Contract (every adapter passes ``tests/storage/test_contract.py``):

* ``write(batch)`` is **idempotent** and **atomic per batch** where the store
  allows it: either every record of the batch is durable when it returns, or
  it raises and nothing the caller must re-send is lost.
* Per record id the store keeps the record with the **greatest ``rank``**
  (see ``records.py``). Re-delivering a record is a no-op; a later, larger
  snapshot replaces the stored one whatever order batches arrive in.
* It returns a ``WriteResult`` with inserted / updated / unchanged per kind.
* Errors: ``SinkUnavailable`` (transient, retry with backoff), ``SinkRejected``
  (the data itself is refused; dead-letter it), ``SinkMisconfigured``
  (credentials or settings; hold the data, retry slowly). Adapters translate
  driver errors into these where they enter; nothing above ``storage/``
  catches a driver exception.
* The query side returns folded records (one per id, greatest rank).
  ``summary`` applies the reporting rules of ``reports.py``: sidechain replays
  of main-thread responses are not counted.
* ``healthcheck()`` raises a ``SinkError`` when the store cannot be used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import msgspec

from ..records import (
    Batch,
    Compaction,
    ContentRecord,
    SessionRelationship,
    ToolResultEvent,
    Turn,
    UserTurn,
    WriteResult,
)

DIMENSIONS = ("source", "day", "week", "month", "model", "project", "session")


class Filter(msgspec.Struct, frozen=True):
    """Selects records by time range (epoch ms, ``until`` exclusive) and attributes."""

    since_ms: int | None = None
    until_ms: int | None = None
    session_id: str | None = None
    project: str | None = None
    model: str | None = None
    sources: tuple[str, ...] = ()

    def matches_time(self, ts: int) -> bool:
        if self.since_ms is not None and ts < self.since_ms:
            return False
        return not (self.until_ms is not None and ts >= self.until_ms)

    def matches(
        self, *, ts: int, source: str, session_id: str, project: str | None = None
    ) -> bool:
        if not self.matches_time(ts):
            return False
        if self.sources and source not in self.sources:
            return False
        if self.session_id is not None and session_id != self.session_id:
            return False
        return not (self.project is not None and project != self.project)


class SummarySpec(msgspec.Struct, frozen=True):
    """A grouped usage report: dimensions, filter and the reporting time zone."""

    by: tuple[str, ...] = ("day",)
    filter: Filter = msgspec.field(default_factory=Filter)
    tz: str = "UTC"


SUMMARY_METRICS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_write_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_usd",
)


@dataclass(kw_only=True)
class TokenTotals:
    """Requests, tokens and cost of a group of turns: a summary row, a session, a block."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_requests: int = 0

    def add_turn(self, t: Turn) -> None:
        self.requests += 1
        self.input_tokens += t.input_tokens
        self.output_tokens += t.output_tokens
        self.cache_write_tokens += t.cache_write_tokens
        self.cache_read_tokens += t.cache_read_tokens
        self.reasoning_tokens += t.reasoning_tokens
        self.total_tokens += t.total_tokens
        if t.cost_usd is None:
            self.unpriced_requests += 1
        else:
            self.cost_usd += t.cost_usd


@dataclass(kw_only=True)
class SummaryRow(TokenTotals):
    keys: dict[str, str]

    def add_row(self, other: SummaryRow) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.total_tokens += other.total_tokens
        self.cost_usd += other.cost_usd
        self.unpriced_requests += other.unpriced_requests

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.keys)
        out.update(
            requests=self.requests,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_write_tokens=self.cache_write_tokens,
            cache_read_tokens=self.cache_read_tokens,
            reasoning_tokens=self.reasoning_tokens,
            total_tokens=self.total_tokens,
            cost_usd=round(self.cost_usd, 10),
        )
        if self.unpriced_requests:
            out["unpriced_requests"] = self.unpriced_requests
        return out


@dataclass
class SummaryResult:
    by: tuple[str, ...]
    rows: list[SummaryRow]
    totals: SummaryRow

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": [r.as_dict() for r in self.rows],
            "totals": self.totals.as_dict(),
        }


@runtime_checkable
class StorageAdapter(Protocol):
    """The seam between the pipeline and a store. See the module docstring."""

    name: str

    def write(self, batch: Batch) -> WriteResult: ...

    def turns(self, flt: Filter | None = None) -> Iterator[Turn]: ...

    def user_turns(self, flt: Filter | None = None) -> Iterator[UserTurn]: ...

    def compactions(self, flt: Filter | None = None) -> Iterator[Compaction]: ...

    def tool_results(self, flt: Filter | None = None) -> Iterator[ToolResultEvent]: ...

    def relationships(self, flt: Filter | None = None) -> Iterator[SessionRelationship]: ...

    def content(self, session_id: str) -> list[ContentRecord]: ...

    def summary(self, spec: SummarySpec) -> SummaryResult: ...

    def healthcheck(self) -> None: ...

    def close(self) -> None: ...
