"""HTTP adapter: a client of ``relayburnd serve`` (``RELAYBURN_STORAGE=http``).

Why a server in front of the database at all: hosts then need one URL and one
revocable token instead of database credentials, and the server validates every
record before it reaches the shared store.

Writes. A batch is folded first (one record per id, greatest rank), so an id
never travels twice in one batch and the per-kind counts stay exact. It is then
sent as requests of at most ``MAX_RECORDS`` records and ``MAX_BYTES`` of JSON,
compressed with zstd at level 1 (``RELAYBURN_HTTP_COMPRESSION``). Measured on
1,000 turns, 525 KB of JSON: zstd level 1 takes 0.7 ms and sends 75 KB, and the
server inflates it in 0.2 ms; gzip level 1 takes 2.6 ms for 103 KB and 0.85 ms
to inflate (gzip level 9: 27 ms for 83 KB). On a host that is also running the
agents, and on a server that every host sends to, the CPU is what counts.
A server from before zstd answers 415: the adapter then sends that request and
every later one with gzip (level 1), once told. Each request is one transaction
on the server; a batch split into several requests is therefore not atomic as a
whole, but re-sending it after a failure is harmless: what was stored comes
back as ``unchanged``.

Every answer is classified once (``classify``) into the outcomes the delivery
layer acts on:

==============================  =========  ==========================================
connection error, timeout,      RETRY      ``SinkUnavailable`` (``retry_after`` from
408, 429, 5xx except 501                   the Retry-After header when there is one)
400, 413, 422                   REJECTED   ``SinkRejected`` naming the records the
                                           server named; 413 on several records first
                                           splits the request in halves
401, 403, 404, 3xx, 501, other  HALT       ``SinkMisconfigured`` saying which setting
                                           to fix; the daemon holds its cursors
                                           (415 to a zstd body first falls back to
                                           gzip, see above)
==============================  =========  ==========================================

Timeouts: 5 s to connect; 30 s for each read and write on the socket, which
for a write (a small answer after the commit) bounds the whole exchange. The
server gives up on a request before that (``RELAYBURN_SERVER_REQUEST_TIMEOUT``).

Reads go through the server's query endpoints, so ``summary`` and the other
reports work the same as on a local store. ``prune_content`` asks the server to
delete content older than a cutoff (``relayburnd content prune``); the server
also applies its own ``RELAYBURN_CONTENT_TTL_DAYS`` hourly, so a host's daemon
leaves retention of the shared store to it (``retention.py``). Listings are streamed (NDJSON), with
a closing line that tells a complete listing from a cut one.

The token is sent only in the Authorization header; it never appears in a log
line or an error message (messages are scrubbed of it in case a proxy echoes it).
"""

from __future__ import annotations

import enum
import gzip
import ipaddress
import time
from collections.abc import Iterator, Mapping, Sequence
from email.utils import parsedate_to_datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast
from urllib.parse import quote, urlsplit

import httpx
import msgspec
import zstandard

from .. import __version__
from ..config import redact_dsn
from ..errors import SinkError, SinkMisconfigured, SinkRejected, SinkUnavailable
from ..logging import get_logger
from ..records import (
    Batch,
    Compaction,
    ContentRecord,
    Record,
    SessionRelationship,
    ToolResultEvent,
    Turn,
    UserTurn,
    WriteResult,
    decode,
    encode,
    fold,
)
from . import http_wire as wire
from .base import Filter, SummaryResult, SummarySpec
from .file import is_safe_session_id

if TYPE_CHECKING:
    from ..config import Settings

log = get_logger("storage.http")

MAX_RECORDS = 1000
MAX_BYTES = 2 * 1024 * 1024
GZIP_LEVEL = 1
ZSTD_LEVEL = 1
CONNECT_TIMEOUT = 5.0
IO_TIMEOUT = 30.0
PRUNE_TIMEOUT = 600.0  # a first prune of a large store deletes millions of rows

R = TypeVar("R", bound=Record)
PRUNE_WHERE = "prune content"


class Outcome(enum.Enum):
    """What a response means for the batch that was sent."""

    DELIVERED = "delivered"  # stored: cursors may advance
    RETRY = "retry"  # transient: back off and send the same records again
    REJECTED = "rejected"  # the records themselves are refused: dead-letter them
    HALT = "halt"  # settings or credentials: hold the cursors, fix the configuration


