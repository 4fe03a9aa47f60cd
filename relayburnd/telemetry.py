"""What a running daemon tells the outside: metrics, ``status.json``, systemd STATUS.

Kept apart from the loop so the loop reads as the commit protocol. Counters
are raised once per pass or delivered batch; everything derived from state
(lag, open files, ages, the Deliverer's retry and error counts) is computed
when it is asked for, so an idle daemon does no bookkeeping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .logging import get_logger
from .metrics import Sample
from .pipeline import PassReport
from .status import write_status

if TYPE_CHECKING:
    from .daemon import Daemon
    from .scan import Scanner
    from .shipper import Outcome, Shipper

log = get_logger("telemetry")

STATUS_EVERY = 2.0
STATUS_REFRESH = 30.0


def _one(value: float) -> list[Sample]:
    return [((), float(value))]


class Telemetry:
    """Wires a daemon's state into its ``Metrics`` and status outputs."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.started_at = time.time()
        self.lines_dead_lettered = 0
        self._last_publish = 0.0
        self._last_write = 0.0
        self._published: tuple[object, ...] = ()
        m = daemon.metrics
        m.computed("files_tracked", lambda: self._per_source(0))
        m.computed("lag_bytes", lambda: self._per_source(1))
        m.computed("files_open", lambda: _one(self._scanner().open_handles()))
        m.computed("oldest_unacked_age_seconds", lambda: _one(self.oldest_unacked()))
        m.computed("last_flush_timestamp_seconds", lambda: _one(daemon.last_flush_at or 0))
        m.computed("sink_up", lambda: _one(1 if self._shipper().sink_ok else 0))
        m.computed("watch_mode", lambda: [((("mode", self.watch_mode()),), 1.0)])
        m.computed("inotify_watches", lambda: _one(len(daemon.hints.watched())))
        m.computed("inotify_watches_needed", lambda: _one(self._scanner().watches_needed))
        m.computed("inotify_watch_shortfall", lambda: _one(self.shortfall()))
        m.computed("retries_total", lambda: _one(self._shipper().deliverer.stats.retries))
        m.computed("sink_errors_total", self._errors)
        m.computed("records_dead_lettered_total", lambda: _one(
            self.lines_dead_lettered + self._shipper().deliverer.stats.dead_lettered))
        m.computed("deleted_unread_bytes_total",
                   lambda: _one(self._scanner().deleted_unread_bytes))
        m.computed("heartbeat_age_seconds", lambda: _one(daemon.live.heartbeat_age()))

    def _scanner(self) -> Scanner:
        assert self.d.scanner is not None
        return self.d.scanner

    def _shipper(self) -> Shipper:
        assert self.d.shipper is not None
        return self.d.shipper

    # ------------------------------------------------------------ derived values

    def _per_source(self, index: int) -> list[Sample]:
        scanner, cursors = self.d.scanner, self.d.cursors
        if scanner is None or cursors is None:
            return []
        return [((("source", name),), float(values[index]))
                for name, values in scanner.per_source(cursors.get).items()]

    def _errors(self) -> Iterable[Sample]:
        shipper = self.d.shipper
        if shipper is None:
            return []
        counts = dict(shipper.deliverer.stats.errors_by_class)
        if shipper.misconfigured:
            counts["SinkMisconfigured"] = counts.get("SinkMisconfigured", 0) + \
                shipper.misconfigured
        return [((("class", name),), float(n)) for name, n in counts.items()]

    def oldest_unacked(self) -> float:
        now = time.monotonic()
        starts = [t for t in (self.d.shipper.inflight_since if self.d.shipper else None,
                              self.d._fill_started) if t is not None]
        return max(0.0, now - min(starts)) if starts else 0.0

    def watch_mode(self) -> str:
        return self.d.scanner.mode if self.d.scanner is not None else "poll"

    def shortfall(self) -> int:
        scanner = self.d.scanner
        if scanner is None or self.d.hints.requested == "poll":
            return 0
        return scanner.watches_missing if self.d.hints.active else scanner.watches_needed

    # ------------------------------------------------------------ counters

    def count_pass(self, report: PassReport) -> None:
        m = self.d.metrics
        m.inc("bytes_read_total", report.bytes_read)
        for kind, n in report.parsed.items():
            m.inc("records_parsed_total", n, kind=kind)
        for reason, n in report.skipped.items():
            m.inc("lines_skipped_total", n, reason=reason)
        for reason, n in report.resets.items():
            m.inc("file_resets_total", n, reason=reason)
        m.inc("lines_unterminated_total", report.unterminated)
        self.lines_dead_lettered += report.dead_lettered

    def count_delivery(self, outcome: Outcome) -> None:
        m = self.d.metrics
        m.inc("batches_total")
        if outcome.result is not None:
            m.inc("records_shipped_total", outcome.result.inserted + outcome.result.updated)
            m.inc("records_deduplicated_total", outcome.result.unchanged)

    # ------------------------------------------------------------ status

    def status_doc(self, *, running: bool) -> dict[str, object]:
        d = self.d
        sources: dict[str, dict[str, int]] = {}
        if d.scanner is not None and d.cursors is not None:
            sources = {name: {"files": files, "bytes_behind": lag}
                       for name, (files, lag) in d.scanner.per_source(d.cursors.get).items()}
        shipper = d.shipper
        return {
            "pid": os.getpid(),
            "running": running,
            "phase": d.phase.value,
            "started_at": round(self.started_at, 3),
            "updated_at": round(time.time(), 3),
            "watch_mode": self.watch_mode(),
            "inotify_watch_shortfall": self.shortfall(),
            "storage": d.settings.storage,
            "sink": {"name": d.settings.storage,
                     "ok": bool(shipper.sink_ok) if shipper else None,
                     "error": shipper.sink_error if shipper else None},
            "last_flush_at": d.last_flush_at,
            "state_ok": d.state_ok,
            "sources": sources,
            "counters": {
                "bytes_read": int(d.metrics.total("bytes_read_total")),
                "records_shipped": int(d.metrics.total("records_shipped_total")),
                "records_deduplicated": int(d.metrics.total("records_deduplicated_total")),
                "records_dead_lettered": int(d.metrics.total("records_dead_lettered_total")),
                "retries": int(d.metrics.total("retries_total")),
            },
        }

    def publish(self, now: float) -> None:
        """Health flags every round; status.json and systemd STATUS when something
        changed (at most twice a second), else every ``STATUS_REFRESH`` seconds."""
        d = self.d
        assert d.shipper is not None
        d.live.sink_ok, d.live.sink_error = d.shipper.sink_ok, d.shipper.sink_error
        d.live.state_ok = d.state_ok
        gap = now - self._last_publish
        key = (d.phase, d.last_flush_at, d.shipper.sink_ok, d.shipper.sink_error, d.state_ok,
               self.watch_mode())
        changed = key != self._published
        if gap < (0.5 if changed else STATUS_EVERY):
            return
        self._last_publish = now
        if d.scanner is not None:
            d.scanner.cool_down(now)
        if changed or now - self._last_write >= STATUS_REFRESH:
            self._published = key
            self._last_write = now
            self.write_status(running=True)
        if d.notifier.enabled:
            d.notifier.status(self.status_line())

    def write_status(self, *, running: bool) -> None:
        try:
            write_status(self.d.layout.status, self.status_doc(running=running))
        except OSError as exc:
            log.warning("status.write_failed", file=str(self.d.layout.status),
                        reason=exc.strerror or str(exc), stage="status")

    def status_line(self) -> str:
        d = self.d
        files = lag = 0
        if d.scanner is not None and d.cursors is not None:
            for n, behind in d.scanner.per_source(d.cursors.get).values():
                files, lag = files + n, lag + behind
        sink = "ok" if d.shipper is None or d.shipper.sink_ok else \
            f"failing ({d.shipper.sink_error or 'unknown'})"
        return (f"{d.phase.value}; {files} files, {lag} bytes behind; sink {sink}; "
                f"watch {self.watch_mode()}")


__all__ = ["Telemetry"]
