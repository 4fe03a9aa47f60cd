"""The server's Prometheus metrics and the middleware that counts requests.

Built against a registry of their own (not the process-wide default), so a
test can start an app and read exact values, and two apps in one process do
not collide. Names follow ``relayburnd_server_<name>_<unit>_total``. Labels are
bounded: routes are the API's templates (``/v1/sessions/{session_id}/content``,
never the id), token labels are the configured names, never tokens.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..records import WriteResult

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    """Every metric the server exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "relayburnd_server_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=r)
        self.records = Counter(
            "relayburnd_server_records",
            "Records of stored batches by kind and outcome: inserted, updated, unchanged.",
            ["kind", "outcome"], registry=r)
        self.rejected_records = Counter(
            "relayburnd_server_rejected_records",
            "Records refused by error code (the whole batch is then not written).",
            ["code"], registry=r)
        self.batches = Counter(
            "relayburnd_server_batches",
            "Batches by token name and result (stored, or the error code).",
            ["token", "result"], registry=r)
        self.token_records = Counter(
            "relayburnd_server_token_records", "Records in stored batches by token name.",
            ["token"], registry=r)
        self.batch_seconds = Histogram(
            "relayburnd_server_batch_seconds",
            "Seconds from the start of POST /v1/batches to its answer.",
            buckets=BATCH_BUCKETS, registry=r)
        self.auth_failures = Counter(
            "relayburnd_server_auth_failures",
            "Requests refused for their token: missing, invalid or forbidden.",
            ["reason"], registry=r)
        self.body_bytes = Counter(
            "relayburnd_server_batch_bytes", "Batch body bytes, as sent and decompressed.",
            ["form"], registry=r)
        self.sent_bytes = self.body_bytes.labels("sent")
        self.decompressed_bytes = self.body_bytes.labels("decompressed")
        self.in_flight = Gauge(
            "relayburnd_server_batches_in_flight", "Batches being read, checked or written.",
            registry=r, multiprocess_mode="livesum")

    def stored(self, token: str, result: WriteResult, received: int) -> None:
        for kind, c in result.counts.items():
            if c.inserted:
                self.records.labels(kind, "inserted").inc(c.inserted)
            if c.updated:
                self.records.labels(kind, "updated").inc(c.updated)
            if c.unchanged:
                self.records.labels(kind, "unchanged").inc(c.unchanged)
        self.batches.labels(token, "stored").inc()
        self.token_records.labels(token).inc(received)

    def rejected(self, token: str, code: str, records: int) -> None:
        self.batches.labels(token, code).inc()
        if records:
            self.rejected_records.labels(code).inc(records)

    def render(self) -> bytes:
        """The exposition text; with several workers, the sum over all of them."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)


class Instrument:
    """ASGI middleware: one count per request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _route(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return str(getattr(route, "path", "other"))
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        method = scope["method"] if scope["method"] in _METHODS else "other"
        status = 500
        started = time.perf_counter()
        answered: float | None = None  # when the last byte of the answer was handed over

        async def counted(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered = time.perf_counter()

        try:
            await self.app(scope, receive, counted)
        finally:
            self.metrics.requests.labels(route, method, str(status)).inc()
            if route.endswith("/batches") and method == "POST":
                done = answered if answered is not None else time.perf_counter()
                self.metrics.batch_seconds.observe(done - started)


def scope_info(scope: Scope) -> dict[str, Any]:
    """The client address of a request, for log lines."""
    client = scope.get("client")
    return {"client": f"{client[0]}:{client[1]}" if client else None}
