"""Fault scenarios of reliability.md section 3 that concern the daemon and the file store.

Each test is named after its scenario. Crashes are real (SIGKILL through the
``RELAYBURN_FAULTS`` points, or from the test), the sink is the real file
store (made unavailable by holding its lock), and the expectation comes from
what the test wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from harness import (
    Daemon,
    Layout,
    Writer,
    assert_exactly_once,
    committed_cursors,
    folded,
    store_locked,
    wait_for,
)


def stored(layout: Layout, writers: list[Writer]) -> bool:
    want = {u for w in writers for u in w.compactions}
    return want <= set(folded(layout.home, "compaction"))


def restart_and_drain(layout: Layout, **env: str) -> dict[str, float]:
    """Start without faults, wait until caught up, return the metrics, stop with exit 0."""
    with Daemon(layout, extra_env=env).start() as d:
        wait_for(d.caught_up, 20, what="catch-up")
        metrics = d.metrics()
        code, _ = d.stop()
        assert code == 0, d.output()
    return metrics


class TestCrashes:
    def test_f01_kill_between_sink_commit_and_checkpoint(self, tmp_path: Path) -> None:
        """F01: a SIGKILL right after the sink acknowledged loses nothing; the batch is
        sent again and absorbed."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        d = Daemon(layout, RELAYBURN_FAULTS="after_sink_commit=kill@3").start()
        assert d.proc is not None
        end = time.monotonic() + 30
        while d.proc.poll() is None and time.monotonic() < end:
            for _ in range(20):
                w.exchange()
            time.sleep(0.4)  # two flush intervals: one batch per round
        assert d.wait(5) == -signal.SIGKILL
        metrics = restart_and_drain(layout)
        assert metrics["records_deduplicated_total"] > 0
        assert_exactly_once(layout.home, [w])

    @pytest.mark.parametrize("point", ["checkpoint_mid_tmp_write=kill@1",
                                       "checkpoint_after_tmp_fsync=kill@1",
                                       "journal_mid_write=kill@1"])
    def test_f02_kill_during_checkpoint_write(self, tmp_path: Path, point: str) -> None:
        """F02: a SIGKILL halfway through writing cursors.json (the first checkpoint) or
        a journal line (the ones after it) leaves the old or the new state, never a
        broken one; the restart resumes and stores everything once."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        for _ in range(20):
            w.exchange()
        d = Daemon(layout, RELAYBURN_FAULTS=point).start(ready=False)
        if point.startswith("journal"):
            wait_for(lambda: d.proc is not None and d.proc.poll() is None
                     and stored(layout, [w]), 10, what="first batch")
        for _ in range(20):
            w.exchange()
        assert d.wait(30) == -signal.SIGKILL
        if point.startswith("journal"):
            assert not (layout.home / "cursors.json.journal").read_bytes().endswith(b"\n")
        if (layout.home / "cursors.json").exists():  # the first write may not have landed
            assert committed_cursors(layout.home)["version"] == 1
        restart_and_drain(layout)
        assert_exactly_once(layout.home, [w])
        assert not list(layout.home.glob("cursors.json.corrupt-*"))

    def test_f12_partial_line_survives_a_kill(self, tmp_path: Path) -> None:
        """F12: a line paused mid-write is never emitted half; after a SIGKILL and the
        rest of the line, it is stored exactly once."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        w.exchange()
        uid, line = w.compaction_line()
        with Daemon(layout).start() as d:
            wait_for(lambda: stored(layout, [w]), 5)
            w.append(line[:40])
            time.sleep(0.8)  # several flush intervals
            assert uid not in folded(layout.home, "compaction")
            wait_for(lambda: d.metric("checkpoint_writes_total") >= 1, 5)
            d.kill9()
        def offset() -> int:
            files = committed_cursors(layout.home)["files"]
            return int(files[str(w.path)]["offset"])

        assert offset() == w.path.stat().st_size - 40
        with Daemon(layout).start() as d:
            time.sleep(0.5)
            w.append(line[40:])
            w.compactions.append(uid)
            wait_for(lambda: stored(layout, [w]), 5)
            assert d.stop()[0] == 0
        assert_exactly_once(layout.home, [w])
        assert not (layout.home / "deadletter.jsonl").exists()


