"""Delivering sealed units from a thread of their own: one in flight, in order.

Why a thread: a sink call can block for tens of seconds (a lock wait, a
request timeout) and an outage lasts as long as it lasts. The main loop must
keep its heartbeat (``/livez``, the systemd watchdog), keep answering
signals, and keep reading up to one more batch meanwhile. So the main loop
seals a unit and hands it over; this thread runs the ``Deliverer`` policy
and hands back an outcome; the main loop commits cursors. Nothing else is
shared: the unit is not touched by the main loop while it is in flight.

Retry timing is the Deliverer's (full-jitter backoff, no attempt limit); the
sleep between attempts is this module's, so that it can be cut short:

* a drain deadline set after the delivery started (first SIGTERM) ends the
  retries with ``SinkUnavailable`` once it passes;
* a hard stop (second signal) ends them with ``Aborted`` at once.

``SinkMisconfigured`` (credentials, settings) is retried every
``MISCONFIGURED_RETRY`` seconds, and once more as soon as a drain begins,
with the cursors held; the sink is reported unhealthy until a write succeeds.

After a burst (``RELEASE_AFTER`` records, a backlog) followed by ``RELEASE_QUIET``
seconds without a unit, this thread lets the sink drop what it kept to write
the burst quickly (the file store's in-memory index copy and page cache) and
hands free memory back to the system: otherwise the daemon would keep the
backlog's high-water mark for as long as it runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .delivery import Deliverer
from .errors import SinkMisconfigured, SinkUnavailable
from .logging import get_logger
from .memory import release_free_memory
from .pipeline import Unit
from .records import WriteResult

log = get_logger("shipper")

MISCONFIGURED_RETRY = 60.0
DRAINING_RETRY = 1.0
_SLICE = 0.1
RELEASE_AFTER = 20_000  # records delivered since the last release
RELEASE_QUIET = 5.0  # seconds without a unit after them


class Aborted(Exception):
    """The daemon is exiting now; the unit stays unacknowledged."""


@dataclass
class Outcome:
    """What became of one unit."""

    unit: Unit
    result: WriteResult | None = None
    error: BaseException | None = None
    seconds: float = 0.0
    finished_at: float = field(default_factory=time.time)

    @property
    def delivered(self) -> bool:
        return self.error is None


class Shipper:
    """Runs deliveries on a background thread (see the module docstring)."""

    def __init__(self, deliverer: Deliverer, wake: threading.Event) -> None:
        self.deliverer = deliverer
        deliverer.sleep = self._sleep
        self._wake = wake
        self._cv = threading.Condition()
        self._unit: Unit | None = None
        self._done: list[Outcome] = []
        self._deadline: float | None = None
        self._abort = False
        self._closing = False
        self._retry_now = False
        self.sink_ok = True
        self.sink_error: str | None = None
        self.misconfigured = 0
        self._seen_errors: dict[str, int] = {}
        # when the oldest unit not yet collected by the main loop was handed over
        self.inflight_since: float | None = None  # monotonic
        self._thread = threading.Thread(target=self._run, name="relayburnd-shipper", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ main-loop side

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._unit is not None

    def submit(self, unit: Unit) -> None:
        with self._cv:
            if self._unit is not None:
                raise RuntimeError("one unit in flight at a time")
            self._unit = unit
            if self.inflight_since is None:
                self.inflight_since = time.monotonic()
            self._cv.notify_all()

    def take_done(self) -> list[Outcome]:
        with self._cv:
            done, self._done = self._done, []
            if self._unit is None:
                self.inflight_since = None  # acknowledged, and now seen by the main loop
            return done

    def set_deadline(self, deadline: float) -> None:
        """Bound the retries of the unit in flight and of every later one (monotonic).

        A slow wait after ``SinkMisconfigured`` ends at once: the drain is the last
        chance, and the settings may have been fixed meanwhile.
        """
        with self._cv:
            self._deadline = deadline
            self._retry_now = True
            self._cv.notify_all()

    def abort(self) -> None:
        """Stop retrying now (a hard stop); the unit in flight is abandoned."""
        with self._cv:
            self._abort = True
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()

    # ------------------------------------------------------------ thread side

    def _run(self) -> None:
        burst = 0  # records delivered since memory was last released
        while True:
            with self._cv:
                if burst >= RELEASE_AFTER:
                    self._cv.wait_for(self._woken, RELEASE_QUIET)
                quiet = burst >= RELEASE_AFTER and not self._woken()
                if not quiet:
                    self._cv.wait_for(self._woken)
                unit = self._unit
            if quiet:
                if self._release(burst):
                    burst = 0
                continue
            if unit is None:  # closing
                return
            started = time.monotonic()
            outcome = self._deliver(unit)
            outcome.seconds = time.monotonic() - started
            if outcome.delivered:
                burst += len(unit.batch)
            with self._cv:
                self._unit = None
                self._done.append(outcome)
            self._wake.set()

    def _woken(self) -> bool:
        """A unit to deliver, or closing (call with ``_cv`` held)."""
        return self._unit is not None or self._closing

    def _release(self, burst: int) -> bool:
        """The sink's caches after a burst, then free memory (module docstring)."""
        release = getattr(self.deliverer.sink, "release_memory", None)
        released = release() is not False if release is not None else True
        trimmed = release_free_memory()
        log.info("memory.released", records=burst, sink=released, trimmed=trimmed,
                 stage="idle")
        return released

    def _deliver(self, unit: Unit) -> Outcome:
        while True:
            try:
                with self._cv:
                    deadline = self._deadline
                result = self.deliverer.deliver(unit.batch, unit.origins, deadline=deadline)
                self.sink_ok, self.sink_error = True, None
                return Outcome(unit, result=result)
            except SinkMisconfigured as exc:
                self.misconfigured += 1
                self.sink_ok, self.sink_error = False, type(exc).__name__
                self._wake.set()  # let health reflect it now
                log.error("sink.misconfigured", reason=str(exc), error_type=type(exc).__name__,
                          retry_in_s=MISCONFIGURED_RETRY, records=len(unit.batch),
                          stage="deliver")
            except (SinkUnavailable, Aborted) as exc:
                self.sink_ok = False
                return Outcome(unit, error=exc)
            except Exception as exc:  # a bug in an adapter: surfaced by the main loop
                log.exception("sink.unexpected_error", error_type=type(exc).__name__,
                              stage="deliver")
                return Outcome(unit, error=exc)
            with self._cv:
                wait = MISCONFIGURED_RETRY if self._deadline is None else DRAINING_RETRY
            try:
                self._sleep(wait, interruptible=True)
            except (SinkUnavailable, Aborted) as exc:
                return Outcome(unit, error=exc)

    def _note_retry(self) -> None:
        errors = dict(self.deliverer.stats.errors_by_class)
        for name, count in errors.items():
            if count > self._seen_errors.get(name, 0):
                self.sink_error = name
        self._seen_errors = errors
        if self.sink_ok:
            self.sink_ok = False
            self._wake.set()

    def _sleep(self, seconds: float, *, interruptible: bool = False) -> None:
        """The wait between attempts; ends early at the deadline or on a hard stop
        (and, if ``interruptible``, when a drain begins)."""
        self._note_retry()
        end = time.monotonic() + seconds
        with self._cv:
            while True:
                if self._abort:
                    raise Aborted("exiting: delivery abandoned")
                if interruptible and self._retry_now:
                    self._retry_now = False
                    return
                now = time.monotonic()
                if self._deadline is not None and now >= self._deadline:
                    raise SinkUnavailable("drain deadline reached while the sink was unavailable")
                if now >= end:
                    return
                limit = end if self._deadline is None else min(end, self._deadline)
                self._cv.wait(min(_SLICE, max(0.0, limit - now)))


__all__ = ["MISCONFIGURED_RETRY", "Aborted", "Outcome", "Shipper"]
