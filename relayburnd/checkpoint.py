"""Saving committed cursors (``cursors.py``): coalesced, retried, never fatal.

Cursors advance in memory as the sink acknowledges batches; they are saved
at most about once a second (a crash re-sends at most that second, which
record ids absorb) and always at exit. A save usually appends the changed
cursors to the journal, but now and then it rewrites ``cursors.json``, which
lists every file ever read with its parser state (a few KB for a long
session): on a host with thousands of sessions that write can take tens of
milliseconds, so the gap after a write is stretched to ``1 / SAVE_SHARE``
times its duration, and checkpointing never takes more than about 1 % of the
time (and never waits more than ``BACKOFF_CAP``). A failed save (disk full,
I/O error) leaves the saved state as it was, is retried with a doubling gap
up to ``BACKOFF_CAP``, and marks the state unhealthy until a save succeeds;
shipping goes on meanwhile.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import faults
from .cursors import CursorStore
from .logging import get_logger
from .metrics import Metrics

log = get_logger("checkpoint")

SAVE_EVERY = 1.0
SAVE_SHARE = 0.01  # of the time, at most, spent writing the file
BACKOFF_CAP = 30.0


class Checkpointer:
    """Saves a ``CursorStore`` on the schedule described above."""

    def __init__(self, cursors: CursorStore, path: Path, metrics: Metrics) -> None:
        self.cursors = cursors
        self.path = path
        self.metrics = metrics
        self.ok = True
        self._last = 0.0
        self._gap = SAVE_EVERY
        self.last_write_seconds = 0.0

    def maybe_save(self, now: float, *, force: bool = False) -> bool:
        """Write if cursors changed and the gap passed (or ``force``); ``now`` is monotonic.
        Returns whether the file was written."""
        if not self.cursors.dirty or (not force and now - self._last < self._gap):
            return False
        self._last = now
        started = time.monotonic()
        try:
            faults.hit("before_checkpoint")
            self.cursors.save()
        except OSError as exc:
            self.metrics.inc("checkpoint_write_errors_total")
            self._gap = min(BACKOFF_CAP, self._gap * 2)
            self.ok = False
            log.error("checkpoint.write_failed", file=str(self.path),
                      reason=exc.strerror or str(exc), retry_in_s=self._gap,
                      error_type="os_error", stage="checkpoint")
            return False
        self.metrics.inc("checkpoint_writes_total")
        self.last_write_seconds = time.monotonic() - started
        self._gap = min(BACKOFF_CAP, max(SAVE_EVERY, self.last_write_seconds / SAVE_SHARE))
        self.ok = True
        return True

    @property
    def next_save_at(self) -> float:
        """The monotonic time from which a change is written again (without ``force``)."""
        return self._last + self._gap


__all__ = ["Checkpointer"]
