"""OpenCode's JSON storage tree (``storage/message|part|session|project``).

Files are rewritten in place, whole, many times while a message streams, and
not every release writes atomically. So byte offsets mean nothing here: each
file is tracked by (size, mtime, content hash), a changed file is read again
whole, and a file that does not parse is read again on the next poll. Only
while it is fresh (modified within the write grace) does it hold back its
message, since the writer is probably still at it; an old broken file is
reported once and the message is read without it.

A message is the unit: when any of its files changed, the message file and all
its part files are read and its records rebuilt (``_opencode_records``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from ..records import short_hash
from ._opencode_records import Unit
from ._opencode_shapes import (
    KNOWN_PART_TYPES,
    Message,
    Part,
    Session,
    message_decoder,
    part_decoder,
    project_decoder,
    session_decoder,
    text_or_none,
)
from ._opencode_state import FileMark, RootState

T = TypeVar("T")
# A file modified this recently may be modified again within the same mtime tick
# with the same size; its mark is stored so that the next poll reads it again.
RACY_NS = 2_000_000_000
_KINDS = ("message", "part", "session")


@dataclass
class _Read:
    status: str  # changed | same | retry | broken | gone
    value: Any = None


class JsonTree:
    """The storage tree of one data directory, as seen by one poll."""

    def __init__(self, root: Path, state: RootState, *, grace_ns: int, now_ns: int) -> None:
        self.root = root
        self.state = state
        self.grace_ns = grace_ns
        self.now_ns = now_ns
        self.messages: dict[str, Path] = {}  # message id -> message file
        self.parts: dict[str, list[Path]] = {}  # message id -> its part files
        self.sessions: dict[str, Path] = {}  # session id -> session file
        self.stats: dict[str, tuple[int, int]] = {}  # rel path -> (size, mtime_ns)
        self.candidates: set[str] = set()  # messages with a new, changed or unreadable file
        self.changed_sessions: set[str] = set()
        self.errors: list[str] = []
        self.skipped: Counter[str] = Counter()  # problems reported this poll, by kind
        self.files_read = 0
        self._projects: dict[str, str] = {}

    # -- scanning

    def scan(self) -> None:
        """Stat every file; a file whose size or mtime differs from its mark is a candidate."""
        storage = self.root / "storage"
        for kind in _KINDS:
            top = storage / kind
            for sub in _entries(top, dirs=True):
                for entry in _entries(Path(sub.path), dirs=False):
                    if not entry.name.endswith(".json"):
                        continue
                    try:
                        st = entry.stat()
                    except OSError:
                        continue
                    rel = f"storage/{kind}/{sub.name}/{entry.name}"
                    self.stats[rel] = (st.st_size, st.st_mtime_ns)
                    path, stem = Path(entry.path), entry.name[:-5]
                    key = sub.name if kind == "part" else stem
                    if kind == "message":
                        self.messages[stem] = path
                    elif kind == "part":
                        self.parts.setdefault(sub.name, []).append(path)
                    else:
                        self.sessions[stem] = path
                    mark = self.state.files.get(rel)
                    moved = mark is None or (mark.size, mark.mtime) != self.stats[rel]
                    if moved or rel in self.state.bad:
                        (self.changed_sessions if kind == "session" else self.candidates).add(key)
        for book in (self.state.files, self.state.bad):
            for rel in [r for r in book if r not in self.stats]:
                del book[rel]  # the file is gone; what it held stays delivered

    # -- reading

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _bad(self, rel: str, mark: FileMark, reason: str, message: str) -> None:
        self.state.files.pop(rel, None)
        if self.state.bad.get(rel) != mark:
            self.errors.append(message)
            self.skipped[reason] += 1
        self.state.bad[rel] = mark

    def _read(self, path: Path, decoder: msgspec.json.Decoder[T]) -> _Read:
        rel = self._rel(path)
        try:
            with path.open("rb") as fh:
                st = os.fstat(fh.fileno())  # before reading: a later write changes it
                data = fh.read()
        except OSError:
            return _Read("gone")
        self.files_read += 1
        mark = FileMark(st.st_size, st.st_mtime_ns, short_hash(data)[:16])
        try:
            value = decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            fresh = self.now_ns - st.st_mtime_ns < self.grace_ns
            how = "will retry" if fresh else "skipped until it changes"
            self._bad(
                rel, mark, "invalid_json", f"{path}: truncated or invalid JSON ({exc}); {how}"
            )
            return _Read("retry" if fresh else "broken")
        except msgspec.ValidationError as exc:
            self._bad(rel, mark, "invalid_shape", f"{path}: unexpected JSON shape ({exc}); skipped")
            return _Read("broken")
        was_bad = self.state.bad.pop(rel, None) is not None
        prev = self.state.files.get(rel)
        changed = was_bad or prev is None or prev.hash != mark.hash
        if self.now_ns - st.st_mtime_ns < RACY_NS:
            mark = FileMark(mark.size, -1, mark.hash)
        self.state.files[rel] = mark
        return _Read("changed" if changed else "same", value)

    def mark_unread(self, message_id: str) -> None:
        """Record a message's files as seen without reading them (the database owns it)."""
        paths = list(self.parts.get(message_id, []))
        if message_id in self.messages:
            paths.append(self.messages[message_id])
        for path in paths:
            rel = self._rel(path)
            size, mtime = self.stats[rel]
            self.state.files[rel] = FileMark(size, mtime)
            self.state.bad.pop(rel, None)

    def load_unit(self, message_id: str) -> tuple[Unit | None, bool]:
        """The message and its parts, and whether any of them changed since the last read.

        The message is read first and its part folder listed afresh after it:
        OpenCode writes a step's part before the message that reflects it, so
        every step the message has seen is then visible too. None while a fresh
        file does not parse (the writer is mid-write) or while the message file
        itself is missing or broken.
        """
        statuses: list[str] = []
        msg: Message | None = None
        msg_path = self.messages.get(message_id)
        if msg_path is not None:
            got = self._read(msg_path, message_decoder)
            statuses.append(got.status)
            msg = got.value
        part_dir = self.root / "storage" / "part" / message_id
        paths = [Path(e.path) for e in _entries(part_dir, dirs=False) if e.name.endswith(".json")]
        self.parts[message_id] = paths
        parts: list[Part] = []
        for path in paths:
            got = self._read(path, part_decoder)
            statuses.append(got.status)
            if got.value is None:
                continue
            part: Part = got.value
            part.id = part.id or path.stem
            part.messageID = part.messageID or message_id
            if part.type not in KNOWN_PART_TYPES and got.status == "changed":
                self.errors.append(f"{path}: unknown part type {part.type!r}; skipped")
                self.skipped["unknown_part_type"] += 1
            parts.append(part)
        if msg is None or msg_path is None or "retry" in statuses:
            return None, False
        msg.id = msg.id or message_id
        msg.sessionID = msg.sessionID or msg_path.parent.name
        parts.sort(key=lambda p: p.id or "")
        size_mtime = self.stats.get(self._rel(msg_path), (0, 0))
        unit = Unit(msg, parts, file_time=size_mtime[1] // 1_000_000 or None)
        return unit, "changed" in statuses

    def read_session(self, session_id: str) -> Session | None:
        path = self.sessions.get(session_id)
        if path is None:
            return None
        got = self._read(path, session_decoder)
        session: Session | None = got.value
        if session is not None:
            session.id = session.id or session_id
        return session

    # -- lookups for the record builder

    def project_of(self, session_id: str) -> str:
        if session_id in self._projects:
            return self._projects[session_id]
        found = ""
        path = self.sessions.get(session_id)
        session = _quiet_decode(path, session_decoder) if path else None
        if session is not None:
            found = text_or_none(session.directory) or ""
            project_id = text_or_none(session.projectID)
            if not found and project_id:
                ppath = self.root / "storage" / "project" / f"{project_id}.json"
                project = _quiet_decode(ppath, project_decoder)
                found = (text_or_none(project.worktree) if project else None) or ""
        self._projects[session_id] = found
        return found

    def has_compaction_part(self, message_id: str) -> bool:
        for path in self.parts.get(message_id, []):
            part = _quiet_decode(path, part_decoder)
            if part is not None and part.type == "compaction":
                return True
        return False


def _entries(top: Path, *, dirs: bool) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(top) as it:
            found = [e for e in it if e.is_dir() == dirs]
    except OSError:
        return []
    return sorted(found, key=lambda e: e.name)


def _quiet_decode(path: Path, decoder: msgspec.json.Decoder[T]) -> T | None:
    """Decode a file for a lookup; problems are reported where the file is read for records."""
    try:
        return decoder.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None
