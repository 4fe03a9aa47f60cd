"""Misbehaving peers on loopback: a server that never answers, and a proxy that can freeze."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator


class SilentServer:
    """Accepts TCP connections and never sends a byte (a hung database)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)  # held open, never read from or written to

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in [*self._conns, self.sock]:
            with contextlib.suppress(OSError):
                conn.close()


class FreezableProxy:
    """Forwards TCP to ``upstream`` until frozen; frozen, it holds every byte back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.frozen = threading.Event()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = [self.sock]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            server = socket.create_connection(self.upstream)
            self._socks += [client, server]
            for src, dst in ((client, server), (server, client)):
                t = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while not self._stop.is_set():
            if self.frozen.is_set():
                self._stop.wait(0.05)
                continue
            try:
                ready, _, _ = select.select([src], [], [], 0.05)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()
        for t in self._threads:
            t.join(2)


@contextlib.contextmanager
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def freezable_proxy(host: str = "127.0.0.1", port: int = 5432) -> Iterator[FreezableProxy]:
    proxy = FreezableProxy((host, port))
    try:
        yield proxy
    finally:
        proxy.close()