def classify(status: int) -> Outcome:
    """The outcome of an HTTP status (Vector's rules, plus 413 as a rejection)."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (408, 429) or (status >= 500 and status != 501):
        return Outcome.RETRY
    if status in (400, 413, 422):
        return Outcome.REJECTED
    return Outcome.HALT


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 3600))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), 3600.0)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_encoder = msgspec.json.Encoder()
_ID = attrgetter("id")


class _Request:
    """The records of one request and its JSON body (encoded once, in one call)."""

    __slots__ = ("body", "records")

    def __init__(self, records: Sequence[Record], body: bytes | None = None) -> None:
        self.records = list(records)
        self.body = body if body is not None else _encoder.encode(
            wire.BatchBody(records=self.records))

    def __len__(self) -> int:
        return len(self.records)

    def halves(self) -> tuple[_Request, _Request]:
        mid = len(self.records) // 2
        return _Request(self.records[:mid]), _Request(self.records[mid:])


def compress(body: bytes, encoding: str) -> bytes:
    """A request body in ``encoding`` (zstd or gzip, both level 1)."""
    if encoding == "zstd":
        # A context per call (about 10 us): the adapter may be shared by threads, and a
        # context is not. The frame states its size, which the server checks first.
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


def _body(lines: Sequence[bytes]) -> bytes:
    """The JSON of ``BatchBody`` from its records' encodings (what the encoder writes)."""
    return b'{"records":[' + b",".join(lines) + b"]}"


def split_requests(records: Sequence[Record], max_records: int = MAX_RECORDS,
                   max_bytes: int = MAX_BYTES, *,
                   lines: Mapping[tuple[str, str], bytes] | None = None) -> list[_Request]:
    """Requests of at most ``max_records`` and ``max_bytes`` (a larger record goes alone).

    A chunk of ``max_records`` is encoded in one call (the common case: 1,000 turns
    are about 0.5 MiB), or, when ``lines`` (``Batch.lines``: the encodings sealing
    made, by id and rank) holds every record of it, joined from those without
    encoding anything again. Only a chunk over ``max_bytes`` is measured record by
    record.
    """
    out: list[_Request] = []
    for start in range(0, len(records), max_records):
        chunk = list(records[start:start + max_records])
        known = [lines.get((r.id, r.rank)) for r in chunk] if lines else None
        parts = known if known is not None and None not in known else None
        whole = _Request(chunk, None if parts is None else _body(cast(list[bytes], parts)))
        if len(whole.body) <= max_bytes:
            out.append(whole)
            continue
        encoded = cast(list[bytes], parts) if parts is not None else [encode(r) for r in chunk]
        recs: list[Record] = []
        group: list[bytes] = []
        size = 0
        for rec, line in zip(chunk, encoded, strict=True):
            if recs and size + len(line) + 1 > max_bytes:
                out.append(_Request(recs, _body(group)))
                recs, group, size = [], [], 0
            recs.append(rec)
            group.append(line)
            size += len(line) + 1
        if recs:
            out.append(_Request(recs, _body(group)))
    return out


