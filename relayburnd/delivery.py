"""Getting a batch into the sink: the declared retry policy and the dead-letter file.

Outcomes of a write (a sink raises one of the ``SinkError`` classes):

=================  ===========================================================
delivered          the sink acknowledged: cursors may advance
SinkUnavailable    retry with exponential backoff and full jitter (0.5 s doubling,
                   capped at 30 s, at least ``Retry-After``), without limit unless
                   the caller set a deadline
SinkRejected       the data is refused: records the sink named (or, by halving
                   the batch, the single records it refuses) go to the
                   dead-letter file with their source and offset; the rest is
                   delivered, so a poison record never blocks its file
SinkMisconfigured  credentials or settings: raised to the caller, which holds
                   the cursors and retries slowly
=================  ===========================================================
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from . import faults
from .errors import SinkRejected, SinkUnavailable
from .logging import get_logger
from .records import KIND_OF, Batch, Record, WriteResult

if TYPE_CHECKING:
    from tenacity import RetryCallState

    from .storage.base import StorageAdapter

log = get_logger("delivery")

BACKOFF_START = 0.5
BACKOFF_CAP = 30.0


class Origin(msgspec.Struct):
    """Where a record came from, for dead-letter entries."""

    source: str
    file: str
    offset: int


class DeliveryStats(msgspec.Struct):
    retries: int = 0
    dead_lettered: int = 0
    errors_by_class: dict[str, int] = msgspec.field(default_factory=dict)


class DeadLetters:
    """Append-only ``deadletter.jsonl``: what could not be stored, and where it is.

    Entries name the source file, offset, length, reason and record id; they
    never hold the line's bytes or any content (the source file still has them).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def add(self, entry: dict[str, Any]) -> None:
        self.add_many([entry])

    def add_many(self, entries: list[dict[str, Any]]) -> None:
        """Append entries with one write and one fsync: a corrupt file can skip many lines."""
        if not entries:
            return
        now = round(time.time(), 3)
        for entry in entries:
            entry.setdefault("at", now)
        data = b"".join(msgspec.json.encode(e) + b"\n" for e in entries)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.count += len(entries)


class _wait_backoff:
    """Full-jitter exponential backoff that honours a sink's Retry-After."""

    def __init__(self, start: float, cap: float) -> None:
        self.start = start
        self.cap = cap

    def __call__(self, state: RetryCallState) -> float:
        ceiling = min(self.cap, self.start * 2 ** (state.attempt_number - 1))
        wait = random.uniform(0, ceiling)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            wait = max(wait, float(retry_after))
        return wait


class _stop_at:
    """Stop retrying when the next wait would pass a monotonic deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        upcoming = state.upcoming_sleep or 0.0
        return time.monotonic() + upcoming >= self.deadline


class Deliverer:
    """Writes batches to one sink with the policy in the module docstring."""

    def __init__(
        self,
        sink: StorageAdapter,
        dead_letters: DeadLetters,
        *,
        backoff_start: float = BACKOFF_START,
        backoff_cap: float = BACKOFF_CAP,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sink = sink
        self.dead_letters = dead_letters
        self.backoff_start = backoff_start
        self.backoff_cap = backoff_cap
        self.sleep = sleep
        self.stats = DeliveryStats()

    def _count_error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.stats.errors_by_class[name] = self.stats.errors_by_class.get(name, 0) + 1

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            self._count_error(exc)
        log.warning(
            "batch.retry",
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep or 0, 2),
            error_type=type(exc).__name__ if exc else None,
            reason=str(exc) if exc else None,
        )

    def deliver(
        self,
        batch: Batch,
        origins: dict[str, Origin],
        *,
        deadline: float | None = None,
    ) -> WriteResult:
        """Write ``batch``; raises SinkUnavailable only when ``deadline`` passes."""
        result = WriteResult()
        if not batch.records:
            return result
        self._deliver_part(batch.records, origins, deadline, result, batch.lines)
        faults.hit("after_sink_commit")
        return result

    def _write_with_retry(
        self, records: list[Record], deadline: float | None,
        lines: dict[tuple[str, str], bytes],
    ) -> WriteResult:
        part = Batch(records=list(records), lines=lines)
        try:
            # the common case needs no retry machinery: tenacity (and the asyncio and
            # concurrent.futures it imports, ~25 ms) is loaded by the first failure
            return self.sink.write(part)
        except SinkUnavailable as exc:
            first: SinkUnavailable | None = exc
        from tenacity import Retrying, retry_if_exception_type, stop_never

        def attempt() -> WriteResult:
            # tenacity's first attempt is the one that just failed: it is reported, not
            # made again, so the waits and the retry log are as if tenacity made it
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return self.sink.write(part)

        retrying = Retrying(
            retry=retry_if_exception_type(SinkUnavailable),
            wait=_wait_backoff(self.backoff_start, self.backoff_cap),
            stop=_stop_at(deadline) if deadline is not None else stop_never,
            sleep=self.sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        out: WriteResult = retrying(attempt)
        return out

    def _deliver_part(
        self,
        records: list[Record],
        origins: dict[str, Origin],
        deadline: float | None,
        result: WriteResult,
        lines: dict[tuple[str, str], bytes],
    ) -> None:
        try:
            result.add(self._write_with_retry(records, deadline, lines))
            return
        except SinkRejected as exc:
            self._count_error(exc)
            named = set(exc.record_ids)
            bad = [r for r in records if r.id in named]
            if bad:
                for rec in bad:
                    self._dead_letter(rec, origins, str(exc))
                rest = [r for r in records if r.id not in named]
                if rest:
                    self._deliver_part(rest, origins, deadline, result, lines)
                return
            # Nothing named, or only ids this part does not hold: find the bad records
            # by halving rather than dead-lettering records the sink never blamed.
            if len(records) == 1:
                self._dead_letter(records[0], origins, str(exc))
                return
            half = len(records) // 2
            self._deliver_part(records[:half], origins, deadline, result, lines)
            self._deliver_part(records[half:], origins, deadline, result, lines)

    def _dead_letter(self, rec: Record, origins: dict[str, Origin], reason: str) -> None:
        origin = origins.get(rec.id)
        entry: dict[str, Any] = {
            "reason": reason,
            "kind": KIND_OF[type(rec)],
            "record_id": rec.id,
            "source": rec.source,
            "session_id": rec.session_id,
        }
        if origin is not None:
            entry.update(file=origin.file, offset=origin.offset)
        self.dead_letters.add(entry)
        self.stats.dead_lettered += 1
        log.error("record.dead_lettered", error_type="rejected", **{
            k: v for k, v in entry.items() if k in ("kind", "record_id", "file", "offset", "reason")
        })
