"""The long-running loop behind ``relayburnd run`` and ``relayburnd drain``.

Threads and what they own:

* the main loop (this module): signals, scanning (``scan.py``), reading and
  parsing into the open batch (``Pipeline.read_path``), sealing, committing
  cursors, ``cursors.json`` and ``status.json``, systemd notifications;
* the shipper (``shipper.py``): delivers one sealed unit at a time;
* watchdog's threads (``watch.py``) only mark paths dirty;
* the health server (``health.py``) only reads.

Commit order (never lose, never double): a unit is sealed with the cursors
of the bytes its records came from; after the sink acknowledged it, the main
loop commits those cursors (in sealing order); ``cursors.json`` is written
from committed cursors only, at most about once a second and always at exit.
A crash anywhere re-reads at most the unacknowledged units, and record ids
make that re-delivery a no-op. While one unit is in flight, the loop reads
at most one more batch, then stops reading: the files are the buffer.

Batches close when full (records or bytes) or ``flush_interval`` after their
first record. A Claude response still streaming is held by the parser; it is
committed when its stream moves on, or once the file has been idle for
``idle_grace`` (the read is then ``final``), or at the final pass.

Shutdown (first SIGTERM/SIGINT): the drain budget is ``drain_timeout``, or
less when ``relayburnd ctl prestop`` marked the start of the pod's shutdown
(``prestop.py``). Keep tailing while files are still being written, until
they are quiet for ``QUIET`` seconds or ``LINGER_SHARE`` of the drain budget
passed; then a final pass over every file (``final``, and
unterminated last lines consumed); then flush, retrying until the drain
deadline. A second signal exits at once after committing what was
acknowledged. The exit code is 0 when nothing read was left undelivered,
else 75 with the bytes not delivered per file.
"""

from __future__ import annotations

import enum
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from . import faults, prestop
from .checkpoint import Checkpointer
from .config import Settings
from .cursors import CursorStore
from .delivery import DeadLetters, Deliverer
from .errors import SinkError, SinkUnavailable
from .health import HealthServer, Liveness
from .home import HomeLayout, InstanceLock
from .logging import get_logger
from .metrics import Metrics
from .notify import Notifier
from .pipeline import SOURCE_NAMES, PassReport, Pipeline, Unit
from .scan import Order, Scanner
from .shipper import Aborted, Outcome, Shipper
from .sources import load_source, roots_for, source_kind
from .telemetry import Telemetry
from .watch import Hints

log = get_logger("daemon")

POLL_ACTIVE = 0.25
POLL_IDLE = 2.0
# Under steady writes, reads are at least this far apart: each read has a fixed cost
# (a scan tick, a parse call, a batch), so fewer, larger reads of the same bytes cost
# less (measured: steady CPU at 20 exchanges/s 21-23 % -> 13-15 % of a core against
# 50 ms). A first append after a quiet spell is read at once.
COALESCE = 0.25
QUIET = 2.0
LINGER_SHARE = 0.4
PRUNE_CHECK_INTERVAL = 60.0  # seconds between looks at the content retention schedule
PRUNE_FIRST_CHECK = 5.0  # let the first pass start before any maintenance
SINK_OPEN_RETRY = 5.0
# Reads are cut at batch limits only between chunks: smaller chunks than the
# one-shot ingest keep batches near their limits, and still read a line of
# tens of megabytes in a few dozen steps.
CHUNK_BYTES = 1024 * 1024


class Phase(enum.Enum):
    RUN = "running"
    LINGER = "lingering"
    FINAL = "final pass"
    FLUSH = "flushing"
    DONE = "done"


@dataclass
class Result:
    """How the daemon ended: exit code and, when not 0, the bytes left per file."""

    code: int
    undelivered: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    report: PassReport = field(default_factory=PassReport)


