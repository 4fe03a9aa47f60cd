"""Records of one OpenCode message and its parts (the unit both backends deliver).

A message is always rebuilt whole from its current message object and all its
parts, whichever of them changed, so the output is a pure function of what is
stored now and every re-read converges on the same ids.

Usage (format spec 4.5): OpenCode overwrites ``message.tokens`` with the last
step's usage, so when ``step-finish`` parts exist each one is a billed request
and becomes its own turn; otherwise the message-level tokens are the request.
The first step's turn has the message's own id. A message counted at message
level before its step parts were visible (a poll between two writes) therefore
converges with its first step instead of being counted twice.

Rank (the store keeps, per id, the greatest ``(authority, output_tokens,
snapshot_lines)``): a turn read from the database has ``authority = 1`` and wins
over a stale JSON copy of the same message whatever its counts;
a step-finish part is written once with its final numbers, and its turn has
``snapshot_lines = 3``; a message-level turn has 1 while the message streams and
2 once it is completed or aborted, so the final snapshot of a message and a
step-derived turn win over any earlier snapshot with the same output. Zero-token
placeholders produce nothing.

Content and tool results are emitted only once final (a text part with an end
time, a finished tool), because content records have no completeness rank.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from ..records import (
    Compaction,
    ContentRecord,
    Record,
    ToolCall,
    ToolResultEvent,
    Turn,
    UserTurn,
    make_id,
    short_hash,
)
from ._opencode_shapes import Message, Part, Tokens, ms, text_or_none
from .opencode import SOURCE

STREAMING, COMPLETED, FROM_STEP = 1, 2, 3
_FINAL_TOOL = frozenset({"completed", "error"})
_STARTED_TOOL = frozenset({"running", "completed", "error"})
_encoder = msgspec.json.Encoder(order="sorted")


@dataclass
class Unit:
    """A message with all its parts, sorted by part id (creation order)."""

    msg: Message
    parts: list[Part]
    row_created: int | None = None  # the database row's time_created
    file_time: int | None = None  # the JSON file's mtime, the last resort
    from_db: bool = False  # read from opencode.db (authoritative over JSON copies)


@dataclass
class UnitContext:
    """Lookups beyond the unit: a session's project directory, and whether a
    message holds a ``compaction`` part (to keep one marker per compaction)."""

    project_of: Callable[[str], str]
    has_compaction_part: Callable[[str], bool]
    skipped: Counter[str] = field(default_factory=Counter)


def _json_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return _encoder.encode(value).decode("utf-8")
    except (TypeError, UnicodeDecodeError):
        return ""


def _cost(value: object) -> float | None:
    """OpenCode's logged USD cost; 0 means it had no price, so leave it to the pricer."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value > 0 else None


def _start(part: Part) -> int | None:
    times = part.state.time if part.type == "tool" and part.state else part.time
    return ms(times.start) if times else None


