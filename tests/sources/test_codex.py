"""The Codex source: usage rule, fixture figures, identities, tools, content, bad input."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relayburnd import records as R
from relayburnd.sources import _codex_usage as U
from relayburnd.sources.base import FileContext, ParseResult
from relayburnd.sources.codex import CodexSource

Fold = Callable[[Iterable[R.Record]], dict[str, R.Record]]
Sums = Callable[[dict[str, R.Record]], dict[str, int]]

SRC = CodexSource()


def parse(
    data: bytes,
    path: Path | None = None,
    state: dict[str, Any] | None = None,
    final: bool = True,
    with_content: bool = True,
) -> ParseResult:
    path = path or Path("/codex/sessions/rollout-x.jsonl")
    ctx = FileContext(path=path, root=path.parent, with_content=with_content)
    return SRC.parse(data, state or {}, ctx, final=final)


def ingest(root: Path) -> tuple[list[R.Record], list[ParseResult]]:
    """Every discovered file of a Codex home, each in one pass."""
    records: list[R.Record] = []
    results = []
    for path, r in SRC.discover([root]):
        res = SRC.parse(path.read_bytes(), {}, FileContext(path=path, root=r), final=True)
        records.extend(res.records)
        results.append(res)
    return records, results


def codex_figures(folded: dict[str, R.Record]) -> tuple[int, int, int, int]:
    """(input incl. cached, cached, output, reasoning), as the fixture README states them."""
    turns = [t for t in folded.values() if isinstance(t, R.Turn)]
    return (
        sum(t.input_tokens + t.cache_read_tokens for t in turns),
        sum(t.cache_read_tokens for t in turns),
        sum(t.output_tokens for t in turns),
        sum(t.reasoning_tokens for t in turns),
    )


def daily(folded: dict[str, R.Record]) -> dict[tuple[str, str | None], dict[str, int]]:
    """Per UTC day and model, in the field names of ``ccusage codex daily --json``."""
    out: dict[tuple[str, str | None], dict[str, int]] = {}
    for t in folded.values():
        if not isinstance(t, R.Turn):
            continue
        day = datetime.fromtimestamp(t.ts / 1000, UTC).strftime("%Y-%m-%d")
        row = out.setdefault(
            (day, t.model),
            dict.fromkeys(
                (
                    "inputTokens",
                    "cacheReadTokens",
                    "outputTokens",
                    "reasoningOutputTokens",
                    "totalTokens",
                ),
                0,
            ),
        )
        row["inputTokens"] += t.input_tokens
        row["cacheReadTokens"] += t.cache_read_tokens
        row["outputTokens"] += t.output_tokens
        row["reasoningOutputTokens"] += t.reasoning_tokens
        row["totalTokens"] += t.input_tokens + t.cache_read_tokens + t.output_tokens
    return out


def ccusage_daily(path: Path, *, with_total: bool = True) -> dict[tuple[str, str], dict[str, int]]:
    data = json.loads(path.read_text())
    keys: tuple[str, ...] = (
        "inputTokens",
        "cacheReadTokens",
        "outputTokens",
        "reasoningOutputTokens",
    )
    keys += ("totalTokens",) if with_total else ()
    return {
        (row["date"], model): {k: vals[k] for k in keys}
        for row in data["daily"]
        for model, vals in row["models"].items()
    }


class TestUsageRule:
    """The cumulative-difference rule of format spec 3.7.2, on its own."""

    def test_re_emit_counts_nothing(self) -> None:
        """An unchanged cumulative vector is a re-emit."""
        v = U.Usage(100, 10, 20, 5, 120)
        assert U.billed(v, v, v) is None

    def test_growth_counts_the_difference_over_last(self) -> None:
        """When totals grow, the difference wins over a disagreeing last usage."""
        prev, cur = U.Usage(100, 10, 20, 5, 120), U.Usage(150, 30, 25, 5, 175)
        assert U.billed(prev, cur, U.Usage(1, 1, 1, 1, 2)) == U.Usage(50, 20, 5, 0, 55)

    def test_reset_counts_last_or_the_new_total(self) -> None:
        """A counter drop bills the request at the drop, never nothing."""
        prev, cur = U.Usage(5000, 1000, 200, 0, 5200), U.Usage(700, 100, 30, 0, 730)
        last = U.Usage(600, 100, 20, 0, 620)
        assert U.billed(prev, cur, last) == last
        assert U.billed(prev, cur, None) == cur

    def test_restart_above_the_old_total(self) -> None:
        """A restarted counter whose first total exceeds the old one: last shows it."""
        prev = U.Usage(1000, 0, 100, 0, 1100)
        cur = last = U.Usage(4000, 500, 300, 50, 4300)
        assert U.billed(prev, cur, last) == last
        assert U.billed(prev, cur, U.Usage(3000, 500, 200, 50, 3200)) == U.Usage(
            3000, 500, 200, 50, 3200
        )

    def test_first_vector_prefers_last(self) -> None:
        """A file starting mid-thread bills its request, not the thread's whole total."""
        cur, last = U.Usage(3000, 0, 300, 0, 3300), U.Usage(100, 0, 10, 0, 110)
        assert U.billed(None, cur, last) == last
        assert U.billed(None, cur, None) == cur

    def test_only_last(self) -> None:
        """Without a cumulative vector the last usage is the request."""
        last = U.Usage(10, 2, 3, 0, 13)
        assert U.billed(U.Usage(1, 1, 1, 1, 2), None, last) == last

    def test_aliases_and_numeric_strings(self) -> None:
        """Other producers' field names and numeric strings are read (spec 3.7.1)."""
        raw = U.read_usage(
            {
                "prompt_tokens": "120",
                "cached_tokens": 20,
                "completion_tokens": 30.0,
                "reasoning_tokens": "5",
            }
        )
        assert raw is not None
        assert U.complete(raw, None) == U.Usage(120, 20, 30, 5, 150)

    def test_missing_total_is_input_plus_output(self) -> None:
        """Reasoning is inside output, so it is not added again."""
        raw = U.read_usage({"input_tokens": 10, "output_tokens": 7, "reasoning_output_tokens": 3})
        assert raw is not None
        assert U.complete(raw, None).total == 17

    def test_missing_component_is_not_a_reset(self) -> None:
        """A writer omitting reasoning on one event does not look like a counter drop."""
        prev = U.Usage(100, 0, 50, 20, 150)
        raw = U.read_usage({"input_tokens": 200, "cached_input_tokens": 0, "output_tokens": 60})
        assert raw is not None
        cur = U.complete(raw, prev)
        assert U.billed(prev, cur, None) == U.Usage(100, 0, 10, 0, 110)


