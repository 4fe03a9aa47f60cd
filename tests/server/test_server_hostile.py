"""Hostile and malformed requests get the documented 4xx, never a 500, and store nothing.

One server (SQLite-backed, small limits so the cases are cheap: 256 KiB as
sent, 1 MiB decompressed, a 1 s body deadline) takes every case; after each
one the store must still be empty and the server must never have answered 500.
"""

from __future__ import annotations

import gzip
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
import zstandard
from server_support import TOKENS, ServerProcess, client_settings, sqlite_env

from relayburnd.records import Turn, encode, make_id, seal
from relayburnd.storage import open_adapter

GOOD_ID = make_id("hostile-good")
MAX_BODY = 256 * 1024
MAX_DECOMPRESSED = 1024 * 1024


def turn_json(**changes: object) -> dict[str, object]:
    rec = msgspec.json.decode(encode(seal(Turn(id=GOOD_ID, source="claude", session_id="s-1",
                                                 ts=1_700_000_000_000, output_tokens=3))))
    assert isinstance(rec, dict)
    rec.update(changes)
    return {k: v for k, v in rec.items() if v is not ...}


def body(*records: object) -> bytes:
    return msgspec.json.encode({"records": list(records)})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hostile")
    env = sqlite_env(root, RELAYBURN_SERVER_MAX_BODY=str(MAX_BODY),
                     RELAYBURN_SERVER_MAX_DECOMPRESSED=str(MAX_DECOMPRESSED),
                     RELAYBURN_SERVER_REQUEST_TIMEOUT="1")
    proc = ServerProcess(env, root / "server.log")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def api(server: ServerProcess, tmp_path: Path) -> Iterator[httpx.Client]:
    """A client without credentials; after the test the store must be empty and 500-free."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client
    adapter = open_adapter(client_settings(server.url, tmp_path / "check"))
    try:
        assert list(adapter.turns()) == [] and list(adapter.user_turns()) == []
        assert list(adapter.relationships()) == [] and adapter.content("s-1") == []
    finally:
        adapter.close()
    assert "Traceback" not in server.log()
    assert not [s for s in server.samples("relayburnd_server_requests_total")
                if s.labels["status"] == "500"]


def auth(name: str = "ops") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


JSON = {"Content-Type": "application/json"}
Case = tuple[str, Callable[[httpx.Client], httpx.Response], int, str]


def _post(content: bytes, headers: dict[str, str]) -> Callable[[httpx.Client], httpx.Response]:
    return lambda c: c.post("/v1/batches", content=content, headers=headers)


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * 65536
        sent += 65536


def _bomb(mib: int) -> bytes:
    """A valid batch padded with ``mib`` MiB of spaces, gzip'd into one small member."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [deflate.compress(body(turn_json())[:-2])]
    block = b" " * (1 << 20)
    parts += [deflate.compress(block) for _ in range(mib)]
    parts.append(deflate.compress(b"]}") + deflate.flush())
    return b"".join(parts)


BOMB = _bomb(64)  # 64 MiB in about 64 KiB
# The same inflated size as 64 concatenated gzip members (a valid gzip stream too).
MEMBERS = b"".join([gzip.compress(b" " * (1 << 20), 9)] * 64)


def _zstd_bomb(mib: int, *, stated: bool) -> bytes:
    """The same padded batch as one zstd frame (a few KiB), with or without its size."""
    head, tail = body(turn_json())[:-2], b"]}"
    size = len(head) + (mib << 20) + len(tail)
    frame = zstandard.ZstdCompressor(level=3).compressobj(size=size if stated else -1)
    block = b" " * (1 << 20)
    parts = [frame.compress(head), *(frame.compress(block) for _ in range(mib)),
             frame.compress(tail), frame.flush()]
    return b"".join(parts)


