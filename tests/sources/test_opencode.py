"""The OpenCode source: fixture figures, rewrites while streaming, the database, bad input."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from relayburnd import records as R
from relayburnd.sources.base import PollResult
from relayburnd.sources.opencode import OpenCodeSource

Fold = Callable[[Iterable[R.Record]], dict[str, R.Record]]
Sums = Callable[[dict[str, R.Record]], dict[str, int]]

SES = "ses_test0001"
T0 = 1767607200000
SCHEMA = """
CREATE TABLE message (id TEXT PRIMARY KEY, session_id TEXT NOT NULL, time_created INTEGER NOT NULL,
  time_updated INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE part (id TEXT PRIMARY KEY, message_id TEXT NOT NULL, session_id TEXT NOT NULL,
  time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE project (id TEXT PRIMARY KEY, worktree TEXT NOT NULL, vcs TEXT, name TEXT,
  time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL);
CREATE TABLE session (id TEXT PRIMARY KEY, project_id TEXT NOT NULL, parent_id TEXT,
  slug TEXT NOT NULL DEFAULT '', directory TEXT NOT NULL, title TEXT NOT NULL DEFAULT '',
  version TEXT NOT NULL DEFAULT '', time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL);
"""


def tokens(
    inp: int = 0, out: int = 0, read: int = 0, write: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    return {
        "input": inp,
        "output": out,
        "reasoning": reasoning,
        "cache": {"read": read, "write": write},
    }


def assistant(
    mid: str,
    tok: dict[str, Any],
    *,
    created: int | None = T0,
    completed: int | None = None,
    cost: float = 0,
    **extra: Any,
) -> dict[str, Any]:
    time: dict[str, int] = {}
    if created is not None:
        time["created"] = created
    if completed is not None:
        time["completed"] = completed
    return {
        "id": mid,
        "sessionID": SES,
        "role": "assistant",
        "time": time,
        "modelID": "claude-sonnet-4-5",
        "providerID": "anthropic",
        "path": {"cwd": "/w", "root": "/w"},
        "cost": cost,
        "tokens": tok,
        **extra,
    }


def user(mid: str, created: int = T0) -> dict[str, Any]:
    return {"id": mid, "sessionID": SES, "role": "user", "time": {"created": created}}


class Tree:
    """A JSON storage tree in a temporary data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _write(self, rel: str, obj: Any) -> Path:
        path = self.root / "storage" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2))
        return path

    def message(self, msg: dict[str, Any]) -> Path:
        return self._write(f"message/{msg['sessionID']}/{msg['id']}.json", msg)

    def part(self, mid: str, pid: str, part: dict[str, Any]) -> Path:
        return self._write(
            f"part/{mid}/{pid}.json", {"id": pid, "sessionID": SES, "messageID": mid, **part}
        )

    def session(self, sid: str, **fields: Any) -> Path:
        return self._write(
            f"session/proj1/{sid}.json",
            {"id": sid, "projectID": "proj1", "time": {"created": T0}, **fields},
        )


def make_db(path: Path, *, wal: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO project VALUES ('proj1', '/repo', 'git', NULL, ?, ?)", (T0, T0))
    conn.execute(
        "INSERT INTO session (id, project_id, directory, time_created, time_updated)"
        " VALUES (?, 'proj1', '/repo', ?, ?)",
        (SES, T0, T0),
    )
    return conn


def db_message(conn: sqlite3.Connection, msg: dict[str, Any], updated: int) -> None:
    data = {k: v for k, v in msg.items() if k not in ("id", "sessionID")}
    conn.execute(
        "INSERT OR REPLACE INTO message VALUES (?, ?, ?, ?, ?)",
        (msg["id"], SES, T0, updated, json.dumps(data)),
    )


def db_part(
    conn: sqlite3.Connection, mid: str, pid: str, part: dict[str, Any], updated: int
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO part VALUES (?, ?, ?, ?, ?, ?)",
        (pid, mid, SES, T0, updated, json.dumps(part)),
    )


class Poller:
    """Polls one data directory repeatedly, carrying the (JSON-persisted) state."""

    def __init__(self, root: Path, **options: Any) -> None:
        self.root = root
        self.src = OpenCodeSource(**options)
        self.state: dict[str, Any] = {}
        self.records: list[R.Record] = []

    def poll(self) -> PollResult:
        res = self.src.poll([self.root], self.state)
        self.state = json.loads(json.dumps(res.state))
        self.records.extend(res.records)
        return res


def turns_of(folded: dict[str, R.Record]) -> list[R.Turn]:
    return sorted((r for r in folded.values() if isinstance(r, R.Turn)), key=lambda t: t.id)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path / "opencode")