class Daemon:
    """One instance per RELAYBURN_HOME (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        sources: tuple[str, ...] = SOURCE_NAMES,
        drain_timeout: float | None = None,
        oneshot: bool = False,
    ) -> None:
        self.settings = settings
        self.requested_sources = sources
        self.oneshot = oneshot
        self.drain_timeout = drain_timeout if drain_timeout is not None \
            else settings.drain_timeout
        self.layout = HomeLayout(settings.home)
        self.wake = threading.Event()
        self.live = Liveness()
        self.metrics = Metrics()
        self.notifier = Notifier()
        self.hints = Hints("poll" if oneshot else settings.watch, self.wake)
        self.report = PassReport()
        self.phase = Phase.RUN
        self._stop_requested = False
        self._hard = False
        self._reason = ""
        self._drain_deadline: float | None = None
        self._linger_until = 0.0
        self._linger_min = 0.0
        self._fill_started: float | None = None
        self._interval = POLL_ACTIVE
        self._last_read = 0.0
        self._quarantined = False
        self._gc_sweep = float("-inf")
        self._final: deque[Order] = deque()
        self._failed: BaseException | None = None
        self._next_prune_check = time.monotonic() + PRUNE_FIRST_CHECK
        self._prune_thread: threading.Thread | None = None
        self.last_flush_at: float | None = None
        self.state_ok = True
        self.pipeline: Pipeline | None = None
        self.shipper: Shipper | None = None
        self.scanner: Scanner | None = None
        self.cursors: CursorStore | None = None
        self.checkpointer: Checkpointer | None = None
        self.telemetry: Telemetry | None = None
        self._sink: Any = None
        self._health: HealthServer | None = None

    # ------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_requested or self.oneshot:
            self._hard = True
            if self.shipper is not None:
                self.shipper.abort()
        self._stop_requested = True
        self.wake.set()

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    # ------------------------------------------------------------ run

    def run(self) -> Result:
        """Run until stopped; returns how it ended. Raises StateError when another
        instance holds RELAYBURN_HOME, ConfigError for unusable settings."""
        self.layout.ensure()
        lock = InstanceLock(self.layout.instance_lock).acquire()
        try:
            if not self.oneshot:
                prestop.clear(self.layout.prestop)  # a mark from an earlier shutdown
            self._install_signals()
            if self.settings.metrics_addr:
                self._health = HealthServer.start(
                    self.settings.metrics_addr, self.metrics, self.live,
                    on_prestop=None if self.oneshot else self._mark_prestop)
            self.hints.start()
            self.cursors = CursorStore(self.layout.cursors).load()
            self.checkpointer = Checkpointer(self.cursors, self.layout.cursors, self.metrics)
            if self.cursors.quarantined:
                # degraded until cursors.json has been written again
                self.metrics.inc("state_quarantined_total", len(self.cursors.quarantined))
                self._quarantined = True
                self.state_ok = self.live.state_ok = False
            self.live.ready = True
            self.notifier.ready("state loaded")
            if not self._open_sink():
                return self._finish()
            self._build()
            log.info("daemon.ready", sources=list(self._names()), watch=self.hints.requested,
                     storage=self.settings.storage, home=str(self.settings.home))
            self._loop()
            return self._finish()
        finally:
            self._shutdown_threads()
            lock.release()

    def _mark_prestop(self) -> None:
        prestop.mark(self.layout.prestop)

    def _names(self) -> tuple[str, ...]:
        return self.pipeline.source_names if self.pipeline else self.requested_sources

    def _open_sink(self) -> bool:
        """Open the adapter, retrying while it is unavailable (interruptible)."""
        from .storage import open_adapter

        while True:
            try:
                self._sink = open_adapter(self.settings)
                return True
            except SinkError as exc:
                self.live.sink_ok, self.live.sink_error = False, type(exc).__name__
                log.error("sink.open_failed", reason=str(exc), error_type=type(exc).__name__,
                          retry_in_s=SINK_OPEN_RETRY, stage="startup")
            end = time.monotonic() + SINK_OPEN_RETRY
            while time.monotonic() < end:
                self.live.beat()
                self.notifier.ping_if_due(time.monotonic())
                if self._stop_requested:
                    return False
                self.wake.wait(0.2)
                self.wake.clear()

    def _build(self) -> None:
        assert self.cursors is not None
        names = []
        for name in self.requested_sources:
            try:
                load_source(name)
            except ModuleNotFoundError as exc:
                log.warning("source.unavailable", source=name, reason=f"{exc.name} missing",
                            stage="startup")
                continue
            names.append(name)
        deliverer = Deliverer(self._sink, DeadLetters(self.layout.deadletter))
        self.pipeline = Pipeline(self.settings, deliverer, self.cursors, sources=tuple(names),
                                 chunk_bytes=min(CHUNK_BYTES, self.settings.batch_max_bytes))
        self.shipper = Shipper(deliverer, self.wake)
        if self._hard:
            self.shipper.abort()
        self.scanner = Scanner(
            {n: self.pipeline.source(n) for n in names},
            {n: roots_for(self.settings, n) for n in names},
            {n: source_kind(n) for n in names},
            self.hints, self.pipeline.position, idle_grace=self.settings.idle_grace,
        )
        self.telemetry = Telemetry(self)
        now = time.monotonic()
        self.scanner.sweep(now)
        if self.oneshot:
            self._begin_drain(now, linger=False)

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            self.live.beat(now)
            faults.hit("daemon_loop")
            self._collect()
            if self._hard:
                self._reason = self._reason or "second signal"
                return
            self._step_phase(now)
            if self.phase is Phase.DONE:
                return
            if self.phase in (Phase.RUN, Phase.LINGER, Phase.FINAL):
                self._read(now)
            self._ship(now)
            self._save(now)
            if self.phase is Phase.RUN:
                self._prune_content(now)
            assert self.telemetry is not None
            self.telemetry.publish(now)
            self.notifier.ping_if_due(now)
            self._wait()

    def _prune_content(self, now: float) -> None:
        """Opportunistic content retention, off the loop's thread (retention.maybe_prune
        itself runs at most hourly and never raises)."""
        if now < self._next_prune_check or (
            self._prune_thread is not None and self._prune_thread.is_alive()
        ):
            return
        self._next_prune_check = now + PRUNE_CHECK_INTERVAL
        if self.settings.content_ttl_days is None:
            return
        from .retention import maybe_prune

        self._prune_thread = threading.Thread(
            target=maybe_prune, args=(self.settings,), name="relayburnd-prune", daemon=True
        )
        self._prune_thread.start()

    def _begin_drain(self, now: float, *, linger: bool) -> None:
        assert self.shipper is not None
        budget, why = self.drain_timeout, "drain timeout"
        if not self.oneshot:
            budget, why = prestop.drain_budget(
                self.layout.prestop, self.settings.grace_period, self.drain_timeout)
        self._drain_deadline = now + budget
        self.shipper.set_deadline(self._drain_deadline)
        self._linger_until = now + LINGER_SHARE * budget
        # look at least once more (events in flight, files not stat'ed yet) before
        # deciding that the agent has stopped writing
        self._linger_min = now + POLL_ACTIVE
        self.phase = Phase.LINGER if linger else Phase.RUN
        if not linger:
            self._start_final(now)
        self.notifier.stopping(f"draining (deadline {budget:.3g}s)")
        log.info("daemon.draining", deadline_s=round(budget, 3), budget_from=why,
                 linger=linger)

    def _start_final(self, now: float) -> None:
        assert self.scanner is not None and self.pipeline is not None
        self.phase = Phase.FINAL
        self._final = deque(self.scanner.final_orders(now))
        if any(source_kind(n) == "poll" for n in self.pipeline.source_names):
            report = PassReport()
            self._poll_sources(report)
            self._account(report)
        log.info("daemon.final_pass", files=len(self._final))

    def _step_phase(self, now: float) -> None:
        assert self.pipeline is not None and self.shipper is not None
        if self._failed is not None:
            self.phase = Phase.DONE
            return
        if self.phase is Phase.RUN and self._stop_requested:
            self._begin_drain(now, linger=True)
        if self._drain_deadline is not None and now >= self._drain_deadline:
            self._reason = "drain deadline passed"
            self.phase = Phase.DONE
            return
        if self.phase is Phase.LINGER and now >= self._linger_min and (
                self.scanner is None or self.scanner.quiet_for(now) >= QUIET
                or now >= self._linger_until):
            self._start_final(now)
        if self.phase is Phase.FINAL and not self._final:
            self.phase = Phase.FLUSH
        if self.phase is Phase.FLUSH and not self.pipeline.has_unflushed() \
                and not self.shipper.busy and not self.pipeline.unacknowledged():
            self.phase = Phase.DONE

    def _read(self, now: float) -> None:
        assert self.pipeline is not None and self.scanner is not None
        report = PassReport()
        if self.phase is Phase.FINAL:
            while self._final and not self._hard:
                order = self._final[0]
                if not self._read_order(order, report, now):
                    break
                self._final.popleft()
        else:
            dirty, overflow = self.hints.take()
            for order in self.scanner.tick(now, dirty, overflow):
                if self._hard or self.pipeline.batch_full():
                    self.scanner.done(order, False, now)
                    continue
                self._read_order(order, report, now)
            if self.scanner.poll_due(now) and not self.pipeline.batch_full():
                self._poll_sources(report)
            if self.scanner.last_sweep != self._gc_sweep:
                self._gc_sweep = self.scanner.last_sweep
                self._forget_gone()
        self._last_read = now
        if report.bytes_read or report.parsed:
            self._interval = POLL_ACTIVE
        else:
            # recently changed files keep the loop ticking; where inotify watches them,
            # a write wakes the loop at once and the tick is only the safety poll
            hot = self.scanner.tick_within(now)
            self._interval = (min(POLL_IDLE, self._interval * 2) if hot is None
                              else max(POLL_ACTIVE, hot))
        if self.pipeline.has_unflushed() and self._fill_started is None:
            self._fill_started = now
        self._account(report)

    def _account(self, report: PassReport) -> None:
        self.report.merge(report)
        assert self.telemetry is not None
        self.telemetry.count_pass(report)

    def _forget_gone(self) -> None:
        """Mark cursors of vanished files (dropped by the CursorStore after its TTL)."""
        assert self.scanner is not None and self.cursors is not None
        self.cursors.mark_seen(set(self.scanner.files))

    def _read_order(self, order: Order, report: PassReport, now: float) -> bool:
        assert self.pipeline is not None and self.scanner is not None
        t = order.tracked
        try:
            completed = self.pipeline.read_path(
                t.source, t.path, t.root, report, fh=order.fh, final=order.final,
                partial_tail=order.partial_tail)
        except Exception as exc:
            # A parser bug must not stop every other file: this one keeps its cursor
            # (nothing is lost) and is tried again when it changes or after a restart.
            cur = self.pipeline.position(t.key)
            log.error("file.parse_failed", file=t.key, offset=cur.offset if cur else 0,
                      error_type=type(exc).__name__, where=_where(exc), stage="parse")
            self.metrics.inc("parse_errors_total", source=t.source)
            completed = True
        self.scanner.done(order, completed, now)
        return completed

    def _poll_sources(self, report: PassReport) -> None:
        assert self.pipeline is not None
        try:
            self.pipeline.poll_sources(report)
        except Exception as exc:  # as above: the poll state stays where it was
            log.error("source.poll_failed", error_type=type(exc).__name__, where=_where(exc),
                      stage="poll")
            self.metrics.inc("parse_errors_total", source="poll")

    def _ship(self, now: float) -> None:
        assert self.pipeline is not None and self.shipper is not None
        if self.shipper.busy or self._failed is not None or self._hard:
            return
        if not self.pipeline.has_unflushed():
            self._fill_started = None
            return
        started = self._fill_started if self._fill_started is not None else now
        due = (self.pipeline.batch_full() or self.phase in (Phase.FINAL, Phase.FLUSH)
               or now - started >= self.settings.flush_interval)
        if not due:
            return
        unit = self.pipeline.seal()
        self._fill_started = None
        if unit is not None:
            self.shipper.submit(unit)

    def _collect(self) -> None:
        """Commit the cursors of every unit the sink acknowledged."""
        if self.shipper is None or self.pipeline is None:
            return
        for outcome in self.shipper.take_done():
            if outcome.delivered:
                self._acknowledged(outcome)
            elif isinstance(outcome.error, (SinkUnavailable, Aborted)):
                self._failed = outcome.error
                log.error("daemon.undelivered", reason=str(outcome.error),
                          records=outcome.unit.records, error_type=type(outcome.error).__name__,
                          stage="deliver")
            else:
                assert outcome.error is not None
                self._save(time.monotonic(), force=True)
                raise outcome.error

    def _acknowledged(self, outcome: Outcome) -> None:
        assert self.pipeline is not None and self.telemetry is not None
        unit: Unit = outcome.unit
        self.pipeline.commit(unit)
        if unit.records:
            self.last_flush_at = outcome.finished_at
            self.telemetry.count_delivery(outcome)
            self.report.batches += 1
            if outcome.result is not None:
                self.report.written.add(outcome.result)
            log.info("batch.delivered", records=unit.records, files=len(unit.files),
                     seconds=round(outcome.seconds, 3),
                     inserted=outcome.result.inserted if outcome.result else 0,
                     unchanged=outcome.result.unchanged if outcome.result else 0)
        if self._drain_deadline is not None:
            left = self._drain_deadline - time.monotonic()
            if left > 0:
                self.notifier.extend_timeout(left + 5.0)

    def _save(self, now: float, *, force: bool = False) -> None:
        if self.checkpointer is not None:
            if self.checkpointer.maybe_save(now, force=force):
                self._quarantined = False
            self.state_ok = self.checkpointer.ok and not self._quarantined

    def _wait(self) -> None:
        now = time.monotonic()
        timeout = self._interval
        if self.phase in (Phase.FINAL, Phase.FLUSH):
            timeout = min(timeout, 0.05)
        if self._fill_started is not None:
            timeout = min(timeout, max(0.0, self._fill_started
                                       + self.settings.flush_interval - now))
        if self._drain_deadline is not None:
            timeout = min(timeout, max(0.0, self._drain_deadline - now))
        ping = self.notifier.next_ping_in(now)
        if ping is not None:
            timeout = min(timeout, ping)
        if self.scanner is not None and self.phase is Phase.RUN:
            # a response held back until its file goes quiet is read when that is due,
            # not at the next slow tick (a read held up by a full batch retries no
            # faster than an active tick)
            due = self.scanner.revisit_within(time.time())
            if due is not None:
                timeout = min(timeout, max(POLL_ACTIVE, due))
        if self.wake.wait(timeout):
            self.wake.clear()
            pause = self._last_read + COALESCE - time.monotonic()
            if pause > 0 and not self._stop_requested:
                time.sleep(pause)

    # ------------------------------------------------------------ exit

    def _finish(self) -> Result:
        now = time.monotonic()
        if self.shipper is not None and self.pipeline is not None:
            try:
                self._collect()
            finally:
                if self.scanner is not None and not self._hard:
                    self._forget_gone()
                self._save(now, force=True)
        undelivered: dict[str, int] = {}
        if self.scanner is not None and self.cursors is not None:
            undelivered = self.scanner.behind(self.cursors.get)
        if self.scanner is not None:
            self.report.files_seen = len(self.scanner.files)
        code = 75 if undelivered else 0
        reason = self._reason or ("stopped" if self._stop_requested else "finished")
        if self._failed is not None:
            reason = str(self._failed)
        if self.telemetry is not None:
            self.telemetry.write_status(running=False)
        self.notifier.status(f"stopped: {reason}")
        log.info("daemon.stopped", code=code, reason=reason, files_behind=len(undelivered),
                 bytes_behind=sum(undelivered.values()))
        return Result(code, undelivered, reason, self.report)

    def _shutdown_threads(self) -> None:
        hard = self._hard
        if self.shipper is not None:
            if hard:
                self.shipper.abort()
            self.shipper.close()
        if self.scanner is not None:
            self.scanner.close()
        if not hard:
            self.hints.stop()
            if self._health is not None:
                self._health.stop()
        if self._sink is not None and (self.shipper is None or not self.shipper.busy):
            try:
                self._sink.close()
            except Exception as exc:  # closing must not hide the exit code
                log.warning("sink.close_failed", reason=str(exc), stage="shutdown")
        self.notifier.close()


def _where(exc: BaseException) -> str:
    """Where an exception was raised (module:line), without its message: messages of
    parser errors can quote log content, which never goes to a log."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{tb.tb_frame.f_globals.get('__name__', '?')}:{tb.tb_lineno}"


__all__ = ["Daemon", "Phase", "Result"]
