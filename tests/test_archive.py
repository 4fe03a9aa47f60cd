"""The derived archive (archive.sqlite): built from the ledger, applied by tail, disposable.

Helpers at the top build sealed records the way the pipeline hands them to a store;
other archive, report and retention tests import them.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from relayburnd.archive_schema import TABLES
from relayburnd.config import Settings, load_settings
from relayburnd.records import (
    Batch,
    Compaction,
    ContentRecord,
    Record,
    SessionRelationship,
    ToolCall,
    ToolResultEvent,
    Turn,
    UserTurn,
    decode,
    fold,
    make_id,
    seal,
)
from relayburnd.storage.file import FileAdapter
from tests.conftest import run_cli

T0 = 1_772_442_000_000  # 2026-03-02T09:00:00Z, a Monday


def turn(key: str, session: str, ts: int, *, model: str | None = "claude-sonnet-4-5",
         source: str = "claude", project: str = "/p/one", inp: int = 0, out: int = 0,
         cw: int = 0, cr: int = 0, cost: float | None = 0.0, tools: Iterable[tuple[str, str]] = (),
         sidechain: bool = False, message: str | None = None, snapshot: int = 1,
         **extra: Any) -> Turn:
    """A sealed turn; ``key`` names the request (same key = same id)."""
    rec = Turn(
        id=make_id("turn", key), source=source, session_id=session, project=project, ts=ts,
        model=model, input_tokens=inp, output_tokens=out, cache_write_tokens=cw,
        cache_read_tokens=cr, cost_usd=cost, is_sidechain=sidechain,
        message_id=message if message is not None else f"msg-{key}",
        tool_calls=[ToolCall(id=cid, name=name) for cid, name in tools],
        snapshot_lines=snapshot, **extra,
    )
    seal(rec)
    return rec


def user_turn(key: str, session: str, ts: int, *, source: str = "claude",
              project: str = "/p/one") -> UserTurn:
    rec = UserTurn(id=make_id("user-turn", key), source=source, session_id=session,
                   project=project, ts=ts, message_id=f"u-{key}", text_chars=10,
                   block_types=["text"])
    seal(rec)
    return rec


def tool_result(call: str, session: str, ts: int, *, error: bool = False, size: int = 0,
                name: str | None = None, source: str = "claude") -> ToolResultEvent:
    rec = ToolResultEvent(id=make_id("tool-result", call), source=source, session_id=session,
                          ts=ts, tool_use_id=call, tool_name=name, is_error=error,
                          output_bytes=size)
    seal(rec)
    return rec


def relationship(child: str, parent: str, relation: str, *, source: str = "codex",
                 ts: int = 0) -> SessionRelationship:
    rec = SessionRelationship(id=make_id("relationship", child, parent, relation),
                              source=source, session_id=child, parent_session_id=parent,
                              relation=relation, ts=ts)
    seal(rec)
    return rec


def compaction(key: str, session: str, ts: int, pre: int | None = None) -> Compaction:
    rec = Compaction(id=make_id("compaction", key), source="claude", session_id=session,
                     project="/p/one", ts=ts, trigger="auto", pre_tokens=pre)
    seal(rec)
    return rec


def content(key: str, session: str, ts: int, text: str | None, *, role: str = "user",
            block: str = "text", seq: int = 0, message: str = "m") -> ContentRecord:
    body = text or ""
    rec = ContentRecord(id=make_id("content", session, key), source="claude",
                        session_id=session, ts=ts, message_id=message, seq=seq, role=role,
                        block_type=block, text=text, sha256=f"{len(body):064x}",
                        chars=len(body))
    seal(rec)
    return rec


def settings(**changes: Any) -> Settings:
    return load_settings().replace(**changes) if changes else load_settings()


def write(adapter: Any, *records: Record) -> None:
    batch = Batch()
    for rec in records:
        batch.add(rec)
    adapter.write(batch)


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every archive table but archive_state, in key order."""
    conn = sqlite3.connect(path)
    try:
        out = {}
        for table in TABLES:
            out[table] = sorted(conn.execute(f"SELECT * FROM {table}").fetchall(),
                                key=repr)
        return out
    finally:
        conn.close()