class HttpAdapter:
    """Client of a relayburnd server; see the module docstring."""

    name = "http"

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None,
                 max_records: int = MAX_RECORDS, max_bytes: int = MAX_BYTES) -> None:
        url = settings.http_url.strip().rstrip("/")
        self.label = redact_dsn(url) if url else "(unset)"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SinkMisconfigured(
                f"RELAYBURN_HTTP_URL={self.label!r} is invalid: expected the server's base URL, "
                "e.g. https://relayburn.example.com or http://127.0.0.1:8787"
            )
        self._token = settings.http_token.strip()
        self.encoding = settings.http_compression
        self.max_records = max_records
        self.max_bytes = max_bytes
        headers = {"User-Agent": f"relayburnd/{__version__}", "Accept": wire.JSON}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
            if parts.scheme == "http" and not _is_loopback(parts.hostname):
                log.warning("http.cleartext_token", url=self.label,
                            reason="the token travels unencrypted; use https")
        self._client = httpx.Client(
            base_url=url,
            headers=headers,
            timeout=httpx.Timeout(IO_TIMEOUT, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
            follow_redirects=False,
            transport=transport,
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"HttpAdapter({self.label!r})"

    # ------------------------------------------------------------ errors

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _transport_error(self, where: str, exc: httpx.HTTPError) -> SinkError:
        reason = self._scrub(str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return SinkMisconfigured(f"{self.label}: {where}: {reason}; check RELAYBURN_HTTP_URL")
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
            return SinkMisconfigured(
                f"{self.label}: {where}: the server's TLS certificate is not trusted ({reason}); "
                "set SSL_CERT_FILE to the CA bundle that signed it"
            )
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        return SinkUnavailable(f"{self.label}: {where} {kind}: {type(exc).__name__}: {reason}")

    def _error_body(self, resp: httpx.Response) -> wire.ErrorBody:
        try:
            return msgspec.json.decode(resp.content, type=wire.ErrorBody)
        except (msgspec.DecodeError, UnicodeDecodeError):
            text = resp.text[:200].strip() if resp.content else ""
            return wire.ErrorBody(error="http_" + str(resp.status_code),
                                  message=self._scrub(text) or resp.reason_phrase)

    def _raise_for(self, where: str, resp: httpx.Response,
                   sent: Sequence[Record] = ()) -> NoReturn:
        """The sink error for a non-2xx answer to ``where``."""
        status = resp.status_code
        body = self._error_body(resp)
        said = f"{self.label}: {where}: HTTP {status} {body.error}: {self._scrub(body.message)}"
        outcome = classify(status)
        if outcome is Outcome.RETRY:
            raise SinkUnavailable(said, retry_after=parse_retry_after(
                resp.headers.get("Retry-After")))
        if outcome is Outcome.REJECTED:
            named = [p.index for p in body.records if 0 <= p.index < len(sent)]
            ids = tuple(dict.fromkeys(sent[i].id for i in named))
            if not ids and len(sent) == 1:
                ids = (sent[0].id,)
            raise SinkRejected(said, record_ids=ids)
        if status == 401:
            fix = ("set RELAYBURN_HTTP_TOKEN to a token the server accepts "
                   "(one of its RELAYBURN_SERVER_TOKENS)" if self._token else
                   "RELAYBURN_HTTP_TOKEN is empty and the server requires a token; set it")
            raise SinkMisconfigured(f"{said}; {fix}")
        if status == 403:
            limit = {"write batches": "with :read", PRUNE_WHERE: "with :read or :write"}.get(
                where, "with :write")
            raise SinkMisconfigured(
                f"{said}; set RELAYBURN_HTTP_TOKEN to a token the server allows to {where} "
                f"(one not limited {limit} in its RELAYBURN_SERVER_TOKENS)"
            )
        if status == 404:
            raise SinkMisconfigured(
                f"{said}; no relayburnd API at {self.label}: check RELAYBURN_HTTP_URL "
                "(the server's base URL, without /v1)"
            )
        if 300 <= status < 400:
            raise SinkMisconfigured(
                f"{self.label}: {where}: redirected to {resp.headers.get('Location', '?')!r}; "
                "set RELAYBURN_HTTP_URL to the final URL (the token is not sent on redirects)"
            )
        raise SinkMisconfigured(
            f"{said}; the server and this client may be different versions "
            f"(client {__version__})"
        )

    def _request(self, where: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._closed:
            raise SinkMisconfigured(f"{self.label}: {where}: the adapter was closed")
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(where, exc) from None

    # ------------------------------------------------------------ writes

    def write(self, batch: Batch) -> WriteResult:
        result = WriteResult()
        records = batch.records
        if len(set(map(_ID, records))) < len(records):  # an id twice: keep its greatest rank
            records = cast(list[Record], list(fold(records).values()))
        for part in split_requests(records, self.max_records, self.max_bytes,
                                   lines=batch.lines):
            result.add(self._send(part))
        return result

    def _send(self, part: _Request) -> WriteResult:
        encoding = self.encoding
        resp = self._request(
            "write batches", "POST", wire.BATCHES_PATH, content=compress(part.body, encoding),
            headers={"Content-Type": wire.JSON, "Content-Encoding": encoding},
        )
        if resp.status_code == 415 and encoding == "zstd":
            # A server (or a proxy) from before zstd: gzip from now on, for this adapter.
            self.encoding = "gzip"
            log.warning("http.zstd_refused", url=self.label,
                        reason="the server answered 415 to a zstd body; sending gzip instead "
                               "(RELAYBURN_HTTP_COMPRESSION=gzip says so from the start)")
            return self._send(part)
        if resp.status_code == 413 and len(part) > 1:
            first, second = part.halves()
            log.info("http.batch_split", records=len(part), reason="413 from the server")
            out = self._send(first)
            out.add(self._send(second))
            return out
        if classify(resp.status_code) is not Outcome.DELIVERED:
            self._raise_for("write batches", resp, part.records)
        try:
            accepted = msgspec.json.decode(resp.content, type=wire.BatchAccepted)
        except msgspec.DecodeError as exc:
            # Stored or not, sending the same records again is safe.
            raise SinkUnavailable(
                f"{self.label}: write batches: HTTP {resp.status_code} with an unreadable "
                f"answer ({exc}); is RELAYBURN_HTTP_URL a relayburnd server?"
            ) from None
        return wire.write_result(accepted)

    # ------------------------------------------------------------ reads

    def _listing(self, kind: str, flt: Filter | None, cls: type[R]) -> Iterator[R]:
        path, _ = wire.LISTINGS[kind]
        where = f"read {path}"
        if self._closed:
            raise SinkMisconfigured(f"{self.label}: {where}: the adapter was closed")
        try:
            params: list[tuple[str, str | int | float | bool | None]] = [
                *wire.filter_params(flt)]
            with self._client.stream("GET", path, params=params) as resp:
                if resp.status_code != 200:
                    resp.read()
                    self._raise_for(where, resp)
                yield from self._lines(where, resp, cls)
        except httpx.HTTPError as exc:
            raise self._transport_error(where, exc) from None

    def _lines(self, where: str, resp: httpx.Response, cls: type[R]) -> Iterator[R]:
        pending = bytearray()
        count = 0
        ended = False
        for chunk in resp.iter_bytes():
            pending += chunk
            start = 0
            while (nl := pending.find(b"\n", start)) >= 0:
                line = bytes(pending[start:nl])
                start = nl + 1
                if not line:
                    continue
                if ended:
                    raise SinkUnavailable(f"{self.label}: {where}: data after the closing line")
                if wire.is_record_line(line):
                    rec = decode(line)
                    if not isinstance(rec, cls):
                        raise SinkMisconfigured(
                            f"{self.label}: {where}: the server sent a {type(rec).__name__}; "
                            f"server and client versions differ (client {__version__})")
                    count += 1
                    yield rec
                    continue
                closing = wire.decode_stream_end(line)
                if isinstance(closing, wire.ErrorBody):
                    raise SinkUnavailable(f"{self.label}: {where}: the server failed mid-way: "
                                          f"{closing.error}: {closing.message}")
                if closing is None or closing.count != count:
                    raise SinkUnavailable(f"{self.label}: {where}: unreadable listing after "
                                          f"{count} record(s)")
                ended = True
            del pending[:start]
        if not ended:
            raise SinkUnavailable(
                f"{self.label}: {where}: the listing was cut after {count} record(s)"
            )

    def turns(self, flt: Filter | None = None) -> Iterator[Turn]:
        return self._listing("turn", flt, Turn)

    def user_turns(self, flt: Filter | None = None) -> Iterator[UserTurn]:
        return self._listing("user-turn", flt, UserTurn)

    def compactions(self, flt: Filter | None = None) -> Iterator[Compaction]:
        return self._listing("compaction", flt, Compaction)

    def tool_results(self, flt: Filter | None = None) -> Iterator[ToolResultEvent]:
        return self._listing("tool-result", flt, ToolResultEvent)

    def relationships(self, flt: Filter | None = None) -> Iterator[SessionRelationship]:
        return self._listing("relationship", flt, SessionRelationship)

    def content(self, session_id: str) -> list[ContentRecord]:
        """A session's content in order ([] for ids the server would refuse to store)."""
        if not is_safe_session_id(session_id):
            return []
        path = wire.CONTENT_PATH.format(session_id=quote(session_id, safe=""))
        resp = self._request("read content", "GET", path)
        if resp.status_code != 200:
            self._raise_for("read content", resp)
        try:
            return msgspec.json.decode(resp.content, type=list[ContentRecord])
        except msgspec.DecodeError as exc:
            raise SinkUnavailable(f"{self.label}: read content: unreadable answer ({exc})"
                                  ) from None

    def summary(self, spec: SummarySpec) -> SummaryResult:
        params: list[tuple[str, str | int | float | bool | None]] = [
            *wire.summary_params(spec)]
        resp = self._request("read the summary", "GET", wire.SUMMARY_PATH, params=params)
        if resp.status_code != 200:
            self._raise_for("read the summary", resp)
        try:
            return wire.decode_summary(resp.content)
        except msgspec.DecodeError as exc:
            raise SinkUnavailable(f"{self.label}: read the summary: unreadable answer ({exc})"
                                  ) from None

    # ------------------------------------------------------------ retention

    def prune_content(self, before_ms: int) -> int:
        """Have the server delete its content older than ``before_ms``; how many it deleted."""
        resp = self._request(PRUNE_WHERE, "POST", wire.PRUNE_PATH,
                             params={"before_ms": str(before_ms)},
                             timeout=httpx.Timeout(PRUNE_TIMEOUT, connect=CONNECT_TIMEOUT))
        if resp.status_code != 200:
            self._raise_for(PRUNE_WHERE, resp)
        try:
            return msgspec.json.decode(resp.content, type=wire.ContentPruned).removed
        except msgspec.DecodeError as exc:
            # Deleted or not, asking again is safe.
            raise SinkUnavailable(f"{self.label}: {PRUNE_WHERE}: unreadable answer ({exc})"
                                  ) from None

    # ------------------------------------------------------------ lifecycle

    def healthcheck(self) -> None:
        """The server answers, accepts the token and reaches its store."""
        resp = self._request("check health", "GET", wire.HEALTH_PATH)
        if resp.status_code != 200:
            self._raise_for("check health", resp)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
