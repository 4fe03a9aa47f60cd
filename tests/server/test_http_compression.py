"""Request bodies in zstd and gzip between the http adapter and a real server on PostgreSQL.

The adapter sends zstd unless ``RELAYBURN_HTTP_COMPRESSION=gzip``; a server or
proxy that refuses zstd with 415 (as relayburnd serve did before it knew zstd,
which ``FaultProxy`` answers in its place) gets the same request again in gzip,
and every later one too. The server takes either, in one frame or member or
several, with or without the frame's size, and stores the same records.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import httpx
import msgspec
import psycopg
import pytest
import zstandard
from server_support import OLD_SERVER_415, TOKENS, FaultProxy, Reply, ServerProcess
from storage_corpus import turn

from relayburnd.config import load_settings
from relayburnd.errors import SinkMisconfigured
from relayburnd.records import Batch, Record, encode
from relayburnd.storage.base import Filter
from relayburnd.storage.http import HttpAdapter
from relayburnd.storage.http_wire import BatchBody

pytestmark = pytest.mark.postgres


def turns(tag: int, n: int) -> list[Record]:
    rnd = random.Random(tag)
    return [turn(rnd, tag * 100_000 + i, session_id=f"s-zstd-{tag}") for i in range(n)]


def stored(dsn: str, session: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM turns WHERE session_id = %s",
                           [session]).fetchone()
    assert row is not None
    return int(row[0])


def adapter(url: str, home: Path, compression: str | None = None) -> HttpAdapter:
    env = {"RELAYBURN_STORAGE": "http", "RELAYBURN_HOME": str(home), "RELAYBURN_HTTP_URL": url,
           "RELAYBURN_HTTP_TOKEN": TOKENS["ops"]}
    if compression is not None:
        env["RELAYBURN_HTTP_COMPRESSION"] = compression
    return HttpAdapter(load_settings(env=env))


def write_batches(client: HttpAdapter, records: list[Record], size: int) -> int:
    inserted = 0
    for start in range(0, len(records), size):
        inserted += client.write(Batch(records[start:start + size])).inserted
    return inserted


class TestAdapter:
    def test_batches_travel_as_zstd_by_default(
        self, pg_server_process: tuple[ServerProcess, str], proxy: FaultProxy, tmp_path: Path
    ) -> None:
        """Every request is zstd; the server stores every record, and saw fewer bytes sent."""
        server, dsn = pg_server_process
        sent = server.metric("relayburnd_server_batch_bytes_total", form="sent")
        inflated = server.metric("relayburnd_server_batch_bytes_total", form="decompressed")
        client = adapter(proxy.url, tmp_path)
        try:
            assert write_batches(client, turns(1, 300), 100) == 300
        finally:
            client.close()
        assert [s.encoding for s in proxy.seen] == ["zstd"] * 3
        assert stored(dsn, "s-zstd-1") == 300
        sent = server.metric("relayburnd_server_batch_bytes_total", form="sent") - sent
        inflated = server.metric("relayburnd_server_batch_bytes_total",
                                 form="decompressed") - inflated
        assert 0 < sent < inflated / 3

    def test_gzip_when_the_setting_says_so(
        self, pg_server_process: tuple[ServerProcess, str], proxy: FaultProxy, tmp_path: Path
    ) -> None:
        """RELAYBURN_HTTP_COMPRESSION=gzip sends gzip from the first request on."""
        _, dsn = pg_server_process
        client = adapter(proxy.url, tmp_path, "gzip")
        try:
            assert write_batches(client, turns(2, 200), 100) == 200
        finally:
            client.close()
        assert [s.encoding for s in proxy.seen] == ["gzip", "gzip"]
        assert stored(dsn, "s-zstd-2") == 200

    def test_a_server_without_zstd_gets_gzip_from_then_on(
        self, pg_server_process: tuple[ServerProcess, str], proxy: FaultProxy, tmp_path: Path
    ) -> None:
        """One 415 to zstd: that request is sent again in gzip, and so is every later one."""
        _, dsn = pg_server_process
        proxy.refused_encodings["zstd"] = OLD_SERVER_415
        client = adapter(proxy.url, tmp_path)
        try:
            assert write_batches(client, turns(3, 300), 100) == 300
            assert client.encoding == "gzip"
        finally:
            client.close()
        assert [(s.encoding, s.action) for s in proxy.seen] == [
            ("zstd", "reply 415"), ("gzip", "forward"), ("gzip", "forward"), ("gzip", "forward")]
        assert stored(dsn, "s-zstd-3") == 300

    def test_415_to_gzip_too_is_a_setting_to_fix(
        self, pg_server_process: tuple[ServerProcess, str], proxy: FaultProxy, tmp_path: Path
    ) -> None:
        """A server that refuses gzip as well halts delivery after one fallback, no loop."""
        _, dsn = pg_server_process
        proxy.refused_encodings["zstd"] = OLD_SERVER_415
        proxy.refused_encodings["gzip"] = Reply(
            415, body=b'{"error":"unsupported_encoding","message":"no compression here"}')
        client = adapter(proxy.url, tmp_path)
        try:
            with pytest.raises(SinkMisconfigured, match="415 unsupported_encoding"):
                write_batches(client, turns(4, 10), 10)
        finally:
            client.close()
        assert [s.encoding for s in proxy.seen] == ["zstd", "gzip"]
        assert stored(dsn, "s-zstd-4") == 0


def post(server: ServerProcess, body: bytes, encoding: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/batches", content=body, timeout=30, headers={
        "Authorization": f"Bearer {TOKENS['ops']}", "Content-Type": "application/json",
        "Content-Encoding": encoding})


class TestServer:
    def test_every_framing_stores_the_same_records(
        self, pg_server_process: tuple[ServerProcess, str]
    ) -> None:
        """One frame, several frames, frames without their size, gzip: all store the batch."""
        server, dsn = pg_server_process
        records = turns(6, 400)
        body = msgspec.json.encode(BatchBody(records=records))
        half = body.index(b"},{", len(body) // 2) + 1
        cctx = zstandard.ZstdCompressor(level=3)
        streamed = cctx.compressobj()
        framings = {
            "zstd": cctx.compress(body),
            "zstd, two frames": cctx.compress(body[:half]) + cctx.compress(body[half:]),
            "zstd, size not stated": streamed.compress(body) + streamed.flush(),
            "gzip": gzip.compress(body),
        }
        for name, payload in framings.items():
            encoding = name.split(",")[0]
            resp = post(server, payload, encoding)
            assert resp.status_code == 200, (name, resp.text)
            counts = resp.json()["counts"]["turn"]
            assert counts["inserted"] + counts["unchanged"] == 400, name
        assert stored(dsn, "s-zstd-6") == 400

    def test_a_record_reads_back_as_sent(
        self, pg_server_process: tuple[ServerProcess, str], tmp_path: Path
    ) -> None:
        """What went over the wire in zstd reads back identical through the API."""
        server, _ = pg_server_process
        records = turns(7, 50)
        client = adapter(server.url, tmp_path)
        try:
            write_batches(client, records, 50)
            back = list(client.turns(Filter(session_id="s-zstd-7")))
        finally:
            client.close()
        assert sorted(map(encode, back)) == sorted(map(encode, records))
