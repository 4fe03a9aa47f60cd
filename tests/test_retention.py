"""Content retention (`content prune`, `maybe_prune`) and `content show`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from relayburnd import retention
from relayburnd.errors import SinkUnavailable
from relayburnd.records import encode
from relayburnd.storage.file import FileAdapter
from tests.conftest import SYNTHETIC, run_cli
from tests.test_archive import content, settings, write

DAY = 86_400_000
NOW = 1_772_442_000_000  # 2026-03-02T09:00:00Z


def home() -> Path:
    return Path(os.environ["RELAYBURN_HOME"])


def stored_ids(session: str) -> list[str]:
    path = home() / "content" / f"{session}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.fixture
def store() -> FileAdapter:
    adapter = FileAdapter(settings())
    yield adapter  # type: ignore[misc]
    adapter.close()


class TestPrune:
    """Removing content older than N days."""

    def test_days(self, store: FileAdapter) -> None:
        """Records older than the cutoff go, newer ones stay; an emptied file is removed."""
        old = content("old", "s1", NOW - 10 * DAY, "old text")
        edge = content("edge", "s1", NOW - 3 * DAY, "exactly three days old")
        new = content("new", "s1", NOW - DAY, "new text")
        gone = content("gone", "s2", NOW - 30 * DAY, "all old")
        write(store, old, new, edge, gone)
        result = retention.prune(store, 3, now_ms=NOW)
        assert result.removed == 2 and result.before_ms == NOW - 3 * DAY
        assert sorted(stored_ids("s1")) == sorted([edge.id, new.id])
        assert not (home() / "content" / "s2.jsonl").exists()
        assert [r.id for r in store.content("s1")] == [edge.id, new.id]
        assert retention.prune(store, 3, now_ms=NOW).removed == 0

    def test_zero_clears_everything(self, store: FileAdapter) -> None:
        """`content prune --days 0` removes all content, even timestamps in the future."""
        write(store, content("a", "s1", NOW, "x"), content("b", "s2", 4_102_444_800_000, "y"))
        store.close()
        out = run_cli("content", "prune", "--days", "0").stdout
        assert out == "removed all stored content: 2 record(s)\n"
        assert list((home() / "content").iterdir()) == []

    def test_default_from_setting(self, store: FileAdapter) -> None:
        """Without --days the RELAYBURN_CONTENT_TTL_DAYS setting applies."""
        now = int(time.time() * 1000)
        write(store, content("old", "s1", now - 5 * DAY, "x"), content("new", "s1", now, "y"))
        store.close()
        out = run_cli("content", "prune", env={"RELAYBURN_CONTENT_TTL_DAYS": "2"}).stdout
        assert out.startswith("removed 1 content record(s) older than 2 day(s) (before ")
        assert len(stored_ids("s1")) == 1

    def test_empty_setting_keeps_everything(self, store: FileAdapter) -> None:
        """An empty RELAYBURN_CONTENT_TTL_DAYS means no limit: nothing is pruned."""
        write(store, content("old", "s1", 1, "from 1970"))
        store.close()
        proc = run_cli("content", "prune", env={"RELAYBURN_CONTENT_TTL_DAYS": ""})
        assert "nothing pruned" in proc.stdout
        assert len(stored_ids("s1")) == 1

    @pytest.mark.parametrize("value", ["-1", "1.5", "ten", "", "0x10", "+3"])
    def test_invalid_days(self, value: str) -> None:
        """Negative or non-integer --days: one line on stderr, exit 2."""
        proc = run_cli("content", "prune", "--days", value, check=False)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"Error: --days {value!r}: expected a whole number of days >= 0 "
            "(0 removes all content)"]

    @pytest.mark.parametrize("storage", ["sqlite", pytest.param("postgres",
                                                                marks=pytest.mark.postgres)])
    def test_sql_stores(self, request: pytest.FixtureRequest, tmp_path: Path,
                        storage: str) -> None:
        """On SQLite and PostgreSQL, `content prune` deletes rows and counts them."""
        from relayburnd.storage import open_adapter

        env = {"RELAYBURN_STORAGE": storage, "RELAYBURN_SQLITE_PATH": str(tmp_path / "db")}
        if storage == "postgres":
            env["RELAYBURN_PG_DSN"] = request.getfixturevalue("pg_server").new_database()
        adapter = open_adapter(settings(**{"storage": storage,
                                           "sqlite_path": env["RELAYBURN_SQLITE_PATH"],
                                           "pg_dsn": env.get("RELAYBURN_PG_DSN", "")}))
        now = int(time.time() * 1000)
        write(adapter, content("old", "s1", now - 9 * DAY, "x"), content("new", "s1", now, "y"),
              content("other", "s2", now - 40 * DAY, "z"))
        out = run_cli("content", "prune", "--days", "5", env=env).stdout
        assert out.startswith("removed 2 content record(s) older than 5 day(s) (before ")
        assert [r.text for r in adapter.content("s1")] == ["y"] and adapter.content("s2") == []
        out = run_cli("content", "prune", "--days", "0", env=env).stdout
        assert out == "removed all stored content: 1 record(s)\n"
        assert adapter.content("s1") == []
        adapter.close()

    def test_sql_store_hourly(self, tmp_path: Path) -> None:
        """The daemon's hourly hook prunes a SQL store like the file store."""
        from relayburnd.storage.sqlite import SqliteAdapter

        s = settings(storage="sqlite", sqlite_path=str(tmp_path / "db"), content_ttl_days=30)
        adapter = SqliteAdapter(s)
        write(adapter, content("old", "s", NOW - 31 * DAY, "x"), content("new", "s", NOW, "y"))
        first = retention.maybe_prune(s, now_ms=NOW)  # opens its own adapter
        assert first is not None and first.removed == 1
        assert [r.text for r in adapter.content("s")] == ["y"]
        adapter.close()


