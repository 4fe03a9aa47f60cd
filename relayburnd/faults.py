"""Named fault points, used by tests to crash or fail at an exact step.

``RELAYBURN_FAULTS="after_sink_commit=kill@3;state_write=enospc"`` makes the
third ``hit("after_sink_commit")`` SIGKILL the process and every
``hit("state_write")`` raise ENOSPC. Unset in production: ``hit`` is then a
dictionary lookup that finds nothing.

Actions: ``kill`` (SIGKILL self), ``enospc`` / ``eio`` (raise OSError),
``sleep:<seconds>``. ``@N`` fires on the Nth hit only, ``@N+`` from the Nth on.
"""

from __future__ import annotations

import errno
import os
import time
from collections import Counter

_plan: dict[str, tuple[str, int, bool]] | None = None
_hits: Counter[str] = Counter()


def _load() -> dict[str, tuple[str, int, bool]]:
    plan: dict[str, tuple[str, int, bool]] = {}
    for item in os.environ.get("RELAYBURN_FAULTS", "").split(";"):
        if "=" not in item:
            continue
        name, action = (s.strip() for s in item.split("=", 1))
        nth, onward = 0, False
        if "@" in action:
            action, at = action.split("@", 1)
            onward = at.endswith("+")
            nth = int(at.rstrip("+"))
        plan[name] = (action, nth, onward)
    return plan


def reset() -> None:
    """Re-read RELAYBURN_FAULTS (tests change it between runs in one process)."""
    global _plan
    _plan = None
    _hits.clear()


def hit(name: str) -> None:
    global _plan
    if _plan is None:
        _plan = _load()
    if not _plan:
        return
    entry = _plan.get(name)
    if entry is None:
        return
    action, nth, onward = entry
    _hits[name] += 1
    count = _hits[name]
    if nth and (count < nth if onward else count != nth):
        return
    if action == "kill":
        import signal  # only here: its enums cost every start-up otherwise

        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, f"injected fault at {name}: no space left on device")
    elif action == "eio":
        raise OSError(errno.EIO, f"injected fault at {name}: input/output error")
    elif action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
