"""Delivery policy against a real file store behind a fault-injecting wrapper: retries
with full-jitter backoff, dead letters for rejected records, halving, deadlines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest

from relayburnd.config import load_settings
from relayburnd.delivery import DeadLetters, Deliverer, Origin
from relayburnd.errors import SinkMisconfigured, SinkRejected, SinkUnavailable
from relayburnd.records import Batch, ContentRecord, Record, Turn, WriteResult, make_id, seal
from relayburnd.storage.base import StorageAdapter
from relayburnd.storage.file import FileAdapter

TS = 1_718_000_000_000


def turn(n: int) -> Turn:
    rec = Turn(id=make_id("req", n), source="claude", session_id="sess-1", ts=TS + n,
               output_tokens=n + 1, input_tokens=10)
    seal(rec)
    return rec


def content(n: int, text: str, session: str = "sess-1") -> ContentRecord:
    rec = ContentRecord(id=make_id("content", session, n), source="claude", session_id=session,
                        ts=TS + n, message_id=f"m{n}", role="user", block_type="text",
                        text=text, chars=len(text))
    seal(rec)
    return rec


class FaultySink:
    """A real FileAdapter behind scripted failures.

    ``unavailable`` failures come first (with ``retry_after``); a batch holding any
    ``poison`` id is then rejected, naming the poison ids (``name="ids"``), nothing
    (``name="none"``) or ids that are not in the batch (``name="wrong"``).
    """

    name = "faulty"

    def __init__(self, inner: FileAdapter, *, unavailable: int = 0,
                 retry_after: float | None = None, poison: frozenset[str] = frozenset(),
                 name: str = "ids", misconfigured: bool = False) -> None:
        self.inner = inner
        self.unavailable = unavailable
        self.retry_after = retry_after
        self.poison = poison
        self.name_mode = name
        self.misconfigured = misconfigured
        self.calls: list[list[str]] = []

    def write(self, batch: Batch) -> WriteResult:
        self.calls.append([r.id for r in batch.records])
        if self.unavailable:
            self.unavailable -= 1
            raise SinkUnavailable("sink down", retry_after=self.retry_after)
        if self.misconfigured:
            raise SinkMisconfigured("401 Unauthorized: check RELAYBURN_HTTP_TOKEN")
        bad = tuple(r.id for r in batch.records if r.id in self.poison)
        if bad:
            ids = {"ids": bad, "none": (), "wrong": ("not-a-record-id",)}[self.name_mode]
            raise SinkRejected(f"{len(bad)} record(s) refused", record_ids=ids)
        return self.inner.write(batch)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


@pytest.fixture
def store() -> Iterator[FileAdapter]:
    adapter = FileAdapter(load_settings())
    yield adapter
    adapter.close()


@pytest.fixture
def dead_letters(store: FileAdapter) -> DeadLetters:
    return DeadLetters(store.layout.deadletter)


def deliverer(sink: FaultySink | FileAdapter, dead: DeadLetters, waits: list[float] | None = None,
              **kw: Any) -> Deliverer:
    sleep = waits.append if waits is not None else (lambda _s: None)
    return Deliverer(cast(StorageAdapter, sink), dead, sleep=sleep, **kw)


def origins_for(records: list[Record]) -> dict[str, Origin]:
    return {r.id: Origin("claude", "/logs/sess-1.jsonl", 1000 * i) for i, r in enumerate(records)}


def stored_ids(store: FileAdapter) -> set[str]:
    return {r.id for r in store.iter_records()}


def dead_entries(dead: DeadLetters) -> list[dict[str, Any]]:
    if not dead.path.exists():
        return []
    return [msgspec.json.decode(line) for line in dead.path.read_bytes().splitlines()]


class TestRetryOnUnavailable:
    """SinkUnavailable is retried with backoff until the write succeeds."""

    def test_retries_then_delivers(self, store: FileAdapter, dead_letters: DeadLetters) -> None:
        """After N transient failures the batch is written once and counted."""
        sink = FaultySink(store, unavailable=4)
        waits: list[float] = []
        d = deliverer(sink, dead_letters, waits)
        records: list[Record] = [turn(1), turn(2)]
        result = d.deliver(Batch(records=records), origins_for(records))
        assert result.inserted == 2
        assert len(sink.calls) == 5 and len(waits) == 4
        assert d.stats.retries == 4
        assert d.stats.errors_by_class == {"SinkUnavailable": 4}
        assert stored_ids(store) == {turn(1).id, turn(2).id}
        assert dead_entries(dead_letters) == []

    def test_retries_without_limit_when_there_is_no_deadline(
        self, store: FileAdapter, dead_letters: DeadLetters
    ) -> None:
        """Sixty failures in a row do not make delivery give up or drop anything."""
        sink = FaultySink(store, unavailable=60)
        waits: list[float] = []
        records: list[Record] = [turn(1)]
        deliverer(sink, dead_letters, waits).deliver(Batch(records=records), origins_for(records))
        assert len(waits) == 60
        assert stored_ids(store) == {turn(1).id}

    def test_retry_after_is_a_lower_bound(self, store: FileAdapter,
                                          dead_letters: DeadLetters) -> None:
        """Every wait honours the sink's Retry-After, even when the backoff is smaller."""
        sink = FaultySink(store, unavailable=3, retry_after=2.5)
        waits: list[float] = []
        records: list[Record] = [turn(1)]
        deliverer(sink, dead_letters, waits, backoff_start=0.01, backoff_cap=0.1).deliver(
            Batch(records=records), origins_for(records))
        assert waits == [2.5, 2.5, 2.5]


