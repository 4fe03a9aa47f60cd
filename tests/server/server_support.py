"""A real ``relayburnd serve`` process on loopback, and a scripted TCP proxy in front of it.

``ServerProcess`` runs the command exactly as an operator would (a subprocess
with environment settings) and waits for ``/healthz``. ``FaultProxy`` forwards
HTTP/1.1 requests to it one at a time and can, per request, answer with a
scripted status instead (429 with Retry-After, 503, 401), or forward the
request, let the server commit and answer, and then reset the client's
connection before a byte of the answer reaches it (the ambiguous commit, F05).
It can also refuse request bodies in some Content-Encodings with the 415 a
server (or proxy) that does not know them answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.samples import Sample

from relayburnd.config import Settings, load_settings
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]

# name -> token; "writer" may only send batches, "reader" may only query.
TOKENS = {
    "ops": "ops-token-0123456789abcdef",
    "writer": "writer-token-0123456789abcdef",
    "reader": "reader-token-0123456789abcdef",
}
TOKENS_SETTING = (f"ops:{TOKENS['ops']},writer:{TOKENS['writer']}:write,"
                  f"reader:{TOKENS['reader']}:read")




def base_env(**extra: str) -> dict[str, str]:
    """The test process's environment without relayburnd settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBURN_")}
    env.update({"RELAYBURN_LOG_FORMAT": "json", "RELAYBURN_LOG_LEVEL": "info", **extra})
    return env


def sqlite_env(root: Path, **extra: str) -> dict[str, str]:
    return base_env(**{"RELAYBURN_HOME": str(root / "server-home"), "RELAYBURN_STORAGE": "sqlite",
                       "RELAYBURN_SQLITE_PATH": str(root / "server.sqlite"),
                       "RELAYBURN_SERVER_TOKENS": TOKENS_SETTING, **extra})


def postgres_env(root: Path, dsn: str, **extra: str) -> dict[str, str]:
    return base_env(**{"RELAYBURN_HOME": str(root / "server-home"),
                       "RELAYBURN_STORAGE": "postgres", "RELAYBURN_PG_DSN": dsn,
                       "RELAYBURN_SERVER_TOKENS": TOKENS_SETTING, **extra})


def client_settings(url: str, home: Path, token: str | None = TOKENS["ops"]) -> Settings:
    env = {"RELAYBURN_STORAGE": "http", "RELAYBURN_HOME": str(home), "RELAYBURN_HTTP_URL": url}
    if token is not None:
        env["RELAYBURN_HTTP_TOKEN"] = token
    return load_settings(env=env)


class ServerProcess:
    """``python -m relayburnd serve`` on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relayburnd", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO),
        )
        try:
            self._wait_ready(30.0)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not up after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def headers(self, name: str = "ops") -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[name]}"}

    def samples(self, name: str) -> list[Sample]:
        """The samples called ``name`` on the server's /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return [sample for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.name == name]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` with these labels (0 when absent)."""
        return sum(float(s.value) for s in self.samples(name)
                   if all(s.labels.get(k) == v for k, v in labels.items()))

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def running(env: dict[str, str], log_path: Path, *args: str) -> Iterator[ServerProcess]:
    server = ServerProcess(env, log_path, *args)
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ fault proxy


@dataclass
class Seen:
    """One request as the proxy saw it."""

    at: float
    method: str
    path: str
    action: str
    encoding: str = ""  # the request's Content-Encoding


@dataclass
class Reply:
    """A scripted answer instead of forwarding."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"error":"store_unavailable","message":"scripted"}'


FORWARD = "forward"
RESET_AFTER_COMMIT = "reset-after-commit"  # forward, let the server answer, reset the client
# What relayburnd serve answered to a zstd body before it knew zstd.
OLD_SERVER_415 = Reply(415, body=b'{"error":"unsupported_encoding","message":"Content-Encoding '
                                 b"'zstd' is not supported; send gzip or identity\"}")


class FaultProxy:
    """HTTP/1.1 proxy on loopback with a per-request script (first in, first used)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.script: list[str | Reply] = []
        self.seen: list[Seen] = []
        self.refused_encodings: dict[str, Reply] = {}  # Content-Encoding -> the answer to it
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0), self._loop).result(5)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def then(self, *actions: str | Reply) -> FaultProxy:
        with self._lock:
            self.script.extend(actions)
        return self

    def _next_action(self) -> str | Reply:
        with self._lock:
            return self.script.pop(0) if self.script else FORWARD

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                encoding = ""
                kept = [lines[0]]
                for line in lines[1:]:
                    if not line:
                        continue
                    name = line.split(":", 1)[0].strip().lower()
                    if name == "content-length":
                        length = int(line.split(":", 1)[1])
                    if name == "content-encoding":
                        encoding = line.split(":", 1)[1].strip().lower()
                    if name != "connection":
                        kept.append(line)
                body = await reader.readexactly(length) if length else b""
                action = self.refused_encodings.get(encoding) or self._next_action()
                with self._lock:
                    self.seen.append(Seen(time.monotonic(), method, path,
                                          action if isinstance(action, str)
                                          else f"reply {action.status}", encoding))
                if isinstance(action, Reply):
                    await self._reply(writer, action)
                    continue
                request = ("\r\n".join([*kept, "Connection: close"]) + "\r\n\r\n").encode(
                    "latin-1") + body
                answer = await self._forward(request)
                if action == RESET_AFTER_COMMIT:
                    _reset(writer)
                    return
                writer.write(answer)
                await writer.drain()
                return  # the upstream answer said Connection: close
        except Exception:
            _reset(writer)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(self, request: bytes) -> bytes:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            up_writer.write(request)
            await up_writer.drain()
            return await up_reader.read()  # until the server closes: the whole answer
        finally:
            up_writer.close()

    async def _reply(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        headers = {"Content-Type": "application/json", **reply.headers,
                   "Content-Length": str(len(reply.body))}
        head = f"HTTP/1.1 {reply.status} Scripted\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1") + reply.body)
        await writer.drain()

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0): the client gets ECONNRESET, not an answer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