SYNTHETIC = {
    "x01-normal": (17000, 9500, 420, 220),
    "x02-reemit": (3000, 800, 300, 0),
    "x03-total-only": (2500, 900, 180, 70),
    "x04-no-model": (500, 0, 50, 0),
    "x05-fork-replay": (3500, 2000, 230, 0),
    "x06-subagent-replay": (2800, 1000, 190, 0),
    "x07-identical-real": (20, 4, 6, 0),
    "x08-total-reset": (6500, 1300, 290, 0),
    "x09-archived-copy": (400, 0, 40, 0),
}
# Cases where ccusage 20.0.24 is right about the tokens (spec section 8).
CCUSAGE_AGREES = [
    "x01-normal",
    "x02-reemit",
    "x03-total-only",
    "x05-fork-replay",
    "x06-subagent-replay",
    "x07-identical-real",
    "x09-archived-copy",
]


class TestSyntheticFixtures:
    """Every synthetic Codex case gives the README's correct figures."""

    @pytest.mark.parametrize("case", sorted(SYNTHETIC))
    def test_correct_figures(self, case: str, fixtures_dir: Path, fold: Fold) -> None:
        """Folded turns sum to input/cached/output/reasoning of the README."""
        records, results = ingest(fixtures_dir / "synthetic" / "codex" / case)
        assert codex_figures(fold(records)) == SYNTHETIC[case]
        assert all(not r.skipped for r in results)

    @pytest.mark.parametrize("case", CCUSAGE_AGREES)
    def test_same_days_and_models_as_ccusage(
        self, case: str, fixtures_dir: Path, fold: Fold
    ) -> None:
        """Per day and model the tokens equal ccusage 20.0.24 where it is right."""
        records, _ = ingest(fixtures_dir / "synthetic" / "codex" / case)
        expected = fixtures_dir / "expected" / "ccusage-20.0.24" / f"{case}.daily.json"
        assert daily(fold(records)) == ccusage_daily(expected)

    def test_no_model_stays_unknown(self, fixtures_dir: Path, fold: Fold) -> None:
        """A file without turn_context has model None, not a guessed fallback."""
        records, _ = ingest(fixtures_dir / "synthetic" / "codex" / "x04-no-model")
        turns = [r for r in fold(records).values() if isinstance(r, R.Turn)]
        assert [(t.model, t.model_fallback) for t in turns] == [(None, False)]

    def test_reset_counts_the_new_total(self, fixtures_dir: Path, fold: Fold) -> None:
        """x08: the event at the counter drop bills its whole new total."""
        records, _ = ingest(fixtures_dir / "synthetic" / "codex" / "x08-total-reset")
        outputs = sorted(t.output_tokens for t in fold(records).values() if isinstance(t, R.Turn))
        assert outputs == [30, 60, 200]

    def test_archived_copy_is_discovered_once(self, fixtures_dir: Path) -> None:
        """The same file name in sessions/ and archived_sessions/ is read from sessions/."""
        root = fixtures_dir / "synthetic" / "codex" / "x09-archived-copy"
        found = [p.relative_to(root).parts[0] for p, _ in SRC.discover([root])]
        assert found == ["sessions"]

    def test_archived_copy_converges_when_both_are_read(self, fixtures_dir: Path) -> None:
        """Read from both places (a move while tailing), the records have the same ids."""
        root = fixtures_dir / "synthetic" / "codex" / "x09-archived-copy"
        a = next(root.glob("sessions/**/*.jsonl"))
        b = next(root.glob("archived_sessions/*.jsonl"))
        ra, rb = parse(a.read_bytes(), a), parse(b.read_bytes(), b)
        assert [R.to_dict(x) for x in ra.records] == [R.to_dict(x) for x in rb.records]

    def test_fork_bills_only_its_own_request(self, fixtures_dir: Path) -> None:
        """x05: the replayed parent history is not emitted; the fork's turn is its own."""
        root = fixtures_dir / "synthetic" / "codex" / "x05-fork-replay"
        child = next(root.glob("**/*-00000000005b.jsonl"))
        res = parse(child.read_bytes(), child)
        turns = [r for r in res.records if isinstance(r, R.Turn)]
        assert [
            (t.session_id, t.input_tokens, t.cache_read_tokens, t.output_tokens) for t in turns
        ] == [("019b0000-0000-7000-8000-00000000005b", 200, 1100, 80)]
        rels = [r for r in res.records if isinstance(r, R.SessionRelationship)]
        assert [(r.relation, r.parent_session_id) for r in rels] == [
            ("fork", "019b0000-0000-7000-8000-00000000005a")
        ]

    def test_subagent_bills_only_its_own_request(self, fixtures_dir: Path) -> None:
        """x06: the replay burst sets the baseline; the child's drop bills its last usage."""
        root = fixtures_dir / "synthetic" / "codex" / "x06-subagent-replay"
        child = next(root.glob("**/*-00000000006c.jsonl"))
        res = parse(child.read_bytes(), child)
        turns = [r for r in res.records if isinstance(r, R.Turn)]
        assert [(t.input_tokens, t.cache_read_tokens, t.output_tokens) for t in turns] == [
            (500, 100, 40)
        ]
        rels = [r for r in res.records if isinstance(r, R.SessionRelationship)]
        assert [(r.relation, r.parent_session_id) for r in rels] == [
            ("subagent", "019b0000-0000-7000-8000-00000000005a")
        ]


