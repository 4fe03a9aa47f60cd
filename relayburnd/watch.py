"""inotify as a latency hint: events mark paths dirty and wake the main loop.

Polling (``scan.py``) is what makes the daemon correct; this module only
makes it fast. Events are coalesced into a set of paths, and nothing is read
from the event handler, which runs on watchdog's thread.

Why the coverage check: watchdog's recursive inotify observer swallows
``ENOSPC`` for subdirectories (measured here: with ``max_user_watches`` below
the directory count, ``start()`` returns normally and events below the
unwatched directories are silently missed). So after every change to the
watches, the kernel's own list (``/proc/self/fdinfo`` of the inotify
descriptor: one ``inotify wd:`` line per watch with the directory's device
and inode) is compared with the directories that should be watched; the
scanner polls the files of every directory that is not covered.

Roots that do not exist yet are watched through their nearest existing
parent, non-recursively, until they appear.

Modes (``RELAYBURN_WATCH``): ``auto`` uses inotify and falls back to polling
when it cannot be set up (ENOSPC, EMFILE, no inotify); ``inotify`` makes that
failure a startup error; ``poll`` never uses inotify.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from . import faults
from .errors import ConfigError
from .logging import get_logger

log = get_logger("watch")

# Only what changes content or the tree: opening and reading a file (which the
# daemon itself does) must not generate events, or every read would wake it.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileModifiedEvent, FileCreatedEvent, FileMovedEvent, FileDeletedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]
MAX_DIRTY = 100_000

DevIno = tuple[int, int]


def _watched_inodes() -> set[DevIno]:
    """(device, inode) of every directory an inotify descriptor of this process watches."""
    out: set[DevIno] = set()
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.startswith("inotify wd:"):
                continue
            fields = dict(part.split(":", 1) for part in line.split()[1:] if ":" in part)
            try:
                ino = int(fields["ino"], 16)
                sdev = int(fields["sdev"], 16)
            except (KeyError, ValueError):
                continue
            # the kernel prints its internal dev_t (major << 20 | minor)
            out.add((os.makedev(sdev >> 20, sdev & 0xFFFFF), ino))
    return out


# Filesystems whose changes made elsewhere (another host, the hypervisor, a
# FUSE daemon) produce no inotify events: their directories are polled.
_NO_EVENTS_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "virtiofs", "ceph", "glusterfs",
    "afs", "lustre", "gpfs", "beegfs", "vboxsf", "vmhgfs",
})


def fs_type(path: Path) -> str | None:
    """The filesystem type of the mount holding ``path`` (from /proc/self/mountinfo)."""
    try:
        real = os.path.realpath(path)
        with open("/proc/self/mountinfo") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    best, best_type = "", None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, right.split()[0]
    return best_type


def events_unreliable(path: Path) -> str | None:
    """The filesystem type when inotify cannot be trusted below ``path``, else None."""
    kind = fs_type(path)
    if kind is not None and (kind in _NO_EVENTS_FS or kind.startswith("fuse")):
        return kind
    return None


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that is a directory."""
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    return Path("/")


@dataclass
class _Watch:
    handle: Any  # watchdog ObservedWatch
    recursive: bool
    ident: DevIno


class _Handler(FileSystemEventHandler):
    def __init__(self, hints: Hints) -> None:
        self._hints = hints

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._hints.mark(str(event.src_path), str(getattr(event, "dest_path", "") or ""))


class Hints:
    """Keeps inotify watches on the wanted directories and collects dirty paths."""

    def __init__(self, mode: str, wake: threading.Event) -> None:
        self.requested = mode
        self._wake = wake
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._overflowed = False
        self._observer: Any = None
        self._watches: dict[Path, _Watch] = {}
        self._handler = _Handler(self)
        self.failure: str | None = None  # why inotify is not (fully) in use
        self.events = 0

    @property
    def active(self) -> bool:
        return self._observer is not None

    def start(self) -> None:
        """Start the observer; in ``auto`` mode a failure means polling only."""
        if self.requested == "poll":
            self.failure = "RELAYBURN_WATCH=poll"
            return
        try:
            faults.hit("inotify_init")
            from watchdog.observers.inotify import InotifyObserver

            observer = InotifyObserver()
            observer.start()
        except (OSError, ImportError) as exc:
            self._give_up(f"inotify unavailable: {_reason(exc)}")
            return
        self._observer = observer

    def _give_up(self, reason: str) -> None:
        if self.requested == "inotify":
            raise ConfigError(
                f"RELAYBURN_WATCH=inotify but {reason}; raise fs.inotify.max_user_instances "
                "and fs.inotify.max_user_watches, or set RELAYBURN_WATCH=auto"
            )
        self.failure = reason
        log.warning("watch.fallback_to_polling", reason=reason, stage="watch")

    def sync(self, wanted: dict[Path, bool]) -> None:
        """Watch exactly ``wanted`` (directory -> recursive); re-watch replaced ones."""
        if self._observer is None:
            return
        for path, watch in list(self._watches.items()):
            ident = _ident(path)
            if wanted.get(path) != watch.recursive or ident != watch.ident:
                with contextlib.suppress(KeyError, OSError):
                    self._observer.unschedule(watch.handle)
                del self._watches[path]
        for path, recursive in sorted(wanted.items()):
            if path in self._watches:
                continue
            ident = _ident(path)
            if ident is None:
                continue
            try:
                faults.hit("inotify_watch")
                handle = self._observer.schedule(self._handler, str(path), recursive=recursive,
                                                 event_filter=EVENT_FILTER)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue
                self.failure = f"cannot watch {path}: {_reason(exc)}"
                log.warning("watch.failed", file=str(path), reason=_reason(exc),
                            error_type=errno.errorcode.get(exc.errno or 0, "os_error"),
                            stage="watch")
                continue
            self._watches[path] = _Watch(handle, recursive, ident)

    def watched(self) -> set[DevIno]:
        """Directories the kernel actually watches for this process."""
        return _watched_inodes() if self._observer is not None else set()

    def mark(self, *paths: str) -> None:
        """Called on watchdog's thread: remember the paths and wake the loop."""
        with self._lock:
            self.events += 1
            if len(self._dirty) >= MAX_DIRTY:
                self._overflowed = True
            else:
                self._dirty.update(p for p in paths if p)
        self._wake.set()

    def take(self) -> tuple[set[str], bool]:
        """Dirty paths since the last call, and whether some were dropped (rescan all)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            overflowed, self._overflowed = self._overflowed, False
        return dirty, overflowed

    def stop(self) -> None:
        if self._observer is None:
            return
        observer, self._observer = self._observer, None
        with contextlib.suppress(Exception):
            observer.stop()
            observer.join(timeout=2.0)


def _ident(path: Path) -> DevIno | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name} ({exc.strerror or exc})"
    return str(exc)


__all__ = ["EVENT_FILTER", "Hints", "events_unreliable", "fs_type", "nearest_existing"]