class TestWritersAndPrune:
    """Pruning takes the store lock: an append racing with a rewrite is never lost."""

    def test_threads(self, store: FileAdapter) -> None:
        """Writers append to the files prune rewrites; every new record survives."""
        sessions = ["s1", "s2", "s3"]
        write(store, *(content(f"old{i}{s}", s, NOW - 100 * DAY, "old " * 50)
                       for s in sessions for i in range(30)))
        written: list[str] = []
        stop = threading.Event()

        def writer(n: int) -> None:
            adapter = FileAdapter(settings())
            try:
                for i in range(60):
                    recs = [content(f"w{n}-{i}-{s}", s, NOW + i, f"new {n} {i} " * 300)
                            for s in sessions]
                    write(adapter, *recs)
                    written.extend(r.id for r in recs)
            finally:
                adapter.close()

        def pruner() -> None:
            adapter = FileAdapter(settings())
            try:
                rounds = 0
                while not stop.is_set():
                    rounds += 1  # something old to remove keeps every file rewritten
                    write(adapter, *(content(f"late{rounds}{s}", s, NOW - 9 * DAY, "z")
                                     for s in sessions))
                    adapter.prune_content(NOW - DAY)
            finally:
                adapter.close()

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        prune_thread = threading.Thread(target=pruner)
        prune_thread.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        prune_thread.join()
        store.prune_content(NOW - DAY)
        kept = {i for s in sessions for i in stored_ids(s)}
        assert kept == set(written) and len(written) == 3 * 60 * 3

    def test_processes(self, store: FileAdapter) -> None:
        """Separate processes appending while this one prunes lose nothing."""
        script = (
            "import sys\n"
            "from tests.test_archive import content, settings, write\n"
            "from relayburnd.storage.file import FileAdapter\n"
            "a = FileAdapter(settings())\n"
            "n = sys.argv[1]\n"
            "for i in range(80):\n"
            f"    write(a, content(f'p{{n}}-{{i}}', 'shared', {NOW} + i, 'x' * 200))\n"
            "a.close()\n"
        )
        write(store, *(content(f"old{i}", "shared", NOW - 50 * DAY, "o" * 300)
                       for i in range(200)))
        procs = [subprocess.Popen([sys.executable, "-c", script, str(n)],
                                  cwd=Path(__file__).resolve().parent.parent)
                 for n in range(2)]
        rounds = 0
        while any(p.poll() is None for p in procs):
            store.prune_content(NOW - DAY)
            rounds += 1
            # an old record appended now and then keeps every rewrite busy
            write(store, content(f"late-old{rounds}", "shared", NOW - 20 * DAY, "z"))
        assert all(p.returncode == 0 for p in procs)
        store.prune_content(NOW - DAY)
        want = {content(f"p{n}-{i}", "shared", 0, "").id for n in range(2) for i in range(80)}
        assert set(stored_ids("shared")) == want
        assert rounds > 1


