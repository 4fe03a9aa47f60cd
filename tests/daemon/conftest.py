"""The daemon tests drive ``relayburnd run`` as a real subprocess (see ``harness.py``).

Slow tests (SIGKILL loops, minute-long outages) run in CI, with
``RELAYBURN_SLOW_TESTS=1``, or when selected with ``-m slow``; the default run
stays quick.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from harness import LIVE

# Read at import: the suite-wide autouse fixture clears RELAYBURN_* for each test.
RUN_SLOW = bool(os.environ.get("CI")) or bool(os.environ.get("RELAYBURN_SLOW_TESTS"))




@pytest.fixture(autouse=True)
def _no_leftover_daemons() -> Iterator[None]:
    """A test that fails half-way must not leave a daemon running."""
    yield
    while LIVE:
        daemon = LIVE.pop()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)