def ledger_fold(home: Path) -> dict[str, Record]:
    path = home / "ledger.jsonl"
    return fold(decode(line) for line in path.read_bytes().splitlines() if line)  # type: ignore[return-value]


def sample(n_sessions: int = 3) -> list[Record]:
    """A mix of every kind: streamed snapshots, a replay, sub-agents, results, compactions."""
    recs: list[Record] = []
    for s in range(n_sessions):
        sid = f"sess-{s}"
        base = T0 + s * 7_200_000
        recs.append(user_turn(f"u{s}", sid, base))
        recs.append(turn(f"r{s}a", sid, base + 1000, inp=10, out=5, cost=0.001, snapshot=1))
        recs.append(turn(f"r{s}a", sid, base + 1000, inp=10, out=50, cost=0.002, snapshot=3,
                         tools=[(f"c{s}1", "Bash")]))
        recs.append(tool_result(f"c{s}1", sid, base + 2000, size=40, error=s == 1))
        recs.append(turn(f"r{s}b", sid, base + 600_000, model="claude-opus-4-1", inp=1, out=2,
                         cw=3, cr=4, cost=None))
        recs.append(turn(f"r{s}replay", sid, base + 700_000, model="claude-opus-4-1", inp=1,
                         out=2, cw=3, cr=4, cost=0.5, sidechain=True, message=f"msg-r{s}b"))
        recs.append(turn(f"r{s}side", sid, base + 800_000, model="claude-haiku-4-5", inp=7,
                         out=7, cost=0.01, sidechain=True, tools=[(f"c{s}2", "Read")]))
        recs.append(compaction(f"k{s}", sid, base + 900_000, pre=1000 * s or None))
    recs.append(relationship("sess-2", "sess-0", "fork"))
    recs.append(relationship("agent-x", "sess-1", "subagent", source="claude"))
    return recs


@pytest.fixture
def store() -> Iterable[FileAdapter]:
    adapter = FileAdapter(settings())
    yield adapter
    adapter.close()


def home() -> Path:
    return Path(os.environ["RELAYBURN_HOME"])


class TestFoldEquality:
    """The archive holds exactly the folded ledger."""

    def test_every_kind_equals_the_ledger_fold(self, store: FileAdapter) -> None:
        """Records read back from the archive equal a fold of the ledger, kind by kind."""
        write(store, *sample()[:9])
        write(store, *sample())  # re-delivery and new records in a second batch
        folded = ledger_fold(home())
        archive = store.fresh_archive()
        assert archive is not None
        for kind in ("turn", "user-turn", "compaction", "tool-result", "relationship"):
            got = sorted(archive.records(kind), key=lambda r: r.id)
            want = sorted((r for r in folded.values() if _kind(r) == kind), key=lambda r: r.id)
            assert got == want, kind
            assert got, kind

    def test_larger_snapshot_replaces_the_row(self, store: FileAdapter) -> None:
        """A later, larger snapshot of a request replaces the archived row and its tool calls."""
        write(store, turn("x", "s", T0, out=1, tools=[("a", "Read")]))
        store.archive().build()
        write(store, turn("x", "s", T0, out=99, snapshot=4, tools=[("a", "Read"), ("b", "Edit")]))
        store.archive().build()
        (got,) = list(store.turns())
        assert got.output_tokens == 99 and [c.name for c in got.tool_calls] == ["Read", "Edit"]
        conn = sqlite3.connect(store.archive().path)
        assert conn.execute("SELECT count(*) FROM tool_calls").fetchone()[0] == 2
        assert conn.execute("SELECT output_tokens FROM sessions").fetchone()[0] == 99

    def test_smaller_snapshot_never_wins(self, store: FileAdapter) -> None:
        """An older, smaller snapshot arriving later leaves the archived row alone."""
        big = turn("x", "s", T0, out=50, snapshot=3)
        small = turn("x", "s", T0, out=5, snapshot=1)
        write(store, big)
        store.archive().build()
        # written straight to the ledger, as another host's copy would be
        with (home() / "ledger.jsonl").open("ab") as fh:
            from relayburnd.records import encode

            fh.write(encode(small) + b"\n")
        store.archive().build()
        assert [t.output_tokens for t in store.turns()] == [50]


def _kind(rec: Record) -> str:
    from relayburnd.records import KIND_OF

    return KIND_OF[type(rec)]