class TestState:
    @pytest.mark.parametrize("content", [b"", b"\0" * 4096, b'{"version":1,"files":[{"dev'],
                             ids=["empty", "nul", "truncated"])
    def test_f03_corrupt_state_at_start(self, tmp_path: Path, content: bytes) -> None:
        """F03: a corrupt cursors.json is quarantined, the daemon runs, nothing is lost."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        for _ in range(10):
            w.exchange()
        layout.home.mkdir()
        (layout.home / "cursors.json").write_bytes(content)
        with Daemon(layout).start() as d:
            wait_for(lambda: stored(layout, [w]), 5)
            assert d.metric("state_quarantined_total") == 1
            time.sleep(1.0)
            assert d.proc is not None and d.proc.poll() is None
            assert d.stop()[0] == 0
        assert len(list(layout.home.glob("cursors.json.corrupt-*"))) == 1
        assert_exactly_once(layout.home, [w])

    def test_f04_enospc_on_state_write(self, tmp_path: Path) -> None:
        """F04: when cursors.json cannot be written the old file stays intact, shipping
        goes on, health says so; a restart re-sends only what the old file did not cover."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        for _ in range(10):
            w.exchange()
        with Daemon(layout, RELAYBURN_FAULTS="state_write=enospc@2+").start() as d:
            wait_for(lambda: d.metric("checkpoint_writes_total") >= 1, 5)
            good = (layout.home / "cursors.json").read_bytes()
            for _ in range(10):
                w.exchange()
            wait_for(lambda: stored(layout, [w]), 5)
            wait_for(lambda: d.metric("checkpoint_write_errors_total") >= 1, 5)
            assert d.get("/healthz")[0] == 503
            assert d.get("/readyz")[0] == 200
            assert (layout.home / "cursors.json").read_bytes() == good
            assert d.stop()[0] == 0
        assert (layout.home / "cursors.json").read_bytes() == good
        metrics = restart_and_drain(layout)
        assert metrics["records_deduplicated_total"] > 0
        assert metrics["records_shipped_total"] == 0
        assert_exactly_once(layout.home, [w])