@pytest.fixture
def age_file() -> Iterator[Callable[[Path], None]]:
    def age(path: Path) -> None:
        os.utime(path, (1_600_000_000, 1_600_000_000))

    yield age


class TestFixtures:
    """The synthetic OpenCode cases give the README's correct figures."""

    def test_json_storage(self, fixtures_dir: Path, fold: Fold, turn_sums: Sums) -> None:
        """o01: steps summed where present, message level otherwise, placeholder dropped."""
        res = OpenCodeSource().poll(
            [fixtures_dir / "synthetic" / "opencode" / "o01-json-storage"], {}
        )
        assert res.errors == []
        folded = fold(res.records)
        sums = turn_sums(folded)
        assert (
            sums["input"],
            sums["output"],
            sums["cache_write"],
            sums["cache_read"],
            sums["reasoning"],
        ) == (1214, 600, 5500, 26800, 120)
        turns = turns_of(folded)
        by_msg: dict[str | None, int] = {}
        for t in turns:
            by_msg[t.message_id] = by_msg.get(t.message_id, 0) + 1
        assert by_msg == {
            "msg_a000000002001AAAAAAAAAAAAA": 2,
            "msg_a000000003001AAAAAAAAAAAAA": 1,
            "msg_a000000005001AAAAAAAAAAAAA": 1,
        }
        costs = sorted(t.logged_cost_usd for t in turns if t.logged_cost_usd is not None)
        assert costs == [0.0105, 0.01107, 0.0132]  # cost 0 is left to the pricer
        assert {t.project for t in turns} == {"/home/dev/demo-app"}

    def test_database_wins_over_stale_json(
        self, fixtures_dir: Path, fold: Fold, turn_sums: Sums
    ) -> None:
        """o02: the row's numbers, not the stale JSON copy's 999s."""
        res = OpenCodeSource().poll([fixtures_dir / "synthetic" / "opencode" / "o02-sqlite"], {})
        assert res.errors == []
        folded = fold(res.records)
        sums = turn_sums(folded)
        assert (sums["input"], sums["output"], sums["cache_write"], sums["cache_read"]) == (
            4,
            300,
            1500,
            20000,
        )
        assert [t.logged_cost_usd for t in turns_of(folded)] == [0.0213]
        expected = json.loads(
            (fixtures_dir / "expected" / "ccusage-20.0.11" / "o02-sqlite.daily.json").read_text()
        )
        (day,) = expected["daily"]
        assert (
            day["inputTokens"],
            day["outputTokens"],
            day["cacheCreationTokens"],
            day["cacheReadTokens"],
        ) == (4, 300, 1500, 20000)

    def test_content_for_every_kind_of_text(self, fixtures_dir: Path, fold: Fold) -> None:
        """User text, assistant text, tool input and tool output are all stored."""
        res = OpenCodeSource().poll(
            [fixtures_dir / "synthetic" / "opencode" / "o01-json-storage"], {}
        )
        content = [r for r in fold(res.records).values() if isinstance(r, R.ContentRecord)]
        assert {(c.role, c.block_type) for c in content} == {
            ("user", "text"),
            ("assistant", "text"),
            ("assistant", "tool_use"),
            ("tool", "tool_result"),
        }
        assert all(
            c.sha256 == R.short_hash(c.text or "") and c.chars == len(c.text or "") for c in content
        )
        tool = next(r for r in res.records if isinstance(r, R.ToolResultEvent))
        assert (tool.tool_use_id, tool.tool_name, tool.is_error) == ("toolu_01Abc", "read", False)
        users = [r for r in res.records if isinstance(r, R.UserTurn)]
        assert [(u.message_id, u.text_chars) for u in users] == [
            ("msg_a000000001001AAAAAAAAAAAAA", len("Fix the login bug"))
        ]

    def test_second_poll_is_quiet_and_state_holds_no_content(
        self, fixtures_dir: Path, tmp_path: Path
    ) -> None:
        """Nothing changed, nothing emitted; the state is JSON without any text."""
        root = shutil.copytree(
            fixtures_dir / "synthetic" / "opencode" / "o01-json-storage", tmp_path / "oc"
        )
        poller = Poller(root)
        assert poller.poll().records
        second = poller.poll()
        assert second.records == [] and second.errors == []
        text = json.dumps(poller.state)
        assert "Fix the login bug" not in text and "login.ts" not in text


