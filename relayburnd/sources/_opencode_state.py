"""The OpenCode poll state: per data directory, the JSON files and database rows read.

Kept apart from the message shapes (``_opencode_shapes``), which only a poll
that has something to read needs.
"""

from __future__ import annotations

from typing import Any

import msgspec

STATE_VERSION = 1


class FileMark(msgspec.Struct, array_like=True):
    """What a JSON file looked like when last read: size, mtime (ns), content hash."""

    size: int
    mtime: int
    hash: str = ""


class Watermark(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Largest ``time_updated`` read from a table, and the rows read near it.

    Rows are re-queried from a little before the watermark (``>=``, equal
    milliseconds, a writer committing late); ``seen`` keeps those re-queried rows
    from being emitted again while they are unchanged.
    """

    wm: int = 0
    seen: dict[str, int] = {}


class DbMark(msgspec.Struct, kw_only=True, omit_defaults=True):
    message: Watermark = msgspec.field(default_factory=Watermark)
    part: Watermark = msgspec.field(default_factory=Watermark)
    session: Watermark = msgspec.field(default_factory=Watermark)


class RootState(msgspec.Struct, kw_only=True, omit_defaults=True):
    files: dict[str, FileMark] = {}  # path below the root -> last good read
    bad: dict[str, FileMark] = {}  # path -> last failed read (reported once)
    dbs: dict[str, DbMark] = {}  # database file name -> watermarks


class PollState(msgspec.Struct, kw_only=True, omit_defaults=True):
    v: int = STATE_VERSION
    roots: dict[str, RootState] = {}


def load_state(state: dict[str, Any]) -> PollState:
    """A fresh copy of the saved state; an unreadable one starts over (ids absorb re-reads)."""
    if not state:
        return PollState()
    try:
        st = msgspec.convert(state, PollState)
    except msgspec.ValidationError:
        return PollState()
    return st if st.v == STATE_VERSION else PollState()
