"""``/metrics``, ``/livez``, ``/readyz`` and ``/healthz`` on ``RELAYBURN_METRICS_ADDR``.

A stdlib ``ThreadingHTTPServer`` in a daemon thread: a scrape or a probe
never waits for the main loop, and the main loop never waits for a scrape.

* ``/livez``: 200 while the main loop went round recently (it never blocks on
  the sink, which is delivered from another thread), else 503.
* ``/readyz``: 200 once state is loaded. It never fails because the sink is
  down: a sidecar's readiness counts towards its Pod's (KEP-753), and an
  outage of a shared store must not take every agent Pod out of service.
* ``/healthz``: 200 when the sink accepted the last attempt and cursors.json
  could be written, else 503 with the reason; this is the probe for
  alerting, not for restarts.
* ``/prestop`` (GET or POST): marks that the pod began stopping, like
  ``relayburnd ctl prestop`` (``prestop.py``). A Kubernetes ``httpGet``
  preStop hook on the *agent* container can call it, so the sidecar learns
  when the grace period started even though its own SIGTERM comes later.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .logging import get_logger
from .metrics import Metrics

log = get_logger("health")

LIVE_MAX_AGE = 10.0


@dataclass
class Liveness:
    """What the endpoints report; written by the main loop, read by request threads."""

    ready: bool = False
    heartbeat: float = field(default_factory=time.monotonic)
    sink_ok: bool = True
    sink_error: str | None = None
    state_ok: bool = True  # cursors.json could be written

    def beat(self, now: float | None = None) -> None:
        self.heartbeat = time.monotonic() if now is None else now

    def heartbeat_age(self) -> float:
        return max(0.0, time.monotonic() - self.heartbeat)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        route: Callable[[], tuple[int, str, str]] | None = {
            "/metrics": self.server.metrics_page,
            "/livez": self.server.livez,
            "/readyz": self.server.readyz,
            "/healthz": self.server.healthz,
            "/prestop": self.server.prestop,
        }.get(path)
        if route is None:
            self._send(404, "text/plain", "not found\n")
            return
        try:
            reply = route()
        except Exception as exc:  # a bug: answer 500 rather than drop the connection
            log.error("health.request_failed", path=path, error_type=type(exc).__name__,
                      stage="health")
            reply = (500, "text/plain", "internal error\n")
        self._send(*reply)

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] == "/prestop":
            self.do_GET()
        else:
            self._send(405, "text/plain", "only /prestop accepts POST\n")

    def _send(self, code: int, ctype: str, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: probes would drown the log."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], metrics: Metrics, live: Liveness,
                 on_prestop: Callable[[], None] | None) -> None:
        super().__init__(addr, _Handler)
        self.metrics = metrics
        self.live = live
        self.on_prestop = on_prestop

    def prestop(self) -> tuple[int, str, str]:
        if self.on_prestop is None:
            return 404, "text/plain", "not found\n"
        self.on_prestop()
        log.info("daemon.prestop_marked", stage="shutdown")
        return 200, "text/plain", "prestop marked\n"

    def metrics_page(self) -> tuple[int, str, str]:
        return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()

    def livez(self) -> tuple[int, str, str]:
        age = self.live.heartbeat_age()
        if age <= LIVE_MAX_AGE:
            return 200, "text/plain", f"ok: loop ran {age:.1f}s ago\n"
        return 503, "text/plain", f"stalled: loop last ran {age:.1f}s ago\n"

    def readyz(self) -> tuple[int, str, str]:
        if self.live.ready:
            return 200, "text/plain", "ready\n"
        return 503, "text/plain", "loading state\n"

    def healthz(self) -> tuple[int, str, str]:
        ok = self.live.sink_ok and self.live.state_ok
        body = json.dumps({
            "sink_ok": self.live.sink_ok,
            "sink_error": self.live.sink_error,
            "state_ok": self.live.state_ok,
            "heartbeat_age_s": round(self.live.heartbeat_age(), 3),
        }) + "\n"
        return (200 if ok else 503), "application/json", body


class HealthServer:
    """Serves the endpoints above from a background thread."""

    def __init__(self, addr: str, metrics: Metrics, live: Liveness,
                 on_prestop: Callable[[], None] | None = None) -> None:
        host, _, port = addr.rpartition(":")
        self.addr = addr
        self._server = _Server((host.strip("[]") or "127.0.0.1", int(port)), metrics, live,
                               on_prestop)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                         kwargs={"poll_interval": 0.2},
                                         name="relayburnd-health", daemon=True)

    @classmethod
    def start(cls, addr: str, metrics: Metrics, live: Liveness,
              on_prestop: Callable[[], None] | None = None) -> HealthServer | None:
        """Start serving; a port that cannot be bound is logged, not fatal."""
        try:
            server = cls(addr, metrics, live, on_prestop)
        except OSError as exc:
            log.error("health.bind_failed", addr=addr, reason=exc.strerror or str(exc),
                      error_type="os_error", stage="startup")
            return None
        server._thread.start()
        log.info("health.listening", addr=addr)
        return server

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["LIVE_MAX_AGE", "HealthServer", "Liveness"]
