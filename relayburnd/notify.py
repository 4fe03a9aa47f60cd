"""The systemd notify protocol (sd_notify(3)) over a plain datagram socket.

Why not a library: the protocol is one ``sendto`` of ``KEY=value`` lines to
the socket named in ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace). Without ``NOTIFY_SOCKET`` every call is a no-op, so the daemon
calls these unconditionally.

What the daemon sends, and when (reliability.md 1d):

* ``READY=1`` once state is loaded (not once the sink is up: a sink outage
  must not keep the unit "activating");
* ``WATCHDOG=1`` every half of ``WATCHDOG_USEC``, from the main loop only,
  so a hung loop stops the pings and systemd restarts the service;
* ``STATUS=...`` when the one-line summary changes;
* ``STOPPING=1`` on the first SIGTERM/SIGINT, and ``EXTEND_TIMEOUT_USEC``
  while a drain is still getting batches acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends notifications to systemd when it asked for them."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        if addr.startswith("@"):
            self._addr = "\0" + addr[1:]
        elif addr.startswith("/"):
            self._addr = addr
        self._sock: socket.socket | None = None
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2_000_000
        self._last_ping = 0.0
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines; False when not under systemd or the send failed."""
        if self._addr is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto("\n".join(fields).encode(), self._addr)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")
        self._last_status = status

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")
        self._last_status = status

    def extend_timeout(self, seconds: float) -> None:
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def ping_if_due(self, now: float) -> None:
        """WATCHDOG=1 when half the watchdog period has passed (``now`` is monotonic)."""
        if self.watchdog_interval is None or now - self._last_ping < self.watchdog_interval:
            return
        self._last_ping = now
        self.send("WATCHDOG=1")

    def next_ping_in(self, now: float) -> float | None:
        if self.watchdog_interval is None:
            return None
        return max(0.0, self._last_ping + self.watchdog_interval - now)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


__all__ = ["Notifier"]
