"""The prestop mark: when the platform began stopping the pod, for the drain budget.

A Kubernetes preStop hook runs before SIGTERM and its time counts against the
grace period (``terminationGracePeriodSeconds``); a hook that waits for the
agent to finish can leave the daemon far less than ``RELAYBURN_DRAIN_TIMEOUT``
before SIGKILL. ``relayburnd ctl prestop`` records the wall-clock moment T0 in
``RELAYBURN_HOME/prestop.json``; at SIGTERM the daemon drains for at most
``T0 + RELAYBURN_GRACE_PERIOD - now - SAFETY`` seconds, so it commits and
exits on its own instead of being killed mid-flush. The mark is removed when
a daemon starts: it belongs to one shutdown.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from .home import atomic_write_bytes

SAFETY = 2.0  # seconds kept between the end of the drain and SIGKILL
MIN_BUDGET = 1.0  # a drain always gets at least this long to commit what was acknowledged


class _Mark(msgspec.Struct):
    at: float


def mark(path: Path, now: float | None = None) -> float:
    """Record that stopping began (now); returns the recorded time."""
    at = time.time() if now is None else now
    atomic_write_bytes(path, msgspec.json.encode(_Mark(at=at)))
    return at


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)


def marked_at(path: Path) -> float | None:
    """T0 from the mark, None when there is none or it cannot be read."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Mark).at
    except (OSError, msgspec.DecodeError):
        return None


def drain_budget(
    path: Path, grace_period: float | None, drain_timeout: float, now: float | None = None
) -> tuple[float, str]:
    """Seconds the drain may take, and why (for the log line)."""
    t0 = marked_at(path)
    if t0 is None:
        return drain_timeout, "drain timeout"
    if grace_period is None:
        return drain_timeout, "prestop mark without RELAYBURN_GRACE_PERIOD"
    now = time.time() if now is None else now
    if now - t0 > grace_period:
        # the platform would have killed the pod by now: the mark is from a call that
        # did not lead to this shutdown, and must not cut its drain short
        return drain_timeout, "stale prestop mark ignored"
    left = t0 + grace_period - now - SAFETY
    if left >= drain_timeout:
        return drain_timeout, "drain timeout"
    return max(MIN_BUDGET, left), "grace period left after prestop"
