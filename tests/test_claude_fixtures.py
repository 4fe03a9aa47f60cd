"""Claude fixtures through the real CLI: ``ingest`` then ``summary --by day,model --tz UTC --json``
report exactly the correct figures (synthetic README, format spec 6.5 and 8)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.claude_oracle import expected_rows
from tests.conftest import PUBLIC, SYNTHETIC, run_cli
from tests.support import json_events

SONNET = "claude-sonnet-4-20250514"
HAIKU = "claude-haiku-4-5-20251001"
INGEST_ARGS = ("--source", "claude")

# case -> {(day, model): (input, output, cache_write, cache_read)} ; "correct" column
CORRECT: dict[str, dict[tuple[str, str], tuple[int, int, int, int]]] = {
    "c01-streaming-split": {("2026-01-05", SONNET): (4, 187, 1200, 15000)},
    "c02-no-request-id": {("2026-01-05", "kimi-k2.5"): (900, 90, 0, 0)},
    "c03-cross-file-copy": {
        ("2026-01-05", SONNET): (10, 40, 0, 5000),
        ("2026-01-06", SONNET): (10, 20, 0, 5200),
    },
    "c04-sidechain-replay": {("2026-01-05", SONNET): (8, 40, 0, 720)},
    "c05-agent-progress": {
        ("2026-01-05", SONNET): (3, 60, 0, 9000),
        ("2026-01-05", HAIKU): (50, 25, 0, 1000),
    },
    "c05b-agent-progress-only": {
        ("2026-01-05", SONNET): (3, 60, 0, 9000),
        ("2026-01-05", HAIKU): (50, 25, 0, 1000),
    },
    "c06-synthetic": {("2026-01-05", SONNET): (7, 11, 0, 0)},
    "c07-null-field-quirk": {("2026-01-05", SONNET): (100, 50, 0, 2000)},
    "c08-cache-1h": {("2026-01-05", SONNET): (10, 100, 3000, 0)},
    "c09-tiered-200k": {("2026-01-05", SONNET): (10, 500, 1000, 250000)},
    "c10-partial-last-line": {("2026-01-05", SONNET): (10, 20, 0, 0)},
    "c11-timestamp-formats": {("2026-01-05", SONNET): (15, 15, 0, 0)},
    "c12-fast-costusd-version": {
        ("2026-01-05", "claude-opus-4-6-fast"): (100, 100, 0, 0),
        ("2026-01-05", SONNET): (200, 200, 0, 0),
    },
    "c13-day-boundary": {("2026-01-05", SONNET): (10, 10, 0, 0)},
}
CORRECT_COST = {
    "c01-streaming-split": 0.011817,
    "c08-cache-1h": 0.01728,
    "c09-tiered-200k": 0.16881,  # the whole request at the long-context rate
    # opus-4-6 fast (6x) + two sonnet requests; costUSD on the legacy line is recomputed
    "c12-fast-costusd-version": 0.018 + 0.0036,
}


def ingest_and_summarize(claude_dir: Path, *extra: str, tz: str = "UTC") -> dict[str, Any]:
    env = {"CLAUDE_CONFIG_DIR": str(claude_dir)}
    run_cli("ingest", *INGEST_ARGS, env=env)
    out = run_cli("summary", "--by", "day,model", "--tz", tz, "--json", *extra, env=env)
    return dict(json.loads(out.stdout))


def rows_by_key(summary: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    return {
        (r["day"], r["model"]): (
            r["input_tokens"], r["output_tokens"], r["cache_write_tokens"], r["cache_read_tokens"]
        )
        for r in summary["rows"]
    }


class TestSyntheticClaude:
    """Every synthetic Claude case gives the README's correct figures."""

    @pytest.mark.parametrize("case", sorted(CORRECT))
    def test_correct_figures(self, case: str) -> None:
        """ingest + summary --by day,model --tz UTC reports exactly the correct rows."""
        summary = ingest_and_summarize(SYNTHETIC / "claude" / case)
        assert rows_by_key(summary) == CORRECT[case]
        totals = summary["totals"]
        assert totals["total_tokens"] == sum(sum(v) for v in CORRECT[case].values())
        assert totals["requests"] == sum(
            r["requests"] for r in summary["rows"]
        )
        if case in CORRECT_COST:
            assert totals["cost_usd"] == pytest.approx(CORRECT_COST[case], abs=1e-9)

    def test_synthetic_is_not_a_model(self) -> None:
        """The <synthetic> API-error line contributes no model row."""
        summary = ingest_and_summarize(SYNTHETIC / "claude" / "c06-synthetic")
        assert all(r["model"] != "<synthetic>" for r in summary["rows"])
        assert summary["totals"]["requests"] == 1

    def test_day_boundary_in_tokyo(self) -> None:
        """23:30 UTC falls on the next calendar day in Asia/Tokyo."""
        summary = ingest_and_summarize(
            SYNTHETIC / "claude" / "c13-day-boundary", tz="Asia/Tokyo"
        )
        assert [r["day"] for r in summary["rows"]] == ["2026-01-06"]

    def test_partial_line_counted_once_completed(self, tmp_path: Path) -> None:
        """The half-written last line waits; once completed it is counted exactly once."""
        root = tmp_path / "claude"
        shutil.copytree(SYNTHETIC / "claude" / "c10-partial-last-line", root)
        path = next(root.rglob("*.jsonl"))
        env = {"CLAUDE_CONFIG_DIR": str(root)}
        run_cli("ingest", *INGEST_ARGS, env=env)
        first = json.loads(run_cli("summary", "--tz", "UTC", "--json", env=env).stdout)
        assert first["totals"]["requests"] == 1
        tail = path.read_bytes().rsplit(b"\n", 1)[1]
        obj_rest = (
            b'-20250514","id":"msg_c10b","type":"message","role":"assistant","content":[],'
            b'"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":7}},'
            b'"requestId":"req_c10b"}\n'
        )
        assert tail.endswith(b'"model":"claude-sonnet-4')
        with path.open("ab") as fh:
            fh.write(obj_rest)
        run_cli("ingest", *INGEST_ARGS, env=env)
        second = json.loads(run_cli("summary", "--tz", "UTC", "--json", env=env).stdout)
        assert second["totals"]["requests"] == 2
        assert second["totals"]["output_tokens"] == 27
        run_cli("ingest", *INGEST_ARGS, env=env)
        third = json.loads(run_cli("summary", "--tz", "UTC", "--json", env=env).stdout)
        assert third == second

    def test_all_cases_together_match_the_oracle(self, tmp_path: Path) -> None:
        """All synthetic cases in one tree: the batch reference agrees row by row."""
        projects = tmp_path / "claude" / "projects"
        for case in sorted((SYNTHETIC / "claude").iterdir()):
            for proj in (case / "projects").iterdir():
                shutil.copytree(proj, projects / f"{case.name}-{proj.name}")
        summary = ingest_and_summarize(tmp_path / "claude")
        expected = expected_rows(projects)
        got = {
            (r["day"], r["model"]): [
                r["requests"], r["input_tokens"], r["output_tokens"],
                r["cache_write_tokens"], r["cache_read_tokens"],
            ]
            for r in summary["rows"]
        }
        assert got == expected


