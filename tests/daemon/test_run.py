"""``relayburnd run`` end to end: latency, discovery, shutdown, single instance, endpoints."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import socket
import time
from pathlib import Path

import pytest
from harness import (
    Daemon,
    Layout,
    LedgerWatch,
    Writer,
    assert_exactly_once,
    committed_cursors,
    folded,
    percentile,
    run_relayburnd,
    store_locked,
    wait_for,
)


def measure_latency(layout: Layout, appends: int, **env: str) -> tuple[float, float]:
    """Append compaction lines one at a time; return p50 and p99 append-to-stored seconds."""
    w = Writer(layout.project() / "sess-lat.jsonl")
    w.compaction()
    with Daemon(layout, extra_env={"RELAYBURN_FLUSH_INTERVAL": "1", **env}).start() as d, \
            LedgerWatch(layout.home) as watch:
        wait_for(lambda: w.compactions[0] in watch.seen, 10, what="first record")
        written: dict[str, float] = {}
        rng = random.Random(7)
        for _ in range(appends):
            uid = w.compaction()
            written[uid] = time.monotonic()
            time.sleep(rng.uniform(0.005, 0.05))
        wait_for(lambda: all(u in watch.seen for u in written), 15, what="all appends stored")
        latencies = [watch.seen[u] - t for u, t in written.items()]
        code, _ = d.stop()
        assert code == 0, d.output()
    return percentile(latencies, 0.5), percentile(latencies, 0.99)


class TestLatency:
    def test_appends_appear_within_two_seconds(self, tmp_path: Path) -> None:
        """200 appends to a watched session are stored with a p99 under 2 s."""
        p50, p99 = measure_latency(Layout.make(tmp_path), 200)
        print(f"\ninotify: append-to-stored latency p50 {p50:.3f}s p99 {p99:.3f}s")
        assert p99 < 2.0


class TestDiscovery:
    def test_new_sessions_projects_and_subagents_are_picked_up(self, tmp_path: Path) -> None:
        """Files created after start (new session, new project, new sub-agent dir) are read."""
        layout = Layout.make(tmp_path)
        first = Writer(layout.project() / "sess-a.jsonl", prefix="a")
        first.exchange()
        with Daemon(layout).start() as d:
            later = [
                Writer(layout.project() / "sess-b.jsonl", prefix="b"),
                Writer(layout.project("-work-other") / "sess-c.jsonl", prefix="c"),
            ]
            sub = layout.project() / "sess-a" / "subagents"
            sub.mkdir(parents=True)
            later.append(Writer(sub / "agent-x1.jsonl", session="sess-a", prefix="s"))
            for w in later:
                w.exchange()
            wanted = {u for w in [first, *later] for u in w.compactions}
            wait_for(lambda: wanted <= set(folded(layout.home, "compaction")), 5,
                     what="records of new files")
            assert d.stop()[0] == 0
        assert_exactly_once(layout.home, [first, *later])

    def test_agent_dir_created_after_start_is_watched(self, tmp_path: Path) -> None:
        """A Claude config dir that does not exist at start is read once it appears."""
        layout = Layout.make(tmp_path)
        late = tmp_path / "late-claude"
        with Daemon(layout, CLAUDE_CONFIG_DIR=str(late)).start() as d:
            time.sleep(0.5)
            (late / "projects" / "-p").mkdir(parents=True)
            w = Writer(late / "projects" / "-p" / "s.jsonl")
            w.exchange()
            wait_for(lambda: set(w.compactions) <= set(folded(layout.home, "compaction")), 5,
                     what="records below a late directory")
            assert d.stop()[0] == 0


class TestShutdown:
    def test_f23_sigterm_stores_everything_and_restart_sends_nothing(self, tmp_path: Path) -> None:
        """F23: lines written before SIGTERM are all stored (exit 0); a restart ships nothing."""
        layout = Layout.make(tmp_path)
        writers = [Writer(layout.project() / f"sess-{i}.jsonl", prefix=f"w{i}") for i in range(3)]
        with Daemon(layout, RELAYBURN_BATCH_MAX_RECORDS="500").start() as d:
            for _ in range(700):
                for w in writers:
                    w.exchange()
            code, took = d.stop()
            assert code == 0, d.output()
            assert took < 10
        assert_exactly_once(layout.home, writers)
        before = (layout.home / "ledger.jsonl").stat().st_size
        with Daemon(layout).start() as d:
            time.sleep(1.0)
            assert d.metric("records_shipped_total") == 0
            assert d.metric("bytes_read_total") == 0
            assert d.stop()[0] == 0
        assert (layout.home / "ledger.jsonl").stat().st_size == before

    def test_f13_unterminated_line_is_shipped_once_at_drain(self, tmp_path: Path) -> None:
        """F13(b): an unterminated last line that parses is shipped at SIGTERM, never again."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        w.exchange()
        uid, line = w.compaction_line()
        w.append(line.rstrip(b"\n"))
        with Daemon(layout).start() as d:
            time.sleep(0.5)
            assert uid not in folded(layout.home, "compaction")  # not while the file is live
            assert d.stop()[0] == 0
        assert uid in folded(layout.home, "compaction")
        entry = committed_cursors(layout.home)["files"][str(w.path)]
        assert entry["offset"] == w.path.stat().st_size
        w.compactions.append(uid)
        with Daemon(layout).start() as d:
            time.sleep(0.5)
            assert d.metric("records_shipped_total") == 0
            assert d.stop()[0] == 0
        assert_exactly_once(layout.home, [w])

    def test_f25_lines_written_while_lingering_are_delivered(self, tmp_path: Path) -> None:
        """F25(a): an agent still writing for 1.5 s after SIGTERM loses nothing."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        with Daemon(layout).start() as d:
            w.exchange()
            assert d.proc is not None
            d.proc.send_signal(signal.SIGTERM)
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                w.exchange()
                time.sleep(0.05)
            assert d.wait(30) == 0, d.output()
        assert_exactly_once(layout.home, [w])

    @pytest.mark.parametrize("call", ["cli", "http"])
    def test_f25_prestop_shortens_the_drain_to_the_grace_left(
        self, tmp_path: Path, call: str
    ) -> None:
        """F25(b): prestop at T0 (``ctl prestop``, or ``/prestop`` as a preStop httpGet
        hook calls it), SIGTERM at T0 + (TGPS - 8) s with the sink stuck: the drain ends by
        T0 + TGPS - 2 s, not after RELAYBURN_DRAIN_TIMEOUT, and a restart delivers
        everything once."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        w.exchange()
        grace = 12.0
        env = {"RELAYBURN_DRAIN_TIMEOUT": "30", "RELAYBURN_GRACE_PERIOD": f"{grace:g}"}
        with Daemon(layout, **env).start() as d:
            wait_for(lambda: set(w.compactions) <= set(folded(layout.home, "compaction")), 5)
            with store_locked(layout.home):
                for _ in range(20):
                    w.exchange()
                if call == "cli":
                    marked = run_relayburnd(layout, "ctl", "prestop", **env)
                    assert marked.returncode == 0, marked.stderr
                    assert "within 12 s" in marked.stdout
                else:
                    assert d.get("/prestop") == (200, "prestop marked\n")
                t0 = time.monotonic()
                time.sleep(grace - 8)
                code, took = d.stop()
                assert code == 75, d.output()
                ended = time.monotonic() - t0
            assert ended < grace - 2 + 1.5, f"drain ended {ended:.1f}s after prestop"
            assert took > 2.0  # it drained (tried to deliver) rather than quitting at once
        draining = [e for e in d.events() if e.get("event") == "daemon.draining"]
        assert draining and draining[0]["budget_from"] == "grace period left after prestop"
        # the mark belongs to that shutdown: the next daemon removes it and drains normally
        with Daemon(layout).start() as d:
            assert not (layout.home / "prestop.json").exists()
            wait_for(d.caught_up, 20, what="catch-up")
            assert d.stop()[0] == 0
        assert_exactly_once(layout.home, [w])

    def test_f25_second_signal_exits_within_a_second(self, tmp_path: Path) -> None:
        """F25(c): with the sink stuck, a second SIGTERM exits promptly with a valid state."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        w.exchange()
        with Daemon(layout, RELAYBURN_DRAIN_TIMEOUT="30").start() as d:
            wait_for(lambda: set(w.compactions) <= set(folded(layout.home, "compaction")), 5)
            with store_locked(layout.home):
                for _ in range(50):
                    w.exchange()
                time.sleep(1.0)
                assert d.proc is not None
                d.proc.send_signal(signal.SIGTERM)
                time.sleep(1.0)
                code, took = d.stop(signal.SIGTERM)
            assert took < 1.0, f"second signal took {took:.2f}s"
            assert code == 75
        state = json.loads((layout.home / "cursors.json").read_bytes())
        assert state["version"] == 1
        with Daemon(layout).start() as d:
            assert d.stop()[0] == 0
        assert_exactly_once(layout.home, [w])


class TestInstance:
    def test_two_instances_on_one_home_are_refused(self, tmp_path: Path) -> None:
        """A second daemon on the same RELAYBURN_HOME exits 1 naming the first one's pid."""
        layout = Layout.make(tmp_path)
        with Daemon(layout).start() as first:
            proc = run_relayburnd(layout, "run", "--source", "claude", timeout=30)
            assert proc.returncode == 1
            assert f"another relayburnd (pid {first.pid})" in proc.stderr
            assert first.stop()[0] == 0


