"""Records for the storage tests: every kind, every field, and the awkward cases.

Timestamps cluster where report buckets are easy to get wrong: local midnights
in Asia/Tokyo and America/St_Johns (a half-hour offset), St_Johns' daylight
saving changes, ISO week and month edges. Turns include sidechain replays of
main-thread responses (across sessions too), fast mode, unknown models and
unpriced requests.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from relayburnd.records import (
    Compaction,
    ContentRecord,
    Record,
    SessionRelationship,
    ToolCall,
    ToolResultEvent,
    Turn,
    UserTurn,
    fold,
    make_id,
    seal,
)

SOURCES = ("claude", "codex", "opencode")
MODELS = ("claude-opus-4-5", "claude-sonnet-4-5", "gpt-5-codex", None, "")
PROJECTS = ("/home/dev/alpha", "/home/dev/beta", "")


def ms(text: str) -> int:
    """Epoch milliseconds of an ISO time (UTC unless it names an offset)."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


# Instants around which report buckets change in the zones the tests use.
EDGES = (
    ms("2024-03-10T05:29:59"),  # St_Johns springs forward at 02:00 local (05:30Z)
    ms("2024-11-03T04:29:59"),  # ... and falls back at 02:00 local (04:30Z)
    ms("2024-03-09T15:00:00"),  # Tokyo midnight
    ms("2024-03-10T02:30:00"),  # St_Johns midnight in winter
    ms("2024-06-30T23:59:59"),  # a month edge
    ms("2024-11-03T23:59:59"),  # a Sunday night (ISO weeks start on Monday)
    ms("2024-12-31T23:30:00"),  # a year edge
)


def _ts(rnd: random.Random) -> int:
    edge = rnd.choice(EDGES)
    return edge + rnd.randint(-3 * 3_600_000, 3 * 3_600_000)


def _tool_calls(rnd: random.Random, i: int) -> list[ToolCall]:
    return [
        ToolCall(id=f"toolu_{i}_{k}", name=rnd.choice(("Bash", "Read", "Edit")),
                 args_sha256=f"{rnd.getrandbits(256):064x}", args_bytes=rnd.randrange(5000))
        for k in range(rnd.choice((0, 0, 1, 2, 3)))
    ]


def turn(rnd: random.Random, i: int, **over: object) -> Turn:
    """A sealed turn with every field filled at random (``over`` wins)."""
    fields: dict[str, object] = dict(
        id=make_id("turn", i),
        source=rnd.choice(SOURCES),
        session_id=f"sess-{rnd.randrange(6)}",
        project=rnd.choice(PROJECTS),
        ts=_ts(rnd),
        model=rnd.choice(MODELS),
        model_fallback=rnd.random() < 0.1,
        input_tokens=rnd.randrange(10_000),
        output_tokens=rnd.randrange(4_000),
        cache_write_tokens=rnd.randrange(20_000),
        cache_read_tokens=rnd.randrange(200_000),
        reasoning_tokens=rnd.randrange(1_000),
        cache_write_5m_tokens=rnd.randrange(100),
        cache_write_1h_tokens=rnd.randrange(100),
        web_search_requests=rnd.randrange(3),
        web_fetch_requests=rnd.randrange(3),
        cost_usd=None if rnd.random() < 0.1 else rnd.random() / 7,
        price_version=rnd.choice((None, "2026-01")),
        logged_cost_usd=None if rnd.random() < 0.5 else rnd.random(),
        stop_reason=rnd.choice((None, "end_turn", "tool_use")),
        service_tier=rnd.choice((None, "standard")),
        speed="fast" if rnd.random() < 0.15 else rnd.choice((None, "standard")),
        is_sidechain=rnd.random() < 0.25,
        agent_id=rnd.choice((None, "agent-1")),
        message_id=f"msg_{i}",
        request_id=rnd.choice((None, f"req_{i}")),
        tool_calls=_tool_calls(rnd, i),
        snapshot_lines=rnd.randint(1, 4),
        complete=rnd.random() < 0.8,
        authority=rnd.choice((0, 0, 1)),
    )
    fields.update(over)
    rec = seal(Turn(**fields))  # type: ignore[arg-type]
    assert isinstance(rec, Turn)
    return rec