class TestCrashedWrite:
    """A write that crashed before its commit is rolled back before a rewrite."""

    def test_pending_append_is_rolled_back_not_kept(self, store: FileAdapter) -> None:
        """Uncommitted lines go; the recorded size can never truncate the rewritten file."""
        old = [content(f"a{i}", "s", NOW - 10 * DAY, "a") for i in range(3)]
        write(store, *old)
        path = home() / "content" / "s.jsonl"
        size = path.stat().st_size
        idx = sqlite3.connect(home() / "ledger.index.sqlite")
        idx.execute("INSERT OR REPLACE INTO meta VALUES ('pending', ?)",
                    (json.dumps({"content/s.jsonl": size}),))
        idx.commit()
        torn = [content(f"b{i}", "s", NOW, "b" * 400) for i in range(4)]
        with path.open("ab") as fh:  # the crashed writer's appends, never acknowledged
            fh.write(b"".join(encode(r) + b"\n" for r in torn))
        assert store.prune_content(NOW - DAY) == 3
        assert not path.exists()
        assert idx.execute("SELECT value FROM meta WHERE key = 'pending'").fetchone() is None
        idx.close()
        fresh = [content(f"c{i}", "s", NOW, "c" * 10) for i in range(2)]
        write(store, *fresh)
        other = FileAdapter(settings())
        write(other, content("d", "s", NOW, "d"))
        other.close()
        assert stored_ids("s") == [*(r.id for r in fresh), content("d", "s", 0, "").id]
        assert all(json.loads(line) for line in path.read_text().splitlines())

    def test_leftover_temp_file_is_removed(self, store: FileAdapter) -> None:
        """A rewrite that died before its rename leaves a temp file the next prune deletes."""
        write(store, content("a", "s", NOW, "a"))
        leftover = home() / "content" / "s.jsonl.new"
        leftover.write_bytes(b"half")
        store.prune_content(NOW - DAY)
        assert not leftover.exists() and len(stored_ids("s")) == 1


