"""Content retention: conversation content older than ``RELAYBURN_CONTENT_TTL_DAYS`` goes.

Why here and not in each adapter: the rule (what "N days" means, that 0 clears
everything, that an empty setting keeps content forever, how often the daemon
prunes) is one policy; adapters only know how to delete content older than a
cutoff, through ``prune_content(before_ms) -> int``. The file store rewrites
its sidecars under its store lock (see ``storage/file.py``); SQL stores delete
rows, oldest first, in short transactions; the ``http`` adapter asks the
server to (``POST /v1/content/prune``, a token limited to neither read nor
write).

A store behind a server is the server's to keep: ``relayburnd serve`` applies
its own ``RELAYBURN_CONTENT_TTL_DAYS`` hourly (``server/app.py``), so the
hourly hook of a host shipping there does nothing. Otherwise every host would
prune everybody's content by its own setting, the shortest winning, with a
token a host should not need. ``content prune`` on such a host is an explicit
request to the server.

``maybe_prune(settings)`` is the hook for long-running processes: it prunes
at most once per ``PRUNE_INTERVAL_S`` (remembered in ``retention.json`` in
RELAYBURN_HOME, so restarts do not prune again at once) and never raises.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

from .errors import ConfigError, RelayburnError, UsageError
from .home import atomic_write_bytes, load_state
from .logging import get_logger
from .timeutil import iso

if TYPE_CHECKING:
    from .config import Settings
    from .storage.base import StorageAdapter

log = get_logger("retention")

DAY_MS = 86_400_000
CLEAR_ALL_MS = 2**63 - 1  # a cutoff after every timestamp: 0 days keeps nothing
PRUNE_INTERVAL_S = 3600.0
STATE_FILE = "retention.json"
_attempted: dict[Path, int] = {}  # state file -> this process's last prune attempt (ms)
SERVER_KEPT = frozenset({"http"})  # stores whose server applies its own retention


@runtime_checkable
class ContentPruner(Protocol):
    """An adapter that can delete its content older than a cutoff."""

    def prune_content(self, before_ms: int) -> int: ...


def parse_days(value: str) -> int:
    """``--days``: a whole number >= 0; anything else is a one-line usage error."""
    text = value.strip()
    if not text.isdigit():
        raise UsageError(
            f"--days {value!r}: expected a whole number of days >= 0 (0 removes all content)"
        )
    return int(text)


def cutoff_ms(days: int, now_ms: int) -> int:
    """Content with a timestamp before this is removed."""
    if days < 0:
        raise ValueError(days)
    return CLEAR_ALL_MS if days == 0 else now_ms - days * DAY_MS


@dataclass(frozen=True)
class PruneResult:
    days: int
    before_ms: int
    removed: int

    def one_line(self) -> str:
        if self.days == 0:
            return f"removed all stored content: {self.removed:,} record(s)"
        return (
            f"removed {self.removed:,} content record(s) older than {self.days} day(s) "
            f"(before {iso(self.before_ms)})"
        )


def prune(adapter: StorageAdapter | Any, days: int, now_ms: int | None = None) -> PruneResult:
    """Delete the adapter's content older than ``days`` days (0: all of it)."""
    if not isinstance(adapter, ContentPruner):
        raise ConfigError(
            f"RELAYBURN_STORAGE={adapter.name}: this store cannot prune content from here; "
            "prune where the content is stored (e.g. on the relayburnd server)"
        )
    now = int(time.time() * 1000) if now_ms is None else now_ms
    before = cutoff_ms(days, now)
    return PruneResult(days=days, before_ms=before, removed=adapter.prune_content(before))


class _State(msgspec.Struct):
    version: int = 1
    last_prune_ms: int = 0


def maybe_prune(
    settings: Settings, adapter: StorageAdapter | None = None, *, now_ms: int | None = None
) -> PruneResult | None:
    """Prune by ``content_ttl_days`` if the last prune is an hour old; None when skipped.

    Meant for the daemon loop: errors are logged, never raised, and a failed
    attempt also waits an hour, so a broken store is not hammered.
    """
    days = settings.content_ttl_days
    if days is None:
        return None
    if (adapter.name if adapter is not None else settings.storage) in SERVER_KEPT:
        log.debug("content.prune_left_to_server", storage=settings.storage)
        return None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    path = settings.home / STATE_FILE
    try:
        raw, _ = load_state(path)
        last = msgspec.convert(raw, _State).last_prune_ms if raw else 0
    except (OSError, msgspec.ValidationError):
        last = 0
    # this process's own last attempt also counts: a home it cannot write to must not
    # turn an hourly prune into one per check
    last = max(last, _attempted.get(path, 0))
    if 0 <= now - last < PRUNE_INTERVAL_S * 1000:
        return None
    _attempted[path] = now
    own = adapter is None
    result: PruneResult | None = None
    try:
        if adapter is None:
            from .storage import open_adapter

            adapter = open_adapter(settings)
        if not isinstance(adapter, ContentPruner):
            log.debug("content.prune_unsupported", storage=adapter.name)
        else:
            result = prune(adapter, days, now)
            log.info(
                "content.pruned", removed=result.removed, before=iso(result.before_ms), days=days
            )
    except RelayburnError as exc:
        log.warning("content.prune_failed", error_type=type(exc).__name__, reason=str(exc))
    finally:
        if own and adapter is not None:
            adapter.close()
    try:
        atomic_write_bytes(
            path,
            msgspec.json.encode(_State(last_prune_ms=now)),
            fault_points=False,
            keep_prev=False,
        )
    except OSError as exc:
        log.warning("state.write_failed", file=str(path), reason=exc.strerror or str(exc))
    return result