class TestStreaming:
    """A message rewritten while it streams ends as one record with the final numbers."""

    def test_message_level_rewrites(self, tree: Tree, fold: Fold) -> None:
        """Tokens 0, then partial, then final and completed: one turn, final numbers."""
        poller = Poller(tree.root)
        tree.message(user("msg_u1"))
        tree.part("msg_u1", "prt_u1", {"type": "text", "text": "hello"})
        tree.message(assistant("msg_a1", tokens()))
        assert not [r for r in poller.poll().records if isinstance(r, R.Turn)]
        tree.message(assistant("msg_a1", tokens(5, 40, 1000, 200)))
        poller.poll()
        tree.message(
            assistant(
                "msg_a1", tokens(5, 90, 1000, 200), completed=T0 + 9000, cost=0.01, finish="stop"
            )
        )
        poller.poll()
        (turn,) = turns_of(fold(poller.records))
        assert (turn.output_tokens, turn.complete, turn.logged_cost_usd) == (90, True, 0.01)

    def test_completed_snapshot_wins_over_same_output(self, tree: Tree, fold: Fold) -> None:
        """Same output while streaming and once completed: the completed one is kept."""
        poller = Poller(tree.root)
        tree.message(assistant("msg_a1", tokens(5, 90, 1000)))
        poller.poll()
        tree.message(assistant("msg_a1", tokens(5, 90, 1000), completed=T0 + 9000, cost=0.02))
        poller.poll()
        (turn,) = turns_of(fold(poller.records))
        assert (turn.complete, turn.logged_cost_usd) == (True, 0.02)

    def test_steps_appearing_later_are_not_counted_twice(
        self, tree: Tree, fold: Fold, turn_sums: Sums
    ) -> None:
        """Seen first at message level, then as two steps: two turns, no third."""
        poller = Poller(tree.root)
        tree.message(assistant("msg_a1", tokens(5, 80, 12000, 1800)))
        poller.poll()
        tree.part(
            "msg_a1",
            "prt_1",
            {"type": "step-finish", "tokens": tokens(5, 80, 12000, 1800), "cost": 0.011},
        )
        tree.part(
            "msg_a1",
            "prt_2",
            {"type": "step-finish", "tokens": tokens(6, 220, 14000, 900), "cost": 0.013},
        )
        tree.message(
            assistant("msg_a1", tokens(6, 220, 14000, 900), completed=T0 + 9000, cost=0.024)
        )
        poller.poll()
        folded = fold(poller.records)
        sums = turn_sums(folded)
        assert (sums["turns"], sums["input"], sums["output"]) == (2, 11, 300)
        assert len({r.id for r in poller.records if isinstance(r, R.Turn)}) == 2
        assert sorted(t.request_id or "" for t in turns_of(folded)) == ["prt_1", "prt_2"]

    def test_tool_calls_ride_on_their_step(self, tree: Tree) -> None:
        """A tool part belongs to the step whose step-finish follows it."""
        poller = Poller(tree.root)
        tree.message(assistant("msg_a1", tokens(6, 220), completed=T0 + 9000))
        tree.part(
            "msg_a1",
            "prt_1",
            {
                "type": "tool",
                "callID": "call_9",
                "tool": "bash",
                "state": {
                    "status": "error",
                    "input": {"command": "false"},
                    "error": "exit 1",
                    "metadata": {"exit": 1},
                    "time": {"start": T0 + 100, "end": T0 + 200},
                },
            },
        )
        tree.part("msg_a1", "prt_2", {"type": "step-finish", "tokens": tokens(5, 80)})
        tree.part("msg_a1", "prt_3", {"type": "step-finish", "tokens": tokens(6, 220)})
        res = poller.poll()
        turns = sorted(
            (r for r in res.records if isinstance(r, R.Turn)), key=lambda t: t.request_id or ""
        )
        assert [[c.id for c in t.tool_calls] for t in turns] == [["call_9"], []]
        assert turns[0].tool_calls[0].args_sha256 == R.short_hash('{"command":"false"}')
        (ev,) = [r for r in res.records if isinstance(r, R.ToolResultEvent)]
        assert (ev.is_error, ev.exit_code, ev.tool_name, ev.ts) == (True, 1, "bash", T0 + 200)