class TestPublicClaude:
    """The public Claude fixture folders."""

    def test_ccusage_worked_example(self) -> None:
        """public/ccusage/claude gives the format spec 6.5 days and totals."""
        summary = ingest_and_summarize(PUBLIC / "ccusage" / "claude")
        days: dict[str, list[int]] = {}
        for r in summary["rows"]:
            d = days.setdefault(r["day"], [0, 0, 0, 0])
            for i, k in enumerate(("input_tokens", "output_tokens", "cache_write_tokens",
                                   "cache_read_tokens")):
                d[i] += r[k]
        assert days == {
            "2026-01-09": [300, 125, 75, 30],
            "2026-01-10": [300, 125, 0, 40],
            "2026-02-03": [130, 60, 15, 40],
        }
        t = summary["totals"]
        assert (t["input_tokens"], t["output_tokens"], t["cache_write_tokens"],
                t["cache_read_tokens"], t["total_tokens"]) == (730, 310, 90, 110, 1240)
        models = {r["model"] for r in summary["rows"]}
        assert "claude-opus-4-20250514-fast" in models

    def test_claude_code_log_matches_oracle(self) -> None:
        """public/claude-code-log/claude: every request once, pretty-printed lines included."""
        root = PUBLIC / "claude-code-log" / "claude"
        summary = ingest_and_summarize(root)
        got = {
            (r["day"], r["model"]): [
                r["requests"], r["input_tokens"], r["output_tokens"],
                r["cache_write_tokens"], r["cache_read_tokens"],
            ]
            for r in summary["rows"]
        }
        assert got == expected_rows(root / "projects")

    def test_claude_code_log_differs_from_ccusage_only_by_pretty_lines(self) -> None:
        """ccusage skips pretty-printed JSON (its byte prefilter, spec 8 case 11); we do not.

        Days with only compact lines agree exactly; 2025-06-14 mixes both and is higher
        here by exactly the requests on pretty-printed lines.
        """
        root = PUBLIC / "claude-code-log" / "claude"
        summary = ingest_and_summarize(root)
        ours = {r["day"]: (r["input_tokens"], r["output_tokens"]) for r in summary["rows"]}
        ccusage = json.loads(
            (PUBLIC.parent / "expected" / "ccusage-20.0.24" /
             "public-claude-code-log.claude-daily.json").read_text()
        )
        theirs = {d["date"]: (d["inputTokens"], d["outputTokens"]) for d in ccusage["daily"]}
        assert ours["2025-07-01"] == theirs["2025-07-01"]
        compact_only = _compact_only_copy(root)
        compact_rows = expected_rows(compact_only)
        compact_days: dict[str, tuple[int, int]] = {}
        for (day, _), row in compact_rows.items():
            a, b = compact_days.get(day, (0, 0))
            compact_days[day] = (a + row[1], b + row[2])
        assert compact_days == theirs
        # the extra usage comes from the pretty-printed transcripts only
        assert set(ours) - set(theirs) == {"2025-11-19", "2026-06-15"}