class TestReplays:
    """Copied history in sub-agent files sets the baseline and is never billed."""

    def test_single_event_replay_then_restart_above_it(self, rollout: Any) -> None:
        """One copied event, then the child's own counter (from zero) exceeding it."""
        spawn = {"subagent": {"thread_spawn": {"parent_thread_id": "p1", "depth": 1}}}
        at = "2026-01-05T14:03:00.000Z"
        data = (
            rollout.meta(at, "c1", source=spawn)
            + rollout.meta(at, "p1")
            + rollout.tokens(at, (1000, 0, 100, 0, 1100), (1000, 0, 100, 0, 1100))
            + rollout.context("2026-01-05T14:03:05Z")
            + rollout.tokens(
                "2026-01-05T14:03:30Z", (4000, 500, 300, 50, 4300), (4000, 500, 300, 50, 4300)
            )
        )
        turns = [r for r in parse(data).records if isinstance(r, R.Turn)]
        assert [
            (t.session_id, t.input_tokens, t.cache_read_tokens, t.output_tokens) for t in turns
        ] == [("c1", 3500, 500, 300)]


class TestPublicFixtures:
    """Public Codex fixtures: figures, convergence, and files without usage."""

    def test_ccusage_session(self, fixtures_dir: Path, fold: Fold) -> None:
        """Two days, the second event's own model field wins over turn_context.

        The fixture's ``total_tokens`` also counts reasoning (1000 + 125 + 75), which
        ccusage sums as written; the normalised total is input + output, so the
        comparison leaves the total out.
        """
        records, _ = ingest(fixtures_dir / "public" / "ccusage" / "codex")
        expected = fixtures_dir / "expected" / "ccusage-20.0.11" / "public-ccusage.codex-daily.json"
        got = {
            k: {f: v for f, v in row.items() if f != "totalTokens"}
            for k, row in daily(fold(records)).items()
        }
        assert got == ccusage_daily(expected, with_total=False)

    def test_branch_history_counts_the_copy_once(self, fixtures_dir: Path, fold: Fold) -> None:
        """A branch copying the parent's event with the same timestamp converges with it."""
        records, _ = ingest(fixtures_dir / "public" / "ccusage" / "codex-branch-history")
        folded = fold(records)
        assert codex_figures(folded) == (1600, 300, 450, 40)
        name = "public-ccusage-codex-branch-history.codex-daily.json"
        assert daily(folded) == ccusage_daily(fixtures_dir / "expected" / "ccusage-20.0.11" / name)

    def test_claude_code_log_rollouts(self, fixtures_dir: Path, fold: Fold) -> None:
        """No token events: no turns, but user turns, tool results, links and content."""
        records, results = ingest(fixtures_dir / "public" / "claude-code-log" / "codex")
        folded = fold(records)
        kinds = sorted(R.kind_of(r) for r in folded.values())
        assert "turn" not in kinds
        assert kinds.count("user-turn") == 3
        assert kinds.count("tool-result") == 3
        assert kinds.count("relationship") == 1
        assert sum(r.skipped["unknown_kind"] for r in results) == 1
        texts = {r.text for r in folded.values() if isinstance(r, R.ContentRecord)}
        assert "The synthetic legacy session is open." in texts  # legacy rollout
        assert "I will inspect the synthetic directory." in texts  # reasoning summary
        assert "SYNTHETIC_ENCRYPTED_CONTENT_MUST_NOT_RENDER" not in str(texts)

    def test_subagent_prehistory_is_not_its_own(self, fixtures_dir: Path) -> None:
        """Lines dated before the sub-agent was created are the parent's, not its turns."""
        path = next(
            (fixtures_dir / "public" / "claude-code-log" / "codex").glob(
                "**/*33333333-3333-4333-8333-333333333333.jsonl"
            )
        )
        res = parse(path.read_bytes(), path)
        users = [r for r in res.records if isinstance(r, R.UserTurn)]
        assert [u.text_chars for u in users] == [len("Inspect fixtures.")]
        rel = next(r for r in res.records if isinstance(r, R.SessionRelationship))
        assert (rel.parent_session_id, rel.tool_use_id) == (
            "22222222-2222-4222-8222-222222222222",
            "call-spawn-001",
        )

    def test_legacy_rollout_does_not_crash(self, fixtures_dir: Path) -> None:
        """A bare meta line and bare items: no usage, no skipped lines."""
        path = next(
            (fixtures_dir / "public" / "claude-code-log" / "codex").glob(
                "sessions/rollout-4444*.jsonl"
            )
        )
        res = parse(path.read_bytes(), path)
        assert not any(isinstance(r, R.Turn) for r in res.records)
        assert not res.skipped
        assert {r.session_id for r in res.records} == {"44444444-4444-4444-8444-444444444444"}

    def test_agentsview_files_store_their_text(self, fixtures_dir: Path, fold: Fold) -> None:
        """Files written with response items only still yield content and tool inputs."""
        records, _ = ingest(fixtures_dir / "public" / "agentsview" / "codex")
        content = [r for r in fold(records).values() if isinstance(r, R.ContentRecord)]
        by_session = {c.session_id for c in content}
        assert by_session == {"abc-123", "fc-1", "fc-args-1", "fc-args-2", "fc-stdin"}
        assert any(c.block_type == "tool_use" and "rg --files" in (c.text or "") for c in content)
        assert any(c.role == "assistant" and c.block_type == "text" for c in content)


