"""Typed shapes of OpenCode messages, parts and sessions.

The same objects come from two places: JSON files under ``storage/`` (with
their ids inside) and the ``data`` column of the SQLite tables (ids in their own
columns). Only fields the reader uses are declared; loosely typed fields are
``Any`` so an odd value in one field does not make a whole message unreadable.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..timeutil import to_ms

KNOWN_PART_TYPES = frozenset(
    {
        "text",
        "reasoning",
        "tool",
        "step-start",
        "step-finish",
        "file",
        "patch",
        "snapshot",
        "agent",
        "subtask",
        "retry",
        "compaction",
    }
)


class Cache(msgspec.Struct):
    read: float = 0
    write: float = 0


class Tokens(msgspec.Struct):
    input: float = 0
    output: float = 0
    reasoning: float = 0
    cache: Cache | None = None

    def counts(self) -> tuple[int, int, int, int, int]:
        """(input, output, reasoning, cache read, cache write) as non-negative ints."""
        cache = self.cache or Cache()

        def n(v: float) -> int:
            return max(int(v), 0)

        return n(self.input), n(self.output), n(self.reasoning), n(cache.read), n(cache.write)


class Times(msgspec.Struct):
    created: float | None = None
    completed: float | None = None
    start: float | None = None
    end: float | None = None


class MsgPath(msgspec.Struct):
    cwd: Any = None
    root: Any = None


class Message(msgspec.Struct, kw_only=True):
    id: str | None = None
    sessionID: str | None = None  # field names as OpenCode writes them
    role: Any = None
    time: Times | None = None
    parentID: Any = None
    modelID: Any = None
    providerID: Any = None
    path: MsgPath | None = None
    cost: Any = None
    tokens: Tokens | None = None
    finish: Any = None
    error: Any = None
    summary: Any = None


class ToolState(msgspec.Struct):
    status: Any = None
    input: Any = None
    output: Any = None
    error: Any = None
    metadata: Any = None
    time: Times | None = None


class Part(msgspec.Struct, kw_only=True):
    id: str | None = None
    messageID: str | None = None
    sessionID: str | None = None
    type: Any = None
    text: Any = None
    synthetic: Any = None
    ignored: Any = None
    time: Times | None = None
    callID: Any = None
    tool: Any = None
    state: ToolState | None = None
    tokens: Tokens | None = None
    cost: Any = None
    reason: Any = None
    auto: Any = None
    mime: Any = None


class Session(msgspec.Struct, kw_only=True):
    id: str | None = None
    projectID: Any = None
    parentID: Any = None
    directory: Any = None
    time: Times | None = None


class Project(msgspec.Struct):
    worktree: Any = None


message_decoder = msgspec.json.Decoder(Message)
part_decoder = msgspec.json.Decoder(Part)
session_decoder = msgspec.json.Decoder(Session)
project_decoder = msgspec.json.Decoder(Project)


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def ms(value: Any) -> int | None:
    """Epoch milliseconds from a time field; None (never epoch 0) when absent or unusable."""
    return to_ms(value) if isinstance(value, int | float) else None
