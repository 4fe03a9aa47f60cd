"""The ASGI application: routes, authorisation, and what each endpoint does.

Handlers are coroutines; everything that blocks (inflating, decoding, the
adapter's database calls) runs in the thread pool, so one slow batch never
stalls the event loop that accepts the others. See ``server/__init__.py`` for
why this stack, and ``http_wire`` for the wire format.

Content retention of the store is the server's: every worker looks hourly
whether ``RELAYBURN_CONTENT_TTL_DAYS`` calls for a prune (``retention.maybe_prune``,
which remembers the last one in the server's RELAYBURN_HOME, so workers and
restarts do not repeat it within the hour). The prune runs on a thread with a
connection of its own, deleting in short transactions, so batches and queries
go on meanwhile. ``POST /v1/content/prune`` prunes on request
(``relayburnd content prune`` on a host with ``RELAYBURN_STORAGE=http``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigError, SinkError, SinkMisconfigured, SinkRejected, SinkUnavailable
from ..logging import get_logger
from ..records import Batch, Record, WriteResult, encode
from ..retention import ContentPruner, maybe_prune
from ..storage import http_wire as wire
from ..storage.file import is_safe_session_id
from .auth import ANONYMOUS, Identity, TokenSet, bearer, parse_tokens
from .body import (
    ENCODINGS,
    ClientGone,
    drain,
    inflate,
    read_body,
    refuse_declared_length,
    unsupported_encoding,
)
from .errors import ApiError, unavailable
from .openapi import openapi_document
from .pool import AdapterPool, Pools
from .telemetry import Instrument, ServerMetrics, scope_info
from .validate import validate_batch

if TYPE_CHECKING:
    from ..config import Settings
    from ..storage import StorageAdapter

log = get_logger("server")

LISTING_CHUNK = 1000  # records per chunk of a streamed listing
HEALTH_TTL = 1.0  # seconds a readiness answer is reused (probes come often)
RETENTION_FIRST_CHECK = 5.0  # seconds after start before the first retention check
RETENTION_CHECK_INTERVAL = 60.0  # seconds between checks (maybe_prune prunes hourly)
PRUNE_SCOPES = ("read", "write")  # only a token limited to neither may delete content
_TZ = re.compile(r"[A-Za-z0-9_+\-/]{1,64}")


@dataclass(frozen=True)
class ServerConfig:
    """What the server enforces, resolved once from settings and flags."""

    storage: str
    tokens: TokenSet | None  # None: no authentication (loopback only)
    max_body: int
    max_decompressed: int
    request_timeout: float
    writers: int

    @classmethod
    def from_settings(cls, settings: Settings, *, insecure_no_auth: bool = False
                      ) -> ServerConfig:
        if settings.storage not in ("sqlite", "postgres"):
            raise ConfigError(
                f"RELAYBURN_STORAGE={settings.storage}: relayburnd serve stores into sqlite or "
                "postgres; set RELAYBURN_STORAGE=sqlite or RELAYBURN_STORAGE=postgres"
            )
        tokens = parse_tokens(settings.server_tokens, settings.server_tokens_file)
        if insecure_no_auth and len(tokens):
            raise ConfigError("--insecure-no-auth conflicts with the configured server tokens; "
                              "use one or the other")
        if not insecure_no_auth and not len(tokens):
            raise ConfigError(
                "no server token configured: set RELAYBURN_SERVER_TOKENS or "
                "RELAYBURN_SERVER_TOKENS_FILE (or, on a loopback address only, pass "
                "--insecure-no-auth)"
            )
        return cls(
            storage=settings.storage,
            tokens=None if insecure_no_auth else tokens,
            max_body=settings.server_max_body,
            max_decompressed=max(settings.server_max_decompressed, settings.server_max_body),
            request_timeout=settings.server_request_timeout,
            writers=settings.server_db_connections,
        )


def _store_error(exc: SinkError, where: str, records: list[Record] | None = None) -> ApiError:
    """The API's answer to an adapter error; details stay in the server's log."""
    if isinstance(exc, SinkRejected) and records is not None:
        named = set(exc.record_ids)
        problems = [wire.RecordProblem(index=i, id=r.id, reason="the store cannot hold a value")
                    for i, r in enumerate(records) if r.id in named]
        if problems:
            return ApiError(422, "invalid_records",
                            f"{len(problems)} record(s) hold values the store cannot keep "
                            "(NUL characters, integers beyond 64 bits)", problems=problems)
        return ApiError(422, "invalid_batch", "the store refused the batch")
    if isinstance(exc, SinkRejected):
        return ApiError(400, "invalid_parameter", "the store cannot search for these values")
    log.error("store.error", where=where, error_type=type(exc).__name__, reason=str(exc))
    if isinstance(exc, SinkMisconfigured):
        return unavailable("the server cannot use its store (its log says why)", 30)
    retry_after = exc.retry_after if isinstance(exc, SinkUnavailable) else None
    return unavailable("the store is unavailable; retry later", retry_after)


def _next_chunk(it: Iterator[Record]) -> tuple[bytes, int]:
    lines = []
    for rec in it:
        lines.append(encode(rec))
        if len(lines) >= LISTING_CHUNK:
            break
    return (b"\n".join(lines) + b"\n", len(lines)) if lines else (b"", 0)


class _Listing(StreamingResponse):
    """An NDJSON listing that returns its adapter to the pool however the response ends.

    Releasing from the response rather than from the generator matters when a
    client leaves before the first chunk: a generator that never started never
    runs its ``finally``, and the pool would lose the adapter for good.
    """

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type=wire.NDJSON)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def _forget(records: list[Record]) -> None:
    """Free a stored batch's records once its answer is sent: for a thousand records that
    is about half a millisecond the client need not wait for. (A coroutine, so it runs
    on the event loop right after the answer, before the next request is read.)"""
    records.clear()


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=wire.JSON, headers=headers)


Handler = Callable[[Request], Awaitable[Response]]


class Api:
    """The endpoints, bound to one configuration, adapter pools and metrics."""

    def __init__(self, config: ServerConfig, pools: Pools, health: AdapterPool,
                 metrics: ServerMetrics, open_store: Callable[[], StorageAdapter]) -> None:
        self.config = config
        self.pools = pools
        self.health = health
        self.metrics = metrics
        self.open_store = open_store
        self.ingest = asyncio.Semaphore(2 * pools.writers.size)
        self.pruning = asyncio.Lock()
        self._ready: tuple[float, ApiError | None] = (0.0, None)
        self._openapi = openapi_document()

    # ------------------------------------------------------------ plumbing

    def handler(self, fn: Handler) -> Handler:
        """Turn ``ApiError`` into its JSON answer; a vanished client gets nothing."""

        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except ApiError as err:
                return _json(err.body(), err.status, err.headers)
            except ClientGone:
                return Response(status_code=400)  # never delivered: the client left

        return wrapped

    def identify(self, request: Request, scope: str | tuple[str, ...] | None) -> Identity:
        """The sender's identity; 401 without a valid token, 403 without ``scope`` (each)."""
        if self.config.tokens is None:
            return ANONYMOUS
        presented = bearer(request.headers.get("authorization"))
        identity = None if presented is None else self.config.tokens.check(presented)
        if identity is None:
            reason = "missing" if presented is None else "invalid"
            self.metrics.auth_failures.labels(reason).inc()
            log.warning("request.unauthorized", reason=reason, path=request.url.path,
                        **scope_info(request.scope))
            raise ApiError(401, "unauthorized",
                           "send Authorization: Bearer <token>" if presented is None
                           else "the token is not one this server accepts",
                           headers={"WWW-Authenticate": 'Bearer realm="relayburnd"'})
        wanted = (scope,) if isinstance(scope, str) else scope or ()
        missing = [s for s in wanted if not identity.may(s)]
        if missing:
            self.metrics.auth_failures.labels("forbidden").inc()
            log.warning("request.forbidden", token_name=identity.name, scope=",".join(missing),
                        path=request.url.path)
            what = " and ".join(wanted) if len(wanted) > 1 else wanted[0]
            raise ApiError(403, "forbidden", f"token {identity.name} may not {what}")
        return identity

    @contextlib.asynccontextmanager
    async def ingest_slot(self) -> AsyncIterator[None]:
        if not self.ingest.locked():
            await self.ingest.acquire()  # free: returns at once, without wait_for's timer
        else:
            try:
                await asyncio.wait_for(self.ingest.acquire(), self.config.request_timeout)
            except TimeoutError:
                raise ApiError(503, "server_busy", "too many batches in flight; retry shortly",
                               headers={"Retry-After": "1"}) from None
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.metrics.in_flight.dec()
            self.ingest.release()

    # ------------------------------------------------------------ batches

    async def _refuse_early(self, request: Request, err: ApiError) -> ApiError:
        await drain(request, self.config.max_body, self.config.request_timeout)
        return err

    async def post_batches(self, request: Request) -> Response:
        cfg = self.config
        token = "-"
        try:
            try:
                token = self.identify(request, "write").name
            except ApiError as err:
                raise await self._refuse_early(request, err) from None
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            encoding = request.headers.get("content-encoding", "").strip().lower()
            if media != wire.JSON:
                raise await self._refuse_early(request, ApiError(
                    415, "unsupported_media_type",
                    f"Content-Type {media[:60] or '(none)'!r}: send application/json"))
            if encoding not in ENCODINGS:
                raise await self._refuse_early(request, unsupported_encoding(encoding))
            await refuse_declared_length(request, cfg.max_body, cfg.request_timeout)
            async with self.ingest_slot():
                return await self._store(request, token, encoding)
        except ApiError as err:
            self.metrics.rejected(token, err.code, len(err.problems))
            log.warning("batch.refused", token_name=token, status=err.status, error=err.code,
                        records=len(err.problems) or None, **scope_info(request.scope))
            raise

    async def _store(self, request: Request, token: str, encoding: str) -> Response:
        cfg = self.config
        started = time.perf_counter()
        raw = await read_body(request, cfg.max_body, cfg.request_timeout)
        records: list[Record] = []

        def decode_and_write(adapter: StorageAdapter) -> WriteResult:
            # One trip to the thread pool for both: under load every hop waits for a thread
            # and the GIL, and the decode (a few ms) is short next to the write.
            data = inflate(raw, encoding, cfg.max_decompressed)
            self.metrics.sent_bytes.inc(len(raw))
            self.metrics.decompressed_bytes.inc(len(data))
            records.extend(validate_batch(data))
            return adapter.write(Batch(records=records))

        async with self.pools.writers.use(cfg.request_timeout) as adapter:
            try:
                result = await run_in_threadpool(decode_and_write, adapter)
            except SinkError as exc:
                raise _store_error(exc, "write", records) from None
        self.metrics.stored(token, result, len(records))
        log.info("batch.stored", token_name=token, records=len(records), inserted=result.inserted,
                 updated=result.updated, unchanged=result.unchanged,
                 ms=round((time.perf_counter() - started) * 1000, 1))
        return Response(wire.batch_accepted(result, len(records)), media_type=wire.JSON,
                        background=BackgroundTask(_forget, records))

    # ------------------------------------------------------------ queries

    def _params(self, request: Request) -> dict[str, list[str]]:
        params: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            params.setdefault(key, []).append(value)
        return params

    def listing(self, kind: str) -> Handler:
        method_name = wire.LISTINGS[kind][1]

        async def endpoint(request: Request) -> Response:
            self.identify(request, "read")
            try:
                flt = wire.parse_filter(self._params(request))
            except wire.BadParameter as exc:
                raise ApiError(400, "invalid_parameter", str(exc)) from None
            pool = self.pools.readers
            adapter = await pool.acquire(self.config.request_timeout)
            try:
                it: Iterator[Record] = getattr(adapter, method_name)(flt)
                first, count = await run_in_threadpool(_next_chunk, it)
            except SinkError as exc:
                pool.release(adapter)
                raise _store_error(exc, f"read {kind}") from None
            except BaseException:
                pool.release(adapter)
                raise
            return _Listing(self._stream(it, first, count, kind), lambda: pool.release(adapter))

        return endpoint

    async def _stream(self, it: Iterator[Record], first: bytes, count: int, kind: str
                      ) -> AsyncIterator[bytes]:
        try:
            if count:
                yield first
                while True:
                    chunk, n = await run_in_threadpool(_next_chunk, it)
                    if not n:
                        break
                    count += n
                    yield chunk
            yield wire.stream_end(count)
        except SinkError as exc:
            log.error("store.error", where=f"read {kind}", error_type=type(exc).__name__,
                      reason=str(exc), sent=count)
            yield wire.error_body("store_unavailable", "the store failed mid-listing") + b"\n"

    async def summary(self, request: Request) -> Response:
        self.identify(request, "read")
        try:
            spec = wire.parse_summary(self._params(request))
        except wire.BadParameter as exc:
            raise ApiError(400, "invalid_parameter", str(exc)) from None
        if not _TZ.fullmatch(spec.tz) or spec.tz == "local" or not _known_zone(spec.tz):
            raise ApiError(400, "invalid_parameter",
                           f"tz={spec.tz[:64]!r}: expected UTC or an IANA time zone name")
        async with self.pools.readers.use(self.config.request_timeout) as adapter:
            try:
                result = await run_in_threadpool(adapter.summary, spec)
            except SinkError as exc:
                raise _store_error(exc, "summary") from None
        return _json(wire.encode_summary(result))

    async def content(self, request: Request) -> Response:
        self.identify(request, "read")
        session_id = request.path_params["session_id"]
        if not is_safe_session_id(session_id):
            raise ApiError(400, "unsafe_session_id",
                           "a session id is 1-200 characters from A-Z a-z 0-9 . _ : @ + = - "
                           "without '..'")
        async with self.pools.readers.use(self.config.request_timeout) as adapter:
            try:
                records = await run_in_threadpool(adapter.content, session_id)
            except SinkError as exc:
                raise _store_error(exc, "content") from None
        return _json(b"[" + b",".join(encode(r) for r in records) + b"]")

    # ------------------------------------------------------------ retention

    async def prune_content(self, request: Request) -> Response:
        """Delete content older than ``before_ms``: one prune at a time, on its own connection."""
        identity = self.identify(request, PRUNE_SCOPES)
        try:
            before_ms = wire.parse_prune(self._params(request))
        except wire.BadParameter as exc:
            raise ApiError(400, "invalid_parameter", str(exc)) from None
        try:
            await asyncio.wait_for(self.pruning.acquire(), self.config.request_timeout)
        except TimeoutError:
            raise ApiError(503, "server_busy", "a content prune is running; retry shortly",
                           headers={"Retry-After": "5"}) from None
        try:
            removed = await run_in_threadpool(self._prune, before_ms)
        except SinkError as exc:
            raise _store_error(exc, "prune content") from None
        finally:
            self.pruning.release()
        log.info("content.pruned", token_name=identity.name, removed=removed,
                 before_ms=before_ms)
        return _json(msgspec.json.encode(wire.ContentPruned(removed=removed,
                                                            before_ms=before_ms)))

    def _prune(self, before_ms: int) -> int:
        adapter = self.open_store()
        try:
            if not isinstance(adapter, ContentPruner):  # every SQL adapter is one
                raise SinkMisconfigured(f"{adapter.name} storage cannot prune content")
            return adapter.prune_content(before_ms)
        finally:
            adapter.close()

    # ------------------------------------------------------------ health

    async def check_store(self) -> ApiError | None:
        at, err = self._ready
        if time.monotonic() - at < HEALTH_TTL:
            return err
        try:
            await self.health.healthcheck(min(5.0, self.config.request_timeout))
            err = None
        except SinkError as exc:
            err = _store_error(exc, "healthcheck")
        except ApiError as busy:
            err = busy
        self._ready = (time.monotonic(), err)
        return err

    async def healthz(self, request: Request) -> Response:
        return _json(b'{"ok":true}')

    async def readyz(self, request: Request) -> Response:
        err = await self.check_store()
        if err is not None:
            raise err
        return _json(b'{"ok":true}')

    async def v1_health(self, request: Request) -> Response:
        identity = self.identify(request, None)
        err = await self.check_store()
        if err is not None:
            raise err
        body = wire.Health(ok=True, token=identity.name, scopes=sorted(identity.scopes),
                           storage=self.config.storage)
        return _json(msgspec.json.encode(body))

    async def metrics_text(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return _json(self._openapi)


def _known_zone(name: str) -> bool:
    from ..errors import UsageError
    from ..reports import get_tz

    try:
        get_tz(name)
    except UsageError:
        return False
    return True


# ------------------------------------------------------------------ the application


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        err = ApiError(405, "method_not_allowed", f"{request.method} is not allowed here",
                       headers=dict(exc.headers or {}))
    else:
        err = ApiError(404, "not_found", "no such endpoint; see /openapi.json")
    return _json(err.body(), err.status, err.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("request.failed", path=request.url.path, error_type=type(exc).__name__)
    return _json(wire.error_body("internal_error", "the server failed; its log says why"), 500)


async def retention_loop(settings: Settings) -> None:
    """Apply ``RELAYBURN_CONTENT_TTL_DAYS`` to the store, checking every minute.

    ``maybe_prune`` prunes at most hourly, opens and closes its own adapter and
    never raises. It runs on a daemon thread rather than the request thread
    pool: a stop does not wait for a long prune, whose open transaction the
    database rolls back when the process goes (what was committed stays).
    """
    if settings.content_ttl_days is None:
        return
    with contextlib.suppress(OSError):  # where maybe_prune keeps the time of the last prune
        settings.home.mkdir(parents=True, exist_ok=True)
    await asyncio.sleep(RETENTION_FIRST_CHECK)
    thread: threading.Thread | None = None
    while True:
        if thread is None or not thread.is_alive():
            thread = threading.Thread(target=maybe_prune, args=(settings,),
                                      name="relayburnd-retention", daemon=True)
            thread.start()
        await asyncio.sleep(RETENTION_CHECK_INTERVAL)


def create_app(settings: Settings, *, insecure_no_auth: bool = False) -> ASGIApp:
    """The server for ``settings``; ``ConfigError``/``SinkError`` if it cannot run."""
    from ..storage import open_adapter

    config = ServerConfig.from_settings(settings, insecure_no_auth=insecure_no_auth)

    def make() -> StorageAdapter:
        return open_adapter(settings)

    pools = Pools(make, config.storage, config.writers)
    health = AdapterPool(make, 1, "database connection for health checks")
    metrics = ServerMetrics()
    api = Api(config, pools, health, metrics, make)
    h = api.handler
    routes = [
        Route(wire.BATCHES_PATH, h(api.post_batches), methods=["POST"]),
        *(Route(path, h(api.listing(kind)), methods=["GET"])
          for kind, (path, _) in wire.LISTINGS.items()),
        Route(wire.SUMMARY_PATH, h(api.summary), methods=["GET"]),
        Route(wire.CONTENT_PATH, h(api.content), methods=["GET"]),
        Route(wire.PRUNE_PATH, h(api.prune_content), methods=["POST"]),
        Route(wire.HEALTH_PATH, h(api.v1_health), methods=["GET"]),
        Route("/healthz", h(api.healthz), methods=["GET"]),
        Route("/readyz", h(api.readyz), methods=["GET"]),
        Route("/metrics", h(api.metrics_text), methods=["GET"]),
        Route("/openapi.json", h(api.openapi), methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        err = await api.check_store()
        log.info("server.started", storage=config.storage, writers=pools.writers.size,
                 tokens=len(config.tokens) if config.tokens is not None else None,
                 store_ready=err is None, content_ttl_days=settings.content_ttl_days)
        upkeep = asyncio.create_task(retention_loop(settings))
        try:
            yield
        finally:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep
            pools.close()
            health.close()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _internal_error})
    return Instrument(app, metrics, routes)