class TestSystemd:
    def test_notify_ready_watchdog_stopping_in_order(self, tmp_path: Path) -> None:
        """READY=1 after state load, WATCHDOG=1 while the loop runs (not while it hangs),
        STOPPING=1 on SIGTERM."""
        layout = Layout.make(tmp_path)
        sock_path = tmp_path / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(sock_path))
        sock.settimeout(0.2)
        got: list[tuple[float, str]] = []
        # the 15th loop round hangs for 3 s: watchdog pings must stop meanwhile
        with Daemon(layout, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000",
                    RELAYBURN_FAULTS="daemon_loop=sleep:3@15").start(ready=False) as d:
            end = time.monotonic() + 8
            while time.monotonic() < end:
                with contextlib.suppress(TimeoutError):
                    got.append((time.monotonic(), sock.recv(4096).decode()))
            assert d.proc is not None
            d.proc.send_signal(signal.SIGTERM)
            end = time.monotonic() + 10
            while d.proc.poll() is None and time.monotonic() < end:
                with contextlib.suppress(TimeoutError):
                    got.append((time.monotonic(), sock.recv(4096).decode()))
            assert d.wait(10) == 0
        sock.close()
        kinds = [msg.split("\n")[0].split("=")[0] for _, msg in got]
        assert kinds[0] == "READY"
        assert "STOPPING" in kinds
        stop_at = kinds.index("STOPPING")
        pings = [t for (t, msg) in got[:stop_at] if msg.startswith("WATCHDOG=1")]
        assert len(pings) >= 5
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) > 2.5, "pings went on while the loop hung"
        assert sorted(gaps)[len(gaps) // 2] < 0.5, "pings not every half WATCHDOG_USEC"
        assert any(msg.startswith("STATUS=") for _, msg in got)


class TestEndpoints:
    def test_metrics_livez_readyz(self, tmp_path: Path) -> None:
        """/metrics counts what was read and shipped; /livez and /readyz answer 200."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        for _ in range(10):
            w.exchange()
        with Daemon(layout).start() as d:
            wait_for(lambda: d.metric("records_shipped_total") > 0, 5)
            wait_for(d.caught_up, 5)
            m = d.metrics()
            assert m['records_parsed_total{kind="compaction"}'] == 10
            assert m["bytes_read_total"] == w.path.stat().st_size
            assert m['files_tracked{source="claude"}'] == 1
            assert m['watch_mode{mode="inotify"}'] == 1
            assert m["inotify_watch_shortfall"] == 0
            assert m["sink_up"] == 1
            assert m["last_flush_timestamp_seconds"] > time.time() - 60
            assert d.get("/livez")[0] == 200
            assert d.get("/readyz")[0] == 200
            assert d.get("/healthz")[0] == 200
            assert d.stop()[0] == 0


class TestStatusAndDoctor:
    def test_status_with_and_without_daemon(self, tmp_path: Path) -> None:
        """status counts files and bytes behind whether or not the daemon runs."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        w.exchange()
        out = run_relayburnd(layout, "status", "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["daemon_running"] is False
        assert doc["sources"]["claude"] == {"files": 1, "bytes_behind": w.path.stat().st_size,
                                            "available": True}
        with Daemon(layout).start() as d:
            wait_for(d.caught_up, 5)
            status = layout.home / "status.json"
            wait_for(lambda: status.exists() and json.loads(status.read_bytes())
                     .get("last_flush_at"), 5, what="status.json with a flush time")
            doc = json.loads(run_relayburnd(layout, "status", "--json").stdout)
            assert doc["daemon_running"] is True and doc["daemon_pid"] == d.pid
            assert doc["sources"]["claude"]["bytes_behind"] == 0
            assert doc["sink"] == {"name": "file", "ok": True, "error": None}
            assert doc["last_flush_at"] is not None
            text = run_relayburnd(layout, "status").stdout
            assert f"daemon: running (pid {d.pid}" in text
            assert "claude: 1 files tracked, 0 bytes behind" in text
            # a later checkpoint is a journal line: status reads it with the snapshot
            wait_for(lambda: d.metric("checkpoint_writes_total") >= 1, 5)
            w.exchange()
            wait_for(lambda: (layout.home / "cursors.json.journal").exists(), 5,
                     what="a journalled checkpoint")
            doc = json.loads(run_relayburnd(layout, "status", "--json").stdout)
            assert doc["sources"]["claude"]["bytes_behind"] == 0
            assert d.stop()[0] == 0

    def test_doctor_passes_and_names_fixes(self, tmp_path: Path) -> None:
        """doctor exits 0 on a working setup and 1 with a fix when RELAYBURN_HOME is unusable."""
        layout = Layout.make(tmp_path)
        Writer(layout.project() / "s.jsonl").exchange()
        ok = run_relayburnd(layout, "doctor")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "ok    claude logs:" in ok.stdout
        assert "ok    sink: file reachable" in ok.stdout
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("x")
        bad = run_relayburnd(layout, "doctor", RELAYBURN_HOME=str(blocker / "home"))
        assert bad.returncode == 1
        assert "FAIL  RELAYBURN_HOME" in bad.stdout
        assert "fix: create" in bad.stdout
        assert "Error: " in bad.stderr and "RELAYBURN_HOME" in bad.stderr

    def test_doctor_reports_missing_agent_dirs(self, tmp_path: Path) -> None:
        """With no agent directory at all doctor fails and says which variables to set."""
        layout = Layout.make(tmp_path)
        res = run_relayburnd(layout, "doctor", CLAUDE_CONFIG_DIR=str(tmp_path / "nope"),
                             CODEX_HOME=str(tmp_path / "nope2"),
                             OPENCODE_DATA_DIR=str(tmp_path / "nope3"))
        assert res.returncode == 1
        assert "FAIL  agent directories: no agent log directory found" in res.stdout
        assert "CLAUDE_CONFIG_DIR" in res.stdout


class TestDrainCommand:
    def test_drain_ships_everything_and_exits_zero(self, tmp_path: Path) -> None:
        """drain reads every file to the end (open responses included) and exits 0."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        for _ in range(20):
            w.exchange()
        w.user()
        w.response("msg-open", (1, 7))  # no later line: held until a final pass
        res = run_relayburnd(layout, "drain", "--source", "claude")
        assert res.returncode == 0, res.stderr
        assert "records:" in res.stdout
        assert_exactly_once(layout.home, [w])

    def test_drain_exits_75_with_account_when_the_sink_stays_down(self, tmp_path: Path) -> None:
        """drain --timeout with the store locked exits 75 listing the bytes left per file."""
        layout = Layout.make(tmp_path)
        a = Writer(layout.project() / "a.jsonl", prefix="a")
        b = Writer(layout.project() / "b.jsonl", prefix="b")
        a.exchange()
        b.exchange()
        with store_locked(layout.home):
            start = time.monotonic()
            res = run_relayburnd(layout, "drain", "--source", "claude", "--timeout", "2")
            took = time.monotonic() - start
        assert res.returncode == 75, res.stderr
        assert took < 8
        assert f"  {a.path}: {a.path.stat().st_size} bytes not delivered" in res.stderr
        assert f"  {b.path}: {b.path.stat().st_size} bytes not delivered" in res.stderr
        assert "Error: 2 file(s) not delivered" in res.stderr


class TestCompleteness:
    def test_open_response_committed_after_idle_grace_then_replaced(self, tmp_path: Path) -> None:
        """A response with no later line is stored after idle_grace; a larger snapshot
        replaces it."""
        layout = Layout.make(tmp_path)
        w = Writer(layout.project() / "s.jsonl")
        with Daemon(layout, RELAYBURN_IDLE_GRACE="1").start() as d:
            w.user()
            w.append(w.assistant_line("msg-1", 5, stop=False))
            time.sleep(0.6)
            assert "msg-1" not in folded(layout.home, "turn")
            wait_for(lambda: folded(layout.home, "turn").get("msg-1"), 4, what="idle commit")
            assert folded(layout.home, "turn")["msg-1"]["output_tokens"] == 5
            w.append(w.assistant_line("msg-1", 300, stop=True))
            w.compaction()
            wait_for(lambda: folded(layout.home, "turn")["msg-1"]["output_tokens"] == 300, 4,
                     what="larger snapshot")
            assert d.stop()[0] == 0


class TestSources:
    def test_codex_and_claude_together(self, tmp_path: Path) -> None:
        """With every source enabled, a Codex rollout is shipped next to Claude sessions."""
        pytest.importorskip("relayburnd.sources.codex")
        layout = Layout.make(tmp_path)
        day = tmp_path / "codex" / "sessions" / "2026" / "01" / "05"
        day.mkdir(parents=True)
        fixture = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "synthetic" \
            / "codex" / "x01-normal"
        rollouts = sorted(fixture.rglob("*.jsonl"))
        if not rollouts:
            pytest.skip("codex fixture x01-normal not available")
        w = Writer(layout.project() / "s.jsonl")
        with Daemon(layout, sources=("claude", "codex", "opencode"),
                    CODEX_HOME=str(tmp_path / "codex")).start() as d:
            w.exchange()
            (day / rollouts[0].name).write_bytes(rollouts[0].read_bytes())
            wait_for(lambda: any(r.get("source") == "codex"
                                 for r in folded(layout.home, "turn").values()), 6,
                     what="codex turns")
            assert d.stop()[0] == 0
        assert set(w.compactions) <= set(folded(layout.home, "compaction"))
        assert os.path.exists(layout.home / "cursors.json")
