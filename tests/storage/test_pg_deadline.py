"""The call deadline of PostgreSQL connections: one watchdog thread for every connection.

A call that outlives its deadline has its socket shut down, whichever other
calls are pending and whatever their limits; calls that end in time start no
thread of their own.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from storage_corpus import turn
from storage_net import freezable_proxy
from storage_support import PgServer, pg_settings

from relayburnd.errors import SinkUnavailable
from relayburnd.records import Batch, Record
from relayburnd.storage.pg_conn import PgTimeouts
from relayburnd.storage.postgres import PostgresAdapter

pytestmark = pytest.mark.postgres


def adapter_for(dsn: str, tmp_path: Path, **timeouts: float) -> PostgresAdapter:
    return PostgresAdapter(pg_settings(dsn, tmp_path), timeouts=PgTimeouts(**timeouts))


def turns(seed: int, n: int) -> list[Record]:
    rnd = random.Random(seed)
    return [turn(rnd, seed * 10_000 + i) for i in range(n)]


def through(proxy_port: int, dsn: str) -> str:
    return make_conninfo(dsn, host="127.0.0.1", port=str(proxy_port))


class TestDeadlines:
    def test_a_short_deadline_fires_while_a_long_one_is_pending(
        self, pg_server: PgServer, tmp_path: Path
    ) -> None:
        """A call with a 2 s limit fails at 2 s although a call with a 40 s limit started
        first and is still waiting; the long call then completes once its server answers."""
        dsn = pg_server.new_database()
        params = conninfo_to_dict(dsn)
        host, port = str(params.get("host", "127.0.0.1")), int(params.get("port", 5432))
        with freezable_proxy(host, port) as slow, freezable_proxy(host, port) as hung:
            patient = adapter_for(through(slow.port, dsn), tmp_path / "a")
            hasty = adapter_for(through(hung.port, dsn), tmp_path / "b", statement=1, grace=1)
            patient.healthcheck()
            hasty.healthcheck()
            slow.frozen.set()
            outcome: list[Any] = []
            waiting = threading.Thread(
                target=lambda: outcome.append(patient.write(Batch(turns(1, 20)))))
            waiting.start()
            time.sleep(0.3)  # the patient call is registered first, with the later deadline
            hung.frozen.set()
            t0 = time.monotonic()
            with pytest.raises(SinkUnavailable, match="no answer within 2 s"):
                hasty.write(Batch(turns(2, 20)))
            assert 1.5 < time.monotonic() - t0 < 4
            assert waiting.is_alive()
            slow.frozen.clear()
            waiting.join(20)
            assert not waiting.is_alive() and outcome[0].inserted == 20
            hung.frozen.clear()
            assert hasty.write(Batch(turns(3, 5))).inserted == 5  # on a new connection
            patient.close()
            hasty.close()

    def test_calls_start_no_thread_each(self, pg_server: PgServer, tmp_path: Path) -> None:
        """Once the watchdog runs, a hundred calls start no thread at all."""
        adapter = adapter_for(pg_server.new_database(), tmp_path)
        adapter.healthcheck()  # connects, and starts the watchdog if nothing has yet
        started: list[str] = []

        def note(frame: FrameType, event: str, arg: object) -> None:
            started.append(threading.current_thread().name)
            sys.setprofile(None)  # once per new thread is enough

        threading.setprofile(note)
        try:
            for i in range(50):
                adapter.healthcheck()
                adapter.write(Batch(turns(100 + i, 2)))
        finally:
            threading.setprofile(None)
            adapter.close()
        assert started == []
        assert [t.name for t in threading.enumerate()].count("relayburnd-pg-deadline") == 1
