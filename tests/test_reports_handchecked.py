"""`sessions`, `compare`, `tools` and `blocks` on a small dataset whose numbers were worked
out by hand (the arithmetic is spelled out next to each expectation).

The dataset, all times UTC, 2026-03-02 (a Monday) unless noted:

session A (claude, /p/one)
  09:10:00 user turn
  09:10:05 a1 sonnet  in 100 out 50 cw 1000 cr 2000 $0.01   Read c1, Grep c2     reading
  09:20:00 a2 sonnet  in 10 out 200 cr 3000         $0.02   Edit c3, Bash c4     editing
  10:00:00 user turn
  10:00:10 a3 opus    in 5 out 500                  $0.05   no tools             conversation
  10:30:00 replay of a3 (sidechain, same message id)  never counted
  10:31:00 a4 haiku   in 20 out 30 (sidechain)      $0.001  Bash c5              shell
  results: c1 ok 100 B, c2 error 300 B, c3 ok 50 B, c4 error 1000 B, c5 ok 200 B
session B (codex, /p/two)
  16:00:00 user turn
  16:00:30 b1 gpt-5   in 1000 out 100 cr 500        unpriced exec_command c6 shell
  17:00:00 b2 gpt-5   in 100 out 10                 $0.003  no tools             conversation
  03-03 02:00:00 b3 gpt-5 in 50 out 5               $0.001  apply_patch c7, mcp__x__y c8  editing
  results: c6 ok 10 B, c8 error 0 B; c7 none; an orphan WebFetch result c9 ok 5000 B
session C (codex, /p/two), a fork of B
  03-03 03:00:00 c1 gpt-5-mini in 1 out 1          $0.0    no tools             conversation
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from relayburnd.records import Record
from relayburnd.storage.file import FileAdapter
from tests.conftest import run_cli
from tests.test_archive import relationship, settings, tool_result, turn, user_turn, write

H = 3_600_000
M = 60_000
S = 1000
D0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
D1 = D0 + 24 * H

SONNET, OPUS, HAIKU = "claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"


def dataset() -> list[Record]:
    a = {"session": "A", "source": "claude", "project": "/p/one"}
    b = {"session": "B", "source": "codex", "project": "/p/two"}
    cdx = {"source": "codex"}
    return [
        user_turn("ua1", "A", D0 + 9 * H + 10 * M),
        turn("a1", ts=D0 + 9 * H + 10 * M + 5 * S, model=SONNET, inp=100, out=50, cw=1000,
             cr=2000, cost=0.01, tools=[("c1", "Read"), ("c2", "Grep")], **a),
        turn("a2", ts=D0 + 9 * H + 20 * M, model=SONNET, inp=10, out=200, cr=3000, cost=0.02,
             tools=[("c3", "Edit"), ("c4", "Bash")], **a),
        user_turn("ua2", "A", D0 + 10 * H),
        turn("a3", ts=D0 + 10 * H + 10 * S, model=OPUS, inp=5, out=500, cost=0.05, **a),
        turn("a3-replay", ts=D0 + 10 * H + 30 * M, model=OPUS, inp=5, out=500, cost=0.05,
             sidechain=True, message="msg-a3", **a),
        turn("a4", ts=D0 + 10 * H + 31 * M, model=HAIKU, inp=20, out=30, cost=0.001,
             sidechain=True, tools=[("c5", "Bash")], **a),
        tool_result("c1", "A", D0 + 9 * H + 10 * M + 6 * S, size=100),
        tool_result("c2", "A", D0 + 9 * H + 10 * M + 7 * S, size=300, error=True),
        tool_result("c3", "A", D0 + 9 * H + 20 * M + 1 * S, size=50),
        tool_result("c4", "A", D0 + 9 * H + 20 * M + 2 * S, size=1000, error=True),
        tool_result("c5", "A", D0 + 10 * H + 31 * M + 5 * S, size=200),
        user_turn("ub1", "B", D0 + 16 * H, source="codex", project="/p/two"),
        turn("b1", ts=D0 + 16 * H + 30 * S, model="gpt-5", inp=1000, out=100, cr=500,
             cost=None, tools=[("c6", "exec_command")], **b),
        turn("b2", ts=D0 + 17 * H, model="gpt-5", inp=100, out=10, cost=0.003, **b),
        turn("b3", ts=D1 + 2 * H, model="gpt-5", inp=50, out=5, cost=0.001,
             tools=[("c7", "apply_patch"), ("c8", "mcp__x__y")], **b),
        tool_result("c6", "B", D0 + 16 * H + 31 * S, size=10, **cdx),
        tool_result("c8", "B", D1 + 2 * H + 1 * S, size=0, error=True, **cdx),
        tool_result("c9", "B", D1 + 2 * H + 2 * S, size=5000, name="WebFetch", **cdx),
        turn("c1t", "C", D1 + 3 * H, model="gpt-5-mini", inp=1, out=1, cost=0.0,
             project="/p/two", **cdx),
        relationship("C", "B", "fork"),
    ]


@pytest.fixture
def loaded() -> None:
    adapter = FileAdapter(settings())
    write(adapter, *dataset())
    adapter.close()


def report(*args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(run_cli(*args, "--json", "--tz", "UTC", env=env).stdout)


@pytest.mark.usefixtures("loaded")
class TestSessions:
    """`relayburnd sessions`."""

    def test_rows(self) -> None:
        """Requests, user turns, tokens, cost, duration and models per session."""
        rows = {r["session_id"]: r for r in report("sessions")["rows"]}
        a, b, c = rows["A"], rows["B"], rows["C"]
        # A: a1..a4 (the replay is not counted); 3150 + 3210 + 505 + 50 tokens
        assert (a["requests"], a["user_turns"], a["total_tokens"]) == (4, 2, 6915)
        assert a["cost_usd"] == pytest.approx(0.01 + 0.02 + 0.05 + 0.001)
        # first activity is the user turn at 09:10:00, last is a4 at 10:31:00
        assert (a["start"], a["end"], a["duration_s"]) == (
            "2026-03-02T09:10:00+00:00", "2026-03-02T10:31:00+00:00", 81 * 60)
        assert a["models"] == [HAIKU, OPUS, SONNET]
        # B: 1600 + 110 + 55 tokens, b1 unpriced; 16:00:00 -> 02:00:00 next day
        assert (b["requests"], b["user_turns"], b["total_tokens"]) == (3, 1, 1765)
        assert b["cost_usd"] == pytest.approx(0.004) and b["unpriced_requests"] == 1
        assert b["duration_s"] == 10 * 3600
        assert (c["relation"], c["parent_session_id"], c["duration_s"]) == ("fork", "B", 0)
        assert a["relation"] == "root"

    @pytest.mark.parametrize(("key", "order"), [
        ("cost", ["A", "B", "C"]), ("tokens", ["A", "B", "C"]),
        ("start", ["C", "B", "A"]), ("duration", ["B", "A", "C"]),
    ])
    def test_sort(self, key: str, order: list[str]) -> None:
        """--sort cost|tokens|duration: largest first; start: newest first."""
        assert [r["session_id"] for r in report("sessions", "--sort", key)["rows"]] == order

    def test_limit_and_totals(self) -> None:
        """--limit keeps the first rows; totals cover the rows shown."""
        doc = report("sessions", "--sort", "cost", "--limit", "2")
        assert [r["session_id"] for r in doc["rows"]] == ["A", "B"]
        assert doc["totals"]["requests"] == 7 and doc["totals"]["total_tokens"] == 6915 + 1765

    def test_since_and_model(self) -> None:
        """--since cuts each session to its activity in range; --model keeps its requests."""
        rows = {r["session_id"]: r for r in report("sessions", "--since", "2026-03-03")["rows"]}
        assert set(rows) == {"B", "C"}
        assert (rows["B"]["requests"], rows["B"]["total_tokens"], rows["B"]["user_turns"]) == (
            1, 55, 0)
        rows = {r["session_id"]: r for r in report("sessions", "--model", "gpt-5")["rows"]}
        assert set(rows) == {"B"} and rows["B"]["requests"] == 3
        rows = {r["session_id"]: r for r in report("sessions", "--source", "claude")["rows"]}
        assert set(rows) == {"A"}
        rows = {r["session_id"]: r for r in report("sessions", "--project", "/p/two")["rows"]}
        assert set(rows) == {"B", "C"}

    def test_agrees_with_summary(self) -> None:
        """Per-session requests and cost equal `summary --by session`."""
        summary = {r["session"]: r for r in report("summary", "--by", "session")["rows"]}
        for row in report("sessions")["rows"]:
            assert row["requests"] == summary[row["session_id"]]["requests"]
            assert row["cost_usd"] == pytest.approx(summary[row["session_id"]]["cost_usd"])

    def test_table_and_csv(self) -> None:
        """The default table and --csv carry the same sessions."""
        table = run_cli("sessions", "--tz", "UTC").stdout
        assert "2026-03-02 09:10" in table and "3 session(s)" in table
        lines = run_cli("sessions", "--csv", "--tz", "UTC", "--sort", "cost").stdout.splitlines()
        assert lines[0].startswith("session_id,source,project,start,duration_s,requests")
        assert lines[1].startswith("A,claude,/p/one,2026-03-02T09:10:00+00:00,4860.0,4,2,6915,")


@pytest.mark.usefixtures("loaded")
class TestCompare:
    """`relayburnd compare`."""

    def test_rows(self) -> None:
        """Each request lands in one activity; `all` rows are per-model totals."""
        rows = [(r["activity"], r["model"], r["requests"]) for r in report("compare")["rows"]]
        assert rows == [
            ("editing", SONNET, 1), ("editing", "gpt-5", 1),      # a2 (Edit wins over Bash); b3
            ("shell", HAIKU, 1), ("shell", "gpt-5", 1),           # a4; b1
            ("reading", SONNET, 1),                                # a1
            ("conversation", OPUS, 1), ("conversation", "gpt-5", 1),
            ("conversation", "gpt-5-mini", 1),
            ("all", HAIKU, 1), ("all", OPUS, 1), ("all", SONNET, 2), ("all", "gpt-5", 3),
            ("all", "gpt-5-mini", 1),
        ]

    def test_numbers(self) -> None:
        """Tokens, cost, cost per priced request and output per request."""
        rows = {(r["activity"], r["model"]): r for r in report("compare")["rows"]}
        sonnet = rows[("all", SONNET)]
        assert sonnet["total_tokens"] == 3150 + 3210 and sonnet["output_tokens"] == 250
        assert sonnet["cost_per_request"] == pytest.approx((0.01 + 0.02) / 2)
        assert sonnet["output_per_request"] == 125
        gpt = rows[("all", "gpt-5")]
        # b1 is unpriced: cost per request over b2 and b3 only
        assert gpt["cost_per_request"] == pytest.approx((0.003 + 0.001) / 2)
        assert gpt["output_per_request"] == pytest.approx(115 / 3)
        assert gpt["unpriced_requests"] == 1
        shell_gpt = rows[("shell", "gpt-5")]
        assert shell_gpt["cost_per_request"] is None and shell_gpt["output_per_request"] == 100

    def test_table_and_csv(self) -> None:
        """The table and --csv list the same activities."""
        table = run_cli("compare", "--tz", "UTC").stdout
        assert "editing" in table and "USD/request" in table
        lines = run_cli("compare", "--csv", "--tz", "UTC").stdout.splitlines()
        assert lines[0] == ("activity,model,requests,total_tokens,cost_usd,cost_per_request,"
                            "output_per_request")
        assert lines[1] == f"editing,{SONNET},1,3210,0.02,0.02,200.0"

    def test_model_filter(self) -> None:
        """--model keeps one model's rows."""
        rows = report("compare", "--model", OPUS)["rows"]
        assert [(r["activity"], r["requests"]) for r in rows] == [("conversation", 1), ("all", 1)]