def _zstd_wide_window(data: bytes) -> bytes:
    """A frame asking for a 16 MiB window (RFC 9659 lets a decoder refuse over 8 MiB)."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=24,
                                                            write_content_size=False)
    frame = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return frame.compress(data) + frame.flush()


ZSTD_BOMB = _zstd_bomb(64, stated=True)
ZSTD_STREAM_BOMB = _zstd_bomb(64, stated=False)
ZSTD_FRAMES = zstandard.ZstdCompressor(level=3).compress(b" " * (1 << 20)) * 64

CASES: list[Case] = [
    ("no token", _post(body(turn_json()), JSON), 401, "unauthorized"),
    ("unknown token", _post(body(turn_json()), {**JSON, "Authorization": "Bearer " + "x" * 30}),
     401, "unauthorized"),
    ("basic auth", _post(body(turn_json()), {**JSON, "Authorization": "Basic b3BzOm9wcw=="}),
     401, "unauthorized"),
    ("token of another case", _post(body(turn_json()), {
        **JSON, "Authorization": f"Bearer {TOKENS['ops'].upper()}"}), 401, "unauthorized"),
    ("read-only token writes", _post(body(turn_json()), {**JSON, **auth("reader")}),
     403, "forbidden"),
    ("write-only token reads", lambda c: c.get("/v1/turns", headers=auth("writer")),
     403, "forbidden"),
    ("write-only token reads content",
     lambda c: c.get("/v1/sessions/s-1/content", headers=auth("writer")), 403, "forbidden"),
    ("text/plain", _post(body(turn_json()), {**auth(), "Content-Type": "text/plain"}),
     415, "unsupported_media_type"),
    ("no content type", _post(body(turn_json()), auth()), 415, "unsupported_media_type"),
    ("brotli", _post(body(turn_json()), {**JSON, **auth(), "Content-Encoding": "br"}),
     415, "unsupported_encoding"),
    ("declared too large", _post(b" " * (MAX_BODY + 1), {**JSON, **auth()}),
     413, "body_too_large"),
    ("chunked too large",
     lambda c: c.post("/v1/batches", content=_chunks(MAX_BODY * 2), headers={**JSON, **auth()}),
     413, "body_too_large"),
    ("gzip bomb", _post(BOMB, {**JSON, **auth(), "Content-Encoding": "gzip"}),
     413, "decompressed_too_large"),
    ("gzip bomb in many members", _post(MEMBERS, {**JSON, **auth(), "Content-Encoding": "gzip"}),
     413, "decompressed_too_large"),
    ("whitespace only", _post(b" " * 1000, {**JSON, **auth()}), 400, "malformed_json"),
    ("not gzip", _post(b"this is not gzip", {**JSON, **auth(), "Content-Encoding": "gzip"}),
     400, "invalid_gzip"),
    ("truncated gzip", _post(gzip.compress(body(turn_json()))[:-12],
                             {**JSON, **auth(), "Content-Encoding": "gzip"}),
     400, "invalid_gzip"),
    ("zstd bomb", _post(ZSTD_BOMB, {**JSON, **auth(), "Content-Encoding": "zstd"}),
     413, "decompressed_too_large"),
    ("zstd bomb without its size",
     _post(ZSTD_STREAM_BOMB, {**JSON, **auth(), "Content-Encoding": "zstd"}),
     413, "decompressed_too_large"),
    ("zstd bomb in many frames", _post(ZSTD_FRAMES, {**JSON, **auth(), "Content-Encoding": "zstd"}),
     413, "decompressed_too_large"),
    ("not zstd", _post(b"this is not zstd", {**JSON, **auth(), "Content-Encoding": "zstd"}),
     400, "invalid_zstd"),
    ("empty zstd", _post(b"", {**JSON, **auth(), "Content-Encoding": "zstd"}),
     400, "invalid_zstd"),
    ("truncated zstd", _post(zstandard.ZstdCompressor().compress(body(turn_json()))[:-12],
                             {**JSON, **auth(), "Content-Encoding": "zstd"}),
     400, "invalid_zstd"),
    ("truncated zstd without its size", _post(_zstd_wide_window(body(turn_json()))[:-3],
                                              {**JSON, **auth(), "Content-Encoding": "zstd"}),
     400, "invalid_zstd"),
    ("zstd with bytes after the frame",
     _post(zstandard.ZstdCompressor().compress(body(turn_json())) + b"\x00junk",
           {**JSON, **auth(), "Content-Encoding": "zstd"}), 400, "invalid_zstd"),
    ("zstd window over 8 MiB", _post(_zstd_wide_window(body(turn_json())),
                                     {**JSON, **auth(), "Content-Encoding": "zstd"}),
     400, "invalid_zstd"),
    ("gzip inside zstd",
     _post(zstandard.ZstdCompressor().compress(gzip.compress(body(turn_json()))),
           {**JSON, **auth(), "Content-Encoding": "zstd"}), 400, "malformed_json"),
    ("two encodings",
     _post(body(turn_json()), {**JSON, **auth(), "Content-Encoding": "zstd, gzip"}),
     415, "unsupported_encoding"),
    ("malformed json", _post(b'{"records": [', {**JSON, **auth()}), 400, "malformed_json"),
    ("not utf-8", _post(body(turn_json(session_id="s-1")).replace(b"s-1", b"s-\xff"),
                        {**JSON, **auth()}), 400, "malformed_json"),
    ("record a string", _post(body("turn"), {**JSON, **auth()}), 422, "invalid_records"),
    ("top level array", _post(b"[]", {**JSON, **auth()}), 422, "invalid_batch"),
    ("records not a list", _post(b'{"records": 5}', {**JSON, **auth()}), 422, "invalid_batch"),
    ("no records", _post(b"{}", {**JSON, **auth()}), 422, "invalid_batch"),
    ("string for an int", _post(body(turn_json(ts="1700000000000")), {**JSON, **auth()}),
     422, "invalid_records"),
    ("float for an int", _post(body(turn_json(output_tokens=1.5)), {**JSON, **auth()}),
     422, "invalid_records"),
    ("object for a list", _post(body(turn_json(tool_calls={"a": 1})), {**JSON, **auth()}),
     422, "invalid_records"),
    ("unknown kind", _post(body(turn_json(kind="invoice")), {**JSON, **auth()}),
     422, "invalid_records"),
    ("no kind", _post(body(turn_json(kind=...)), {**JSON, **auth()}), 422, "invalid_records"),
    ("missing field", _post(body(turn_json(ts=...)), {**JSON, **auth()}),
     422, "invalid_records"),
    ("record not an object", _post(body("turn"), {**JSON, **auth()}), 422, "invalid_records"),
    ("id not hex", _post(body(turn_json(id="Z" * 32)), {**JSON, **auth()}),
     422, "invalid_records"),
    ("id upper case", _post(body(turn_json(id=GOOD_ID.upper())), {**JSON, **auth()}),
     422, "invalid_records"),
    ("id too short", _post(body(turn_json(id=GOOD_ID[:-1])), {**JSON, **auth()}),
     422, "invalid_records"),
    ("path traversal session", _post(body(turn_json(session_id="../../etc/passwd")),
                                     {**JSON, **auth()}), 422, "invalid_records"),
    ("newline in session", _post(body(turn_json(session_id="s\n1")), {**JSON, **auth()}),
     422, "invalid_records"),
    ("empty session", _post(body(turn_json(session_id="")), {**JSON, **auth()}),
     422, "invalid_records"),
    ("NUL outside content", _post(body(turn_json(model="opus\x00")), {**JSON, **auth()}),
     422, "invalid_records"),
    ("NUL in a tool call", _post(body(turn_json(tool_calls=[{"id": "t\x00", "name": "Bash"}])),
                                 {**JSON, **auth()}), 422, "invalid_records"),
    ("integer beyond 64 bits", _post(body(turn_json(output_tokens=2**70)), {**JSON, **auth()}),
     422, "invalid_records"),
    ("integer just beyond 64 bits", _post(body(turn_json(ts=2**63)), {**JSON, **auth()}),
     422, "invalid_records"),
    ("negative integer beyond 64 bits",
     _post(body(turn_json(tool_calls=[{"id": "t", "name": "n", "args_bytes": -(2**63) - 1}])),
           {**JSON, **auth()}), 422, "invalid_records"),
    ("traversal in content path", lambda c: c.get("/v1/sessions/a..b/content", headers=auth()),
     400, "unsafe_session_id"),
    ("encoded dots in content path",
     lambda c: c.get("/v1/sessions/%2e%2e/content", headers=auth()), 400, "unsafe_session_id"),
    ("encoded slash in content path",
     lambda c: c.get("/v1/sessions/..%2F..%2Fetc/content", headers=auth()), 404, "not_found"),
    ("since_ms not a number", lambda c: c.get("/v1/turns?since_ms=yesterday", headers=auth()),
     400, "invalid_parameter"),
    ("since_ms beyond 64 bits", lambda c: c.get(f"/v1/turns?since_ms={2**64}", headers=auth()),
     400, "invalid_parameter"),
    ("repeated parameter", lambda c: c.get("/v1/turns?session=a&session=b", headers=auth()),
     400, "invalid_parameter"),
    ("unknown parameter", lambda c: c.get("/v1/turns?limit=5", headers=auth()),
     400, "invalid_parameter"),
    ("NUL in a filter", lambda c: c.get("/v1/turns?project=%00", headers=auth()),
     400, "invalid_parameter"),
    ("bad source", lambda c: c.get("/v1/compactions?source=../x", headers=auth()),
     400, "invalid_parameter"),
    ("unknown dimension", lambda c: c.get("/v1/summary?by=day,colour", headers=auth()),
     400, "invalid_parameter"),
    ("repeated dimension", lambda c: c.get("/v1/summary?by=day,day", headers=auth()),
     400, "invalid_parameter"),
    ("unknown zone", lambda c: c.get("/v1/summary?tz=Mars/Olympus", headers=auth()),
     400, "invalid_parameter"),
    ("zone as a path", lambda c: c.get("/v1/summary?tz=../../etc/passwd", headers=auth()),
     400, "invalid_parameter"),
    ("GET on batches", lambda c: c.get("/v1/batches", headers=auth()),
     405, "method_not_allowed"),
    ("unknown endpoint", lambda c: c.get("/v2/turns", headers=auth()), 404, "not_found"),
]


class TestHostileRequests:
    @pytest.mark.parametrize(("name", "send", "status", "code"), CASES,
                             ids=[c[0] for c in CASES])
    def test_refused_with_the_documented_error(
        self, api: httpx.Client, name: str, send: Callable[[httpx.Client], httpx.Response],
        status: int, code: str
    ) -> None:
        """Each case gets its status and stable error code in a JSON body."""
        resp = send(api)
        assert resp.status_code == status, resp.text
        assert resp.headers["content-type"].startswith("application/json")
        doc = resp.json()
        assert doc["error"] == code and doc["message"]
        if status == 401:
            assert resp.headers["www-authenticate"].startswith("Bearer")

    def test_refused_records_are_named_by_index_and_the_good_one_is_not_stored(
        self, api: httpx.Client
    ) -> None:
        """A batch with one bad record is refused whole; the answer names only that record."""
        good = turn_json()
        bad = turn_json(id=make_id("bad"), session_id="../x")
        worse = turn_json(id=make_id("worse"), ts="soon")
        resp = api.post("/v1/batches", content=body(good, bad, worse), headers={**JSON, **auth()})
        assert resp.status_code == 422
        named = {(p["index"], p.get("id")) for p in resp.json()["records"]}
        assert named == {(1, make_id("bad")), (2, make_id("worse"))}

    def test_a_gzip_bomb_does_not_inflate_in_memory(
        self, api: httpx.Client, server: ServerProcess
    ) -> None:
        """64 MiB compressed into 64 KiB costs the server at most about its 1 MiB limit."""
        rss = _rss_kib(server.proc.pid)
        for _ in range(3):
            resp = api.post("/v1/batches", content=BOMB,
                            headers={**JSON, **auth(), "Content-Encoding": "gzip"})
            assert resp.status_code == 413
        assert _rss_kib(server.proc.pid) - rss < 16 * 1024

    @pytest.mark.parametrize("bomb", [ZSTD_BOMB, ZSTD_STREAM_BOMB, ZSTD_FRAMES],
                             ids=["stated size", "streamed", "frames"])
    def test_a_zstd_bomb_does_not_inflate_in_memory(
        self, api: httpx.Client, server: ServerProcess, bomb: bytes
    ) -> None:
        """64 MiB in a few KiB of zstd costs the server at most about its limit, whatever the
        framing."""
        rss = _rss_kib(server.proc.pid)
        for _ in range(3):
            resp = api.post("/v1/batches", content=bomb,
                            headers={**JSON, **auth(), "Content-Encoding": "zstd"})
            assert resp.status_code == 413
            assert resp.json()["error"] == "decompressed_too_large"
        assert _rss_kib(server.proc.pid) - rss < 16 * 1024

    def test_a_body_that_never_arrives_times_out(self, server: ServerProcess,
                                                 api: httpx.Client) -> None:
        """A client that stops sending gets 408 after the request timeout, not a hung slot."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 1000\r\nAuthorization: Bearer "
                         + TOKENS["ops"].encode() + b"\r\n\r\n{\"records\":")
            started = time.monotonic()
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert time.monotonic() - started < 5
        assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer

    def test_a_huge_declared_body_is_refused_before_it_is_sent(
        self, server: ServerProcess, api: httpx.Client
    ) -> None:
        """Content-Length far over the limit gets 413 at once, without waiting for the body."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 100000000\r\nAuthorization: "
                         b"Bearer " + TOKENS["ops"].encode() + b"\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 413") and b'"body_too_large"' in answer

    def test_dot_segments_sent_raw_are_refused(self, server: ServerProcess,
                                              api: httpx.Client) -> None:
        """A raw ``..`` path segment (clients normally resolve it) is refused, not followed."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /v1/sessions/../content HTTP/1.1\r\nHost: x\r\nAuthorization: "
                         b"Bearer " + TOKENS["ops"].encode() + b"\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400") and b'"unsafe_session_id"' in answer

    def test_failures_are_counted(self, api: httpx.Client, server: ServerProcess) -> None:
        """Auth failures are counted by reason; refused batches by error code."""
        before = server.metric("relayburnd_server_auth_failures_total", reason="invalid")
        api.post("/v1/batches", content=body(turn_json()),
                 headers={**JSON, "Authorization": "Bearer " + "y" * 20})
        assert server.metric("relayburnd_server_auth_failures_total",
                             reason="invalid") == before + 1
        assert server.metric("relayburnd_server_batches_total", token="ops",
                             result="invalid_records") > 0

    def test_tokens_never_reach_the_log(self, api: httpx.Client, server: ServerProcess) -> None:
        """Neither a configured token nor a presented wrong one is written to the log."""
        api.get("/v1/turns", headers={"Authorization": "Bearer wrong-token-4242424242"})
        log = server.log()
        assert "wrong-token-4242424242" not in log
        assert all(token not in log for token in TOKENS.values())


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