class TestBackoff:
    """Exponential backoff with full jitter, capped."""

    def test_waits_stay_within_the_exponential_ceiling(
        self, store: FileAdapter, dead_letters: DeadLetters
    ) -> None:
        """The n-th wait lies in [0, min(cap, start * 2**(n-1))]."""
        waits: list[float] = []
        sink = FaultySink(store, unavailable=10)
        records: list[Record] = [turn(1)]
        deliverer(sink, dead_letters, waits, backoff_start=0.5, backoff_cap=4.0).deliver(
            Batch(records=records), origins_for(records))
        for n, wait in enumerate(waits, start=1):
            assert 0 <= wait <= min(4.0, 0.5 * 2 ** (n - 1)), (n, wait)

    def test_jitter_spans_the_whole_range(self, store: FileAdapter,
                                          dead_letters: DeadLetters) -> None:
        """Full jitter: first waits spread over [0, start], not clustered near the top."""
        waits: list[float] = []
        d = deliverer(FaultySink(store), dead_letters, waits, backoff_start=1.0,
                      backoff_cap=30.0)
        for i in range(100):
            cast(FaultySink, d.sink).unavailable = 1
            records: list[Record] = [turn(i)]
            d.deliver(Batch(records=records), origins_for(records))
        assert len(waits) == 100
        assert max(waits) <= 1.0
        assert min(waits) < 0.2 and max(waits) > 0.8
        assert 0.35 < sum(waits) / len(waits) < 0.65

    def test_cap_bounds_late_waits(self, store: FileAdapter, dead_letters: DeadLetters) -> None:
        """After many failures waits never exceed the cap but still use its whole range."""
        waits: list[float] = []
        sink = FaultySink(store, unavailable=200)
        records: list[Record] = [turn(1)]
        deliverer(sink, dead_letters, waits, backoff_start=0.5, backoff_cap=2.0).deliver(
            Batch(records=records), origins_for(records))
        late = waits[10:]
        assert max(late) <= 2.0 and max(late) > 1.5 and min(late) < 0.5

    def test_backoff_starts_over_for_the_next_batch(
        self, store: FileAdapter, dead_letters: DeadLetters
    ) -> None:
        """After a success the next failure waits at most the starting backoff again."""
        waits: list[float] = []
        sink = FaultySink(store, unavailable=8)
        d = deliverer(sink, dead_letters, waits, backoff_start=0.5, backoff_cap=30.0)
        first: list[Record] = [turn(1)]
        d.deliver(Batch(records=first), origins_for(first))
        waits.clear()
        sink.unavailable = 1
        second: list[Record] = [turn(2)]
        d.deliver(Batch(records=second), origins_for(second))
        assert len(waits) == 1 and waits[0] <= 0.5


class TestDeadline:
    """A deadline bounds how long an unavailable sink is retried."""

    def test_deadline_stops_retrying(self, store: FileAdapter,
                                     dead_letters: DeadLetters) -> None:
        """With the sink down for good, delivery raises SinkUnavailable by the deadline,
        having retried, and stores and dead-letters nothing."""
        sink = FaultySink(store, unavailable=10**9)
        d = Deliverer(cast(StorageAdapter, sink), dead_letters, backoff_start=0.02,
                      backoff_cap=0.05)
        records: list[Record] = [turn(1)]
        start = time.monotonic()
        with pytest.raises(SinkUnavailable):
            d.deliver(Batch(records=records), origins_for(records), deadline=start + 0.4)
        elapsed = time.monotonic() - start
        assert elapsed < 0.4 + 0.2
        assert len(sink.calls) > 3
        assert stored_ids(store) == set()
        assert dead_entries(dead_letters) == []

    def test_retry_after_beyond_the_deadline_stops_at_once(
        self, store: FileAdapter, dead_letters: DeadLetters
    ) -> None:
        """A Retry-After that would end past the deadline is not waited for."""
        waits: list[float] = []
        sink = FaultySink(store, unavailable=5, retry_after=60)
        records: list[Record] = [turn(1)]
        with pytest.raises(SinkUnavailable):
            deliverer(sink, dead_letters, waits).deliver(
                Batch(records=records), origins_for(records), deadline=time.monotonic() + 5)
        assert waits == [] and len(sink.calls) == 1