X01 = "synthetic/codex/x01-normal/sessions/2026/01/05/rollout-2026-01-05T10-00-00-019b0000-0000-7000-8000-000000000001.jsonl"  # noqa: E501


ENV_CONTEXT = "<environment_context>cwd</environment_context>"


class TestToolsAndContent:
    """Tool calls ride on the request that made them; content is stored once."""

    def test_tool_call_is_attached_to_its_request(self, fixtures_dir: Path) -> None:
        """x01: the function_call precedes the first token_count, so turn 1 carries it."""
        data = (fixtures_dir / X01).read_bytes()
        turns = [r for r in parse(data).records if isinstance(r, R.Turn)]
        args = '{"command": ["bash", "-lc", "npm test"]}'
        assert [
            [(c.id, c.name, c.args_sha256, c.args_bytes) for c in t.tool_calls] for t in turns
        ] == [[("call_1", "shell", R.short_hash(args), len(args))], []]
        assert b"npm test" not in R.encode(turns[0])

    def test_tool_result_reads_the_exit_code(self, fixtures_dir: Path) -> None:
        """The output's metadata gives exit code 0 and the tool name comes from the call."""
        res = parse((fixtures_dir / X01).read_bytes())
        (ev,) = [r for r in res.records if isinstance(r, R.ToolResultEvent)]
        assert (ev.tool_use_id, ev.tool_name, ev.exit_code, ev.is_error) == (
            "call_1",
            "shell",
            0,
            False,
        )

    def test_failed_command_is_an_error(self, rollout: Any) -> None:
        """A non-zero exit code in the output marks the result as an error."""
        data = (
            rollout.meta("2026-01-05T10:00:00Z", "t1")
            + rollout.item(
                "2026-01-05T10:00:01Z", "function_call", name="shell", arguments="{}", call_id="c1"
            )
            + rollout.item(
                "2026-01-05T10:00:02Z",
                "function_call_output",
                call_id="c1",
                output="Exit code: 2\nWall time: 0.1 seconds\nOutput:\nboom",
            )
        )
        (ev,) = [r for r in parse(data).records if isinstance(r, R.ToolResultEvent)]
        assert (ev.exit_code, ev.is_error, ev.tool_name) == (2, True, "shell")

    def test_user_text_is_stored_once_and_injected_context_never(self, rollout: Any) -> None:
        """The event and the response item of one message give one content record."""
        data = (
            rollout.meta("2026-01-05T10:00:00Z", "t1")
            + rollout.item(
                "2026-01-05T10:00:00.5Z",
                "message",
                role="user",
                content=[{"type": "input_text", "text": ENV_CONTEXT}],
            )
            + rollout.event("2026-01-05T10:00:01Z", "user_message", message="hi")
            + rollout.item(
                "2026-01-05T10:00:01.001Z",
                "message",
                role="user",
                content=[{"type": "input_text", "text": "hi"}],
            )
            + rollout.item(
                "2026-01-05T10:00:02Z",
                "message",
                role="assistant",
                content=[{"type": "output_text", "text": "hello"}],
            )
            + rollout.event("2026-01-05T10:00:02.001Z", "agent_message", message="hello")
            + rollout.event("2026-01-05T10:00:03Z", "user_message", message="hi")
        )
        content = [r for r in parse(data).records if isinstance(r, R.ContentRecord)]
        assert [(c.role, c.text) for c in content] == [
            ("user", "hi"),
            ("assistant", "hello"),
            ("user", "hi"),
        ]
        assert all(
            c.sha256 == R.short_hash(c.text or "") and c.chars == len(c.text or "") for c in content
        )
        users = [r for r in parse(data).records if isinstance(r, R.UserTurn)]
        assert len(users) == 2

    def test_without_content_no_text_is_emitted(self, fixtures_dir: Path) -> None:
        """When content is off, parsing skips content records entirely."""
        res = parse((fixtures_dir / X01).read_bytes(), with_content=False)
        assert not any(isinstance(r, R.ContentRecord) for r in res.records)
        assert sum(isinstance(r, R.Turn) for r in res.records) == 2

    def test_state_holds_no_content(self, fixtures_dir: Path) -> None:
        """The cursor state is JSON and small: hashes, never the text."""
        res = parse((fixtures_dir / X01).read_bytes(), final=False)
        text = json.dumps(res.state)
        assert "run tests" not in text and "npm test" not in text
        assert json.loads(text) == res.state