def _exit_code(metadata: object) -> int | None:
    if not isinstance(metadata, dict):
        return None
    for key in ("exit", "exitCode", "exit_code"):
        value = metadata.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class UnitBuilder:
    """Builds the records of one unit; ``build`` is the only entry point."""

    def __init__(self, unit: Unit, ctx: UnitContext) -> None:
        self.unit = unit
        self.msg = unit.msg
        self.ctx = ctx
        self.msg_id = unit.msg.id or ""
        self.session = unit.msg.sessionID or ""
        self.out: list[Record] = []

    def build(self) -> list[Record]:
        msg = self.msg
        ts = self._message_ts()
        if ts is None:
            self.ctx.skipped["no_timestamp"] += 1
            return []
        self.ts = ts
        self.final = bool(msg.time and ms(msg.time.completed)) or msg.error is not None
        path = msg.path
        root = (text_or_none(path.root) or text_or_none(path.cwd)) if path else None
        self.project = root or self.ctx.project_of(self.session)
        if msg.role == "assistant":
            self._turns()
            if msg.summary is True:
                self._summary_compaction()
        elif msg.role == "user":
            self._user()
        else:
            self.ctx.skipped["unknown_role"] += 1
            return []
        self._parts()
        return self.out

    def _message_ts(self) -> int | None:
        """``time.created``, else ``time.completed``, the row's creation time, the
        earliest part start, the file time; never epoch 0 (format spec 4.6)."""
        times = self.msg.time
        for value in (times.created, times.completed) if times else ():
            got = ms(value)
            if got is not None:
                return got
        if self.unit.row_created:
            return self.unit.row_created
        starts = [s for s in (_start(p) for p in self.unit.parts) if s is not None]
        return min(starts) if starts else self.unit.file_time

    # -- usage

    def _turn(
        self,
        tid: str,
        tokens: Tokens,
        *,
        ts: int,
        cost: object,
        stop: object,
        calls: list[Part],
        rank: int,
        request_id: str | None,
    ) -> None:
        inp, out, reasoning, read, write = tokens.counts()
        if not (inp or out or reasoning or read or write):
            return  # a streaming placeholder or an empty step: nothing billed yet
        msg = self.msg
        self.out.append(
            Turn(
                id=tid,
                source=SOURCE,
                session_id=self.session,
                project=self.project,
                ts=ts,
                model=text_or_none(msg.modelID),
                input_tokens=inp,
                output_tokens=out,
                cache_write_tokens=write,
                cache_read_tokens=read,
                reasoning_tokens=reasoning,
                logged_cost_usd=_cost(cost),
                stop_reason=text_or_none(stop),
                message_id=self.msg_id,
                request_id=request_id,
                tool_calls=[self._tool_call(p) for p in calls],
                snapshot_lines=rank,
                complete=rank != STREAMING,
                # the database is the source of truth over JSON leftovers (spec 7.2)
                authority=1 if self.unit.from_db else 0,
            )
        )

    def _turns(self) -> None:
        base_id = make_id("turn", SOURCE, self.msg_id)
        tools = [p for p in self.unit.parts if p.type == "tool"]
        if not any(p.type == "step-finish" for p in self.unit.parts):
            if self.msg.tokens is not None:
                rank = COMPLETED if self.final else STREAMING
                self._turn(
                    base_id,
                    self.msg.tokens,
                    ts=self.ts,
                    cost=self.msg.cost,
                    stop=self.msg.finish,
                    calls=tools,
                    rank=rank,
                    request_id=None,
                )
            return
        calls: list[Part] = []
        latest = self.ts
        steps = 0
        for part in self.unit.parts:
            start = _start(part)
            if start is not None:
                latest = max(latest, start)
            if part.type == "tool":
                calls.append(part)
            elif part.type == "step-finish":
                pid = part.id or ""
                tid = base_id if steps == 0 else make_id("turn", SOURCE, self.msg_id, pid)
                if part.tokens is not None:
                    self._turn(
                        tid,
                        part.tokens,
                        ts=latest,
                        cost=part.cost,
                        stop=part.reason,
                        calls=calls,
                        rank=FROM_STEP,
                        request_id=pid,
                    )
                calls, steps = [], steps + 1

    @staticmethod
    def _tool_call(part: Part) -> ToolCall:
        args = _json_text(part.state.input if part.state else None)
        data = args.encode("utf-8", "surrogatepass")
        return ToolCall(
            id=text_or_none(part.callID) or part.id or "",
            name=text_or_none(part.tool) or "unknown",
            args_sha256=short_hash(data) if data else "",
            args_bytes=len(data),
        )

    # -- turns of the user, compactions

    def _user(self) -> None:
        chars, types, images, harness = 0, [], 0, False
        for part in self.unit.parts:
            if part.type in ("compaction", "subtask"):
                harness = True
                if part.type == "compaction":
                    self._compaction(self.msg_id, "auto" if part.auto is True else "manual")
            elif part.synthetic is True or part.ignored is True:
                continue
            elif part.type == "text" and isinstance(part.text, str):
                chars += len(part.text)
                types.append("text")
            elif part.type == "file":
                types.append("file")
                images += 1 if str(part.mime or "").startswith("image/") else 0
        if harness or not types:
            return
        self.out.append(
            UserTurn(
                id=make_id("user-turn", SOURCE, self.msg_id),
                source=SOURCE,
                session_id=self.session,
                project=self.project,
                ts=self.ts,
                message_id=self.msg_id,
                text_chars=chars,
                block_types=types,
                image_count=images,
            )
        )

    def _summary_compaction(self) -> None:
        """An assistant ``summary: true`` message is the compaction itself in releases
        without ``compaction`` parts; newer releases also mark the user message that
        asked for it, and then that part is the record."""
        parent = text_or_none(self.msg.parentID)
        if parent and self.ctx.has_compaction_part(parent):
            return
        self._compaction(self.msg_id, None)

    def _compaction(self, message_id: str, trigger: str | None) -> None:
        self.out.append(
            Compaction(
                id=make_id("compaction", SOURCE, message_id),
                source=SOURCE,
                session_id=self.session,
                project=self.project,
                ts=self.ts,
                message_id=message_id,
                trigger=trigger,
            )
        )

    # -- content and tool results

    def _parts(self) -> None:
        role = self.msg.role if isinstance(self.msg.role, str) else "assistant"
        for index, part in enumerate(self.unit.parts):
            seq = 2 * index
            if part.type in ("text", "reasoning"):
                done = role == "user" or self.final or bool(part.time and part.time.end)
                if done and part.synthetic is not True and part.ignored is not True:
                    block = "text" if part.type == "text" else "reasoning"
                    self._content(part, role, block, _json_text(part.text), seq)
            elif part.type == "tool" and part.state is not None:
                state = part.state
                if state.status in _STARTED_TOOL:
                    self._content(part, "assistant", "tool_use", _json_text(state.input), seq)
                if state.status in _FINAL_TOOL:
                    failed = state.status == "error"
                    text = _json_text(state.error if failed else state.output)
                    self._tool_result(part, failed, text)
                    self._content(part, "tool", "tool_result", text, seq + 1)

    def _tool_result(self, part: Part, failed: bool, text: str) -> None:
        state = part.state
        times = state.time if state else None
        end = (ms(times.end) or ms(times.start)) if times else None
        self.out.append(
            ToolResultEvent(
                id=make_id("tool-result", SOURCE, part.id or part.callID),
                source=SOURCE,
                session_id=self.session,
                ts=end or self.ts,
                tool_use_id=text_or_none(part.callID) or part.id or "",
                tool_name=text_or_none(part.tool),
                is_error=failed,
                exit_code=_exit_code(state.metadata) if state else None,
                output_bytes=len(text.encode("utf-8", "surrogatepass")),
            )
        )

    def _content(self, part: Part, role: str, block: str, text: str, seq: int) -> None:
        if not text:
            return
        is_tool = part.type == "tool"
        self.out.append(
            ContentRecord(
                id=make_id("content", SOURCE, part.id, block),
                source=SOURCE,
                session_id=self.session,
                ts=_start(part) or self.ts,
                message_id=self.msg_id,
                seq=seq,
                role=role,
                block_type=block,
                text=text,
                sha256=short_hash(text),
                chars=len(text),
                tool_use_id=text_or_none(part.callID) if is_tool else None,
                tool_name=text_or_none(part.tool) if is_tool else None,
            )
        )


def unit_records(unit: Unit, ctx: UnitContext) -> list[Record]:
    return UnitBuilder(unit, ctx).build()
