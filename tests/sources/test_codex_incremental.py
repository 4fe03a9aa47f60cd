"""A Codex file read in chunks (state carried over) gives exactly what one pass gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relayburnd import records as R
from relayburnd.sources.base import FileContext
from relayburnd.sources.codex import CodexSource
from tests.sources.rollout_lines import RolloutLines as L

SRC = CodexSource()
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
CODEX_DIRS = [
    FIXTURES / "synthetic" / "codex",
    FIXTURES / "public" / "ccusage" / "codex",
    FIXTURES / "public" / "ccusage" / "codex-branch-history",
    FIXTURES / "public" / "claude-code-log" / "codex",
    FIXTURES / "public" / "agentsview" / "codex",
]


def _rich_rollout() -> bytes:
    """A fork that replays its parent, then does everything a rollout can do."""
    parent, child = "p-0001", "c-0002"
    day = "2026-03-01T10:"
    return b"".join(
        [
            L.line(
                day + "00:00.000Z",
                "session_meta",
                {"id": child, "forked_from_id": parent, "cwd": "/w"},
            ),
            L.line(day + "00:00.000Z", "session_meta", {"id": parent, "cwd": "/w"}),
            L.line(day + "00:00.000Z", "turn_context", {"model": "gpt-5.2-codex", "cwd": "/w"}),
            L.line(day + "00:00.000Z", "event_msg", {"type": "user_message", "message": "old"}),
            L.tokens(day + "00:00.000Z", (1000, 0, 100, 0, 1100), (1000, 0, 100, 0, 1100)),
            L.line(day + "00:10.000Z", "turn_context", {"model": "gpt-5.2-codex", "cwd": "/w/c"}),
            L.line(day + "00:11.000Z", "event_msg", {"type": "user_message", "message": "go"}),
            L.line(
                day + "00:11.001Z",
                "response_item",
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "go"}],
                },
            ),
            L.line(day + "00:12.000Z", "event_msg", {"type": "agent_reasoning", "text": "think"}),
            L.line(
                day + "00:12.001Z",
                "response_item",
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "think"}]},
            ),
            L.line(
                day + "00:13.000Z",
                "response_item",
                {
                    "type": "function_call",
                    "name": "shell",
                    "arguments": '{"cmd":"ls"}',
                    "call_id": "k1",
                },
            ),
            L.line(day + "00:13.500Z", "event_msg", {"type": "token_count", "info": None}),
            L.tokens(day + "00:14.000Z", (1500, 400, 160, 20, 1660), (500, 400, 60, 20, 560)),
            L.tokens(day + "00:14.500Z", (1500, 400, 160, 20, 1660), (500, 400, 60, 20, 560)),
            b"{broken\n",
            L.line(
                day + "00:15.000Z",
                "response_item",
                {
                    "type": "function_call_output",
                    "call_id": "k1",
                    "output": '{"output":"a","metadata":{"exit_code":1}}',
                },
            ),
            L.line(
                day + "00:16.000Z",
                "response_item",
                {
                    "type": "custom_tool_call",
                    "name": "apply_patch",
                    "input": "*** Begin Patch",
                    "call_id": "k2",
                },
            ),
            L.line(day + "00:16.500Z", "compacted", {"message": "sum"}),
            L.line(day + "00:16.600Z", "event_msg", {"type": "context_compacted"}),
            L.tokens(day + "00:17.000Z", (2000, 600, 200, 20, 2200)),
            L.line(
                day + "00:18.000Z",
                "response_item",
                {
                    "type": "custom_tool_call_output",
                    "call_id": "k2",
                    "output": [{"type": "output_text", "text": "Done"}],
                },
            ),
            L.tokens(day + "05:00.000Z", (300, 0, 30, 0, 330)),
            L.line(
                day + "05:01.000Z",
                "response_item",
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "done"}],
                },
            ),
            L.line(day + "05:01.001Z", "event_msg", {"type": "agent_message", "message": "done"}),
            L.line(day + "05:02.000Z", "future_kind", {}),
            L.tokens(day + "05:03.000Z", None, (10, 0, 1, 0, 11)),
        ]
    )


def _cases() -> list[tuple[str, bytes]]:
    cases = [("rich", _rich_rollout())]
    for top in CODEX_DIRS:
        for path in sorted(top.rglob("*.jsonl")) if top.is_dir() else []:
            cases.append((str(path.relative_to(FIXTURES)), path.read_bytes()))
    return cases


CASES = _cases()
CTX = FileContext(path=Path("/codex/sessions/rollout-c-0002.jsonl"), root=Path("/codex"))


def _boundaries(data: bytes) -> list[int]:
    return [i + 1 for i, b in enumerate(data) if b == 0x0A]


def _folded(records: list[R.Record]) -> dict[str, dict[str, Any]]:
    return {k: R.to_dict(v) for k, v in R.fold(R.seal(r) for r in records).items()}


def _chunked(data: bytes, cuts: list[int]) -> tuple[list[R.Record], dict[str, Any], int]:
    state: dict[str, Any] = {}
    records: list[R.Record] = []
    skipped = 0
    start = 0
    for end in [*cuts, len(data)]:
        res = SRC.parse(data[start:end], state, CTX, final=end == len(data))
        assert res.consumed == end - start
        records.extend(res.records)
        skipped += sum(res.skipped.values())
        state = json.loads(json.dumps(res.state))  # persisted in a cursor file
        start = end
    return records, state, skipped


def test_rich_rollout_one_pass_figures() -> None:
    """The hand-made fork rollout bills only its own requests (a guard for the property)."""
    res = SRC.parse(CASES[0][1], {}, CTX, final=True)
    turns = [r for r in res.records if isinstance(r, R.Turn)]
    assert [(t.input_tokens + t.cache_read_tokens, t.output_tokens) for t in turns] == [
        (500, 60),
        (500, 40),
        (300, 30),
        (10, 1),
    ]
    assert [len(t.tool_calls) for t in turns] == [1, 1, 0, 0]
    assert sum(isinstance(r, R.Compaction) for r in res.records) == 1
    assert res.skipped == {"invalid_json": 1, "unknown_kind": 1}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_chunked_reads_equal_one_pass(data: st.DataObject) -> None:
    """Any split at line boundaries yields the same folded records and final state."""
    name, raw = data.draw(st.sampled_from(CASES), label="file")
    bounds = _boundaries(raw)[:-1]
    cuts = sorted(
        data.draw(st.sets(st.sampled_from(bounds)) if bounds else st.just(set()), label="cuts")
    )
    one = SRC.parse(raw, {}, CTX, final=True)
    records, state, skipped = _chunked(raw, cuts)
    assert _folded(records) == _folded(one.records), name
    assert [R.to_dict(r) for r in records] == [R.to_dict(r) for r in one.records], name
    assert state == json.loads(json.dumps(one.state)), name
    assert skipped == sum(one.skipped.values()), name


def test_every_single_line_split() -> None:
    """Feeding the rich rollout one line per call equals one pass."""
    raw = CASES[0][1]
    one = SRC.parse(raw, {}, CTX, final=True)
    records, _, _ = _chunked(raw, _boundaries(raw)[:-1])
    assert [R.to_dict(r) for r in records] == [R.to_dict(r) for r in one.records]
