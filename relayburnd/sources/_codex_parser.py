"""The Codex rollout parser: a state machine over complete lines.

``codex.py`` describes the reading rules; this module applies them. One
``RolloutParser`` handles one ``parse`` call. Everything that must survive to the
next call (cumulative vector, model, segment, pending tool calls) lives in the
``State`` it loads and returns, so a read resumed at any line boundary emits
exactly what a single pass would.
"""

from __future__ import annotations

from collections import Counter

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
    make_id,
    short_hash,
)
from ..timeutil import to_ms
from . import _codex_usage as usage
from ._codex_shapes import (
    CALL_TYPES,
    ITEM_TYPES,
    KNOWN_KINDS,
    OUTPUT_TYPES,
    Item,
    Meta,
    PendingCall,
    Twin,
    context_decoder,
    count_decoder,
    event_decoder,
    item_decoder,
    kind_decoder,
    line_decoder,
    load_state,
    meta_decoder,
    model_of,
    parent_links,
    text_or_none,
)
from ._codex_text import (
    block_texts,
    is_injected,
    is_json_object,
    raw_value_text,
    session_from_name,
    tool_outcome,
)
from .base import FileContext, JSONState, ParseResult

SOURCE = "codex"
# A replay burst is written within this long after its session_meta line.
COPY_SLACK_MS = 1000
MAX_PENDING_CALLS = 256
MAX_TOOL_NAMES = 256
MAX_TWINS = 16


