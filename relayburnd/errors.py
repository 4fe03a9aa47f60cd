"""The one exception tree of relayburnd.

This module imports nothing from the package so every layer can use it without
import cycles::

    RelayburnError                 anything relayburnd raises on purpose
    ├── ConfigError                a setting is missing or invalid (exit 2)
    ├── UsageError                 a command-line value is invalid (exit 2)
    ├── StateError                 RELAYBURN_HOME cannot be used (lock held, not writable)
    ├── SourceError                an agent log cannot be read (file, offset, reason)
    └── SinkError                  the storage adapter did not take a batch
        ├── SinkUnavailable        transient: retry with backoff, keep the cursor
        ├── SinkRejected           permanent for this data: dead-letter it, move on
        └── SinkMisconfigured      credentials/settings: hold the cursor, retry slowly

A message names the file, offset or setting involved and, where there is one,
the fix. The CLI prints ``Error: <message>`` for these; a traceback means a bug.
"""

from __future__ import annotations


class RelayburnError(Exception):
    """Root of every error relayburnd raises deliberately."""

    exit_code = 1


class ConfigError(RelayburnError):
    """A setting (environment, config.json or flag) has an invalid value."""

    exit_code = 2


class UsageError(RelayburnError):
    """A command-line argument is invalid."""

    exit_code = 2


class StateError(RelayburnError):
    """Host-local state (RELAYBURN_HOME) cannot be used."""


class SourceError(RelayburnError):
    """An agent log could not be read."""


class SinkError(RelayburnError):
    """The storage adapter did not accept a batch."""


class SinkUnavailable(SinkError):
    """Transient failure (connection, timeout, 5xx, 429, lock busy): retry later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SinkRejected(SinkError):
    """The sink refused the data itself; retrying the same bytes cannot succeed.

    ``record_ids`` names the offending records when the sink could tell which.
    """

    def __init__(self, message: str, *, record_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.record_ids = record_ids


class SinkMisconfigured(SinkError):
    """Credentials or settings are wrong (401/403, bad DSN): hold data, retry slowly."""


class SchemaTooNew(SinkMisconfigured):
    """The store was migrated by a newer relayburnd than this one."""


__all__ = [
    "ConfigError",
    "RelayburnError",
    "SchemaTooNew",
    "SinkError",
    "SinkMisconfigured",
    "SinkRejected",
    "SinkUnavailable",
    "SourceError",
    "StateError",
    "UsageError",
]
