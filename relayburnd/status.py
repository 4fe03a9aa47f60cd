"""``status.json`` and the ``relayburnd status`` report.

The daemon writes a small, host-local ``status.json`` in RELAYBURN_HOME
every few seconds (never content: counts, times, the sink's health). It is
informational, so it is written with a plain temp-file rename, without the
fsync and fault points of the durable state files.

``relayburnd status`` must work whether or not the daemon runs, so it
computes files tracked and bytes behind itself, from ``cursors.json`` (read
only: it never repairs or moves state files) and the sources' discovery, and
takes the last flush time and sink health from ``status.json`` when present.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .config import Settings
from .cursors import merged_doc
from .home import HomeLayout
from .sources import load_source, roots_for, source_kind

STATUS_VERSION = 1
SOURCE_NAMES = ("claude", "codex", "opencode")


def write_status(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``status.json`` (temp file + rename; readers never see half a file)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # host-local, private
    with os.fdopen(fd, "wb") as fh:
        fh.write(msgspec.json.encode({"version": STATUS_VERSION, **doc}))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = msgspec.json.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def lock_holder(lock: Path) -> int | None:
    """The pid holding the ``flock`` on ``lock``, from /proc/locks (without taking it)."""
    try:
        st = lock.stat()
        with open("/proc/locks") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        dev_ino = parts[5].split(":")
        if len(dev_ino) != 3:
            continue
        try:
            major, minor, ino = int(dev_ino[0], 16), int(dev_ino[1], 16), int(dev_ino[2])
            pid = int(parts[4])
        except ValueError:
            continue
        if ino == st.st_ino and os.makedev(major, minor) == st.st_dev:
            return pid
    return None


@dataclass
class SourceStatus:
    name: str
    files: int = 0
    bytes_behind: int = 0
    available: bool = True
    note: str = ""


@dataclass
class StatusReport:
    sources: list[SourceStatus] = field(default_factory=list)
    daemon_pid: int | None = None
    daemon: dict[str, Any] | None = None
    cursors_readable: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "daemon_running": self.daemon_pid is not None,
            "daemon_pid": self.daemon_pid,
            "sources": {s.name: {"files": s.files, "bytes_behind": s.bytes_behind,
                                 "available": s.available} for s in self.sources},
            "last_flush_at": (self.daemon or {}).get("last_flush_at"),
            "sink": (self.daemon or {}).get("sink"),
            "watch_mode": (self.daemon or {}).get("watch_mode"),
            "status_updated_at": (self.daemon or {}).get("updated_at"),
            "cursors_readable": self.cursors_readable,
        }

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.daemon_pid is not None:
            mode = (self.daemon or {}).get("watch_mode") or "unknown"
            out.append(f"daemon: running (pid {self.daemon_pid}, watch mode {mode})")
        else:
            out.append("daemon: not running")
        for s in self.sources:
            if not s.available:
                out.append(f"{s.name}: not available ({s.note})")
                continue
            extra = f" ({s.note})" if s.note else ""
            out.append(f"{s.name}: {s.files} files tracked, {s.bytes_behind:,} bytes behind"
                       f"{extra}")
        doc = self.daemon or {}
        last = doc.get("last_flush_at")
        out.append("last flush: " + (_ago(last) if last else "never"))
        sink = doc.get("sink") or {}
        if sink:
            health = "ok" if sink.get("ok") else f"failing ({sink.get('error') or 'unknown'})"
            out.append(f"sink: {sink.get('name', '?')} {health}")
        else:
            out.append("sink: unknown (no daemon status yet)")
        if not self.cursors_readable:
            out.append("warning: cursors.json is unreadable; the daemon will quarantine it")
        return out


def _ago(ts: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return f"{stamp} ({max(0, int(time.time() - ts))}s ago)"


def _committed(cursors: dict[str, Any], key: str, ino: int) -> int:
    cur = cursors.get(key)
    if not isinstance(cur, dict) or cur.get("ino") != ino:
        return 0
    with contextlib.suppress(TypeError, ValueError):
        return int(cur.get("offset", 0))
    return 0


def build_report(settings: Settings, names: tuple[str, ...] = SOURCE_NAMES) -> StatusReport:
    """Per source files and bytes behind; daemon details from status.json."""
    layout = HomeLayout(settings.home)
    report = StatusReport()
    state = merged_doc(layout.cursors) if layout.cursors.exists() else {}
    if state is None:
        report.cursors_readable = False
        state = {}
    files = state.get("files") or {}
    for name in names:
        entry = SourceStatus(name)
        report.sources.append(entry)
        try:
            src = load_source(name)
        except ModuleNotFoundError as exc:
            entry.available, entry.note = False, f"module {exc.name} missing"
            continue
        if source_kind(name) != "tail":
            polls = state.get("polls") or {}
            entry.note = "polled" + ("" if name in polls else ", never read")
            continue
        for path, _root in src.discover(roots_for(settings, name)):
            try:
                st = path.stat()
            except OSError:
                continue
            entry.files += 1
            entry.bytes_behind += max(0, st.st_size - _committed(files, str(path), st.st_ino))
    report.daemon_pid = lock_holder(layout.instance_lock)
    doc = read_json(layout.status)
    report.daemon = doc
    return report


__all__ = ["StatusReport", "build_report", "lock_holder", "read_json", "write_status"]