def _compact_only_copy(root: Path) -> Path:
    """A copy of the tree keeping only lines a byte prefilter on '"usage":{' would see."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="compact-"))
    for path in root.rglob("*.jsonl"):
        keep = [
            line for line in path.read_bytes().split(b"\n")
            if b'"usage":{' in line
        ]
        dst = out / path.relative_to(root / "projects")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(b"\n".join(keep) + b"\n")
    return out


def test_sub_agent_is_tied_to_its_task_call_by_its_meta_file(tmp_path: Path) -> None:
    """A 2.1.x sub-agent (``<session>/subagents/agent-<id>.jsonl``) names its spawning tool
    call in ``agent-<id>.meta.json``; the relationship carries it even without progress
    copies in the parent, and a sub-agent whose meta file is unreadable still relates."""
    from relayburnd.sources.base import FileContext
    from relayburnd.sources.claude import ClaudeSource

    src = PUBLIC / "claude-code-log" / "claude" / "projects" / "-workspace-example-app"
    sub = next(src.glob("*/subagents/agent-showcol1.jsonl"))
    for meta, want in ((sub.with_suffix(".meta.json").read_bytes(), "toolu_sc_showcol1"),
                       (b"{not json", None)):
        copy = tmp_path / str(want) / "subagents" / sub.name
        copy.parent.mkdir(parents=True)
        shutil.copy(sub, copy)
        copy.with_suffix(".meta.json").write_bytes(meta)
        ctx = FileContext(path=copy, root=tmp_path, offset=0, with_content=False)
        result = ClaudeSource().parse(copy.read_bytes(), {}, ctx, final=True)
        rels = [r for r in result.records if type(r).__name__ == "SessionRelationship"]
        assert [(r.agent_id, r.tool_use_id) for r in rels] == [("showcol1", want)]


def test_a_file_of_garbage_is_dead_lettered_in_one_pass(tmp_path: Path) -> None:
    """50,000 malformed lines around one good response: every bad line is counted and
    listed in the dead-letter file, the response is stored, and the log names only the
    first few lines and then how many more there were (not one event per line)."""
    project = tmp_path / "claude" / "projects" / "p"
    project.mkdir(parents=True)
    good = (SYNTHETIC / "claude" / "c01-streaming-split").glob("**/*.jsonl")
    lines = b"".join(path.read_bytes().rstrip(b"\n") + b"\n" for path in good)
    garbage = [b"not json %d\n" % i for i in range(50_000)]
    (project / "s.jsonl").write_bytes(b"".join(garbage[:25_000]) + lines
                                      + b"".join(garbage[25_000:]))
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "claude"), "RELAYBURN_HOME": str(tmp_path / "h")}
    proc = run_cli("ingest", env=env)
    assert "50000 invalid_json" in proc.stdout
    dead = (tmp_path / "h" / "deadletter.jsonl").read_text().splitlines()
    assert len(dead) == 50_000
    assert {json.loads(d)["reason"] for d in dead} == {"invalid_json"}
    events = [e.get("event") for e in json_events(proc.stderr)]
    assert "line.skipped.more" in events
    assert len(events) < 50  # not one event per line
    summary = json.loads(run_cli("summary", "--json", "--tz", "UTC", env=env).stdout)
    assert summary["totals"]["requests"] >= 1


def test_progress_copies_of_unusual_shape_are_read_or_ignored_never_skipped(
    tmp_path: Path,
) -> None:
    """A progress line's copy is decoded with the line; a copy whose content has another
    shape still bills its response, and a ``data`` that is no object is ignored."""
    from relayburnd.sources.base import FileContext
    from relayburnd.sources.claude import ClaudeSource

    nested = {
        "type": "assistant", "uuid": "a1", "timestamp": "2026-02-10T13:26:31.147Z",
        "requestId": "req_1",
        "message": {"id": "msg_1", "model": "claude-sonnet-4-5", "role": "assistant",
                    "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 5, "output_tokens": 7}},
    }
    odd = {**nested, "requestId": "req_2",
           "message": {**nested["message"], "id": "msg_2", "content": 5}}
    base = {"type": "progress", "uuid": "p1", "sessionId": "s1",
            "timestamp": "2026-02-10T13:26:31.147Z", "parentToolUseID": "toolu_1"}
    lines = [
        {**base, "data": {"type": "agent_progress", "agentId": "ag1", "message": nested}},
        {**base, "uuid": "p2", "data": {"type": "agent_progress", "agentId": "ag2",
                                        "message": odd}},
        {**base, "uuid": "p3", "data": "not an object"},
    ]
    path = tmp_path / "s1.jsonl"
    res = ClaudeSource().parse(
        b"".join(json.dumps(x).encode() + b"\n" for x in lines), {},
        FileContext(path=path, root=tmp_path, offset=0, with_content=False), final=True,
    )
    turns = {(r.message_id, r.agent_id, r.output_tokens) for r in res.records
             if type(r).__name__ == "Turn"}
    assert turns == {("msg_1", "ag1", 7), ("msg_2", "ag2", 7)}
    assert not res.skipped


def test_tool_names_are_remembered_for_the_latest_calls_only(tmp_path: Path) -> None:
    """A tool result is named after its call; the state keeps the latest 512 names, so
    a result for a call that many calls back is still counted, without a name."""
    from relayburnd.sources.base import FileContext
    from relayburnd.sources.claude import MAX_TOOL_NAMES, ClaudeSource

    calls = MAX_TOOL_NAMES + 3
    lines: list[dict[str, Any]] = []
    for i in range(calls):
        lines.append({
            "type": "assistant", "uuid": f"a{i}", "sessionId": "s1", "requestId": f"req_{i}",
            "timestamp": "2026-02-10T13:26:31.147Z",
            "message": {"id": f"msg_{i}", "model": SONNET, "role": "assistant",
                        "content": [{"type": "tool_use", "id": f"toolu_{i}",
                                     "name": f"Tool{i}", "input": {"n": i}}],
                        "stop_reason": "tool_use",
                        "usage": {"input_tokens": 1, "output_tokens": 1}},
        })
    lines.append({
        "type": "user", "uuid": "u1", "sessionId": "s1",
        "timestamp": "2026-02-10T13:27:00.000Z",
        "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_0", "content": "old"},
            {"type": "tool_result", "tool_use_id": f"toolu_{calls - 1}", "content": "new"},
        ]},
    })
    source = ClaudeSource()
    ctx = FileContext(path=tmp_path / "s1.jsonl", root=tmp_path, with_content=False)
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    cut = data.index(b'{"type": "user"')
    first = source.parse(data[:cut], {}, ctx, final=False)
    assert len(first.state["tools"]) == MAX_TOOL_NAMES
    assert list(first.state["tools"])[-1] == f"toolu_{calls - 1}"
    second = source.parse(data[cut:], first.state, ctx, final=True)
    names = {r.tool_use_id: r.tool_name for r in second.records
             if type(r).__name__ == "ToolResultEvent"}
    assert names == {"toolu_0": None, f"toolu_{calls - 1}": f"Tool{calls - 1}"}
    turns = [r for r in first.records + second.records if type(r).__name__ == "Turn"]
    assert len(turns) == calls
    assert turns[0].tool_calls[0].args_sha256 == hashlib.sha256(b'{"n": 0}').hexdigest()