class TestCompactions:
    """A compaction is one record whatever number of markers it was written as."""

    def test_markers_of_one_compaction_are_one_record(self, rollout: Any) -> None:
        """``compacted`` then ``context_compacted`` is one compaction; a later one is new."""
        data = (
            rollout.meta("2026-01-05T10:00:00Z", "t1")
            + rollout.context("2026-01-05T10:00:00Z")
            + rollout.tokens("2026-01-05T10:00:05Z", (900, 0, 100, 0, 1000), (900, 0, 100, 0, 1000))
            + rollout.line(
                "2026-01-05T10:00:06Z",
                "compacted",
                {"message": "summary", "replacement_history": []},
            )
            + rollout.event("2026-01-05T10:00:06Z", "context_compacted")
            + rollout.event("2026-01-05T10:01:00Z", "user_message", message="go on")
            + rollout.event("2026-01-05T10:02:00Z", "context_compacted")
        )
        comps = [r for r in parse(data).records if isinstance(r, R.Compaction)]
        assert [(c.ts, c.pre_tokens) for c in comps] == [
            (1767607206000, 1000),
            (1767607320000, 1000),
        ]


class TestBadInput:
    """Bad lines are counted with their offsets and never stop the file."""

    def test_bad_lines_are_skipped_and_counted(self, rollout: Any) -> None:
        """Invalid JSON, non-UTF-8, NUL damage, arrays and unknown kinds are skipped."""
        good = rollout.meta("2026-01-05T10:00:00Z", "t1") + rollout.context("2026-01-05T10:00:00Z")
        bad = [
            b"{not json\n",
            b'{"type":"event_msg","payload":{"x":"\xff"}}\n',
            b"\x00\x00\x00\n",
            b"[1,2]\n",
            b'{"timestamp":"2026-01-05T10:00:01Z","type":"world_state","payload":{}}\n',
            b"\n",
        ]
        tail = rollout.tokens("2026-01-05T10:00:05Z", (10, 0, 5, 0, 15))
        data = good + b"".join(bad) + tail
        res = parse(data)
        assert res.consumed == len(data)
        assert res.skipped == {
            "invalid_json": 1,
            "invalid_utf8": 1,
            "nul_bytes": 1,
            "not_object": 1,
            "unknown_kind": 1,
        }
        offsets = [(o, n) for o, n, _ in res.skipped_lines]
        pos, expected = len(good), []
        for line in bad[:-1]:
            expected.append((pos, len(line) - 1))
            pos += len(line)
        assert offsets == expected
        assert sum(isinstance(r, R.Turn) for r in res.records) == 1

    def test_partial_last_line_waits(self, rollout: Any) -> None:
        """A fragment without its newline is not consumed, unless final and complete."""
        first = rollout.meta("2026-01-05T10:00:00Z", "t1")
        last = rollout.tokens("2026-01-05T10:00:05Z", (10, 0, 5, 0, 15))
        assert parse(first + last[:20], final=True).consumed == len(first)
        assert parse(first + last[:-1], final=False).consumed == len(first)
        done = parse(first + last[:-1], final=True)
        assert done.consumed == len(first + last) - 1
        assert sum(isinstance(r, R.Turn) for r in done.records) == 1

    def test_info_null_changes_nothing(self, rollout: Any) -> None:
        """A rate-limit-only token_count leaves the state exactly as it was."""
        start = parse(
            rollout.meta("2026-01-05T10:00:00Z", "t1")
            + rollout.tokens("2026-01-05T10:00:05Z", (10, 0, 5, 0, 15)),
            final=False,
        )
        null = rollout.line(
            "2026-01-05T10:00:06Z", "event_msg", {"type": "token_count", "info": None}
        )
        after = parse(null, state=start.state, final=False)
        assert after.records == [] and after.state == {**start.state, "t": after.state["t"]}

    def test_parse_does_not_change_the_given_state(self, fixtures_dir: Path) -> None:
        """The caller's state is left as it was (a failed delivery parses again from it)."""
        data = (fixtures_dir / X01).read_bytes()
        cut = data.index(b"\n", len(data) // 2) + 1
        state = parse(data[:cut], final=False).state
        before = json.dumps(state, sort_keys=True)
        parse(data[cut:], state=state)
        assert json.dumps(state, sort_keys=True) == before

    def test_unreadable_state_starts_over(self, fixtures_dir: Path) -> None:
        """A state of another version is reported and the file re-read from scratch."""
        res = parse((fixtures_dir / X01).read_bytes(), state={"v": 99})
        assert res.skipped["state_reset"] == 1
        assert sum(isinstance(r, R.Turn) for r in res.records) == 2


class TestDiscovery:
    """Which files a Codex home contributes."""

    def test_sessions_and_archive(self, tmp_path: Path) -> None:
        """Both folders, recursively, in path order; an archived twin of an active file once."""
        for rel in (
            "sessions/2026/01/02/b.jsonl",
            "sessions/2026/01/01/a.jsonl",
            "archived_sessions/a.jsonl",
            "archived_sessions/c.jsonl",
            "sessions/notes.txt",
            "history.jsonl",
        ):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text("")
        found = [p.relative_to(tmp_path).as_posix() for p, _ in SRC.discover([tmp_path])]
        assert found == [
            "archived_sessions/c.jsonl",
            "sessions/2026/01/01/a.jsonl",
            "sessions/2026/01/02/b.jsonl",
        ]

    def test_home_without_session_folders(self, tmp_path: Path) -> None:
        """A folder of rollouts is read itself, minus Codex's own history files."""
        for rel in ("x.jsonl", "sub/y.jsonl", "history.jsonl", "session_index.jsonl"):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text("")
        found = [p.relative_to(tmp_path).as_posix() for p, _ in SRC.discover([tmp_path])]
        assert found == ["sub/y.jsonl", "x.jsonl"]

    def test_missing_root(self, tmp_path: Path) -> None:
        """A root that does not exist yields nothing."""
        assert list(SRC.discover([tmp_path / "nope"])) == []

    def test_ids_do_not_depend_on_the_path(self, fixtures_dir: Path) -> None:
        """The same bytes under another path and root give the same records."""
        data = (fixtures_dir / X01).read_bytes()
        a = parse(data, Path("/h1/sessions/2026/01/05/x.jsonl"))
        b = parse(data, Path("/h2/archived_sessions/x.jsonl"))
        assert [R.to_dict(r) for r in a.records] == [R.to_dict(r) for r in b.records]
