"""The directories the sources write below: which to watch, which inotify covers.

``Tree`` keeps, per directory below the sources' roots, its mtime and
identity. The scanner stats the directories inotify does not cover to
notice new files; the rest are left to events and the periodic sweep.
A root that does not exist yet is watched through its nearest existing
parent until it appears; a root on a filesystem without change events (NFS,
SMB, 9p, FUSE) is not watched at all, so its directories count as uncovered.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .logging import get_logger
from .watch import DevIno, Hints, events_unreliable, nearest_existing

log = get_logger("tree")


@dataclass(frozen=True)
class Target:
    """A directory tree a source writes below.

    ``path`` is absolute; ``spelled`` is the same directory written from the
    configured root, as the source's ``discover()`` spells its files. ``exact``:
    every ``*.jsonl`` below it is a log file whose discovery root is
    ``file_root`` (so a new file can be taken without running ``discover()``).
    """

    source: str
    path: Path
    file_root: Path
    exact: bool
    spelled: Path

    def file_path(self, found: str) -> Path:
        """A file found below ``path``, spelled as ``discover()`` would."""
        return self.spelled / os.path.relpath(found, self.path)


def targets_for(name: str, roots: Sequence[Path], src: Any) -> list[Target]:
    """Directories to watch for one source (format spec 7.3)."""
    out: list[Target] = []
    for given in roots:
        root, given = Path(os.path.abspath(given)), Path(given)
        if name == "claude":
            if root.name == "projects":
                out.append(Target(name, root, given, True, given))
            else:
                out.append(Target(name, root / "projects", given / "projects", True,
                                  given / "projects"))
        elif name == "codex":
            subs = ["sessions", "archived_sessions"]
            if any((root / d).is_dir() for d in subs) or not root.is_dir():
                out.extend(Target(name, root / d, given, True, given / d) for d in subs)
            else:
                out.append(Target(name, root, given, False, given))
        elif name == "opencode":
            out.append(Target(name, root, given, False, given))
        else:
            watch_dirs = getattr(src, "watch_dirs", None)
            dirs = watch_dirs([given]) if watch_dirs else [given]
            out.extend(Target(name, Path(os.path.abspath(d)), given, False, Path(d))
                       for d in dirs)
    return list({t.path: t for t in out}.values())


@dataclass
class DirInfo:
    target: Target
    mtime_ns: int
    ident: DevIno


class Tree:
    """Targets, their directories, and which of those inotify covers."""

    def __init__(self, sources: dict[str, Any], roots: dict[str, tuple[Path, ...]],
                 hints: Hints) -> None:
        self.sources = sources
        self.roots = roots
        self.hints = hints
        self.targets: list[Target] = []
        self.missing: list[Target] = []
        self.dirs: dict[str, DirInfo] = {}
        self.uncovered: set[str] = set()
        self.watches_needed = 0
        self.watches_missing = 0

    def sync_watches(self) -> None:
        """Recompute targets and watch them (or their nearest existing parent)."""
        self.targets = [t for name, src in self.sources.items()
                        for t in targets_for(name, self.roots[name], src)]
        self.missing = [t for t in self.targets if not t.path.is_dir()]
        wanted: dict[Path, bool] = {}
        for t in self.targets:
            if t.path.is_dir() and events_unreliable(t.path) is None:
                wanted[t.path] = True
        for t in self.missing:
            parent = nearest_existing(t.path)
            if not any(w == parent or w in parent.parents for w in wanted if wanted[w]):
                wanted.setdefault(parent, False)
        for p in [p for p in wanted if any(w != p and wanted[w] and w in p.parents
                                           for w in wanted)]:
            del wanted[p]
        self.hints.sync(wanted)

    def walk(self, top: str, target: Target, found_files: list[str] | None) -> None:
        """Add ``top`` and the directories below it (and, if asked, their log files)."""
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                st = os.stat(d)
                entries = list(os.scandir(d))
            except OSError:
                self.dirs.pop(d, None)
                continue
            self.dirs[d] = DirInfo(target, st.st_mtime_ns, (st.st_dev, st.st_ino))
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif found_files is not None and e.name.endswith(".jsonl"):
                    found_files.append(e.path)

    def coverage(self) -> None:
        """Compare the directories with what the kernel watches for this process."""
        watched = self.hints.watched()
        self.uncovered = {d for d, info in self.dirs.items() if info.ident not in watched}
        missing = len(self.uncovered)
        if self.hints.active and missing and missing != self.watches_missing:
            log.warning("watch.shortfall", directories=len(self.dirs),
                        watched=len(self.dirs) - missing, missing=missing,
                        reason="inotify watch limit, or a filesystem without events; "
                        "files in those directories are polled", stage="watch")
        self.watches_needed = len(self.dirs)
        self.watches_missing = missing

    @property
    def mode(self) -> str:
        if not self.hints.active:
            return "poll"
        return "partial" if self.uncovered else "inotify"

    def target_of(self, path: str) -> Target | None:
        """The innermost target ``path`` lies in."""
        best: Target | None = None
        for t in self.targets:
            base = str(t.path)
            if (path == base or path.startswith(base + os.sep)) and (
                    best is None or len(base) > len(str(best.path))):
                best = t
        return best


__all__ = ["DirInfo", "Target", "Tree", "targets_for"]
