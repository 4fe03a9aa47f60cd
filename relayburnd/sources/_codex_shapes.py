"""Typed shapes of Codex rollout lines and of the parser state kept in the cursor.

Only the fields the parser reads are declared, so msgspec skips the rest
(instructions, rate limits, encrypted reasoning) without building Python
objects for them. Fields are typed loosely (``Any``) where writers disagree on
the type: a field of an unexpected type must not make a whole line unreadable.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from .base import JSONState

STATE_VERSION = 1
NO_RAW = msgspec.Raw(b"")

KNOWN_KINDS = frozenset({"session_meta", "turn_context", "event_msg", "response_item", "compacted"})
# Types of bare (pre-envelope) items in legacy rollouts.
ITEM_TYPES = frozenset(
    {
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "local_shell_call",
        "web_search_call",
    }
)
CALL_TYPES = frozenset({"function_call", "custom_tool_call", "local_shell_call"})
OUTPUT_TYPES = frozenset({"function_call_output", "custom_tool_call_output"})


# ------------------------------------------------------------ line shapes


class Line(msgspec.Struct):
    """The envelope ``{"timestamp", "type", "payload"}``, plus legacy top-level fields."""

    timestamp: Any = None
    type: Any = None
    payload: msgspec.Raw = NO_RAW
    id: Any = None  # legacy bare meta line
    record_type: Any = None  # legacy state line


class Kind(msgspec.Struct):
    type: Any = None


class Meta(msgspec.Struct):
    id: Any = None
    timestamp: Any = None
    cwd: Any = None
    forked_from_id: Any = None
    source: Any = None
    agent_nickname: Any = None


class TurnContext(msgspec.Struct):
    model: Any = None
    model_name: Any = None
    metadata: Any = None
    cwd: Any = None


class Info(msgspec.Struct):
    total_token_usage: Any = None
    last_token_usage: Any = None
    model: Any = None
    model_name: Any = None
    metadata: Any = None


class TokenCount(msgspec.Struct):
    info: Info | None = None
    model: Any = None
    model_name: Any = None


class Event(msgspec.Struct):
    """``user_message``, ``agent_message`` and ``agent_reasoning`` payloads."""

    message: Any = None
    text: Any = None
    images: Any = None
    local_images: Any = None


class Item(msgspec.Struct):
    """A ``response_item`` payload (or a legacy bare item line)."""

    type: Any = None
    role: Any = None
    content: Any = None
    summary: Any = None
    name: Any = None
    arguments: msgspec.Raw = NO_RAW
    input: msgspec.Raw = NO_RAW
    action: msgspec.Raw = NO_RAW
    call_id: Any = None
    id: Any = None
    output: Any = None


line_decoder = msgspec.json.Decoder(Line)
kind_decoder = msgspec.json.Decoder(Kind)
meta_decoder = msgspec.json.Decoder(Meta)
context_decoder = msgspec.json.Decoder(TurnContext)
count_decoder = msgspec.json.Decoder(TokenCount)
event_decoder = msgspec.json.Decoder(Event)
item_decoder = msgspec.json.Decoder(Item)


# ------------------------------------------------------------ parser state


class PendingCall(msgspec.Struct, array_like=True):
    """A tool call waiting for the usage of the request that made it (hash only)."""

    id: str
    name: str
    sha: str
    size: int


class Twin(msgspec.Struct, array_like=True):
    """Content seen once, as an event or as an item, by hash: its twin is dropped."""

    origin: str
    key: str


class State(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Everything a resumed read needs to treat the next line as a single pass would.

    Never holds content text: tool calls and content twins are kept as hashes,
    and every list is bounded.
    """

    v: int = STATE_VERSION
    own: str | None = None  # thread id of the file (first session_meta)
    seg: str | None = None  # thread id of the current segment
    meta: bool = False  # a session_meta (or legacy meta line) was seen
    derived: bool = False  # fork or sub-agent file: may replay foreign history
    born: int | None = None  # when the file's own thread was created (ms)
    copy: int | None = None  # start of the copied segment being read (ms)
    prev: list[int] | None = None  # last cumulative usage vector
    model: str | None = None
    cwd: str = ""
    t: int | None = None  # last usable timestamp
    pend: list[PendingCall] = []
    names: dict[str, str] = {}  # recent call_id -> tool name (oldest first), for results
    twins: list[Twin] = []
    cmp: list[str] = []  # marker kinds of the compaction still being written
    ctx: int | None = None  # prompt + output of the last request


def load_state(state: JSONState, skipped: Counter[str]) -> State:
    """A fresh copy of the saved state (never the caller's objects); empty → new file.

    A state this version cannot read starts over and is counted as
    ``state_reset``: record ids do not depend on the read position, so a re-read
    converges with what was already delivered.
    """
    if not state:
        return State()
    try:
        st = msgspec.convert(state, State)
    except msgspec.ValidationError:
        st = None
    if st is None or st.v != STATE_VERSION:
        skipped["state_reset"] += 1
        return State()
    return st


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def model_of(*candidates: Any) -> str | None:
    """The first model name among plain strings and ``{"model": ...}`` objects."""
    for value in candidates:
        if isinstance(value, dict):
            value = value.get("model")
        name = text_or_none(value)
        if name:
            return name
    return None


def parent_links(meta: Meta) -> tuple[bool, list[tuple[str, str, str | None]]]:
    """Whether a file's first ``session_meta`` makes it a fork or sub-agent file (which
    may replay foreign history), and its ``(parent thread, relation, spawn call)`` links."""
    links: list[tuple[str, str, str | None]] = []
    forked = text_or_none(meta.forked_from_id)
    if forked:
        links.append((forked, "fork", None))
    source = meta.source
    subagent = isinstance(source, dict) and "subagent" in source
    if subagent:
        sub = source["subagent"]
        spawn = sub.get("thread_spawn") if isinstance(sub, dict) else None
        if isinstance(spawn, dict) and text_or_none(spawn.get("parent_thread_id")):
            parent = str(spawn["parent_thread_id"])
            links.append((parent, "subagent", text_or_none(spawn.get("spawn_call_id"))))
    return bool(forked) or subagent, links
