"""Faults between a shipping host and the server (reliability.md F05, F09, F11), and a
server whose database is down.

The PostgreSQL-backed server is real; faults come from ``FaultProxy`` in front of
it, which either answers a request with a scripted status or forwards it and then
resets the client before the answer reaches it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from server_support import (
    RESET_AFTER_COMMIT,
    TOKENS,
    FaultProxy,
    Reply,
    ServerProcess,
    client_settings,
    free_port,
    postgres_env,
)
from storage_corpus import turn
from storage_support import PgServer

from relayburnd.delivery import DeadLetters, Deliverer
from relayburnd.errors import SinkMisconfigured, SinkUnavailable
from relayburnd.records import Batch, Record, Turn
from relayburnd.storage.http import HttpAdapter

pytestmark = pytest.mark.postgres


def turns(tag: int, n: int) -> list[Record]:
    rnd = random.Random(tag)
    return [turn(rnd, tag * 100_000 + i, session_id=f"s-fault-{tag}") for i in range(n)]


def stored_ids(dsn: str, session: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id::text FROM turns WHERE session_id = %s",
                            [session]).fetchall()
    return [r[0].replace("-", "") for r in rows]


def deliverer(url: str, tmp_path: Path, token: str = TOKENS["ops"]) -> Deliverer:
    adapter = HttpAdapter(client_settings(url, tmp_path / "client", token))
    return Deliverer(adapter, DeadLetters(tmp_path / "deadletter.jsonl"),
                     backoff_start=0.05, backoff_cap=0.2)


class TestAmbiguousCommit:
    def test_lost_acknowledgement_is_redelivered_and_stored_once(
        self, pg_server_process: tuple[ServerProcess, str], proxy: FaultProxy, tmp_path: Path
    ) -> None:
        """F05: the server commits, the answer is lost; the retry is absorbed, one copy stays."""
        server, dsn = pg_server_process
        recs = turns(5, 40)
        unchanged = server.metric("relayburnd_server_records_total", kind="turn",
                                  outcome="unchanged")
        proxy.then(RESET_AFTER_COMMIT)
        ship = deliverer(proxy.url, tmp_path)
        with pytest.raises(SinkUnavailable):
            ship.sink.write(Batch(recs))  # the commit happened, the client cannot know
        assert sorted(stored_ids(dsn, "s-fault-5")) == sorted(r.id for r in recs)
        proxy.then(RESET_AFTER_COMMIT)
        result = ship.deliver(Batch(recs), {})
        assert result.unchanged == 40 and result.inserted == 0
        assert ship.stats.retries == 1
        assert [s.action for s in proxy.seen] == [RESET_AFTER_COMMIT, RESET_AFTER_COMMIT,
                                                  "forward"]
        assert sorted(stored_ids(dsn, "s-fault-5")) == sorted(r.id for r in recs)
        assert server.metric("relayburnd_server_records_total", kind="turn",
                             outcome="unchanged") == unchanged + 80  # duplicates absorbed


class TestBackpressure:
    def test_429_with_retry_after_then_503s(
        self, pg_server_process: tuple[ServerProcess, str], proxy: FaultProxy, tmp_path: Path
    ) -> None:
        """F09: Retry-After is honoured, 503s are retried, nothing is lost or doubled."""
        _, dsn = pg_server_process
        recs = turns(9, 25)
        proxy.then(Reply(429, {"Retry-After": "2"}), Reply(503), Reply(502, body=b"<html>"))
        ship = deliverer(proxy.url, tmp_path)
        with pytest.raises(SinkUnavailable) as info:
            ship.sink.write(Batch(recs))
        assert info.value.retry_after == 2.0
        result = ship.deliver(Batch(recs), {})
        assert result.inserted == 25 and ship.stats.retries == 2
        assert [s.action for s in proxy.seen] == ["reply 429", "reply 503", "reply 502",
                                                  "forward"]
        assert sorted(stored_ids(dsn, "s-fault-9")) == sorted(r.id for r in recs)

    def test_retry_after_is_waited_for_by_delivery(
        self, pg_server_process: tuple[ServerProcess, str], proxy: FaultProxy, tmp_path: Path
    ) -> None:
        """The wait after a 429 with Retry-After: 2 is at least 2 s."""
        recs = turns(10, 3)
        proxy.then(Reply(429, {"Retry-After": "2"}))
        ship = deliverer(proxy.url, tmp_path)
        assert ship.deliver(Batch(recs), {}).inserted == 3
        first, second = proxy.seen
        assert second.at - first.at >= 2.0


class TestCredentials:
    def test_revoked_then_restored_token_loses_nothing(
        self, pg_server_process: tuple[ServerProcess, str], tmp_path: Path
    ) -> None:
        """F11: 401 halts delivery without dead-lettering; with a valid token it resumes."""
        server, dsn = pg_server_process
        recs = turns(11, 10)
        revoked = deliverer(server.url, tmp_path, token="revoked-token-00000000")
        with pytest.raises(SinkMisconfigured, match="RELAYBURN_HTTP_TOKEN"):
            revoked.deliver(Batch(recs), {})
        assert revoked.dead_letters.count == 0 and stored_ids(dsn, "s-fault-11") == []
        restored = deliverer(server.url, tmp_path)
        assert restored.deliver(Batch(recs), {}).inserted == 10
        assert len(stored_ids(dsn, "s-fault-11")) == 10


class TestListings:
    @pytest.mark.parametrize("tail", [b"", b'{"error":"store_unavailable","message":"x"}\n',
                                      b'{"end":true,"count":7}\n'])
    def test_an_unfinished_listing_is_an_error(
        self, proxy: FaultProxy, tmp_path: Path, tail: bytes
    ) -> None:
        """A listing without its closing line, with an error line or a wrong count, raises."""
        from relayburnd.records import encode

        line = encode(turns(12, 1)[0])
        proxy.then(Reply(200, {"Content-Type": "application/x-ndjson"}, line + b"\n" + tail))
        adapter = HttpAdapter(client_settings(proxy.url, tmp_path))
        got: list[Turn] = []
        with pytest.raises(SinkUnavailable):
            got.extend(adapter.turns())
        assert len(got) == 1
        adapter.close()


class TestDatabaseDown:
    def test_503_with_retry_after_while_the_database_is_unreachable(
        self, pg: PgServer, tmp_path: Path
    ) -> None:
        """No database: liveness holds, readiness fails, batches get 503 + Retry-After."""
        dsn = f"host=127.0.0.1 port={free_port()} user=postgres dbname=nothing connect_timeout=2"
        server = ServerProcess(postgres_env(tmp_path, dsn), tmp_path / "server.log")
        try:
            assert httpx.get(f"{server.url}/healthz").status_code == 200
            ready = httpx.get(f"{server.url}/readyz")
            assert ready.status_code == 503 and ready.json()["error"] == "store_unavailable"
            adapter = HttpAdapter(client_settings(server.url, tmp_path))
            with pytest.raises(SinkUnavailable) as info:
                adapter.write(Batch(turns(13, 2)))
            assert info.value.retry_after is not None and info.value.retry_after >= 1
            with pytest.raises(SinkUnavailable):
                adapter.healthcheck()
            with pytest.raises(SinkUnavailable):
                list(adapter.turns())
            adapter.close()
        finally:
            server.stop()

    def test_graceful_stop(self, pg_server_process: tuple[ServerProcess, str],
                           pg: PgServer, tmp_path: Path) -> None:
        """SIGTERM stops the server with exit code 0."""
        _, dsn = pg_server_process
        server = ServerProcess(postgres_env(tmp_path, dsn), tmp_path / "server.log")
        adapter = HttpAdapter(client_settings(server.url, tmp_path))
        assert adapter.write(Batch(turns(14, 3))).inserted == 3
        adapter.close()
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 10