class TestSinkDown:
    def test_f07_deadline_with_sink_down_exits_75_with_account(self, tmp_path: Path) -> None:
        """F07/F24: SIGTERM with the sink down exits 75 by the drain deadline, naming each
        file and the bytes it did not deliver; a restart with the sink back loses nothing."""
        layout = Layout.make(tmp_path)
        a = Writer(layout.project() / "a.jsonl", prefix="a")
        b = Writer(layout.project() / "b.jsonl", prefix="b")
        with Daemon(layout, RELAYBURN_DRAIN_TIMEOUT="3").start() as d, \
                store_locked(layout.home):
            for _ in range(20):
                a.exchange()
                b.exchange()
            time.sleep(0.5)
            assert d.get("/readyz")[0] == 200
            code, took = d.stop()
            assert code == 75, d.output()
            assert took < 3 + 1.5
        out = d.output()
        assert f"  {a.path}: {a.path.stat().st_size} bytes not delivered" in out
        assert f"  {b.path}: {b.path.stat().st_size} bytes not delivered" in out
        restart_and_drain(layout)
        assert_exactly_once(layout.home, [a, b])

    @pytest.mark.slow
    def test_f07_sink_down_for_a_while_then_back(self, tmp_path: Path) -> None:
        """F07: while the store is locked, reading stops at one batch, RSS stays flat,
        /readyz stays 200 and lag grows; once it is back everything is delivered once."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        w.exchange()
        big = "x" * 8000
        with Daemon(layout, RELAYBURN_BATCH_MAX_RECORDS="200").start() as d:
            wait_for(lambda: stored(layout, [w]), 5)
            rss: list[int] = []
            with store_locked(layout.home):
                end = time.monotonic() + 15
                while time.monotonic() < end:
                    for _ in range(40):  # about 1 MB a second
                        w.user(big)
                        w.compaction()
                    rss.append(d.rss_kib())
                    assert d.get("/readyz")[0] == 200
                    time.sleep(0.25)
                m = d.metrics()
                assert m['lag_bytes{source="claude"}'] > 10_000_000
                assert m["sink_up"] == 0
                assert d.get("/healthz")[0] == 503
            settled = rss[len(rss) // 4:]
            print(f"\nRSS during the outage: {min(settled) / 1024:.1f}-{max(settled) / 1024:.1f} "
                  f"MiB while {w.path.stat().st_size / 1e6:.0f} MB were written")
            assert max(settled) - min(settled) < 12 * 1024, "memory grew while the sink was down"
            assert max(rss) < 80 * 1024
            wait_for(d.caught_up, 60, what="catch-up")
            assert d.metric("sink_up") == 1
            assert d.stop()[0] == 0
        assert_exactly_once(layout.home, [w])


class TestBadInput:
    def test_f15_invalid_json_and_utf8_are_dead_lettered(self, tmp_path: Path) -> None:
        """F15: broken lines go to deadletter.jsonl with their offset; valid lines around
        them are delivered and the daemon keeps running."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        with Daemon(layout).start() as d:
            w.exchange()
            bad_json_at = w.path.stat().st_size
            w.append(b'{"broken": \n')
            w.exchange()
            bad_utf8_at = w.path.stat().st_size
            w.append(b'\xff\xfe{}\n')
            w.exchange()
            wait_for(lambda: stored(layout, [w]), 5)
            assert d.get("/readyz")[0] == 200
            m = d.metrics()
            assert m['lines_skipped_total{reason="invalid_json"}'] == 1
            assert m['lines_skipped_total{reason="invalid_utf8"}'] == 1
            assert m["records_dead_lettered_total"] == 2
            assert d.stop()[0] == 0
        entries = [json.loads(x) for x in (layout.home / "deadletter.jsonl").read_text()
                   .splitlines()]
        assert sorted((e["offset"], e["reason"]) for e in entries) == [
            (bad_json_at, "invalid_json"), (bad_utf8_at, "invalid_utf8")]
        assert_exactly_once(layout.home, [w])

    def test_twenty_megabyte_line(self, tmp_path: Path) -> None:
        """A 20 MB line (a large tool output) is stored whole, and lines after it too."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        with Daemon(layout).start() as d:
            w.exchange()
            big = w.user("y" * 20_000_000)
            w.exchange()
            wait_for(lambda: stored(layout, [w]), 15)
            assert d.get("/readyz")[0] == 200
            assert d.stop()[0] == 0
        content = (layout.home / "content" / "sess-1.jsonl").read_bytes()
        texts = [json.loads(x) for x in content.splitlines()]
        assert any(r["message_id"] == big and r["chars"] == 20_000_000 for r in texts)
        assert_exactly_once(layout.home, [w])

    def test_f13_unterminated_tail_of_a_deleted_file(self, tmp_path: Path) -> None:
        """F13(a): a deleted file's unterminated tail is shipped if it parses, else
        dead-lettered; never lost silently."""
        layout = Layout.make(tmp_path)
        good = Writer(layout.project() / "good.jsonl", prefix="g")
        bad = Writer(layout.project() / "bad.jsonl", prefix="b")
        with Daemon(layout).start() as d:
            good.exchange()
            bad.exchange()
            wait_for(lambda: stored(layout, [good, bad]), 5)
            uid, line = good.compaction_line()
            good.append(line.rstrip(b"\n"))
            bad.append(b'{"type":"system","subtype":"compact_bou')
            time.sleep(0.5)
            good.path.unlink()
            bad.path.unlink()
            good.compactions.append(uid)
            wait_for(lambda: stored(layout, [good]), 5)
            wait_for(lambda: (layout.home / "deadletter.jsonl").exists(), 5)
            assert d.metric("deleted_unread_bytes_total") == 0
            assert d.metric("lines_unterminated_total") == 1
            assert d.stop()[0] == 0
        entry = json.loads((layout.home / "deadletter.jsonl").read_text())
        assert entry["reason"] == "unterminated_invalid" and entry["file"] == str(bad.path)
        assert_exactly_once(layout.home, [good, bad])


class TestFiles:
    @pytest.mark.parametrize("rotated", ["s.jsonl.1", "s-rotated.jsonl"],
                             ids=["outside-glob", "inside-glob"])
    def test_f16_rename_rotation_while_behind(self, tmp_path: Path, rotated: str) -> None:
        """F16: the renamed file is finished through its open handle, the new one is read
        from 0; nothing lost, nothing doubled."""
        layout = Layout.make(tmp_path)
        path = layout.project() / "s.jsonl"
        old = Writer(path, prefix="old")
        with Daemon(layout, RELAYBURN_BATCH_MAX_RECORDS="300").start() as d:
            old.exchange()
            wait_for(lambda: stored(layout, [old]), 5)
            with store_locked(layout.home):
                for _ in range(1000):
                    old.exchange()
                time.sleep(0.5)
                os.rename(path, path.with_name(rotated))
                new = Writer(path, prefix="new")
                for _ in range(1000):
                    new.exchange()
                time.sleep(0.5)
            wait_for(lambda: stored(layout, [old, new]), 60, what="both generations")
            assert d.metric("deleted_unread_bytes_total") == 0
            assert d.stop()[0] == 0
        assert_exactly_once(layout.home, [old, new])

    def test_f17_truncation_while_running(self, tmp_path: Path) -> None:
        """F17: truncation is detected, the new content read from 0, old lines not sent
        again, and a restart sends nothing."""
        layout = Layout.make(tmp_path)
        path = layout.project() / "s.jsonl"
        first = Writer(path, prefix="first")
        with Daemon(layout).start() as d:
            for _ in range(50):
                first.exchange()
            wait_for(lambda: stored(layout, [first]), 5)
            wait_for(lambda: d.metric("checkpoint_writes_total") >= 1, 5)
            shipped = d.metric("records_shipped_total")
            os.truncate(path, 0)
            second = Writer(path, prefix="second")
            for _ in range(100):
                second.compaction()
            wait_for(lambda: d.metric("records_shipped_total") - shipped >= 100, 5)
            wait_for(d.caught_up, 5)
            m = d.metrics()
            # the head changed too, so the pipeline may call it "replaced": either way a reset
            assert sum(v for k, v in m.items() if k.startswith("file_resets_total{")) == 1
            assert m["records_shipped_total"] - shipped == 100
            assert m["records_deduplicated_total"] == 0
            assert d.stop()[0] == 0
        metrics = restart_and_drain(layout)
        assert metrics["records_shipped_total"] == 0 and metrics["bytes_read_total"] == 0
        assert_exactly_once(layout.home, [first, second])

    def test_f18_truncated_and_regrown_while_down(self, tmp_path: Path) -> None:
        """F18: a file rewritten longer than its cursor while the daemon was down is read
        from 0 (no lines skipped from the old offset)."""
        layout = Layout.make(tmp_path)
        path = layout.project() / "s.jsonl"
        first = Writer(path, prefix="first")
        for _ in range(20):
            first.exchange()
        restart_and_drain(layout)
        with path.open("r+b") as fh:
            fh.truncate(0)
        second = Writer(path, prefix="second")
        for _ in range(60):
            second.exchange()
        metrics = restart_and_drain(layout)
        assert sum(v for k, v in metrics.items() if k.startswith("file_resets_total{")) == 1
        assert_exactly_once(layout.home, [first, second])

    def test_f19_deleted_with_unread_bytes_and_state_gc(self, tmp_path: Path) -> None:
        """F19: a file deleted while the sink is slow is drained through its handle
        (deleted_unread_bytes_total = 0); cursors of missing files are marked gone."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        layout.home.mkdir()
        ghosts = {f"/gone/{i}.jsonl": {"source": "claude", "dev": 1, "ino": i, "size": 10,
                                       "mtime_ns": 1, "offset": 10} for i in range(1000)}
        (layout.home / "cursors.json").write_text(json.dumps(
            {"version": 1, "files": ghosts, "polls": {}}))
        with Daemon(layout, RELAYBURN_BATCH_MAX_RECORDS="300").start() as d:
            w.exchange()
            wait_for(lambda: stored(layout, [w]), 5)
            with store_locked(layout.home):
                for _ in range(1700):  # about 5k lines
                    w.exchange()
                wait_for(lambda: d.metric("bytes_read_total") > 0, 5)
                time.sleep(0.5)
                w.path.unlink()
            wait_for(lambda: stored(layout, [w]), 60, what="the deleted file's records")
            assert d.metric("deleted_unread_bytes_total") == 0
            assert d.stop()[0] == 0
        assert_exactly_once(layout.home, [w])
        state = committed_cursors(layout.home)
        gone = [v for k, v in state["files"].items() if k.startswith("/gone/")]
        assert len(gone) == 1000 and all("gone_since" in v for v in gone)
        assert state["files"][str(w.path)]["gone_since"] > 0

    def test_f20_inode_reuse(self, tmp_path: Path) -> None:
        """F20: a new file that gets a shipped file's inode is read from 0."""
        layout = Layout.make(tmp_path)
        path = layout.project() / "s.jsonl"
        first = Writer(path, prefix="first")
        for _ in range(10):
            first.exchange()
        restart_and_drain(layout)
        ino = path.stat().st_ino
        path.unlink()
        # the allocator hands out the lowest free inode of the directory's group:
        # keep taking inodes until the freed one comes back
        spares: list[Path] = []
        end = time.monotonic() + 5
        while True:
            spare = path.with_name(f"spare-{len(spares)}.tmp")
            os.close(os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            if os.stat(spare).st_ino == ino:
                os.rename(spare, path)
                break
            spares.append(spare)
            if time.monotonic() > end:
                pytest.skip("this filesystem did not hand out the freed inode again")
        for spare in spares:
            spare.unlink()
        second = Writer(path, prefix="second")
        for _ in range(30):
            second.exchange()
        assert path.stat().st_ino == ino
        restart_and_drain(layout)
        assert_exactly_once(layout.home, [first, second])

    def test_f21_files_with_identical_prefixes(self, tmp_path: Path) -> None:
        """F21: a copied session and its original are tracked apart and both delivered."""
        layout = Layout.make(tmp_path)
        a = Writer(layout.project() / "a.jsonl", prefix="shared")
        for _ in range(10):
            a.exchange()
        copy = layout.project() / "b.jsonl"
        copy.write_bytes(a.path.read_bytes())
        with Daemon(layout).start() as d:
            b = Writer(copy, prefix="b")
            a.prefix = "a"
            for _ in range(10):
                a.exchange()
                b.exchange()
            wait_for(lambda: stored(layout, [a, b]), 5)
            assert d.stop()[0] == 0
        assert_exactly_once(layout.home, [a, b])
        files = committed_cursors(layout.home)["files"]
        assert files[str(a.path)]["ino"] != files[str(copy)]["ino"]
        assert files[str(a.path)]["offset"] == a.path.stat().st_size
        assert files[str(copy)]["offset"] == copy.stat().st_size


class TestMisconfiguredSink:
    def test_f11_misconfigured_sink_holds_cursors_until_fixed(self, tmp_path: Path) -> None:
        """F11: a sink that refuses on configuration grounds (here a SQLite store missing a
        table) holds the cursors, nothing is dead-lettered, health says so; once fixed,
        the drain delivers everything and exits 0."""
        pytest.importorskip("relayburnd.storage.sqlite")
        import sqlite3

        layout = Layout.make(tmp_path)
        db = tmp_path / "store.sqlite"
        w = Writer(layout.project() / "s.jsonl")
        w.exchange()

        def stored_ids() -> set[str]:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                return {r[0] for r in conn.execute("SELECT message_id FROM compactions")}

        with Daemon(layout, RELAYBURN_STORAGE="sqlite", RELAYBURN_SQLITE_PATH=str(db),
                    RELAYBURN_DRAIN_TIMEOUT="8").start() as d:
            wait_for(lambda: set(w.compactions) <= stored_ids(), 5)
            with contextlib.closing(sqlite3.connect(db)) as conn:
                conn.execute("ALTER TABLE compactions RENAME TO compactions_away")
            for _ in range(5):
                w.exchange()
            wait_for(lambda: d.metric('sink_errors_total{class="SinkMisconfigured"}') >= 1, 5)
            wait_for(lambda: d.get("/healthz")[0] == 503, 2, what="unhealthy")
            assert d.get("/readyz")[0] == 200
            assert d.metric('lag_bytes{source="claude"}') > 0
            with contextlib.closing(sqlite3.connect(db)) as conn:
                conn.execute("ALTER TABLE compactions_away RENAME TO compactions")
            code, took = d.stop()
            assert code == 0, d.output()
            assert took < 8
        assert set(w.compactions) == stored_ids()
        assert not (layout.home / "deadletter.jsonl").exists()
