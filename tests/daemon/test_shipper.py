"""The shipper thread in process, against a real file store: after a burst of records
and a quiet spell it lets the store drop its backlog caches, once per burst."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from relayburnd import shipper as shipper_mod
from relayburnd.config import load_settings
from relayburnd.delivery import DeadLetters, Deliverer
from relayburnd.pipeline import Unit
from relayburnd.records import Batch, Turn, make_id, seal
from relayburnd.shipper import Shipper
from relayburnd.storage.file import FileAdapter


def turn(n: int) -> Turn:
    rec = Turn(id=make_id("req", n), source="claude", session_id="s", ts=1_718_000_000_000 + n,
               output_tokens=n + 1)
    seal(rec)
    return rec


class CountingStore(FileAdapter):
    """The real file store, counting the releases it is asked for."""

    def __init__(self) -> None:
        super().__init__(load_settings())
        self.releases = 0

    def release_memory(self) -> bool:
        self.releases += 1
        return super().release_memory()


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Shipper, CountingStore]]:
    monkeypatch.setattr(shipper_mod, "RELEASE_AFTER", 3)
    monkeypatch.setattr(shipper_mod, "RELEASE_QUIET", 0.2)
    store = CountingStore()
    ship = Shipper(Deliverer(store, DeadLetters(store.layout.deadletter)), threading.Event())
    yield ship, store
    ship.close()
    store.close()


def deliver(ship: Shipper, *records: Turn) -> None:
    ship.submit(Unit(Batch(records=list(records)), {}, {}, {}))
    deadline = time.monotonic() + 10
    while not ship.take_done():
        assert time.monotonic() < deadline, "the unit was not delivered"
        time.sleep(0.01)


def wait_for(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_a_burst_then_quiet_releases_once(shipped: tuple[Shipper, CountingStore]) -> None:
    ship, store = shipped
    deliver(ship, turn(1), turn(2))
    time.sleep(0.5)
    assert store.releases == 0  # two records are no burst
    deliver(ship, turn(3), turn(4))
    assert wait_for(lambda: store.releases == 1)
    time.sleep(0.5)
    assert store.releases == 1  # not again until another burst
    # the backfill's index rows went in with the release, and writes go on from the index
    assert store.write(Batch(records=[turn(4), turn(5)])).as_dict()["turn"] == {
        "inserted": 1, "updated": 0, "unchanged": 1}


def test_a_steady_stream_is_never_interrupted(shipped: tuple[Shipper, CountingStore]) -> None:
    """Units arriving faster than the quiet spell hold the release off."""
    ship, store = shipped
    for n in range(0, 12, 2):
        deliver(ship, turn(n), turn(n + 1))
        time.sleep(0.05)
    assert store.releases == 0
    assert wait_for(lambda: store.releases == 1)