@pytest.mark.usefixtures("loaded")
class TestTools:
    """`relayburnd tools`."""

    def test_rows(self) -> None:
        """Calls, results, errors, error rate and median output size per tool."""
        rows = report("tools")["rows"]
        assert [r["tool"] for r in rows] == [
            "Bash", "Edit", "Grep", "Read", "exec_command", "mcp__x__y", "apply_patch",
            "WebFetch"]
        by = {r["tool"]: r for r in rows}
        assert by["Bash"] == {"tool": "Bash", "calls": 2, "results": 2, "errors": 1,
                              "error_rate": 0.5, "median_output_bytes": (1000 + 200) / 2}
        assert (by["Grep"]["error_rate"], by["Read"]["error_rate"]) == (1.0, 0.0)
        assert by["apply_patch"]["results"] == 0 and by["apply_patch"]["error_rate"] is None
        assert by["WebFetch"]["calls"] == 0 and by["WebFetch"]["median_output_bytes"] == 5000

    def test_project_filter_joins_results_to_calls(self) -> None:
        """With --project only results of that project's calls count (no orphan results)."""
        rows = {r["tool"]: r for r in report("tools", "--project", "/p/one")["rows"]}
        assert set(rows) == {"Bash", "Edit", "Grep", "Read"}
        assert rows["Bash"]["results"] == 2

    def test_csv(self) -> None:
        """--csv has raw numbers; an unknown rate or median is an empty field."""
        lines = run_cli("tools", "--csv", "--tz", "UTC").stdout.splitlines()
        assert lines[0] == "tool,calls,results,errors,error_rate,median_output_bytes"
        assert lines[1] == "Bash,2,2,1,0.5,600.0"
        assert "apply_patch,1,0,0,," in lines

    def test_limit(self) -> None:
        """--limit keeps the most used tools."""
        assert [r["tool"] for r in report("tools", "--limit", "2")["rows"]] == ["Bash", "Edit"]