class TestMaybePrune:
    """The hourly hook for the daemon."""

    def test_hourly(self, store: FileAdapter) -> None:
        """Prunes on the first call, skips within the hour, prunes again after it."""
        write(store, content("old", "s", NOW - 100 * DAY, "x"))
        s = settings(content_ttl_days=90)
        first = retention.maybe_prune(s, store, now_ms=NOW)
        assert first is not None and first.removed == 1
        state = json.loads((home() / "retention.json").read_text())
        assert state == {"version": 1, "last_prune_ms": NOW}
        write(store, content("old2", "s", NOW - 100 * DAY, "x"))
        assert retention.maybe_prune(s, store, now_ms=NOW + 3_599_000) is None
        assert len(stored_ids("s")) == 1
        again = retention.maybe_prune(s, now_ms=NOW + 3_600_000)  # opens its own adapter
        assert again is not None and again.removed == 1

    def test_unlimited_does_nothing(self, store: FileAdapter) -> None:
        """With no retention limit the hook neither prunes nor writes state."""
        write(store, content("old", "s", 1, "x"))
        assert retention.maybe_prune(settings(content_ttl_days=None), store, now_ms=NOW) is None
        assert not (home() / "retention.json").exists() and len(stored_ids("s")) == 1

    def test_errors_are_logged_not_raised(self, store: FileAdapter,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
        """A store that fails to prune does not stop the caller; the next try waits an hour."""
        def fail(before_ms: int) -> int:
            raise SinkUnavailable("file store busy: test")

        monkeypatch.setattr(store, "prune_content", fail)
        s = settings(content_ttl_days=1)
        assert retention.maybe_prune(s, store, now_ms=NOW) is None
        assert json.loads((home() / "retention.json").read_text())["last_prune_ms"] == NOW

    def test_state_that_cannot_be_written_still_waits_an_hour(self, store: FileAdapter) -> None:
        """Where ``retention.json`` cannot be written, this process still remembers its
        prune, so a server checking every minute prunes hourly, not every minute."""
        (home() / "retention.json").mkdir(parents=True)  # a directory: no file can go there
        write(store, content("old", "s", NOW - 100 * DAY, "x"))
        s = settings(content_ttl_days=90)
        first = retention.maybe_prune(s, store, now_ms=NOW)
        assert first is not None and first.removed == 1
        write(store, content("old2", "s", NOW - 100 * DAY, "x"))
        assert retention.maybe_prune(s, store, now_ms=NOW + 60_000) is None
        assert len(stored_ids("s")) == 1
        again = retention.maybe_prune(s, store, now_ms=NOW + 3_600_000)
        assert again is not None and again.removed == 1


class TestShow:
    """`relayburnd content show SESSION`."""

    def test_order_and_text(self, store: FileAdapter) -> None:
        """Records print by time, then message, then block position, whatever the file order."""
        write(store,
              content("3", "s", NOW + 2000, "third", role="assistant", message="m2"),
              content("2b", "s", NOW + 1000, "second-b", role="assistant", seq=1, message="m1"),
              content("1", "s", NOW, "first\nline two"),
              content("2a", "s", NOW + 1000, "second-a", role="assistant", block="thinking",
                      message="m1"))
        store.close()
        out = run_cli("content", "show", "s", "--tz", "UTC").stdout
        assert out == (
            "2026-03-02 09:00:00+00:00  user  text\n    first\n    line two\n\n"
            "2026-03-02 09:00:01+00:00  assistant  thinking\n    second-a\n\n"
            "2026-03-02 09:00:01+00:00  assistant  text\n    second-b\n\n"
            "2026-03-02 09:00:02+00:00  assistant  text\n    third\n"
        )
        doc = json.loads(run_cli("content", "show", "s", "--json").stdout)
        assert [r["text"] for r in doc] == ["first\nline two", "second-a", "second-b", "third"]

    def test_hash_only(self, tmp_path: Path) -> None:
        """hash-only content shows the hash and the length, never text."""
        env = {"RELAYBURN_CONTENT_STORE": "hash-only",
               "CLAUDE_CONFIG_DIR": str(SYNTHETIC / "claude" / "c01-streaming-split")}
        run_cli("ingest", "--source", "claude", env=env)
        session = "11111111-aaaa-4aaa-8aaa-000000000001"
        out = run_cli("content", "show", session, "--tz", "UTC").stdout
        assert "List the files" not in out
        first = out.splitlines()[:2]
        assert first[0] == "2026-01-05 10:00:00+00:00  user  text"
        text = "List the files"
        import hashlib

        digest = hashlib.sha256(text.encode()).hexdigest()
        assert first[1] == f"    [text not stored] sha256:{digest}  {len(text)} chars"

    @pytest.mark.parametrize(("session", "code", "message"), [
        ("../etc/passwd", 2, "Error: session id '../etc/passwd' is not valid"),
        ("a/b", 2, "Error: session id 'a/b' is not valid"),
        ("no-such-session", 1, "Error: no content is stored for session 'no-such-session'"),
    ])
    def test_bad_sessions(self, session: str, code: int, message: str) -> None:
        """Unsafe ids and unknown sessions: one line, exit 2 or 1."""
        proc = run_cli("content", "show", session, check=False)
        assert proc.returncode == code
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message)
