"""``cursors.json``: per-file cursors and per-source poll states, saved atomically.

Format (versioned; see docs/state.md)::

    {"version": 1,
     "files": {"<absolute path>": {cursor fields, "state": {parser state}}},
     "polls": {"<source>": {poll state}}}

Saved only when something changed. Entries of files that disappeared are kept
until they have been gone for ``GONE_TTL`` seconds (their usage is never
retracted), then dropped so the file does not grow without bound.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec

from .home import STATE_VERSION, atomic_write_bytes, load_state
from .logging import get_logger
from .tail import Cursor

log = get_logger("cursors")

GONE_TTL = 3600.0


class _Doc(msgspec.Struct):
    version: int
    files: dict[str, Cursor] = {}
    polls: dict[str, dict[str, Any]] = {}


_doc_decoder = msgspec.json.Decoder(_Doc)


def _valid_doc(obj: dict[str, Any]) -> bool:
    """``files`` and ``polls``, when present, are objects (else the file is quarantined)."""
    return all(isinstance(obj.get(key) or {}, dict) for key in ("files", "polls"))


class CursorStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, Cursor] = {}
        self.polls: dict[str, dict[str, Any]] = {}
        self.quarantined: list[Path] = []
        self._dirty = False
        self.write_errors = 0

    def load(self) -> CursorStore:
        if self._load_well_formed():
            return self
        obj, self.quarantined = load_state(self.path, valid=_valid_doc)
        if obj is None:
            return self
        for key, value in (obj.get("files") or {}).items():
            try:
                self.files[key] = Cursor.from_json(value)
            except (KeyError, TypeError, ValueError):
                log.warning("cursor.dropped_invalid", file=key)
        polls = obj.get("polls") or {}
        self.polls = {k: dict(v) for k, v in polls.items() if isinstance(v, dict)}
        return self

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
        if doc.version != STATE_VERSION or not all(
            bytes(memoryview(c.state)[:1]) == b"{" for c in doc.files.values()
        ):
            return False
        self.files, self.polls = doc.files, doc.polls
        return True

    def get(self, path: str) -> Cursor | None:
        return self.files.get(path)

    def put(self, path: str, cursor: Cursor) -> None:
        self.files[path] = cursor
        self._dirty = True

    def drop(self, path: str) -> None:
        if self.files.pop(path, None) is not None:
            self._dirty = True

    def poll_state(self, source: str) -> dict[str, Any]:
        return dict(self.polls.get(source) or {})

    def put_poll_state(self, source: str, state: dict[str, Any]) -> None:
        if self.polls.get(source) != state:
            self.polls[source] = state
            self._dirty = True

    def mark_seen(self, present: set[str], now: float | None = None) -> None:
        """Age out cursors of files that are gone and were fully read."""
        now = time.time() if now is None else now
        for key, cur in list(self.files.items()):
            if key in present:
                if cur.gone_since is not None:
                    cur.gone_since = None
                    self._dirty = True
                continue
            if Path(key).exists():
                continue
            if cur.gone_since is None:
                cur.gone_since = now
                self._dirty = True
            elif now - cur.gone_since > GONE_TTL and not cur.pending:
                self.drop(key)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def save(self, *, force: bool = False) -> bool:
        """Write the file if anything changed; returns whether it wrote."""
        if not (self._dirty or force):
            return False
        doc = {
            "version": STATE_VERSION,
            "files": dict(sorted(self.files.items())),  # encoded as ``Cursor.to_json``
            "polls": self.polls,
        }
        atomic_write_bytes(self.path, msgspec.json.encode(doc))
        self._dirty = False
        return True

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
