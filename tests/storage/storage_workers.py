"""Functions run in separate OS processes by the PostgreSQL tests (spawned, so importable)."""

from __future__ import annotations

import random
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from relayburnd.config import load_settings
from relayburnd.errors import SinkUnavailable
from relayburnd.records import Batch, Record, decode
from relayburnd.storage.migrations import migrate
from relayburnd.storage.postgres import PostgresAdapter


def _settings(dsn: str, home: str) -> Any:
    return load_settings(env={"RELAYBURN_STORAGE": "postgres", "RELAYBURN_PG_DSN": dsn,
                              "RELAYBURN_HOME": home})


def migrate_worker(dsn: str, home: str, barrier: Barrier, out: Any) -> None:
    """Wait for the others, then migrate; report the names applied (or the error)."""
    settings = _settings(dsn, home)
    barrier.wait(timeout=60)
    try:
        out.put(("ok", migrate(settings)))
    except Exception as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def write_worker(dsn: str, home: str, lines: list[bytes], seed: int, barrier: Barrier,
                 out: Any) -> None:
    """Write the records in a shuffled order and random batches, some twice.

    Reports how many writes had to be retried: writers that lock rows in one
    global order never deadlock, so on a healthy server that is zero.
    """
    rnd = random.Random(seed)
    records: list[Record] = [decode(line) for line in lines]
    rnd.shuffle(records)
    records += rnd.sample(records, len(records) // 4)  # re-deliveries
    adapter = PostgresAdapter(_settings(dsn, str(Path(home) / f"w{seed}")))
    barrier.wait(timeout=60)
    retries = 0
    try:
        i = 0
        while i < len(records):
            size = rnd.randint(1, 400)
            batch = Batch(records[i : i + size])
            for attempt in range(20):  # as the daemon does: transient failures are retried
                try:
                    adapter.write(batch)
                    break
                except SinkUnavailable:
                    retries += 1
                    time.sleep(rnd.random() * 0.05 * 2 ** min(attempt, 5))
            else:
                raise RuntimeError("a batch kept failing")
            i += size
        out.put(("ok", retries))
    except Exception as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        adapter.close()
