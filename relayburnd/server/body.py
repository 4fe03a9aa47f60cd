"""Reading a request body within limits: size as sent, size decompressed, and time.

* ``Content-Length`` above the limit is refused before a byte is read; a body
  without one (chunked) is counted as it arrives.
* gzip is inflated with ``max_length`` set to the remaining allowance, so a
  small body that would inflate to gigabytes (a gzip bomb) costs at most the
  limit plus one byte of memory before it is refused.
* zstd the same way (see ``_unzstd``): a frame that states a size over the
  limit is refused before it is inflated, and any other body is inflated into
  a bounded buffer, or counted in chunks before it is kept. Frames may use a
  window of at most 8 MiB, the limit RFC 9659 sets for the ``zstd`` content
  coding, so a frame header cannot make the server allocate more.
* The whole body must arrive within the request timeout (a client that sends
  one byte a minute holds nothing for long).
* A request refused before its body was read still has its body drained (up to
  the size limit and the timeout): closing a socket with unread bytes makes the
  kernel send a reset, and the client would then see a broken connection
  instead of the 401 or 415 that tells it what to fix. A body over the limit is
  drained too, up to ``DRAIN_FACTOR`` times the limit: the http adapter answers
  413 by splitting its request, but a reset would look transient and it would
  send the same request again forever.
"""

from __future__ import annotations

import asyncio
import zlib

import zstandard
from starlette.requests import ClientDisconnect, Request

from .errors import ApiError

GZIP = ("gzip", "x-gzip")
ZSTD = "zstd"
IDENTITY = ("", "identity")
ENCODINGS = (*IDENTITY, *GZIP, ZSTD)  # Content-Encoding values a batch may use
DRAIN_FACTOR = 4
ZSTD_MAX_WINDOW = 8 << 20  # RFC 9659: decoders of the zstd content coding need no more
ZSTD_COUNT_CHUNK = 1 << 20  # output counted at a time by the bounded pass of _unzstd


class ClientGone(Exception):
    """The client closed the connection before its body arrived."""


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit():
        return None  # the HTTP layer refuses such requests before they get here
    return int(raw)


def _too_long(limit: int, length: int | None = None) -> ApiError:
    size = f"the body is {length} bytes" if length is not None else "the body is larger"
    return ApiError(413, "body_too_large", f"{size}; this server accepts at most {limit}",
                    headers={"Connection": "close"})


async def refuse_declared_length(request: Request, limit: int, timeout: float) -> None:
    """413 for a ``Content-Length`` over ``limit``, once the body is drained (see above)."""
    length = _declared_length(request)
    if length is not None and length > limit:
        await drain(request, limit * DRAIN_FACTOR, timeout)
        raise _too_long(limit, length)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body as sent (still compressed), at most ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    if total <= limit * DRAIN_FACTOR:
                        continue  # drain, then answer
                    raise _too_long(limit)
                chunks.append(chunk)
        if total > limit:
            raise _too_long(limit)
    except TimeoutError:
        raise ApiError(408, "request_timeout",
                       f"the body did not arrive within {timeout:g} s",
                       headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)


async def drain(request: Request, limit: int, timeout: float) -> None:
    """Read and drop the body, so a refusal reaches the client (see the module docstring)."""
    length = _declared_length(request)
    if length is not None and length > limit:
        return
    total = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    return
    except (TimeoutError, ClientDisconnect, RuntimeError):
        return


def unsupported_encoding(encoding: str) -> ApiError:
    return ApiError(415, "unsupported_encoding",
                    f"Content-Encoding {encoding[:40]!r} is not supported; send zstd, gzip or "
                    "identity")


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """The decompressed body (identity, gzip or zstd; several members or frames allowed),
    at most ``limit`` bytes."""
    if encoding in IDENTITY:
        if len(data) > limit:
            raise _too_large(limit)
        return data
    if encoding == ZSTD:
        return _unzstd(data, limit)
    if encoding not in GZIP:
        raise unsupported_encoding(encoding)
    out: list[bytes] = []
    size = 0
    rest = data
    try:
        while True:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            piece = inflater.decompress(rest, limit - size + 1)
            size += len(piece)
            if size > limit or inflater.unconsumed_tail:
                raise _too_large(limit)
            out.append(piece)
            if not inflater.eof:
                raise ApiError(400, "invalid_gzip", "the gzip body ends before its end marker")
            rest = inflater.unused_data
            if not rest.strip(b"\x00"):
                break
    except zlib.error as exc:
        raise ApiError(400, "invalid_gzip", f"the body is not valid gzip ({exc})") from None
    return b"".join(out)


def _unzstd(data: bytes, limit: int) -> bytes:
    """A zstd body inflated, at most ``limit`` bytes.

    The usual body (the http adapter's) is one frame that states its size: it
    is refused at once when that size is over the limit, else inflated in one
    call into a buffer of exactly that size, which also refuses a frame that
    is cut short or holds more than it states. Anything else (several frames,
    frames without a size) is first inflated in chunks that are counted and
    dropped, so a bomb costs one chunk of memory, then frame by frame, each of
    which must be complete.
    """
    try:
        stated = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise _invalid_zstd(f"the body is not valid zstd ({exc})") from None
    if stated > limit:
        raise _too_large(limit)
    inflater = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    if stated >= 0:
        try:
            return inflater.decompress(data, read_across_frames=False, allow_extra_data=False)
        except zstandard.ZstdError:
            pass  # more than one frame, or a bad one: the careful path below says which
    try:
        reader = inflater.stream_reader(data, read_across_frames=True)
        size = 0
        while chunk := reader.read(ZSTD_COUNT_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
        out: list[bytes] = []
        rest = data
        while rest:  # bounded: the same frames just inflated to at most ``limit``
            frame = inflater.decompressobj(read_across_frames=False)
            out.append(frame.decompress(rest))
            if not frame.eof:
                raise _invalid_zstd("the zstd body ends before its frame does")
            rest = frame.unused_data
    except zstandard.ZstdError as exc:
        raise _invalid_zstd(f"the body is not valid zstd ({exc})") from None
    return b"".join(out)


def _invalid_zstd(message: str) -> ApiError:
    return ApiError(400, "invalid_zstd", message)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "decompressed_too_large",
                    f"the decompressed body exceeds {limit} bytes, the most this server accepts")