class TestRejection:
    """Rejected records are dead-lettered; everything else is delivered."""

    def test_named_records_are_dead_lettered(self, store: FileAdapter,
                                             dead_letters: DeadLetters) -> None:
        """The ids the sink names go to the dead-letter file; the rest is stored."""
        records: list[Record] = [turn(i) for i in range(10)]
        sink = FaultySink(store, poison=frozenset({turn(3).id, turn(7).id}))
        d = deliverer(sink, dead_letters)
        result = d.deliver(Batch(records=records), origins_for(records))
        assert result.inserted == 8
        assert {e["record_id"] for e in dead_entries(dead_letters)} == {turn(3).id, turn(7).id}
        assert stored_ids(store) == {r.id for r in records} - {turn(3).id, turn(7).id}
        assert d.stats.dead_lettered == 2 and len(sink.calls) == 2

    @pytest.mark.parametrize("size", [1, 2, 7, 16, 33])
    def test_halving_isolates_an_unnamed_bad_record(
        self, store: FileAdapter, dead_letters: DeadLetters, size: int
    ) -> None:
        """A rejection that names nothing is narrowed by halving to the single bad record;
        every other record is delivered, in about 2*log2(n) extra writes."""
        records: list[Record] = [turn(i) for i in range(size)]
        bad = records[size // 3]
        sink = FaultySink(store, poison=frozenset({bad.id}), name="none")
        d = deliverer(sink, dead_letters)
        result = d.deliver(Batch(records=records), origins_for(records))
        assert result.inserted == size - 1
        assert [e["record_id"] for e in dead_entries(dead_letters)] == [bad.id]
        assert stored_ids(store) == {r.id for r in records} - {bad.id}
        assert len(sink.calls) <= 1 + 2 * max(1, (size - 1).bit_length())

    def test_halving_isolates_several_bad_records(
        self, store: FileAdapter, dead_letters: DeadLetters
    ) -> None:
        """Two unnamed bad records in one batch are both isolated."""
        records: list[Record] = [turn(i) for i in range(20)]
        poison = frozenset({turn(0).id, turn(19).id})
        sink = FaultySink(store, poison=poison, name="none")
        deliverer(sink, dead_letters).deliver(Batch(records=records), origins_for(records))
        assert {e["record_id"] for e in dead_entries(dead_letters)} == poison
        assert stored_ids(store) == {r.id for r in records} - poison

    def test_ids_that_are_not_in_the_batch_fall_back_to_halving(
        self, store: FileAdapter, dead_letters: DeadLetters
    ) -> None:
        """When the sink names ids the batch does not hold, good records are not
        dead-lettered: halving finds the bad one."""
        records: list[Record] = [turn(i) for i in range(8)]
        sink = FaultySink(store, poison=frozenset({turn(5).id}), name="wrong")
        deliverer(sink, dead_letters).deliver(Batch(records=records), origins_for(records))
        assert [e["record_id"] for e in dead_entries(dead_letters)] == [turn(5).id]
        assert stored_ids(store) == {r.id for r in records} - {turn(5).id}

    def test_file_store_rejection_through_delivery(self, store: FileAdapter,
                                                   dead_letters: DeadLetters) -> None:
        """The real store refuses content with an unsafe session id; only that record is
        dead-lettered and the usage records next to it are stored."""
        bad = content(1, "hello", session="../../etc")
        records: list[Record] = [turn(1), bad, content(2, "fine"), turn(2)]
        deliverer(store, dead_letters).deliver(Batch(records=records), origins_for(records))
        assert [e["record_id"] for e in dead_entries(dead_letters)] == [bad.id]
        assert stored_ids(store) == {turn(1).id, turn(2).id, content(2, "fine").id}


class TestDeadLetterEntries:
    """Dead-letter entries say where the record is, never what it says."""

    def test_entries_carry_origin_and_no_content(self, store: FileAdapter,
                                                 dead_letters: DeadLetters) -> None:
        """Each entry names the file, offset, record id and reason; the text is absent."""
        secret = "the launch code is 0000 and the plan is to ship on friday"
        bad = content(3, secret)
        records: list[Record] = [turn(1), turn(2), bad]
        origins = {turn(1).id: Origin("claude", "/logs/a.jsonl", 0),
                   turn(2).id: Origin("claude", "/logs/a.jsonl", 512),
                   bad.id: Origin("claude", "/logs/a.jsonl", 4096)}
        sink = FaultySink(store, poison=frozenset({bad.id}), name="none")
        deliverer(sink, dead_letters).deliver(Batch(records=records), origins)
        [entry] = dead_entries(dead_letters)
        assert entry["file"] == "/logs/a.jsonl" and entry["offset"] == 4096
        assert entry["record_id"] == bad.id and entry["kind"] == "content"
        assert entry["source"] == "claude" and entry["session_id"] == "sess-1"
        assert entry["reason"] == "1 record(s) refused"
        assert isinstance(entry["at"], float)
        raw = dead_letters.path.read_bytes()
        assert b"launch code" not in raw and b"friday" not in raw
        assert dead_letters.count == 1

    def test_file_lives_in_home(self, store: FileAdapter) -> None:
        """The dead-letter file is RELAYBURN_HOME/deadletter.jsonl."""
        assert store.layout.deadletter == Path(load_settings().home) / "deadletter.jsonl"

    def test_file_is_private_and_appended(self, store: FileAdapter,
                                          dead_letters: DeadLetters) -> None:
        """The dead-letter file is created 0600 and later entries are appended."""
        dead_letters.add({"reason": "too_long", "file": "/x", "offset": 1, "length": 2})
        dead_letters.add({"reason": "too_long", "file": "/x", "offset": 3, "length": 4})
        assert dead_letters.path.stat().st_mode & 0o777 == 0o600
        assert [e["offset"] for e in dead_entries(dead_letters)] == [1, 3]


class TestMisconfigured:
    """SinkMisconfigured is not retried here: the caller holds cursors and retries slowly."""

    def test_misconfigured_propagates_at_once(self, store: FileAdapter,
                                              dead_letters: DeadLetters) -> None:
        """The error reaches the caller after one attempt; nothing stored or dead-lettered."""
        waits: list[float] = []
        sink = FaultySink(store, misconfigured=True)
        records: list[Record] = [turn(1), turn(2)]
        with pytest.raises(SinkMisconfigured, match="401"):
            deliverer(sink, dead_letters, waits).deliver(Batch(records=records),
                                                         origins_for(records))
        assert len(sink.calls) == 1 and waits == []
        assert stored_ids(store) == set() and dead_entries(dead_letters) == []

    def test_misconfigured_after_transient_errors_propagates(
        self, store: FileAdapter, dead_letters: DeadLetters
    ) -> None:
        """A credentials error that follows transient failures still ends the retries."""
        sink = FaultySink(store, unavailable=2, misconfigured=True)
        records: list[Record] = [turn(1)]
        with pytest.raises(SinkMisconfigured):
            deliverer(sink, dead_letters).deliver(Batch(records=records), origins_for(records))
        assert len(sink.calls) == 3

    def test_empty_batch_never_calls_the_sink(self, store: FileAdapter,
                                              dead_letters: DeadLetters) -> None:
        """Delivering nothing does not touch the sink."""
        sink = FaultySink(store, misconfigured=True)
        assert deliverer(sink, dead_letters).deliver(Batch(), {}).inserted == 0
        assert sink.calls == []


def test_a_delivery_that_succeeds_does_not_load_the_retry_machinery(tmp_path: Path) -> None:
    """tenacity and the asyncio it imports cost a short ``ingest`` ~25 ms of start-up:
    they are loaded by the first failed write, not by every delivery."""
    script = (
        "import sys\n"
        "from relayburnd.config import load_settings\n"
        "from relayburnd.delivery import DeadLetters, Deliverer\n"
        "from relayburnd.records import Batch, Turn, make_id, seal\n"
        "from relayburnd.storage.file import FileAdapter\n"
        "store = FileAdapter(load_settings())\n"
        "rec = Turn(id=make_id('req', 1), source='claude', session_id='s', ts=1, "
        "output_tokens=1)\n"
        "seal(rec)\n"
        "d = Deliverer(store, DeadLetters(store.layout.deadletter))\n"
        "assert d.deliver(Batch(records=[rec]), {}).inserted == 1\n"
        "print('tenacity' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBURN_")}
    env["RELAYBURN_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
