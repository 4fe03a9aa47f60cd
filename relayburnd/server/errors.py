"""Errors the API answers with: an HTTP status, a stable code and one sentence.

Every error body is ``{"error": "<code>", "message": "..."}`` (plus ``records``
for refused records). Clients branch on the code, people read the message.
The codes are part of the API; the OpenAPI document lists them per status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..storage import http_wire as wire

# status -> the codes it can carry (documentation and tests read this table)
CODES: dict[int, tuple[str, ...]] = {
    400: ("malformed_json", "invalid_gzip", "invalid_zstd", "invalid_parameter",
          "unsafe_session_id"),
    401: ("unauthorized",),
    403: ("forbidden",),
    404: ("not_found",),
    405: ("method_not_allowed",),
    408: ("request_timeout",),
    413: ("body_too_large", "decompressed_too_large"),
    415: ("unsupported_media_type", "unsupported_encoding"),
    422: ("invalid_batch", "invalid_records"),
    500: ("internal_error",),
    503: ("store_unavailable", "server_busy"),
}


class ApiError(Exception):
    """An answer other than success, raised anywhere below a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        problems: Iterable[wire.RecordProblem] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        assert code in CODES.get(status, ()), (status, code)
        self.status = status
        self.code = code
        self.message = message
        self.problems = list(problems)
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return wire.error_body(self.code, self.message, self.problems)


def unavailable(message: str, retry_after: float | None = None) -> ApiError:
    """503 with a Retry-After the client's backoff honours (at least one second)."""
    seconds = max(1, round(retry_after)) if retry_after else 2
    return ApiError(503, "store_unavailable", message, headers={"Retry-After": str(seconds)})


def busy(what: str) -> ApiError:
    return ApiError(503, "server_busy", f"no free {what}; retry shortly",
                    headers={"Retry-After": "1"})