class TestRetries:
    """Files caught mid-write are retried; broken old files are reported once."""

    def test_truncated_file_is_retried(self, tree: Tree, fold: Fold) -> None:
        """A half-written message is reported, not marked done, and read once complete."""
        poller = Poller(tree.root)
        path = tree.message(assistant("msg_a1", tokens(5, 90), completed=T0 + 9000))
        full = path.read_text()
        path.write_text(full[: len(full) // 2])
        first = poller.poll()
        assert first.records == []
        assert len(first.errors) == 1 and str(path) in first.errors[0]
        again = poller.poll()
        assert again.records == [] and again.errors == []  # still waiting, reported once
        path.write_text(full)
        done = poller.poll()
        assert done.errors == []
        assert [t.output_tokens for t in turns_of(fold(poller.records))] == [90]

    def test_truncated_step_holds_back_its_message(
        self, tree: Tree, fold: Fold, turn_sums: Sums
    ) -> None:
        """While a step part is mid-write the message is not counted at message level."""
        poller = Poller(tree.root)
        tree.message(assistant("msg_a1", tokens(6, 220), completed=T0 + 9000))
        tree.part("msg_a1", "prt_1", {"type": "step-finish", "tokens": tokens(5, 80)})
        step2 = tree.part("msg_a1", "prt_2", {"type": "step-finish", "tokens": tokens(6, 220)})
        full = step2.read_text()
        step2.write_text(full[:30])
        assert not [r for r in poller.poll().records if isinstance(r, R.Turn)]
        step2.write_text(full)
        poller.poll()
        sums = turn_sums(fold(poller.records))
        assert (sums["turns"], sums["output"]) == (2, 300)

    @pytest.mark.parametrize(
        "damage",
        [b'{"id": "prt_1", "type": "te', b"\x00" * 64, b'{"type": "text", "text": "\xff\xfe"}'],
        ids=["truncated", "nul", "not-utf8"],
    )
    def test_old_broken_part_is_skipped(
        self, tree: Tree, age_file: Callable[[Path], None], fold: Fold, damage: bytes
    ) -> None:
        """A broken file nobody is writing any more does not hold the message forever."""
        poller = Poller(tree.root)
        tree.message(assistant("msg_a1", tokens(6, 220), completed=T0 + 9000))
        bad = tree.part("msg_a1", "prt_1", {"type": "text", "text": "hi"})
        bad.write_bytes(damage)
        age_file(bad)
        res = poller.poll()
        assert len(res.errors) == 1 and str(bad) in res.errors[0]
        assert res.skipped == {"invalid_json": 1}
        assert [t.output_tokens for t in turns_of(fold(poller.records))] == [220]
        assert poller.poll().errors == []

    def test_unknown_part_type_is_reported(self, tree: Tree) -> None:
        """An unknown part type is named once and skipped; the rest of the message counts."""
        poller = Poller(tree.root)
        tree.message(assistant("msg_a1", tokens(6, 220), completed=T0 + 9000))
        odd = tree.part("msg_a1", "prt_1", {"type": "hologram"})
        res = poller.poll()
        assert len(res.errors) == 1 and str(odd) in res.errors[0] and "hologram" in res.errors[0]
        assert res.skipped == {"unknown_part_type": 1}
        assert sum(isinstance(r, R.Turn) for r in res.records) == 1


class TestDatabase:
    """opencode.db: read-only, incremental by watermark, and it wins over JSON."""

    def test_rows_in_the_wal_are_read(self, tmp_path: Path, fold: Fold) -> None:
        """Committed rows not yet checkpointed into the main file are seen."""
        root = tmp_path / "oc"
        root.mkdir()
        conn = make_db(root / "opencode.db", wal=True)
        db_message(conn, assistant("msg_a1", tokens(4, 300, 20000, 1500), completed=T0 + 5), T0 + 5)
        assert (root / "opencode.db-wal").stat().st_size > 0
        res = Poller(root).poll()
        assert res.errors == []
        assert [(t.output_tokens, t.project) for t in turns_of(fold(res.records))] == [(300, "/w")]
        conn.close()

    def test_watermark_polls_only_changes(self, tmp_path: Path, fold: Fold) -> None:
        """New and updated rows are read; unchanged rows are not emitted again."""
        root = tmp_path / "oc"
        root.mkdir()
        conn = make_db(root / "opencode.db")
        db_message(conn, user("msg_u1"), T0)
        db_part(conn, "msg_u1", "prt_u1", {"type": "text", "text": "hi"}, T0)
        db_message(conn, assistant("msg_a1", tokens(4, 30, 100)), T0 + 1)
        poller = Poller(root)
        first = poller.poll()
        assert {R.kind_of(r) for r in first.records} == {"user-turn", "turn", "content"}
        assert poller.poll().records == []
        db_message(conn, assistant("msg_a1", tokens(4, 300, 100), completed=T0 + 9), T0 + 9)
        db_part(
            conn,
            "msg_a1",
            "prt_a1",
            {"type": "text", "text": "done", "time": {"start": T0 + 2, "end": T0 + 8}},
            T0 + 9,
        )
        third = poller.poll()
        assert {R.kind_of(r) for r in third.records} == {"turn", "content"}
        assert [t.output_tokens for t in turns_of(fold(poller.records))] == [300]
        assert poller.poll().records == []
        conn.close()

    def test_equal_and_late_timestamps_are_not_missed(self, tmp_path: Path) -> None:
        """A row with the watermark's millisecond, or committed late just below it, is read."""
        root = tmp_path / "oc"
        root.mkdir()
        conn = make_db(root / "opencode.db")
        db_message(conn, assistant("msg_a1", tokens(1, 10), completed=T0 + 5), T0 + 5000)
        poller = Poller(root)
        assert len(poller.poll().records) == 1
        db_message(conn, assistant("msg_a2", tokens(1, 20), completed=T0 + 5), T0 + 5000)
        db_message(conn, assistant("msg_a3", tokens(1, 30), completed=T0 + 5), T0 + 4000)
        res = poller.poll()
        assert sorted(t.output_tokens for t in res.records if isinstance(t, R.Turn)) == [20, 30]
        conn.close()

    def test_poll_does_not_change_the_given_state(self, tmp_path: Path) -> None:
        """The caller's state object is left as it was (a failed delivery reuses it)."""
        root = tmp_path / "oc"
        root.mkdir()
        conn = make_db(root / "opencode.db")
        db_message(conn, assistant("msg_a1", tokens(1, 10), completed=T0 + 5), T0 + 5)
        poller = Poller(root)
        poller.poll()
        db_message(conn, assistant("msg_a2", tokens(1, 20), completed=T0 + 9), T0 + 9)
        before = json.dumps(poller.state, sort_keys=True)
        OpenCodeSource().poll([root], poller.state)
        assert json.dumps(poller.state, sort_keys=True) == before
        conn.close()

    def test_user_message_uses_session_directory(self, tmp_path: Path) -> None:
        """A user message has no path; its project is the session's directory."""
        root = tmp_path / "oc"
        root.mkdir()
        conn = make_db(root / "opencode.db")
        db_message(conn, user("msg_u1"), T0)
        db_part(conn, "msg_u1", "prt_u1", {"type": "text", "text": "hi"}, T0)
        (turn,) = [r for r in Poller(root).poll().records if isinstance(r, R.UserTurn)]
        assert turn.project == "/repo"
        conn.close()

    def test_database_row_beats_json_copy(self, tmp_path: Path, tree: Tree, fold: Fold) -> None:
        """The same message id in both: the row's numbers, and nothing from the file."""
        tree.root.mkdir(parents=True)
        conn = make_db(tree.root / "opencode.db")
        db_message(conn, assistant("msg_a1", tokens(4, 30), completed=T0 + 5), T0 + 5)
        tree.message(assistant("msg_a1", tokens(999, 999), completed=T0 + 5))
        res = Poller(tree.root).poll()
        assert [t.output_tokens for t in turns_of(fold(res.records))] == [30]
        conn.close()

    def test_corrupt_database_is_one_error(
        self, fixtures_dir: Path, tmp_path: Path, fold: Fold, turn_sums: Sums
    ) -> None:
        """A file that is not a database is named once; the JSON tree is still read."""
        root = shutil.copytree(
            fixtures_dir / "synthetic" / "opencode" / "o01-json-storage", tmp_path / "oc"
        )
        (root / "opencode.db").write_bytes(b"this is not sqlite" * 100)
        res = Poller(root).poll()
        assert len(res.errors) == 1 and "opencode.db" in res.errors[0]
        assert turn_sums(fold(res.records))["output"] == 600

    def test_locked_database_is_retried(self, tmp_path: Path, fold: Fold) -> None:
        """While a writer holds an exclusive lock the poll reports it; later it reads."""
        root = tmp_path / "oc"
        root.mkdir()
        conn = make_db(root / "opencode.db")
        db_message(conn, assistant("msg_a1", tokens(4, 30), completed=T0 + 5), T0 + 5)
        poller = Poller(root, busy_timeout_s=0.05)
        conn.execute("BEGIN EXCLUSIVE")
        locked = poller.poll()
        assert len(locked.errors) == 1 and "opencode.db" in locked.errors[0]
        assert locked.records == []
        conn.execute("COMMIT")
        assert [t.output_tokens for t in turns_of(fold(poller.poll().records))] == [30]
        conn.close()

    def test_channel_database(self, tmp_path: Path, fold: Fold) -> None:
        """opencode-<channel>.db is read as well."""
        root = tmp_path / "oc"
        root.mkdir()
        conn = make_db(root / "opencode-dev.db")
        db_message(conn, assistant("msg_a1", tokens(4, 30), completed=T0 + 5), T0 + 5)
        assert len(turns_of(fold(Poller(root).poll().records))) == 1
        conn.close()

    def test_child_session_links_to_parent(self, tmp_path: Path) -> None:
        """session.parent_id gives a sub-agent relationship."""
        root = tmp_path / "oc"
        root.mkdir()
        conn = make_db(root / "opencode.db")
        conn.execute(
            "INSERT INTO session (id, project_id, parent_id, directory, time_created,"
            " time_updated) VALUES ('ses_child', 'proj1', ?, '/repo', ?, ?)",
            (SES, T0 + 1, T0 + 1),
        )
        rels = [r for r in Poller(root).poll().records if isinstance(r, R.SessionRelationship)]
        assert [(r.session_id, r.parent_session_id, r.relation) for r in rels] == [
            ("ses_child", SES, "subagent")
        ]
        conn.close()


class TestMessages:
    """Timestamps, user turns, compactions and sessions from the JSON tree."""

    def test_missing_created_uses_completed(self, tree: Tree) -> None:
        """Without time.created the completion time dates the turn, never epoch 0."""
        tree.message(assistant("msg_a1", tokens(1, 2), created=None, completed=T0 + 7))
        (turn,) = [r for r in Poller(tree.root).poll().records if isinstance(r, R.Turn)]
        assert turn.ts == T0 + 7

    def test_missing_times_never_epoch_zero(self, tree: Tree) -> None:
        """With no time at all the message is dated from its parts or its file."""
        path = tree.message(assistant("msg_a1", tokens(1, 2), created=None))
        (turn,) = [r for r in Poller(tree.root).poll().records if isinstance(r, R.Turn)]
        assert turn.ts == path.stat().st_mtime_ns // 1_000_000

    def test_harness_parts_are_not_user_turns(self, tree: Tree) -> None:
        """Synthetic text is skipped; a compaction request is a compaction, not a turn."""
        tree.message(user("msg_u1"))
        tree.part("msg_u1", "prt_1", {"type": "text", "text": "typed"})
        tree.part("msg_u1", "prt_2", {"type": "text", "text": "injected", "synthetic": True})
        tree.message(user("msg_u2", T0 + 10))
        tree.part("msg_u2", "prt_3", {"type": "compaction", "auto": True})
        tree.message(
            assistant(
                "msg_a3",
                tokens(10, 500, 9000),
                created=T0 + 11,
                completed=T0 + 20,
                summary=True,
                parentID="msg_u2",
            )
        )
        tree.message(
            assistant(
                "msg_a4",
                tokens(10, 400),
                created=T0 + 30,
                completed=T0 + 40,
                summary=True,
                parentID="msg_u1",
            )
        )
        res = Poller(tree.root).poll()
        users = [r for r in res.records if isinstance(r, R.UserTurn)]
        assert [(u.message_id, u.text_chars) for u in users] == [("msg_u1", len("typed"))]
        comps = sorted((r for r in res.records if isinstance(r, R.Compaction)), key=lambda c: c.ts)
        assert [(c.message_id, c.trigger) for c in comps] == [("msg_u2", "auto"), ("msg_a4", None)]
        texts = [r.text for r in res.records if isinstance(r, R.ContentRecord)]
        assert texts == ["typed"]
        assert sum(isinstance(r, R.Turn) for r in res.records) == 2  # summaries are billed

    def test_streaming_text_is_stored_once_final(self, tree: Tree, fold: Fold) -> None:
        """A text part without an end time is not stored until it ends."""
        poller = Poller(tree.root)
        tree.message(assistant("msg_a1", tokens()))
        part = {"type": "text", "text": "Hel", "time": {"start": T0 + 1}}
        tree.part("msg_a1", "prt_1", part)
        assert not [r for r in poller.poll().records if isinstance(r, R.ContentRecord)]
        tree.part(
            "msg_a1", "prt_1", {**part, "text": "Hello", "time": {"start": T0 + 1, "end": T0 + 2}}
        )
        poller.poll()
        content = [r for r in fold(poller.records).values() if isinstance(r, R.ContentRecord)]
        assert [c.text for c in content] == ["Hello"]

    def test_json_child_session(self, tree: Tree) -> None:
        """A JSON session with parentID links to its parent; its project is its directory."""
        tree.session(SES, directory="/repo")
        tree.session("ses_child", parentID=SES, directory="/repo")
        tree.message(user("msg_u1"))
        tree.part("msg_u1", "prt_1", {"type": "text", "text": "typed"})
        res = Poller(tree.root).poll()
        rels = [r for r in res.records if isinstance(r, R.SessionRelationship)]
        assert [(r.session_id, r.parent_session_id) for r in rels] == [("ses_child", SES)]
        (turn,) = [r for r in res.records if isinstance(r, R.UserTurn)]
        assert turn.project == "/repo"

    def test_vanished_files_leave_the_state(self, tree: Tree) -> None:
        """A deleted file is dropped from the state; nothing is retracted."""
        poller = Poller(tree.root)
        path = tree.message(assistant("msg_a1", tokens(1, 2), completed=T0 + 1))
        poller.poll()
        path.unlink()
        res = poller.poll()
        assert res.records == []
        assert not any(
            "msg_a1" in key
            for root in poller.state["roots"].values()
            for key in root.get("files", {})
        )
