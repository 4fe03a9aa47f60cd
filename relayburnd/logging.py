"""Logging, configured once: readable on a terminal, JSON lines elsewhere.

Events have stable names (``batch.delivered``, ``line.skipped``) and carry
``file``, ``offset``, ``stage`` and a bounded ``error_type``. Content never
reaches a log: ``RedactContent`` sits in every processor chain.

structlog is imported on the first event that passes the level filter: a
one-shot command that logs nothing (a warm ``ingest``) does not pay for the
import, which is most of its start-up time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

_CONTENT_KEYS = ("text", "prompt", "content", "message_text", "password", "token", "dsn")
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "exception": 40, "critical": 50}


class RedactContent:
    """Replace prompt, response and secret values: they never reach a log."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str] = _CONTENT_KEYS) -> None:
        self._keys = frozenset(keys)

    def __call__(
        self, logger: Any, name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in event_dict.keys() & self._keys:
            event_dict[key] = "<redacted>"
        return event_dict


class _Config:
    fmt = "auto"
    level = _LEVELS["warning"]
    stream: Any = None
    applied = False


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Choose the format (auto: console on a TTY, else JSON), level and stream."""
    _Config.fmt = fmt
    _Config.level = _LEVELS.get(level.lower(), _LEVELS["info"])
    _Config.stream = stream
    _Config.applied = False


def _apply() -> None:
    import logging as std_logging

    import structlog

    stream = _Config.stream or sys.stderr
    fmt = _Config.fmt
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            RedactContent(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            min(_Config.level, std_logging.CRITICAL)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _Config.applied = True


class _LazyLogger:
    """A structlog logger created on the first event that passes the level filter."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context

    def _emit(self, method: str, event: str, kw: dict[str, Any]) -> None:
        if _LEVELS[method] < _Config.level:
            return
        if not _Config.applied:
            _apply()
        import structlog

        getattr(structlog.get_logger(**self._context), method)(event, **kw)

    def bind(self, **kw: Any) -> _LazyLogger:
        return _LazyLogger({**self._context, **kw})

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit("error", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        kw.setdefault("exc_info", True)
        self._emit("exception", event, kw)

    def critical(self, event: str, **kw: Any) -> None:
        self._emit("critical", event, kw)


def get_logger(component: str) -> Any:
    return _LazyLogger({"component": component})
