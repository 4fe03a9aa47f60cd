"""Which files to read now: discovery, cheap polling, and handles kept open.

Polling is the source of truth (inotify is a hint, ``watch.py``), so it has
to be cheap enough to run all the time. Measured here on 5,000 Claude files
in 1,100 directories: a source's own ``discover()`` takes about 0.7 s (it
resolves every path), a ``stat`` of every file about 70 ms and of every
directory about 15 ms. Hence the tiers:

* every tick (250 ms while a file changed within ``HOT_WINDOW``, backing
  off to 2 s): those "hot" files (at most ``MAX_HOT``, the most recent; where
  inotify watches their directory, whose events already wake the daemon, only
  every ``HOT_POLL_WATCHED``), and files whose held records fall due (a Claude
  response still open after ``idle_grace``);
* every ``COLD_POLL``: the directories inotify does not cover (a new file
  changes its directory's mtime) and every file in them;
* every ``FULL_SWEEP``, and after an inotify queue overflow: every directory
  and every file;
* every ``FULL_DISCOVERY``: the sources' own ``discover()``, to reconcile.

Between discoveries a new file (from an event or a changed directory) is
taken when it matches its source's layout: ``*.jsonl`` below a Claude
``projects/`` or a Codex ``sessions/`` / ``archived_sessions/`` directory,
as the sources' ``discover()`` does. Other layouts run ``discover()``.

A file is read when its (inode, size, mtime) differs from the last time it
was read through; an unchanged file is never opened.

Handles: a file that is hot or has unread bytes is kept open (at most
``MAX_OPEN``), so when it is deleted or renamed its remaining bytes are read
through the handle (reliability F16, F19). Only a file that disappears while
behind *without* an open handle loses bytes: they are counted in
``deleted_unread_bytes_total`` and logged.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .logging import get_logger
from .tail import Cursor
from .tree import Target, Tree
from .watch import Hints

log = get_logger("scan")

HOT_WINDOW = 60.0
COLD_POLL = 2.0
FULL_SWEEP = 30.0
FULL_DISCOVERY = 600.0
DISCOVERY_GAP = 5.0
MAX_OPEN = 256
MAX_HOT = 64
HOT_POLL_WATCHED = 1.0  # seconds between polls of hot files whose directory inotify watches
POLL_SOURCE_EVERY = 5.0

Sig = tuple[int, int, int]  # inode, size, mtime_ns
Position = Callable[[str], Cursor | None]


def _sig(st: os.stat_result) -> Sig:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class Tracked:
    """What the scanner knows about one log file."""

    source: str
    path: Path
    root: Path
    key: str
    dir: str
    sig: Sig | None = None  # at the last stat
    read_sig: Sig | None = None  # when it was last read through to the end
    hot_until: float = 0.0
    fh: BinaryIO | None = None
    fh_ino: int = 0
    revisit_at: float | None = None  # wall time when held records fall due


@dataclass
class Order:
    """Read one file now."""

    tracked: Tracked
    final: bool
    fh: BinaryIO | None = None
    partial_tail: bool = False
    old_handle: bool = False  # the open handle of a deleted or replaced file
    sig: Sig | None = None


class Scanner:
    """Tracks the log files of the tail sources and decides what to read."""

    def __init__(
        self,
        sources: dict[str, Any],
        roots: dict[str, tuple[Path, ...]],
        kinds: dict[str, str],
        hints: Hints,
        position: Position,
        *,
        idle_grace: float,
    ) -> None:
        self.sources = sources
        self.roots = roots
        self.kinds = kinds
        self.hints = hints
        self.position = position
        self.idle_grace = idle_grace
        self.files: dict[str, Tracked] = {}
        self.tree = Tree(sources, roots, hints)
        self.deleted_unread_bytes = 0
        self.last_sweep = float("-inf")
        self.last_discovery = float("-inf")
        self.last_activity = float("-inf")  # last event below a target (monotonic)
        self._last_cold = float("-inf")
        self._recheck: set[str] = set()
        self._discovery_due: dict[str, float] = {}
        self._discovered_at: dict[str, float] = {}
        self._poll_hinted: set[str] = set()
        self._last_poll: dict[str, float] = {}
        # small indexes, so that an idle tick never walks every tracked file
        self._hot: set[str] = set()
        self._hot_polled = float("-inf")
        self._revisits: set[str] = set()
        self._open: set[str] = set()

    @property
    def mode(self) -> str:
        return self.tree.mode

    @property
    def watches_needed(self) -> int:
        return self.tree.watches_needed

    @property
    def watches_missing(self) -> int:
        return self.tree.watches_missing

    # ------------------------------------------------------------ discovery

    def _track(self, name: str, path: Path, root: Path) -> None:
        key = str(path)
        if key not in self.files:
            self.files[key] = Tracked(name, path, root, key, os.path.abspath(path.parent))
        self._recheck.add(key)

    def _discover(self, names: Iterable[str], now: float) -> None:
        """Run the sources' own discovery and reconcile the tracked files with it."""
        for name in names:
            if self.kinds.get(name) != "tail":
                continue
            found: dict[str, tuple[Path, Path]] = {}
            try:
                for path, root in self.sources[name].discover(self.roots[name]):
                    found[str(path)] = (path, root)
            except OSError as exc:
                log.warning("source.discover_failed", source=name, reason=str(exc),
                            stage="discover")
                continue
            self._discovered_at[name] = now
            self._discovery_due.pop(name, None)
            for path, root in found.values():
                self._track(name, path, root)
            for key, t in list(self.files.items()):
                if t.source == name and key not in found:
                    if t.fh is None and os.path.exists(key):
                        del self.files[key]  # exists but is not a log file of the source
                        self._hot.discard(key)
                        self._revisits.discard(key)
                    else:
                        self._recheck.add(key)

    def _rescan_dir(self, d: str, target: Target) -> None:
        """A directory changed: pick up new subdirectories and log files."""
        if self.kinds.get(target.source) != "tail":
            self.tree.walk(d, target, None)
            return
        if not target.exact:
            self._discovery_due.setdefault(target.source, 0.0)
            self.tree.walk(d, target, None)
            return
        files: list[str] = []
        self.tree.walk(d, target, files)
        for f in files:
            path = target.file_path(f)
            if str(path) not in self.files and os.path.isfile(f):
                self._track(target.source, path, target.file_root)
        prefix = d.rstrip(os.sep) + os.sep
        self._recheck.update(k for k in self.files if k.startswith(prefix))

    # ------------------------------------------------------------ ticks

    def sweep(self, now: float) -> None:
        """Stat every directory and file; run discovery when it is due."""
        tree = self.tree
        tree.sync_watches()
        old = dict(tree.dirs)
        tree.dirs = {}
        for target in tree.targets:
            tree.walk(str(target.path), target, None)
        changed = [(d, info.target) for d, info in tree.dirs.items()
                   if d not in old or old[d].mtime_ns != info.mtime_ns]
        if now - self.last_discovery >= FULL_DISCOVERY:
            self.last_discovery = now
            self._discover(self.sources, now)
        else:
            for d, target in changed:
                self._rescan_dir(d, target)
        tree.coverage()
        self.last_sweep = now
        self._recheck.update(self.files)
        self._poll_hinted.update(n for n, k in self.kinds.items() if k == "poll")

    def tick(self, now: float, dirty: set[str], overflow: bool) -> list[Order]:
        """Files to read now, in path order."""
        tree = self.tree
        if overflow or now - self.last_sweep >= FULL_SWEEP:
            self.sweep(now)
        if any(t.path.is_dir() for t in tree.missing):
            tree.sync_watches()
            for target in tree.targets:
                if target.path.is_dir() and str(target.path) not in tree.dirs:
                    self._rescan_dir(str(target.path), target)
            tree.coverage()
        rescan: dict[str, Target] = {}
        for p in dirty:
            if p in self.files:
                self._recheck.add(p)
                self.last_activity = now
                continue
            found = tree.target_of(p)
            if found is None:
                continue
            target = found
            self.last_activity = now
            if self.kinds.get(target.source) == "poll":
                self._poll_hinted.add(target.source)
            elif p in tree.dirs or os.path.isdir(p):
                rescan[p] = target
            elif target.exact:
                if p.endswith(".jsonl") and os.path.isfile(p):
                    self._track(target.source, target.file_path(p), target.file_root)
            else:
                self._discovery_due.setdefault(target.source, now)
        cold = bool(tree.uncovered) and now - self._last_cold >= COLD_POLL
        if cold:
            self._last_cold = now
        for d in tree.uncovered if cold else ():
            info = tree.dirs.get(d)
            if info is None or self.kinds.get(info.target.source) != "tail":
                continue
            try:
                mtime = os.stat(d).st_mtime_ns
            except OSError:
                mtime = -1
            if mtime != info.mtime_ns:
                rescan[d] = info.target
        for d, target in sorted(rescan.items()):
            self._rescan_dir(d, target)
        if rescan:
            tree.coverage()
        due = [n for n, since in self._discovery_due.items()
               if now - self._discovered_at.get(n, float("-inf")) >= DISCOVERY_GAP]
        if due:
            self._discover(due, now)
        check = self._recheck
        self._recheck = set()
        # where inotify watches a hot file's directory, its events are the fast path and
        # the poll only a safety net: once a second is enough there
        watched_due = now - self._hot_polled >= HOT_POLL_WATCHED
        if watched_due:
            self._hot_polled = now
        for key in list(self._hot):
            hot = self.files.get(key)
            if hot is None or hot.hot_until <= now:
                self._hot.discard(key)
            elif watched_due or not self._watched(hot):
                check.add(key)
        if cold:
            check.update(k for k, f in self.files.items() if f.dir in tree.uncovered)
        wall = time.time()
        for key in list(self._revisits):
            held = self.files.get(key)
            if held is None or held.revisit_at is None:
                self._revisits.discard(key)
            elif held.revisit_at <= wall:
                check.add(key)
        return self._orders(sorted(check), now, wall)

    def _orders(self, keys: list[str], now: float, wall: float) -> list[Order]:
        orders: list[Order] = []
        for key in keys:
            t = self.files.get(key)
            if t is None:
                continue
            order = self._order(t, now, wall, drain=False)
            if order is not None:
                orders.append(order)
        return orders

    def _order(self, t: Tracked, now: float, wall: float, *, drain: bool) -> Order | None:
        try:
            st: os.stat_result | None = os.stat(t.path)
        except OSError:
            st = None
        if t.fh is not None and (st is None or st.st_ino != t.fh_ino):
            order = self._old_handle(t, st)
            if order is not None:
                self._recheck.add(t.key)
                return order
        if st is None:
            self._gone(t)
            return None
        sig = _sig(st)
        t.sig = sig
        cur = self.position(t.key)
        if drain:
            if cur is None:
                done = st.st_size == 0
            else:
                done = cur.ino == st.st_ino and cur.offset >= st.st_size and not cur.pending
            return None if done else Order(t, True, self._hold(t), partial_tail=True, sig=sig)
        due = t.revisit_at is not None and t.revisit_at <= wall
        if sig == t.read_sig and not due:
            return None
        if t.read_sig is None and not due and cur is not None and cur.unchanged(st) \
                and not cur.pending:
            t.read_sig = sig
            return None
        final = wall - st.st_mtime >= self.idle_grace
        return Order(t, final, self._hold(t), sig=sig)

    def _old_handle(self, t: Tracked, st: os.stat_result | None) -> Order | None:
        """The path is gone or is another file: finish what the open handle still has."""
        assert t.fh is not None
        try:
            fst = os.fstat(t.fh.fileno())
        except OSError:
            self._close(t)
            return None
        cur = self.position(t.key)
        mine = cur is not None and cur.ino == t.fh_ino
        offset = cur.offset if cur is not None and mine else 0
        if fst.st_size > offset or (cur is not None and mine and cur.pending):
            log.info("file.reading_old_handle", file=t.key, offset=offset,
                     bytes=fst.st_size - offset, deleted=fst.st_nlink == 0, stage="tail")
            return Order(t, True, t.fh, partial_tail=fst.st_nlink == 0, old_handle=True,
                         sig=_sig(fst))
        self._close(t)
        t.read_sig = None
        t.sig = None if st is None else _sig(st)
        return None

    def _gone(self, t: Tracked) -> None:
        cur = self.position(t.key)
        if t.sig is not None:
            ino, size, _ = t.sig
            offset = cur.offset if cur is not None and cur.ino == ino else 0
            if size > offset:
                self.deleted_unread_bytes += size - offset
                log.error("file.deleted_unread", file=t.key, offset=offset,
                          bytes=size - offset, reason="deleted before it was read",
                          error_type="deleted_unread", stage="tail")
        self._close(t)
        del self.files[t.key]
        self._hot.discard(t.key)
        self._revisits.discard(t.key)

    # ------------------------------------------------------------ handles

    def _hold(self, t: Tracked) -> BinaryIO | None:
        """An open handle for ``t``, kept so its bytes survive a delete or rename."""
        if t.fh is not None:
            return t.fh
        if len(self._open) >= MAX_OPEN:
            return None
        try:
            fh = t.path.open("rb")
        except OSError:
            return None
        t.fh, t.fh_ino = fh, os.fstat(fh.fileno()).st_ino
        self._open.add(t.key)
        return fh

    def _close(self, t: Tracked) -> None:
        if t.fh is not None:
            with contextlib.suppress(OSError):
                t.fh.close()
            t.fh = None
            t.fh_ino = 0
        self._open.discard(t.key)

    def done(self, order: Order, completed: bool, now: float) -> None:
        """Record a read: what was read through, when held records fall due."""
        t = order.tracked
        if order.old_handle:
            return  # looked at again on the next tick (closed once drained)
        if not completed:
            self._recheck.add(t.key)
            return
        if order.sig is not None and order.sig != t.read_sig:
            age = time.time() - order.sig[2] / 1e9
            t.hot_until = max(t.hot_until, now + HOT_WINDOW - max(0.0, age))
            if t.hot_until > now:
                self._make_hot(t)
            t.read_sig = order.sig
        cur = self.position(t.key)
        pending = cur is not None and cur.pending and not order.final
        t.revisit_at = (order.sig[2] / 1e9 + self.idle_grace) if pending and order.sig \
            else None
        if t.revisit_at is not None:
            self._revisits.add(t.key)
        if t.hot_until <= now and not self._behind(t, cur):
            self._close(t)

    def _make_hot(self, t: Tracked) -> None:
        """Poll ``t`` every tick; at most ``MAX_HOT`` files, the most recently changed."""
        self._hot.add(t.key)
        if len(self._hot) > MAX_HOT:
            coldest = min(self._hot, key=lambda k: self.files[k].hot_until
                          if k in self.files else float("-inf"))
            self._hot.discard(coldest)

    @staticmethod
    def _behind(t: Tracked, cur: Cursor | None) -> bool:
        if t.sig is None:
            return False
        return cur is None or cur.ino != t.sig[0] or cur.offset < t.sig[1]

    def cool_down(self, now: float) -> None:
        """Close handles of files that went cold and were read to the end."""
        for key in list(self._open):
            t = self.files.get(key)
            if t is not None and t.hot_until <= now and \
                    not self._behind(t, self.position(t.key)):
                self._close(t)

    def final_orders(self, now: float) -> list[Order]:
        """Every file with anything unread or held, for the last pass before exit."""
        self.sweep(now)
        if self.last_discovery != now:
            self._discover(self.sources, now)
        self._recheck = set()
        wall = time.time()
        orders = []
        for key in sorted(self.files):
            t = self.files.get(key)
            if t is None:
                continue
            order = self._order(t, now, wall, drain=True)
            if order is None:
                continue
            orders.append(order)
            if order.old_handle and t.path.exists():
                # rotated: after the old file, the new one at the same path (from 0)
                orders.append(Order(t, True, None, partial_tail=True))
        return orders

    # ------------------------------------------------------------ poll sources

    def poll_due(self, now: float) -> bool:
        """Whether the poll sources should run now (hinted, or on their own clock)."""
        names = [n for n, k in self.kinds.items() if k == "poll"]
        due = False
        for name in names:
            last = self._last_poll.get(name, float("-inf"))
            uncovered = not self.hints.active or any(
                t.source == name and str(t.path) in self.tree.uncovered
                for t in self.tree.targets)
            if (name in self._poll_hinted and now - last >= 1.0) or (
                    uncovered and now - last >= POLL_SOURCE_EVERY):
                due = True
        if due:
            for name in names:
                self._last_poll[name] = now
            self._poll_hinted.clear()
        return due

    # ------------------------------------------------------------ reporting

    def quiet_for(self, now: float) -> float:
        """Seconds since an agent last wrote: the newest file mtime seen, and the last
        event below a target (the daemon's own reads are not activity)."""
        newest = max((t.sig[2] for t in list(self.files.values()) if t.sig is not None),
                     default=0)
        since_write = time.time() - newest / 1e9
        return max(0.0, min(since_write, now - self.last_activity))

    def revisit_within(self, wall: float) -> float | None:
        """Seconds until the first held record falls due (0 when one is overdue)."""
        due = [t.revisit_at for k in self._revisits
               if (t := self.files.get(k)) is not None and t.revisit_at is not None]
        return max(0.0, min(due) - wall) if due else None

    def tick_within(self, now: float) -> float | None:
        """How soon the hot files want the next tick: every tick where inotify cannot
        tell about them, ``HOT_POLL_WATCHED`` where it can; None when none is hot."""
        soonest: float | None = None
        for key in self._hot:
            t = self.files.get(key)
            if t is None or t.hot_until <= now:
                continue
            if not self._watched(t):
                return 0.0
            soonest = HOT_POLL_WATCHED
        return soonest

    def _watched(self, t: Tracked) -> bool:
        """Whether inotify tells about writes to ``t`` (its directory has a watch)."""
        return self.hints.active and t.dir not in self.tree.uncovered

    def open_handles(self) -> int:
        return len(self._open)

    def behind(self, committed: Position) -> dict[str, int]:
        """Per file, bytes on disk (as last seen) past the acknowledged cursor."""
        out: dict[str, int] = {}
        for key, t in list(self.files.items()):  # also called from the metrics thread
            sig = t.sig
            if sig is None:
                # tracked but not looked at yet (the first scan after start is still
                # discovering): its bytes are behind all the same, so a fresh daemon
                # never reports a backlog of zero
                try:
                    sig = _sig(os.stat(key))
                except OSError:
                    continue
            ino, size, _ = sig
            cur = committed(key)
            valid = cur is not None and cur.ino == ino and cur.offset <= size
            offset = cur.offset if cur is not None and valid else 0
            if size > offset:
                out[key] = size - offset
        return out

    def per_source(self, committed: Position) -> dict[str, tuple[int, int]]:
        """Per source: (files tracked, bytes behind)."""
        out = {name: (0, 0) for name, kind in self.kinds.items() if kind == "tail"}
        behind = self.behind(committed)
        for key, t in list(self.files.items()):
            files, lag = out.get(t.source, (0, 0))
            out[t.source] = (files + 1, lag + behind.get(key, 0))
        return out

    def close(self) -> None:
        for t in self.files.values():
            self._close(t)


__all__ = ["FULL_SWEEP", "HOT_WINDOW", "Order", "Scanner", "Tracked"]
