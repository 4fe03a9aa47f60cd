"""``cursors.json`` and ``cursors.journal``: per-file cursors and per-source poll states.

Format (versioned; see docs/state.md)::

    cursors.json     {"version": 1, "gen": G,
                      "files": {"<absolute path>": {cursor fields, "state": {parser state}}},
                      "polls": {"<source>": {poll state}}}
    cursors.journal  {"gen": G, "files": {"<path>": {cursor} | null}, "polls": {...}}  per line

``cursors.json`` lists every file ever read, a few KB each with its parser state,
so rewriting it whole at every checkpoint wrote about 1 % of the disk's write rate
for as long as any agent worked, whatever changed. A checkpoint now appends the
entries that changed since the last one to ``cursors.journal`` (fsynced), and the
snapshot is rewritten (atomically, as before) only when the journal has grown past
the snapshot's size (at least ``COMPACT_MIN_BYTES``), when there is no snapshot
yet, or when the journal was found damaged. Loading applies the journal's lines
of the snapshot's generation in order; a line of another generation (left by a
crash between a rewrite and the journal's removal), a torn last line or any
undecodable line is skipped and the next checkpoint rewrites the snapshot. A
skipped line only means older, acknowledged cursors for its files: their bytes
are read again and the store recognises the records.

Saved only when something changed. Entries of files that disappeared are kept
until they have been gone for ``GONE_TTL`` seconds (their usage is never
retracted), then dropped so the file does not grow without bound.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from . import faults
from .home import STATE_VERSION, atomic_write_bytes, fsync_dir, load_state
from .logging import get_logger
from .tail import Cursor

log = get_logger("cursors")

GONE_TTL = 3600.0
COMPACT_MIN_BYTES = 1 << 20
JOURNAL_SUFFIX = ".journal"


class _Doc(msgspec.Struct):
    version: int
    files: dict[str, Cursor] = {}
    polls: dict[str, dict[str, Any]] = {}
    gen: int = 0


class _Delta(msgspec.Struct, omit_defaults=True):
    """One journal line: the entries that changed (None: dropped) since the line before."""

    gen: int
    files: dict[str, Cursor | None] = {}
    polls: dict[str, dict[str, Any]] = {}


_doc_decoder = msgspec.json.Decoder(_Doc)
_delta_decoder = msgspec.json.Decoder(_Delta)


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + JOURNAL_SUFFIX)


def _state_is_object(cur: Cursor | None) -> bool:
    """The parser is handed its state as an object; an entry that says otherwise is not
    taken as it is."""
    return cur is None or bytes(memoryview(cur.state)[:1]) == b"{"


def _apply(deltas: list[_Delta], files: dict[str, Any], polls: dict[str, Any],
           entry: Callable[[Cursor], Any]) -> None:
    """Journal lines onto a snapshot's ``files`` and ``polls``, in order."""
    for delta in deltas:
        for key, cur in delta.files.items():
            if cur is None:
                files.pop(key, None)
            else:
                files[key] = entry(cur)
        polls.update(delta.polls)


def journal_lines(path: Path, gen: int) -> tuple[list[_Delta], bool]:
    """The journal's lines that continue snapshot ``gen``, in order, and whether the
    journal is clean (no torn, undecodable or stale line)."""
    try:
        data = journal_path(path).read_bytes()
    except FileNotFoundError:
        return [], True
    except OSError:
        return [], False  # unreadable: the snapshot is rewritten and the journal replaced
    clean = not data or data.endswith(b"\n")
    out: list[_Delta] = []
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            delta = _delta_decoder.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            clean = False
            continue
        if delta.gen != gen or not all(map(_state_is_object, delta.files.values())):
            clean = False
            continue
        out.append(delta)
    return out, clean


def merged_doc(path: Path) -> dict[str, Any] | None:
    """``cursors.json`` with its journal applied, as plain objects, or None when the
    snapshot is unreadable; for readers beside a running daemon (``status``). Reads
    only: quarantining is the daemon's."""
    try:
        obj = msgspec.json.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    files = obj.get("files")
    polls = obj["polls"] = obj.get("polls") or {}
    if not isinstance(files, dict) or not isinstance(polls, dict):
        return obj
    gen = obj.get("gen", 0)
    deltas = journal_lines(path, gen if isinstance(gen, int) else -1)[0]
    _apply(deltas, files, polls, Cursor.to_json)
    return obj


def _valid_doc(obj: dict[str, Any]) -> bool:
    """``files`` and ``polls``, when present, are objects (else the file is quarantined)."""
    return all(isinstance(obj.get(key) or {}, dict) for key in ("files", "polls"))


class CursorStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = journal_path(path)
        self.files: dict[str, Cursor] = {}
        self.polls: dict[str, dict[str, Any]] = {}
        self.quarantined: list[Path] = []
        self._dirty = False
        self.write_errors = 0
        # what changed since the last durable save: journalled at the next one
        self._changed: set[str] = set()
        self._polls_changed: set[str] = set()
        self._gen = 0  # of the snapshot on disk; 0: none yet
        self._snapshot_bytes = 0
        self._journal_bytes = 0
        self._rewrite = True  # the next save rewrites the snapshot
        self.last_save_kind = ""  # what the last save wrote: "journal" or "snapshot"

    def load(self) -> CursorStore:
        if not self._load_well_formed():
            self._load_lenient()
        self._replay_journal()
        return self

    def _load_lenient(self) -> None:
        obj, self.quarantined = load_state(self.path, valid=_valid_doc)
        if obj is None:
            return
        for key, value in (obj.get("files") or {}).items():
            try:
                self.files[key] = Cursor.from_json(value)
            except (KeyError, TypeError, ValueError):
                log.warning("cursor.dropped_invalid", file=key)
        polls = obj.get("polls") or {}
        self.polls = {k: dict(v) for k, v in polls.items() if isinstance(v, dict)}
        gen = obj.get("gen", 0)
        self._gen = gen if type(gen) is int and gen > 0 else 0
        # the lenient path read something unusual: the next save writes it back clean
        self._rewrite = True

    def _replay_journal(self) -> None:
        if self._gen <= 0:
            # no snapshot a journal could continue: whatever journal is there is stale
            self._rewrite = True
            return
        lines, clean = journal_lines(self.path, self._gen)
        _apply(lines, self.files, self.polls, lambda cur: cur)
        with contextlib.suppress(OSError):
            self._journal_bytes = self.journal.stat().st_size
        if not clean:
            log.warning("cursors.journal_damaged", file=str(self.journal),
                        hint="skipped lines only make their files be read again")
        self._rewrite = self._rewrite or not clean

    def _load_well_formed(self) -> bool:
        """The common case in one typed decode, states left as their JSON: a tenth of
        the time of decoding to objects (``ingest`` starts with it, and the file lists
        every session ever read). Anything unusual (a temp file left by a crash, another
        version, a damaged entry) is left to the lenient path below it."""
        if self.path.with_name(self.path.name + ".new").exists():
            return False
        try:
            doc = _doc_decoder.decode(self.path.read_bytes())
        except (OSError, ValueError):  # missing, msgspec.DecodeError/ValidationError
            return False
        if doc.version != STATE_VERSION or doc.gen <= 0 or not all(
            map(_state_is_object, doc.files.values())
        ):
            return False
        self.files, self.polls = doc.files, doc.polls
        self._gen, self._rewrite = doc.gen, False
        with contextlib.suppress(OSError):
            self._snapshot_bytes = self.path.stat().st_size
        return True

    def get(self, path: str) -> Cursor | None:
        return self.files.get(path)

    def put(self, path: str, cursor: Cursor) -> None:
        self.files[path] = cursor
        self._changed.add(path)
        self._dirty = True

    def drop(self, path: str) -> None:
        if self.files.pop(path, None) is not None:
            self._changed.add(path)
            self._dirty = True

    def poll_state(self, source: str) -> dict[str, Any]:
        return dict(self.polls.get(source) or {})

    def put_poll_state(self, source: str, state: dict[str, Any]) -> None:
        if self.polls.get(source) != state:
            self.polls[source] = state
            self._polls_changed.add(source)
            self._dirty = True

    def mark_seen(self, present: set[str], now: float | None = None) -> None:
        """Age out cursors of files that are gone and were fully read."""
        now = time.time() if now is None else now
        for key, cur in list(self.files.items()):
            if key in present:
                if cur.gone_since is not None:
                    cur.gone_since = None
                    self._changed.add(key)
                    self._dirty = True
                continue
            if Path(key).exists():
                continue
            if cur.gone_since is None:
                cur.gone_since = now
                self._changed.add(key)
                self._dirty = True
            elif now - cur.gone_since > GONE_TTL and not cur.pending:
                self.drop(key)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def save(self, *, force: bool = False) -> bool:
        """Make the changes durable if there are any; returns whether it wrote.

        ``force`` rewrites the snapshot whether or not anything changed. A failure
        (OSError) keeps the changes for the next call, which then rewrites the
        snapshot (a failed append may have left a torn line)."""
        if not (self._dirty or force):
            return False
        line = b""
        if not (self._rewrite or force):
            line = msgspec.json.encode(_Delta(
                gen=self._gen,
                files={k: self.files.get(k) for k in sorted(self._changed)},
                polls={k: self.polls[k] for k in sorted(self._polls_changed) if k in self.polls},
            )) + b"\n"
        if not line or self._journal_bytes + len(line) > max(COMPACT_MIN_BYTES,
                                                              self._snapshot_bytes):
            self._write_snapshot()
        else:
            self._append(line)
        self._changed.clear()
        self._polls_changed.clear()
        self._dirty = False
        return True

    def _write_snapshot(self) -> None:
        gen = self._gen + 1
        doc = {
            "version": STATE_VERSION,
            "gen": gen,
            "files": dict(sorted(self.files.items())),  # encoded as ``Cursor.to_json``
            "polls": self.polls,
        }
        data = msgspec.json.encode(doc)
        self._rewrite = True  # until the new snapshot is in place
        atomic_write_bytes(self.path, data)
        self._gen, self._snapshot_bytes = gen, len(data)
        # the journal continued the snapshot just replaced; if removing it fails (or a
        # crash comes first), its lines are of an older generation and skipped at load
        with contextlib.suppress(OSError):
            self.journal.unlink()
        self._journal_bytes = 0
        self._rewrite = False
        self.last_save_kind = "snapshot"

    def _append(self, line: bytes) -> None:
        self._rewrite = True  # until the line is durably complete
        faults.hit("state_write")
        created = not self._journal_bytes
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            half = len(line) // 2
            os.write(fd, line[:half])
            faults.hit("journal_mid_write")
            view = memoryview(line)[half:]
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.journal.parent)
        self._journal_bytes += len(line)
        self._rewrite = False
        self.last_save_kind = "journal"

    def bytes_behind(self) -> dict[str, int]:
        """Per file, bytes on disk past the acknowledged offset."""
        out: dict[str, int] = {}
        for key, cur in self.files.items():
            try:
                size = Path(key).stat().st_size
            except OSError:
                continue
            if size > cur.offset:
                out[key] = size - cur.offset
        return out
