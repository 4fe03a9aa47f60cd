"""Claude Code transcripts: discovery and an incremental, resumable parser.

Reading rules (format spec 2.10 and 7.5):

* A request is keyed by ``message.id`` + ``requestId`` (``message.id`` +
  ``sessionId`` when a gateway wrote no request id); resume copies, progress
  copies and sub-agent files repeat the key and converge on one record.
* A response is written as several lines whose output count grows. Lines of one
  response are folded into one open turn (largest output wins, ties the later
  line; tool calls accumulate). The turn is emitted when a later line of the
  same stream (same file, same ``isSidechain``/``agentId``) shows it ended, or
  when the parser is told the file is idle (``final``). An emitted turn stays
  open so later lines still raise it; the store keeps the largest snapshot.
* ``agent_progress`` lines carry a copy of a sub-agent line: it is read as a
  line of that sub-agent's stream.
* ``<synthetic>`` lines are not model requests. Unknown line types and fields
  are ignored. Malformed, NUL-damaged and non-UTF-8 lines are skipped and
  counted; they never stop the file.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from ..records import (
    Compaction,
    ContentRecord,
    Record,
    SessionRelationship,
    ToolCall,
    ToolResultEvent,
    Turn,
    UserTurn,
    id_of_joined,
    id_prefix,
    make_id,
    short_hash,
)
from ..timeutil import to_ms
from .base import FileContext, JSONState, ParseResult

SOURCE = "claude"
SYNTHETIC_MODEL = "<synthetic>"
MAX_TOOL_NAMES = 512
_HARNESS_PREFIXES = (
    "<local-command-",
    "<task-notification>",
    "[Request interrupted",
    "This session is being continued",
    "Stop hook feedback:",
    "Caveat: The messages below were generated",
)
_COMMAND_PREFIXES = ("<command-name>", "<command-message>")


# ------------------------------------------------------------ line shapes
# Decoded lines never take part in reference cycles: ``gc=False`` keeps hundreds of
# thousands of them per backfill out of the cyclic collector's bookkeeping.

_NO_RAW = msgspec.Raw(b"")
_NULL_RAW = msgspec.Raw(b"null")


def _raw_len(value: msgspec.Raw) -> int:
    """Length of a raw JSON value, 0 when absent or null; nothing is copied."""
    n = len(value)
    return 0 if n == 4 and value == _NULL_RAW else n


def _raw(value: msgspec.Raw) -> bytes | None:
    """The bytes of a raw JSON value, None when absent or null."""
    return bytes(value) if _raw_len(value) else None


class _CacheCreation(msgspec.Struct, gc=False):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class _ServerToolUse(msgspec.Struct, gc=False):
    web_search_requests: int | None = None
    web_fetch_requests: int | None = None


class _Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: _CacheCreation | None = None
    service_tier: str | None = None
    speed: str | None = None
    server_tool_use: _ServerToolUse | None = None


class _Block(msgspec.Struct, gc=False):
    type: str = ""
    text: msgspec.Raw = _NO_RAW
    thinking: msgspec.Raw = _NO_RAW
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = _NO_RAW
    tool_use_id: str | None = None
    content: msgspec.Raw = _NO_RAW
    is_error: bool | None = None


class _Message(msgspec.Struct, gc=False):
    id: str | None = None
    model: str | None = None
    role: str | None = None
    # decoded with the line, in one pass; a line whose content has another shape is
    # decoded again as a _LooseLine, which keeps the rest of the line
    content: list[_Block] | str | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None


class _LooseMessage(_Message):
    content: msgspec.Raw = _NO_RAW  # type: ignore[assignment]


class _Line(msgspec.Struct, gc=False):
    type: str | None = None
    uuid: str | None = None
    parentUuid: str | None = None
    sessionId: str | None = None
    timestamp: str | None = None
    cwd: str | None = None
    isSidechain: bool | None = None
    agentId: str | None = None
    requestId: str | None = None
    message: _Message | None = None
    isMeta: bool | None = None
    isCompactSummary: bool | None = None
    subtype: str | None = None
    compactMetadata: msgspec.Raw = _NO_RAW
    # a progress line's copy of a sub-agent line, decoded with the line in one pass;
    # any other shape fails the line, which is then read as a _LooseLine
    data: _ProgressData | None = None
    costUSD: float | None = None
    parentToolUseID: str | None = None


class _ProgressData(msgspec.Struct, gc=False):
    type: str | None = None
    agentId: str | None = None
    message: _Line | None = None


class _LooseLine(_Line):
    message: _LooseMessage | None = None
    data: msgspec.Raw = _NO_RAW  # type: ignore[assignment]


class _LooseProgressData(_ProgressData):
    message: _LooseLine | None = None


class _CompactMeta(msgspec.Struct, gc=False):
    trigger: str | None = None
    preTokens: int | None = None


class _Kind(msgspec.Struct, gc=False):
    type: Any = None


_line_decoder = msgspec.json.Decoder(_Line)
_loose_line_decoder = msgspec.json.Decoder(_LooseLine)
_loose_progress_decoder = msgspec.json.Decoder(_LooseProgressData)
_kind_decoder = msgspec.json.Decoder(_Kind)
_blocks_decoder = msgspec.json.Decoder(list[_Block] | str | None)
_str_decoder = msgspec.json.Decoder(str)
_progress_decoder = msgspec.json.Decoder(_ProgressData)
_compact_decoder = msgspec.json.Decoder(_CompactMeta)
_any_decoder = msgspec.json.Decoder()


class _Open(msgspec.Struct, kw_only=True):
    """A response being folded; ``emitted`` is the rank basis last emitted."""

    key: str
    turn: Turn
    emitted: list[int] | None = None


class _PendingUser(msgspec.Struct, kw_only=True):
    turn: UserTurn
    emitted: bool = False


class _State(msgspec.Struct, kw_only=True, omit_defaults=True):
    open: dict[str, _Open] = {}
    user: dict[str, _PendingUser] = {}
    tools: dict[str, str] = {}
    agents: list[str] = []


# ------------------------------------------------------------ discovery


def config_dirs_with_projects(roots: Sequence[Path]) -> list[Path]:
    """``projects/`` directories of the roots (a root may be the projects dir itself)."""
    out: list[Path] = []
    for root in roots:
        if (root / "projects").is_dir():
            out.append(root / "projects")
        elif root.name == "projects" and root.is_dir():
            out.append(root)
    return out


def _walk_jsonl(top: Path) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_jsonl(Path(entry.path))
        elif entry.name.endswith(".jsonl") and entry.is_file():
            yield Path(entry.path)


class _AgentMeta(msgspec.Struct, gc=False):
    toolUseId: str | None = None


def _meta_tool_use_id(transcript: Path) -> str | None:
    """The spawning tool call of a sub-agent, from its ``agent-<id>.meta.json`` (2.1.x).

    Without it a sub-agent whose parent wrote no progress copies could not be tied
    to the Task call that started it. A missing or unreadable file is no error.
    """
    try:
        with open(os.path.splitext(transcript)[0] + ".meta.json", "rb") as fh:
            meta = msgspec.json.decode(fh.read(), type=_AgentMeta)
    except (OSError, msgspec.DecodeError):
        return None
    return meta.toolUseId or None


_TOOL_RESULT_ID_PREFIX = id_prefix("tool-result", SOURCE)  # + the call's id


def _loosened(line: _LooseLine) -> _Line:
    """A line whose message content has an unexpected shape: read it without content."""
    if line.message is not None:
        line.message.content = None  # type: ignore[assignment]
    return line


def _text_of(value: msgspec.Raw) -> str:
    # Raw is a buffer: decoded where it lies, without a copy
    if not _raw_len(value):
        return ""
    try:
        return _str_decoder.decode(value)
    except msgspec.ValidationError:
        return str(value, "utf-8", "replace")


def _result_text(content: msgspec.Raw) -> str:
    """Text of a tool_result ``content``: a string or a list of text blocks."""
    if not _raw_len(content):
        return ""
    try:
        value = _blocks_decoder.decode(content)
    except msgspec.ValidationError:
        return str(content, "utf-8", "replace")
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return "\n".join(_text_of(b.text) for b in value if b.type == "text")


class ClaudeSource:
    """Claude Code: ``projects/**.jsonl`` below each config directory."""

    name = SOURCE

    def discover(self, roots: Sequence[Path]) -> Iterator[tuple[Path, Path]]:
        # the same projects directory reached twice (a symlinked ~/.config/claude) is
        # walked once; copies in distinct directories converge through record ids
        seen: set[Path] = set()
        for projects in config_dirs_with_projects(roots):
            resolved = projects.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            for path in _walk_jsonl(projects):
                yield path, projects

    def watch_dirs(self, roots: Sequence[Path]) -> list[Path]:
        return [r / "projects" if (r / "projects").is_dir() else r for r in roots]

    def parse(
        self, data: bytes, state: JSONState, ctx: FileContext, *, final: bool
    ) -> ParseResult:
        return _Parser(state, ctx).run(data, final)


class _Parser:
    """One parse call: decodes lines, folds responses, emits records."""

    def __init__(self, state: JSONState, ctx: FileContext) -> None:
        self.st = msgspec.convert(state, _State) if state else _State()
        self.ctx = ctx
        self.with_content = ctx.with_content
        self.out: list[Record] = []
        self.skipped: Counter[str] = Counter()
        self.skipped_lines: list[tuple[int, int, str]] = []
        self.file_session = ctx.path.stem
        self.file_name = ctx.path.name
        self.project_hint = ctx.path.parent.name
        self._related: set[tuple[str, str | None]] = set()
        self._meta_read = False
        self._meta_tool_use: str | None = None

    # -- driver

    def run(self, data: bytes, final: bool) -> ParseResult:
        # find() is memchr; bytes.split(b"\n") compares byte by byte in a loop
        pos = 0
        size = len(data)
        find = data.find
        while pos < size:
            end = find(b"\n", pos)
            if end < 0:
                end = size
            line = data[pos : end - 1 if end > pos and data[end - 1] == 13 else end]
            if line and not line.isspace():  # stops at the first other byte; strip() copies
                self._line(line, pos, end + 1 - pos)
            pos = end + 1
        if final:
            self._flush_idle()
        pending = any(op.emitted != list(op.turn.rank_basis()) for op in self.st.open.values())
        pending = pending or any(not u.emitted for u in self.st.user.values())
        state = msgspec.to_builtins(self.st)
        return ParseResult(
            records=self.out,
            state=state,
            consumed=len(data),
            skipped=self.skipped,
            skipped_lines=self.skipped_lines,
            pending=pending,
        )

    def _skip(self, pos: int, length: int, reason: str) -> None:
        self.skipped[reason] += 1
        self.skipped_lines.append((pos, length, reason))

    def _line(self, raw: bytes, pos: int, length: int) -> None:
        if not raw.isascii():
            try:
                raw.decode("utf-8")  # nested raw fields are decoded lazily: validate once here
            except UnicodeDecodeError:
                self._skip(pos, length, "invalid_utf8")
                return
        try:
            try:
                line = _line_decoder.decode(raw)
            except msgspec.ValidationError:
                line = _loosened(_loose_line_decoder.decode(raw))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            reason = "invalid_json"
            if b"\x00" in raw:
                reason = "nul_bytes"
            else:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    reason = "invalid_utf8"
            if isinstance(exc, msgspec.ValidationError):
                shape = self._shape_problem(raw)
                if shape is None:
                    return
                reason = shape
            self._skip(pos, length, reason)
            return
        kind = line.type
        if kind is None and line.message is not None and line.message.role == "assistant":
            kind = "assistant"  # early releases and hand-made logs omit the line type
        if line.isSidechain and line.agentId and kind in ("assistant", "user"):
            self._relationship(line, line.agentId, None)
        if kind == "assistant":
            self._assistant(line, pos, length, nested_agent=None)
        elif kind == "user":
            self._user(line, pos, length, agent=line.agentId)
        elif kind == "system":
            self._system(line)
        elif kind == "progress":
            self._progress(line, pos, length)

    def _shape_problem(self, raw: bytes) -> str | None:
        """A line that is JSON but not of the expected shape: skip known kinds only."""
        try:
            kind = _kind_decoder.decode(raw).type
        except msgspec.ValidationError:
            return "not_object"
        except msgspec.DecodeError:
            return "invalid_json"
        if kind in ("assistant", "user", "system", "progress"):
            return "invalid_shape"
        return None  # an unknown record type with unusual fields: ignored by design

    # -- helpers

    def _session(self, line: _Line) -> str:
        return line.sessionId or self.file_session

    def _project(self, line: _Line) -> str:
        return line.cwd or self.project_hint

    @staticmethod
    def _stream(sidechain: bool, agent: str | None) -> str:
        return f"{int(sidechain)}|{agent or ''}"

    def _note_line_in_stream(self, stream: str, next_id: str | None) -> None:
        """A new line arrived in ``stream``: finish what it ends."""
        pending = self.st.user.pop(stream, None)
        if pending is not None:
            pending.turn.next_message_id = next_id
            self.out.append(pending.turn)

    def _close(self, stream: str) -> None:
        op = self.st.open.pop(stream, None)
        if op is not None:
            self._emit_open(op, keep=False)

    def _emit_open(self, op: _Open, *, keep: bool) -> None:
        basis = list(op.turn.rank_basis())
        if op.emitted == basis:
            return
        op.emitted = basis
        turn = op.turn
        if keep:
            turn = msgspec.structs.replace(turn, tool_calls=list(turn.tool_calls))
        self.out.append(turn)

    def _flush_idle(self) -> None:
        for op in self.st.open.values():
            self._emit_open(op, keep=True)
        for pending in self.st.user.values():
            if not pending.emitted:
                pending.emitted = True
                self.out.append(msgspec.structs.replace(pending.turn))

    def _forget_old_tools(self) -> None:
        """Keep the names of the latest ``MAX_TOOL_NAMES`` tool calls (state stays small)."""
        tools = self.st.tools
        for key in list(tools)[: len(tools) - MAX_TOOL_NAMES]:
            del tools[key]


    # -- assistant lines

    def _assistant(
        self, line: _Line, pos: int, length: int, nested_agent: str | None, *,
        outer: _Line | None = None,
    ) -> None:
        msg = line.message
        if msg is None:
            return
        sidechain = bool(line.isSidechain) or nested_agent is not None
        agent = nested_agent or line.agentId
        stream = f"{int(sidechain)}|{agent or ''}"
        session = (outer or line).sessionId or self.file_session
        ts = to_ms(line.timestamp)
        blocks = msg.content
        if self.with_content and ts is not None and isinstance(blocks, list):
            self._assistant_content(line, msg, blocks, session, ts)
        usage = msg.usage
        if usage is None or msg.model == SYNTHETIC_MODEL:
            if msg.model == SYNTHETIC_MODEL:
                self._note_line_in_stream(stream, msg.id)
                self._close(stream)
            return
        if ts is None:
            self._skip(pos, length, "bad_timestamp")
            return
        if self.st.user:
            self._note_line_in_stream(stream, msg.id)
        request_id = line.requestId
        if msg.id:
            key = f"{msg.id}\x1f{request_id}" if request_id else f"{msg.id}\x1fs:{session}"
        else:
            key = f"line\x1f{line.uuid or pos}"
        op = self.st.open.get(stream)
        if op is not None and op.key != key:
            self._close(stream)
            op = None
        if op is None:
            if msg.id:
                tid = (
                    make_id("turn", SOURCE, msg.id, request_id)
                    if request_id
                    else make_id("turn", SOURCE, msg.id, "session", session)
                )
            else:
                tid = make_id("turn", SOURCE, "line", session, line.uuid, line.timestamp)
            turn = Turn(
                id=tid,
                source=SOURCE,
                session_id=session,
                project=self._project(outer or line),
                ts=ts,
                message_id=msg.id,
                request_id=request_id,
                is_sidechain=sidechain,
                agent_id=agent,
                snapshot_lines=0,
                output_tokens=-1,
            )
            op = _Open(key=key, turn=turn)
            self.st.open[stream] = op
        self._absorb(op.turn, line, msg, usage, ts, blocks)
        if not msg.id:
            self._close(stream)

    def _absorb(
        self,
        t: Turn,
        line: _Line,
        msg: _Message,
        usage: _Usage,
        ts: int,
        blocks: list[_Block] | str | None,
    ) -> None:
        t.snapshot_lines += 1
        out = usage.output_tokens or 0
        if out >= t.output_tokens:
            t.output_tokens = out
            t.ts = ts
            t.model = msg.model
            t.input_tokens = usage.input_tokens or 0
            t.cache_read_tokens = usage.cache_read_input_tokens or 0
            cc = usage.cache_creation
            if cc is not None:
                t.cache_write_5m_tokens = cc.ephemeral_5m_input_tokens or 0
                t.cache_write_1h_tokens = cc.ephemeral_1h_input_tokens or 0
                t.cache_write_tokens = t.cache_write_5m_tokens + t.cache_write_1h_tokens
            else:
                t.cache_write_5m_tokens = t.cache_write_1h_tokens = 0
                t.cache_write_tokens = usage.cache_creation_input_tokens or 0
            t.service_tier = usage.service_tier
            t.speed = usage.speed
            stu = usage.server_tool_use
            t.web_search_requests = (stu.web_search_requests or 0) if stu else 0
            t.web_fetch_requests = (stu.web_fetch_requests or 0) if stu else 0
            if line.costUSD is not None:
                t.logged_cost_usd = line.costUSD
        if msg.stop_reason is not None:
            t.stop_reason = msg.stop_reason
            t.complete = True
        if isinstance(blocks, list):
            calls = t.tool_calls
            known: set[str] | None = None
            tools = self.st.tools
            for b in blocks:
                bid = b.id
                if b.type != "tool_use" or not bid:
                    continue
                if calls:  # a later snapshot repeats the calls of the earlier ones
                    if known is None:
                        known = {c.id for c in calls}
                    if bid in known:
                        continue
                    known.add(bid)
                size = _raw_len(b.input)
                name = b.name or ""
                calls.append(ToolCall(
                    id=bid, name=name,
                    # Raw is a buffer: the arguments are hashed without a copy
                    args_sha256=short_hash(b.input) if size else "",
                    args_bytes=size,
                ))
                tools[bid] = name
                if len(tools) > MAX_TOOL_NAMES:
                    self._forget_old_tools()

    def _assistant_content(
        self, line: _Line, msg: _Message, blocks: list[_Block], session: str, ts: int
    ) -> None:
        if not self.with_content:
            return
        anchor = f"{line.uuid}|{msg.id}|{line.timestamp}"
        content_ids = id_prefix("content", SOURCE, session, anchor)
        for seq, b in enumerate(blocks):
            if b.type == "text":
                text, block_type = _text_of(b.text), "text"
            elif b.type == "thinking":
                text, block_type = _text_of(b.thinking), "thinking"
            elif b.type == "tool_use":
                text = str(b.input, "utf-8", "replace") if _raw_len(b.input) else ""
                block_type = "tool_use"
            else:
                continue
            self.out.append(
                ContentRecord(
                    id=id_of_joined(content_ids + str(seq)),
                    source=SOURCE,
                    session_id=session,
                    ts=ts,
                    message_id=msg.id or anchor,
                    seq=seq,
                    role="assistant",
                    block_type=block_type,
                    text=text,
                    sha256=short_hash(text),
                    chars=len(text),
                    tool_use_id=b.id if b.type == "tool_use" else None,
                    tool_name=b.name if b.type == "tool_use" else None,
                )
            )

    # -- user lines

    def _user(self, line: _Line, pos: int, length: int, agent: str | None) -> None:
        msg = line.message
        sidechain = bool(line.isSidechain)
        stream = f"{int(sidechain)}|{agent or ''}"
        uuid = line.uuid
        if self.st.user:
            self._note_line_in_stream(stream, uuid)
        if self.st.open:
            self._close(stream)
        ts = to_ms(line.timestamp)
        if msg is None or ts is None:
            if msg is not None:
                self._skip(pos, length, "bad_timestamp")
            return
        session = line.sessionId or self.file_session
        blocks = msg.content
        texts: list[str] = []
        block_types: list[str] = []
        results = 0
        result_bytes = 0
        images = 0
        anchor = f"{uuid}|{line.timestamp}"
        content_ids = id_prefix("content", SOURCE, session, anchor) if self.with_content else ""
        if isinstance(blocks, str):
            texts.append(blocks)
            block_types.append("text")
        elif isinstance(blocks, list):
            tools = self.st.tools
            for seq, b in enumerate(blocks):
                btype = b.type
                block_types.append(btype)
                if btype == "text":
                    texts.append(_text_of(b.text))
                elif btype == "image":
                    images += 1
                elif btype == "tool_result" and (tool_use_id := b.tool_use_id):
                    results += 1
                    size = _raw_len(b.content)
                    result_bytes += size
                    tool_name = tools.get(tool_use_id)
                    self.out.append(
                        ToolResultEvent(
                            id=id_of_joined(_TOOL_RESULT_ID_PREFIX + tool_use_id),
                            source=SOURCE,
                            session_id=session,
                            ts=ts,
                            tool_use_id=tool_use_id,
                            tool_name=tool_name,
                            is_error=bool(b.is_error),
                            output_bytes=size,
                            is_sidechain=sidechain,
                        )
                    )
                    if self.with_content:
                        text = _result_text(b.content)
                        self.out.append(
                            ContentRecord(
                                id=id_of_joined(content_ids + str(seq)),
                                source=SOURCE,
                                session_id=session,
                                ts=ts,
                                message_id=uuid or anchor,
                                seq=seq,
                                role="tool",
                                block_type="tool_result",
                                text=text,
                                sha256=short_hash(text),
                                chars=len(text),
                                tool_use_id=tool_use_id,
                                tool_name=tool_name,
                            )
                        )
        if self.with_content and not line.isMeta:
            block_type = "summary" if line.isCompactSummary else "text"
            text_ids = content_ids + id_prefix("text")
            for seq, text in enumerate(texts):
                self.out.append(
                    ContentRecord(
                        id=id_of_joined(text_ids + str(seq)),
                        source=SOURCE,
                        session_id=session,
                        ts=ts,
                        message_id=uuid or anchor,
                        seq=seq,
                        role="user",
                        block_type=block_type,
                        text=text,
                        sha256=short_hash(text),
                        chars=len(text),
                    )
                )
        if not texts or line.isMeta or line.isCompactSummary or sidechain or not uuid:
            return
        first = texts[0].lstrip()
        if first.startswith(_HARNESS_PREFIXES):
            return
        self.st.user[stream] = _PendingUser(
            turn=UserTurn(
                id=make_id("user-turn", SOURCE, uuid, line.timestamp),
                source=SOURCE,
                session_id=session,
                project=self._project(line),
                ts=ts,
                message_id=uuid,
                text_chars=sum(len(t) for t in texts),
                block_types=block_types,
                tool_result_count=results,
                tool_result_bytes=result_bytes,
                image_count=images,
                is_command=first.startswith(_COMMAND_PREFIXES),
                prev_message_id=line.parentUuid,
            )
        )

    # -- system and progress lines

    def _system(self, line: _Line) -> None:
        stream = self._stream(bool(line.isSidechain), line.agentId)
        self._note_line_in_stream(stream, line.uuid)
        self._close(stream)
        if line.subtype != "compact_boundary":
            return
        ts = to_ms(line.timestamp)
        if ts is None:
            return
        meta = _CompactMeta()
        raw = _raw(line.compactMetadata)
        if raw is not None:
            with contextlib.suppress(msgspec.ValidationError):
                meta = _compact_decoder.decode(raw)
        self.out.append(
            Compaction(
                id=make_id("compaction", SOURCE, line.uuid, line.timestamp),
                source=SOURCE,
                session_id=self._session(line),
                project=self._project(line),
                ts=ts,
                message_id=line.uuid,
                trigger=meta.trigger,
                pre_tokens=meta.preTokens,
            )
        )

    def _progress(self, line: _Line, pos: int, length: int) -> None:
        data = line.data
        if data is None:
            return
        if not isinstance(data, _ProgressData):  # a _LooseLine's: decoded here
            raw = _raw(data)
            if raw is None:
                return
            try:
                try:
                    data = _progress_decoder.decode(raw)
                except msgspec.ValidationError:
                    data = _loose_progress_decoder.decode(raw)
                    if data.message is not None:
                        _loosened(data.message)
            except msgspec.ValidationError:
                return
        if data.type != "agent_progress" or data.message is None:
            return
        agent = data.agentId or "progress"
        self._relationship(line, agent, line.parentToolUseID)
        nested = data.message
        if nested.type == "assistant":
            self._assistant(nested, pos, length, nested_agent=agent, outer=line)

    def _spawning_call(self) -> str | None:
        """The meta file's tool call, read once per parse: every line of a sub-agent asks."""
        if not self._meta_read:
            self._meta_read = True
            self._meta_tool_use = _meta_tool_use_id(self.ctx.path)
        return self._meta_tool_use

    def _relationship(self, line: _Line, agent: str, tool_use_id: str | None) -> None:
        # every line of a sub-agent asks; the answer for the same question within one
        # parse cannot change, so only the first one does the work
        asked = (agent, tool_use_id)
        if asked in self._related:
            return
        self._related.add(asked)
        if tool_use_id is None and self.file_name == f"agent-{agent}.jsonl":
            tool_use_id = self._spawning_call()
        marker = f"{agent}|{tool_use_id or ''}"
        if marker in self.st.agents:
            return
        self.st.agents.append(marker)
        parent = self._session(line)
        child = f"agent-{agent}"
        self.out.append(
            SessionRelationship(
                id=make_id("relationship", SOURCE, child, parent),
                source=SOURCE,
                session_id=child,
                parent_session_id=parent,
                relation="subagent",
                agent_id=agent,
                tool_use_id=tool_use_id,
                ts=to_ms(line.timestamp) or 0,
            )
        )