def other_records(rnd: random.Random, i: int) -> list[Record]:
    """One sealed record of each kind but turns, fields filled at random."""
    session = f"sess-{rnd.randrange(6)}"
    recs: list[Record] = [
        UserTurn(
            id=make_id("user", i), source=rnd.choice(SOURCES), session_id=session,
            project=rnd.choice(PROJECTS), ts=_ts(rnd), message_id=f"u_{i}",
            text_chars=rnd.randrange(900),
            block_types=rnd.choice(([], ["text"], ["text", "image"])),
            tool_result_count=rnd.randrange(3), tool_result_bytes=rnd.randrange(9000),
            image_count=rnd.randrange(2), is_command=rnd.random() < 0.2,
            is_sidechain=rnd.random() < 0.2, agent_id=rnd.choice((None, "a")),
            prev_message_id=rnd.choice((None, f"msg_{i}")),
            next_message_id=rnd.choice((None, f"msg_{i + 1}")),
        ),
        Compaction(
            id=make_id("compaction", i), source=rnd.choice(SOURCES), session_id=session,
            project=rnd.choice(PROJECTS), ts=_ts(rnd), message_id=rnd.choice((None, f"c_{i}")),
            trigger=rnd.choice((None, "auto", "manual")),
            pre_tokens=rnd.choice((None, rnd.randrange(200_000))),
        ),
        ToolResultEvent(
            id=make_id("tool-result", i), source=rnd.choice(SOURCES), session_id=session,
            ts=_ts(rnd), tool_use_id=f"toolu_{i}", tool_name=rnd.choice((None, "Bash")),
            is_error=rnd.random() < 0.3, exit_code=rnd.choice((None, 0, 1, -9)),
            output_bytes=rnd.randrange(10**6), is_sidechain=rnd.random() < 0.2,
        ),
        ContentRecord(
            id=make_id("content", i), source=rnd.choice(SOURCES), session_id=session,
            ts=_ts(rnd), message_id=f"msg_{i // 3}", seq=i % 3,
            role=rnd.choice(("user", "assistant", "tool")),
            block_type=rnd.choice(("text", "thinking", "tool_use", "tool_result")),
            text=rnd.choice((None, "", "plain text", "nul \x00 inside", "ünïcödé ✓ 日本")),
            sha256=f"{rnd.getrandbits(256):064x}", chars=rnd.randrange(5000),
            tool_use_id=rnd.choice((None, f"toolu_{i}")), tool_name=rnd.choice((None, "Read")),
            redactions=rnd.randrange(3),
        ),
        SessionRelationship(
            id=make_id("relationship", i), source=rnd.choice(SOURCES), session_id=session,
            ts=rnd.choice((0, _ts(rnd))), parent_session_id=f"sess-{rnd.randrange(6)}",
            relation=rnd.choice(("subagent", "fork", "continuation", "sidechain")),
            agent_id=rnd.choice((None, "a")), tool_use_id=rnd.choice((None, f"toolu_{i}")),
        ),
    ]
    return [seal(r) for r in recs]  # type: ignore[misc]


def corpus(seed: int = 1, n: int = 240) -> list[Record]:
    """``n`` turns and ``n`` records of each other kind, plus replays and re-snapshots.

    Some ids appear two or three times with different completeness (a later,
    larger snapshot), as the daemon delivers them.
    """
    rnd = random.Random(seed)
    out: list[Record] = []
    turns = [turn(rnd, i) for i in range(n)]
    out.extend(turns)
    mains = [t for t in turns if not t.is_sidechain and t.message_id]
    for k in range(n // 10):  # sidechain replays of main-thread responses, any session
        main = rnd.choice(mains)
        out.append(turn(rnd, 10_000 + k, is_sidechain=True, message_id=main.message_id))
    for k in range(n // 10):  # larger snapshots of existing turns
        base = rnd.choice(turns)
        out.append(seal(Turn(**{**_fields(base), "output_tokens": base.output_tokens + 1 + k,
                                "rank": "", "tool_calls": _tool_calls(rnd, 20_000 + k)})))
    for i in range(n):
        out.extend(other_records(rnd, i))
    rnd.shuffle(out)
    return out


def _fields(rec: Record) -> dict[str, object]:
    return {f: getattr(rec, f) for f in rec.__struct_fields__}


def folded(records: list[Record]) -> dict[str, Record]:
    return fold(records)  # type: ignore[return-value]