class RolloutParser:
    """One parse call over complete lines; the state carries everything across calls."""

    def __init__(self, state: JSONState, ctx: FileContext) -> None:
        self.skipped: Counter[str] = Counter()
        self.skipped_lines: list[tuple[int, int, str]] = []
        self.st = load_state(state, self.skipped)
        self.ctx = ctx
        self.with_content = ctx.with_content
        self.out: list[Record] = []

    # -- driver

    def run(self, data: bytes, final: bool) -> ParseResult:
        pos, size = 0, len(data)
        while pos < size:
            nl = data.find(b"\n", pos)
            if nl < 0:
                # A fragment without its newline: only at the final pass, and
                # only if it is already a whole JSON object (format spec 7.1).
                if not final or not is_json_object(data[pos:]):
                    break
                end = nxt = size
            else:
                end, nxt = nl, nl + 1
            line = data[pos:end]
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip():
                self._line(line, pos, end - pos)
            pos = nxt
        return ParseResult(
            records=self.out,
            state=msgspec.to_builtins(self.st),
            consumed=pos,
            skipped=self.skipped,
            skipped_lines=self.skipped_lines,
        )

    def _skip(self, pos: int, length: int, reason: str) -> None:
        self.skipped[reason] += 1
        self.skipped_lines.append((pos, length, reason))

    def _line(self, raw: bytes, pos: int, length: int) -> None:
        if not raw.isascii():
            # Validated up front: msgspec does not look inside fields it skips.
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return self._skip(pos, length, "invalid_utf8")
        try:
            line = line_decoder.decode(raw)
        except UnicodeDecodeError:
            return self._skip(pos, length, "invalid_utf8")
        except msgspec.ValidationError:
            return self._skip(pos, length, "not_object")
        except msgspec.DecodeError:
            return self._skip(pos, length, "nul_bytes" if b"\x00" in raw else "invalid_json")
        ts = to_ms(line.timestamp)
        if ts is not None:
            self.st.t = ts
        kind = line.type if isinstance(line.type, str) else None
        payload = bytes(line.payload)
        try:
            if kind in KNOWN_KINDS:
                if not payload:
                    return self._skip(pos, length, "invalid_payload")
                self._dispatch(kind, payload, ts)
            elif kind is None and line.record_type is not None:
                return  # legacy state line: no usage, nothing to store
            elif kind is None and text_or_none(line.id):
                self._legacy_meta(str(line.id), ts)
            elif kind in ITEM_TYPES and not payload:
                self._item(raw, ts)  # legacy bare response item
            else:
                self._skip(pos, length, "unknown_kind")
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            self._skip(pos, length, "invalid_payload")

    def _dispatch(self, kind: str, payload: bytes, ts: int | None) -> None:
        if kind == "event_msg":
            self._event(payload, ts)
        elif kind == "response_item":
            self._item(payload, ts)
        elif kind == "turn_context":
            self._turn_context(payload, ts)
        elif kind == "session_meta":
            self._meta(payload, ts)
        else:  # compacted
            self._compaction("compacted", payload, ts)

    # -- identity helpers

    @property
    def session(self) -> str:
        return self.st.own or session_from_name(self.ctx.path)

    def _thread(self) -> str:
        return self.st.seg or ""

    def _item_key(self, ts: int, payload: bytes) -> str:
        """Message id of an item without one: its thread, time and exact payload bytes."""
        return make_id(SOURCE, self._thread(), ts, short_hash(payload))

    def _call_key(self, call_id: str) -> str:
        return make_id(SOURCE, self._thread(), "call", call_id)

    def _copied(self, ts: int | None, *, boundary: bool) -> bool:
        """Is this line part of history copied from another thread (format spec 7.4)?

        A copied segment runs from a foreign ``session_meta`` until the file's own
        ``session_meta`` or the first turn_context / user_message / token_count
        written clearly after the copy. In a fork or sub-agent file, a line dated
        before the child thread was created is a copy too.
        """
        st = self.st
        if not st.derived:
            return False
        when = ts if ts is not None else st.t
        copy = st.copy
        if copy is not None and boundary and when is not None and when >= copy + COPY_SLACK_MS:
            st.copy = copy = None
            st.seg = st.own
        if copy is not None:
            return True
        return st.born is not None and when is not None and when < st.born

    def _own_time(self, ts: int | None, *, boundary: bool) -> int | None:
        """The time of a line this thread wrote itself (its own, or the last one seen);
        None for copied history, and for a line with no time at all (counted)."""
        if self._copied(ts, boundary=boundary):
            return None
        when = ts if ts is not None else self.st.t
        if when is None:
            self.skipped["no_timestamp"] += 1
        return when

    # -- session structure

    def _meta(self, payload: bytes, ts: int | None) -> None:
        meta = meta_decoder.decode(payload)
        st = self.st
        thread = text_or_none(meta.id)
        when = ts if ts is not None else to_ms(meta.timestamp)
        if not st.meta:
            st.meta = True
            st.own = st.seg = thread
            st.born = when
            st.cwd = text_or_none(meta.cwd) or st.cwd
            if st.t is None:
                st.t = when
            self._relationships(meta, when)
            return
        if thread is None or thread == st.own:
            st.copy = None
            st.seg = st.own
        elif st.derived:
            st.copy = when if when is not None else st.t
            st.seg = thread
            st.pend = []
        else:
            st.seg = thread
            st.cwd = text_or_none(meta.cwd) or st.cwd

    def _legacy_meta(self, thread: str, ts: int | None) -> None:
        if not self.st.meta:
            self.st.meta = True
            self.st.own = self.st.seg = thread
            self.st.born = ts

    def _relationships(self, meta: Meta, ts: int | None) -> None:
        """Mark fork and sub-agent files (they may replay foreign history) and link them."""
        derived, links = parent_links(meta)
        self.st.derived = derived
        child = self.st.own
        for parent_id, relation, call_id in links if child else ():
            self.out.append(
                SessionRelationship(
                    id=make_id("relationship", SOURCE, child, parent_id, relation),
                    source=SOURCE,
                    session_id=child or "",
                    ts=ts or 0,
                    parent_session_id=parent_id,
                    relation=relation,
                    agent_id=text_or_none(meta.agent_nickname),
                    tool_use_id=call_id,
                )
            )

    def _turn_context(self, payload: bytes, ts: int | None) -> None:
        copied = self._copied(ts, boundary=True)
        tc = context_decoder.decode(payload)
        model = model_of(tc.model, tc.model_name, tc.metadata)
        if model:
            # Also inside a copy: a child that never writes its own turn_context
            # runs on the configuration it inherited.
            self.st.model = model
        if not copied:
            self.st.cwd = text_or_none(tc.cwd) or self.st.cwd

    # -- events

    def _event(self, payload: bytes, ts: int | None) -> None:
        etype = kind_decoder.decode(payload).type
        if etype == "token_count":
            self._token_count(payload, ts)
        elif etype == "user_message":
            self._user_message(payload, ts)
        elif etype in ("agent_message", "agent_reasoning"):
            when = ts if ts is not None else self.st.t
            if self._copied(ts, boundary=False) or when is None:
                return
            ev = event_decoder.decode(payload)
            text = text_or_none(ev.message if etype == "agent_message" else ev.text)
            block = "text" if etype == "agent_message" else "reasoning"
            if text:
                key = self._item_key(when, payload)
                self._content("event", "assistant", block, text, key, 0, when)
        elif etype == "context_compacted":
            self._compaction("event", payload, ts)

    def _token_count(self, payload: bytes, ts: int | None) -> None:
        event = count_decoder.decode(payload)
        info = event.info
        if info is None:
            return  # a rate-limit refresh: no usage, and no state changes
        copied = self._copied(ts, boundary=True)
        st = self.st
        prev = usage.Usage(*st.prev) if st.prev and len(st.prev) == 5 else None
        raw_cur = usage.read_usage(info.total_token_usage)
        raw_last = usage.read_usage(info.last_token_usage)
        cur = usage.complete(raw_cur, prev) if raw_cur is not None else None
        last = usage.as_last(raw_last) if raw_last is not None else None
        billed = usage.billed(prev, cur, last)
        if cur is not None:
            st.prev = list(cur)
        if last is not None:
            st.ctx = last.total
        if copied or billed is None or billed.is_zero():
            return
        when = ts if ts is not None else st.t
        if when is None:
            self.skipped["no_timestamp"] += 1
            return
        thread = self._thread()
        if cur is not None:
            key: tuple[object, ...] = (thread, *cur) if thread else ("", when, *cur)
        else:
            assert last is not None
            key = (thread, "last", when, *last)
        model = (
            model_of(event.model, event.model_name, info.model, info.model_name, info.metadata)
            or st.model
        )
        cached = min(billed.cached, billed.input)
        self.out.append(
            Turn(
                id=make_id("turn", SOURCE, *key),
                source=SOURCE,
                session_id=self.session,
                project=st.cwd,
                ts=when,
                model=model,
                input_tokens=billed.input - cached,
                cache_read_tokens=cached,
                output_tokens=billed.output,
                reasoning_tokens=billed.reasoning,
                tool_calls=[
                    ToolCall(id=c.id, name=c.name, args_sha256=c.sha, args_bytes=c.size)
                    for c in st.pend
                ],
                complete=True,
            )
        )
        st.pend = []
        st.cmp = []

    def _user_message(self, payload: bytes, ts: int | None) -> None:
        when = self._own_time(ts, boundary=True)
        if when is None:
            return
        ev = event_decoder.decode(payload)
        text = ev.message if isinstance(ev.message, str) else ""
        images = sum(len(x) for x in (ev.images, ev.local_images) if isinstance(x, list))
        key = self._item_key(when, payload)
        self.out.append(
            UserTurn(
                id=make_id("user-turn", SOURCE, key),
                source=SOURCE,
                session_id=self.session,
                project=self.st.cwd,
                ts=when,
                message_id=key,
                text_chars=len(text),
                block_types=["text"] + (["image"] if images else []),
                image_count=images,
            )
        )
        self.st.cmp = []
        if text:
            self._content("event", "user", "text", text, key, 0, when)

    # -- response items

    def _item(self, payload: bytes, ts: int | None) -> None:
        when = self._own_time(ts, boundary=False)
        if when is None:
            return
        item = item_decoder.decode(payload)
        itype = item.type
        if itype == "message" or (itype is None and isinstance(item.role, str)):
            self._message_item(item, payload, when)
        elif itype == "reasoning":
            key = self._item_key(when, payload)
            for seq, text in enumerate(block_texts(item.summary)):
                self._content("item", "assistant", "reasoning", text, key, seq, when)
        elif itype in CALL_TYPES:
            self._tool_call(item, when)
        elif itype in OUTPUT_TYPES:
            self._tool_output(item, when)
        elif itype in ("compaction", "compaction_summary"):
            self._compaction("item", payload, when)

    def _message_item(self, item: Item, payload: bytes, ts: int) -> None:
        role = item.role
        if role not in ("user", "assistant"):
            return  # developer/system instructions
        key = self._item_key(ts, payload)
        seq = 0
        for text in block_texts(item.content):
            if role == "user" and is_injected(text):
                continue
            self._content("item", role, "text", text, key, seq, ts)
            seq += 1

    def _tool_call(self, item: Item, ts: int) -> None:
        call_id = text_or_none(item.call_id) or text_or_none(item.id)
        if call_id is None:
            return
        if item.type == "local_shell_call":
            name, raw_args = "local_shell", bytes(item.action)
        else:
            name = text_or_none(item.name) or "unknown"
            raw_args = bytes(item.input if item.type == "custom_tool_call" else item.arguments)
        text = raw_value_text(raw_args) or ""
        data = text.encode("utf-8", "surrogatepass")
        st = self.st
        st.pend.append(PendingCall(call_id, name, short_hash(data), len(data)))
        del st.pend[:-MAX_PENDING_CALLS]
        st.names.pop(call_id, None)
        st.names[call_id] = name
        while len(st.names) > MAX_TOOL_NAMES:
            del st.names[next(iter(st.names))]
        if text:
            self._tool_content("assistant", "tool_use", text, call_id, name, ts)

    def _tool_output(self, item: Item, ts: int) -> None:
        call_id = text_or_none(item.call_id)
        if call_id is None:
            return
        name = self.st.names.get(call_id)
        outcome = tool_outcome(item.output)
        self.out.append(
            ToolResultEvent(
                id=make_id("tool-result", SOURCE, self._thread(), call_id),
                source=SOURCE,
                session_id=self.session,
                ts=ts,
                tool_use_id=call_id,
                tool_name=name,
                is_error=outcome.is_error,
                exit_code=outcome.exit_code,
                output_bytes=len(outcome.text.encode("utf-8", "surrogatepass")),
            )
        )
        if outcome.text:
            self._tool_content("tool", "tool_result", outcome.text, call_id, name, ts)

    # -- compactions and content

    def _compaction(self, marker: str, payload: bytes, ts: int | None) -> None:
        """One compaction may be written as up to three markers in a row
        (``compacted``, a ``compaction`` item, ``context_compacted``): markers of
        different kinds with no user message or billed request between them are
        one compaction."""
        when = self._own_time(ts, boundary=False)
        if when is None:
            return
        st = self.st
        if st.cmp and marker not in st.cmp:
            st.cmp.append(marker)
            return
        st.cmp = [marker]
        self.out.append(
            Compaction(
                id=make_id("compaction", SOURCE, self._item_key(when, payload)),
                source=SOURCE,
                session_id=self.session,
                project=st.cwd,
                ts=when,
                pre_tokens=st.ctx,
            )
        )

    def _is_twin(self, origin: str, key: str) -> bool:
        """Codex writes most text twice: as an ``event_msg`` (user_message,
        agent_message, agent_reasoning) and as a ``response_item``. Whichever
        comes first is stored; its twin from the other family is dropped."""
        twins = self.st.twins
        for i, twin in enumerate(twins):
            if twin.key == key and twin.origin != origin:
                del twins[i]
                return True
        twins.append(Twin(origin, key))
        del twins[:-MAX_TWINS]
        return False

    def _tool_content(
        self, role: str, block: str, text: str, call_id: str, name: str | None, ts: int
    ) -> None:
        """A call's input (seq 0) and output (seq 1) form one message keyed by the call."""
        seq = 0 if block == "tool_use" else 1
        key = self._call_key(call_id)
        self._content(None, role, block, text, key, seq, ts, tool_use_id=call_id, tool_name=name)

    def _content(
        self,
        origin: str | None,
        role: str,
        block: str,
        text: str,
        message_id: str,
        seq: int,
        ts: int,
        *,
        tool_use_id: str | None = None,
        tool_name: str | None = None,
    ) -> None:
        digest = short_hash(text)
        if origin is not None and self._is_twin(origin, f"{role}/{block}/{digest[:16]}"):
            return
        if not self.with_content:
            return
        self.out.append(
            ContentRecord(
                id=make_id("content", SOURCE, message_id, block, seq),
                source=SOURCE,
                session_id=self.session,
                ts=ts,
                message_id=message_id,
                seq=seq,
                role=role,
                block_type=block,
                text=text,
                sha256=digest,
                chars=len(text),
                tool_use_id=tool_use_id,
                tool_name=tool_name,
            )
        )