@pytest.mark.usefixtures("loaded")
class TestBlocks:
    """`relayburnd blocks`."""

    def test_blocks(self) -> None:
        """Three blocks: 09:00-14:00, 16:00-21:00, and 02:00-07:00 the next day."""
        rows = report("blocks", "--now", "2026-03-10T00:00:00Z")["rows"]
        assert [(r["start"], r["end"], r["requests"]) for r in rows] == [
            ("2026-03-02T09:00:00+00:00", "2026-03-02T14:00:00+00:00", 4),
            ("2026-03-02T16:00:00+00:00", "2026-03-02T21:00:00+00:00", 2),
            ("2026-03-03T02:00:00+00:00", "2026-03-03T07:00:00+00:00", 2),
        ]
        first, second, third = rows
        assert first["total_tokens"] == 6915
        assert first["cost_usd"] == pytest.approx(0.081)
        # active span 09:10:05 -> 10:31:00 = 4855 s
        assert first["tokens_per_minute"] == pytest.approx(6915 / (4855 / 60))
        assert first["usd_per_hour"] == pytest.approx(0.081 / (4855 / 3600))
        # 16:00:30 -> 17:00:00 = 59.5 min; b1 is unpriced
        assert second["tokens_per_minute"] == pytest.approx(1710 / 59.5)
        assert second["unpriced_requests"] == 1
        assert third["tokens_per_minute"] == pytest.approx(57 / 60)
        assert not any(r["active"] for r in rows)
        assert first["projected_total_tokens"] is None

    def test_active_block_projection(self) -> None:
        """At 04:00 the 02:00 block is active: 180 minutes left at 0.95 tokens/min."""
        rows = report("blocks", "--now", "2026-03-03T04:00:00Z")["rows"]
        active = rows[-1]
        assert active["active"] is True and active["remaining_minutes"] == 180
        assert active["projected_total_tokens"] == pytest.approx(57 + 0.95 * 180)
        assert active["projected_cost_usd"] == pytest.approx(0.001 + 0.001 * 3)

    def test_block_edges(self) -> None:
        """A request at the block's end opens the next block; one a second earlier does not."""
        from relayburnd.reporting.blocks import split_blocks

        turns = [turn("e1", "E", D0 + 9 * H + 30 * M, inp=1),
                 turn("e2", "E", D0 + 14 * H - S, inp=2),
                 turn("e3", "E", D0 + 14 * H, inp=4),
                 turn("e4", "E", D0 + 23 * H + 59 * M, inp=8)]
        blocks = split_blocks(turns)
        assert [(b.start_ms, b.end_ms, b.requests, b.total_tokens) for b in blocks] == [
            (D0 + 9 * H, D0 + 14 * H, 2, 3),
            (D0 + 14 * H, D0 + 19 * H, 1, 4),
            (D0 + 23 * H, D1 + 4 * H, 1, 8),
        ]

    def test_half_hour_zone_shows_utc_hours(self) -> None:
        """Blocks start on UTC hours: 09:00 UTC is 14:30 in Asia/Kolkata."""
        out = json.loads(run_cli("blocks", "--json", "--tz", "Asia/Kolkata").stdout)
        assert out["rows"][0]["start"] == "2026-03-02T14:30:00+05:30"

    def test_csv(self) -> None:
        """--csv prints one header and one line per block."""
        lines = run_cli("blocks", "--csv", "--tz", "UTC").stdout.splitlines()
        assert lines[0] == ("start,end,active,requests,total_tokens,cost_usd,tokens_per_minute,"
                            "usd_per_hour,projected_total_tokens,projected_cost_usd,models")
        assert len(lines) == 4 and lines[3].startswith(
            "2026-03-03T02:00:00+00:00,2026-03-03T07:00:00+00:00,False,2,57,0.001,0.95,")

    def test_table(self) -> None:
        """The table marks the active block."""
        out = run_cli("blocks", "--tz", "UTC", "--now", "2026-03-03T04:00:00Z").stdout
        assert "ACTIVE" in out and "2026-03-03 02:00" in out
        assert "1 request(s) have no known price" in out


class TestOptions:
    """Shared option errors are one line with exit code 2."""

    @pytest.mark.parametrize("args", [
        ("sessions", "--source", "cursor"), ("compare", "--since", "yesterday"),
        ("tools", "--tz", "Mars/Olympus"), ("blocks", "--now", "soon"),
        ("sessions", "--since", "2026-03-05", "--until", "2026-03-01"),
    ])
    def test_usage_errors(self, args: tuple[str, ...]) -> None:
        """Bad values give `Error: ...` on one line and exit 2."""
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1
        assert proc.stderr.startswith("Error: ")

    def test_empty_store(self) -> None:
        """With nothing stored each report prints an empty result."""
        for cmd in ("sessions", "compare", "tools", "blocks"):
            assert report(cmd)["rows"] == []
            assert "No matching usage." in run_cli(cmd).stdout