class TestRebuild:
    """Rebuilding from the same ledger gives the same archive."""

    def test_deleted_archive_is_recreated_identically(self, store: FileAdapter) -> None:
        """Delete archive.sqlite, run `archive rebuild`: every row and key comes back the same."""
        write(store, *sample(4))
        store.archive().build()
        path = store.archive().path
        before = dump(path)
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        out = run_cli("archive", "rebuild").stdout
        assert "rebuilt" in out and "archive at offset" in out
        assert dump(path) == before

    def test_rebuilding_twice_is_identical(self, store: FileAdapter) -> None:
        """Two rebuilds from one ledger hold identical rows and keys."""
        write(store, *sample(3))
        store.archive().rebuild()
        first = dump(store.archive().path)
        store.archive().rebuild()
        assert dump(store.archive().path) == first

    def test_incremental_build_equals_a_rebuild(self, store: FileAdapter) -> None:
        """Applying the ledger batch by batch ends where one full rebuild ends."""
        recs = sample(4)
        for i in range(0, len(recs), 3):
            write(store, *recs[i : i + 3])
            store.archive().build()
        incremental = dump(store.archive().path)
        store.archive().rebuild()
        assert dump(store.archive().path) == incremental

    def test_bulk_load_equals_small_steps(self, store: FileAdapter,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
        """A large tail (bulk mode, derived once at the end) gives the same rows as steps."""
        from relayburnd import archive as archive_mod

        write(store, *sample(5))
        monkeypatch.setattr(archive_mod, "BULK_THRESHOLD", 0)
        monkeypatch.setattr(archive_mod, "BULK_STEP_BYTES", 700)
        report = store.archive().rebuild()
        assert report.steps > 3
        bulk = dump(store.archive().path)
        monkeypatch.setattr(archive_mod, "BULK_THRESHOLD", 1 << 40)
        monkeypatch.setattr(archive_mod, "STEP_BYTES", 500)
        report = store.archive().rebuild()
        assert report.steps > 3
        assert dump(store.archive().path) == bulk

    def test_unreadable_archive_is_replaced_by_rebuild(self, store: FileAdapter) -> None:
        """A file that is not a database is removed by `archive rebuild` and rebuilt."""
        write(store, *sample(1))
        store.close()
        (home() / "archive.sqlite").write_bytes(b"not a database at all" * 100)
        out = run_cli("archive", "rebuild").stdout
        assert "archive at offset" in out
        assert run_cli("summary", "--json", "--tz", "UTC").returncode == 0


class TestTail:
    """`archive build` applies only what was appended since the last build."""

    def test_only_the_tail_is_applied(self, store: FileAdapter) -> None:
        """The second build starts at the first one's offset and writes only new/changed rows."""
        write(store, *sample(3))
        first = store.archive().build()
        size = (home() / "ledger.jsonl").stat().st_size
        assert first.end_offset == size
        conn = sqlite3.connect(store.archive().path)
        conn.execute("CREATE TABLE written (tbl TEXT, id TEXT)")
        for table in ("turns", "user_turns", "tool_results", "compactions", "relationships"):
            for op in ("INSERT", "UPDATE", "DELETE"):
                ref = "old" if op == "DELETE" else "new"
                conn.execute(f"CREATE TRIGGER w_{table}_{op} AFTER {op} ON {table} BEGIN "
                             f"INSERT INTO written VALUES ('{table}', {ref}.id); END")
        conn.commit()
        # a larger snapshot of a main-thread response whose replay is archived too
        grown = turn("r0b", "sess-0", T0 + 600_000, model="claude-opus-4-1", inp=1, out=20,
                     cw=3, cr=4, cost=None, snapshot=5)
        fresh = turn("new", "sess-9", T0 + 50_000_000, inp=1, out=1)
        write(store, grown, fresh, user_turn("u0", "sess-0", T0))  # the user turn is a no-op
        second = store.archive().build()
        assert second.start_offset == size
        assert second.end_offset == (home() / "ledger.jsonl").stat().st_size
        assert second.stats.lines == 2  # the unchanged user turn never reached the ledger
        written = sorted(conn.execute("SELECT tbl, id FROM written").fetchall())
        assert written == sorted([("turns", grown.id), ("turns", fresh.id)])
        state = dict(conn.execute("SELECT key, value FROM archive_state").fetchall())
        assert int(state["ledger_offset"]) == second.end_offset
        conn.close()

    def test_up_to_date_build_applies_nothing(self, store: FileAdapter) -> None:
        """A build with nothing new reads no ledger bytes."""
        write(store, *sample(1))
        store.archive().build()
        again = store.archive().build()
        assert again.end_offset == again.start_offset and again.steps == 0
        assert again.rebuilt is None

    def test_replaced_ledger_triggers_a_rebuild(self, store: FileAdapter) -> None:
        """A ledger with other first bytes (restored from elsewhere) is archived from scratch."""
        write(store, *sample(2))
        store.archive().build()
        store.close()
        ledger = home() / "ledger.jsonl"
        lines = ledger.read_bytes().splitlines(keepends=True)
        keep = lines[len(lines) // 2 :]
        tmp = ledger.with_name("other.jsonl")
        tmp.write_bytes(b"".join(keep) * 3)  # longer than before, different head
        os.replace(tmp, ledger)
        (home() / "ledger.index.sqlite").unlink()
        store2 = FileAdapter(settings())
        report = store2.archive().build()
        assert report.rebuilt == "the ledger was replaced"
        ids = {t.id for t in store2.turns()}
        assert ids == {r.id for r in ledger_fold(home()).values() if isinstance(r, Turn)}
        store2.close()

    def test_truncated_ledger_triggers_a_rebuild(self, store: FileAdapter) -> None:
        """A ledger shorter than the archived offset is archived again from its start."""
        write(store, *sample(2))
        store.archive().build()
        ledger = home() / "ledger.jsonl"
        data = ledger.read_bytes()
        cut = data.index(b"\n", len(data) // 3) + 1
        os.truncate(ledger, cut)
        conn = sqlite3.connect(home() / "ledger.index.sqlite")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'ledger_size'", (str(cut),))
        conn.commit()
        conn.close()
        report = store.archive().build()
        assert report.rebuilt == "the ledger is shorter than the archived part"
        assert report.end_offset == cut

    def test_uncommitted_append_is_never_archived(self, store: FileAdapter) -> None:
        """Bytes a crashed writer appended (still pending) are rolled back, not archived."""
        write(store, *sample(1))
        ledger = home() / "ledger.jsonl"
        size = ledger.stat().st_size
        idx = sqlite3.connect(home() / "ledger.index.sqlite")
        idx.execute("INSERT OR REPLACE INTO meta VALUES ('pending', ?)",
                    (json.dumps({"ledger.jsonl": size}),))
        idx.commit()
        idx.close()
        from relayburnd.records import encode

        with ledger.open("ab") as fh:
            fh.write(encode(turn("ghost", "sess-0", T0)) + b"\n")
        report = store.archive().build()
        assert report.end_offset == size == ledger.stat().st_size
        assert make_id("turn", "ghost") not in {t.id for t in store.turns()}


class TestSessions:
    """The sessions table keeps missing, zero and cost-only data apart."""

    def _rows(self, store: FileAdapter) -> dict[str, dict[str, Any]]:
        store.archive().build()
        conn = sqlite3.connect(store.archive().path)
        conn.row_factory = sqlite3.Row
        rows = {r["session_id"]: dict(r) for r in conn.execute("SELECT * FROM sessions")}
        conn.close()
        return rows

    def test_null_zero_and_unpriced(self, store: FileAdapter) -> None:
        """No turns: NULL tokens and cost; zero-token turns: 0; unpriced turns are counted."""
        write(
            store,
            user_turn("only-user", "talk", T0, project="/p/x"),
            turn("zero", "zeros", T0, cost=0.0),
            turn("unpriced", "mixed", T0, inp=5, out=5, cost=None),
            turn("priced", "mixed", T0 + 1, inp=1, out=1, cost=0.25),
            turn("logged", "legacy", T0, cost=0.1, logged_cost_usd=0.3),
            relationship("child", "mixed", "subagent", source="claude"),
        )
        rows = self._rows(store)
        assert rows["talk"]["turns"] == 0 and rows["talk"]["user_turns"] == 1
        assert rows["talk"]["total_tokens"] is None and rows["talk"]["cost_usd"] is None
        assert rows["talk"]["project"] == "/p/x"
        assert rows["zeros"]["total_tokens"] == 0 and rows["zeros"]["cost_usd"] == 0.0
        assert rows["mixed"]["cost_usd"] == 0.25 and rows["mixed"]["unpriced_turns"] == 1
        assert rows["mixed"]["logged_cost_usd"] is None
        assert rows["legacy"]["logged_cost_usd"] == 0.3
        assert rows["child"]["relation"] == "subagent"
        assert rows["child"]["parent_session_id"] == "mixed"
        assert rows["child"]["first_ts"] is None and rows["child"]["turns"] == 0
        assert rows["mixed"]["relation"] == "root"
        conn = sqlite3.connect(store.archive().path)
        flags = dict(conn.execute("SELECT id, has_usage FROM turns").fetchall())
        assert flags[make_id("turn", "zero")] == 0 and flags[make_id("turn", "logged")] == 0
        assert flags[make_id("turn", "priced")] == 1

    def test_counts_models_replays_and_times(self, store: FileAdapter) -> None:
        """Replays are not counted; models, counts and first/last times cover every kind."""
        write(store, *sample(2))
        row = self._rows(store)["sess-1"]
        base = T0 + 7_200_000
        assert row["turns"] == 3  # r1a, r1b, r1side; the replay of r1b is not billed
        assert row["user_turns"] == 1 and row["compactions"] == 1
        assert row["tool_calls"] == 2 and row["tool_results"] == 1 and row["tool_errors"] == 1
        assert row["models"] == '["claude-haiku-4-5","claude-opus-4-1","claude-sonnet-4-5"]'
        assert row["first_ts"] == base and row["last_ts"] == base + 900_000
        assert row["cost_usd"] == pytest.approx(0.012)
        assert row["unpriced_turns"] == 1
        assert self._rows(store)["sess-2"]["relation"] == "fork"

    def test_main_copy_arriving_later_makes_a_replay(self, store: FileAdapter) -> None:
        """A sidechain turn becomes non-billable once its main-thread copy is archived."""
        write(store, turn("side", "s", T0 + 5, sidechain=True, message="M", inp=100, cost=1.0))
        assert self._rows(store)["s"]["turns"] == 1
        write(store, turn("main", "s", T0, message="M", inp=100, cost=1.0))
        row = self._rows(store)["s"]
        assert row["turns"] == 1 and row["cost_usd"] == 1.0 and row["input_tokens"] == 100

    def test_content_flag_follows_sidecars(self, store: FileAdapter) -> None:
        """has_content is set when a sidecar exists and cleared when it is pruned away."""
        write(store, turn("a", "s1", T0), turn("b", "s2", T0), content("c", "s1", T0, "hi"))
        rows = self._rows(store)
        assert rows["s1"]["has_content"] == 1 and rows["s2"]["has_content"] == 0
        store.prune_content(T0 + 1)
        rows = self._rows(store)
        assert rows["s1"]["has_content"] == 0


class TestCommands:
    """`archive status`, `build` and `vacuum` print what they did."""

    def test_status_before_and_after_a_build(self, store: FileAdapter) -> None:
        """Status reports a missing archive, then the sync point and row counts."""
        write(store, *sample(1))
        store.close()
        assert "not built yet" in run_cli("archive", "status").stdout
        run_cli("archive", "build")
        info = json.loads(run_cli("archive", "status", "--json").stdout)
        size = (home() / "ledger.jsonl").stat().st_size
        assert info["ledger_offset"] == size and info["behind_bytes"] == 0
        assert info["rows"]["turns"] == 4 and info["schema_current"] is True
        text = run_cli("archive", "status").stdout
        assert f"ledger applied: {size:,} of {size:,} bytes (0 behind)" in text

    def test_vacuum(self, store: FileAdapter) -> None:
        """Vacuum reports the bytes before and after."""
        write(store, *sample(2))
        store.archive().build()
        store.close()
        assert run_cli("archive", "vacuum").stdout.startswith("archive compacted: ")

    def test_other_storage_is_refused(self) -> None:
        """With RELAYBURN_STORAGE=sqlite the archive commands say why they do not apply."""
        proc = run_cli("archive", "build", env={"RELAYBURN_STORAGE": "sqlite"}, check=False)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1].startswith("Error: the archive is built")
