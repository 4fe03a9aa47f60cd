"""RELAYBURN_HOME state: atomic writes under crashes (F02), quarantine of corrupt
state (F03), the single-instance lock and the store's file lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import msgspec
import pytest

from relayburnd.cursors import CursorStore
from relayburnd.errors import StateError
from relayburnd.home import (
    STATE_VERSION,
    HomeLayout,
    InstanceLock,
    atomic_write_bytes,
    file_lock,
    load_state,
)
from relayburnd.tail import Cursor, encode_state


def state_doc(offset: int, *, files: int = 40) -> bytes:
    """A cursors.json-shaped document whose offsets all equal ``offset``."""
    doc = {
        "version": STATE_VERSION,
        "files": {
            f"/logs/session-{i:03d}.jsonl": Cursor(
                source="claude", dev=1, ino=100 + i, size=offset, mtime_ns=0, offset=offset
            ).to_json()
            for i in range(files)
        },
        "polls": {},
    }
    return msgspec.json.encode(doc)


def offsets_of(state: dict[str, object] | None) -> set[int]:
    assert isinstance(state, dict)
    files = state["files"]
    assert isinstance(files, dict)
    return {int(v["offset"]) for v in files.values()}


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from relayburnd.cursors import CursorStore
    from relayburnd.tail import Cursor

    store = CursorStore(Path(sys.argv[1])).load()
    for i in range(40):
        store.put(f"/logs/session-{i:03d}.jsonl",
                  Cursor(source="claude", dev=1, ino=100 + i, size=2000, mtime_ns=0,
                         offset=2000))
    store.save(force=True)  # the snapshot itself, not a journal line
    print("saved")
    """
)


def run_writer(state: Path, faults: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RELAYBURN_FAULTS=faults)
    return subprocess.run(
        [sys.executable, "-c", _WRITER, str(state)],
        capture_output=True, text=True, env=env, timeout=60,
    )


class TestAtomicWriteUnderCrash:
    """F02: a process killed while writing state leaves the old or the new version."""

    @pytest.fixture
    def state(self, tmp_path: Path) -> Path:
        path = tmp_path / "cursors.json"
        store = CursorStore(path)
        for i in range(40):
            store.put(f"/logs/session-{i:03d}.jsonl",
                      Cursor(source="claude", dev=1, ino=100 + i, size=1000, mtime_ns=0,
                             offset=1000))
        store.save()
        return path

    def test_writer_without_faults_saves_the_new_version(self, state: Path) -> None:
        """The subprocess writer itself works, so the crash tests below measure the crash."""
        proc = run_writer(state, "")
        assert proc.returncode == 0, proc.stderr
        assert offsets_of(load_state(state)[0]) == {2000}

    def test_kill_halfway_through_the_temp_file_keeps_the_old_version(self, state: Path) -> None:
        """A kill after half the temp file is written leaves the old state, and the torn
        temp file is ignored and removed at the next load."""
        proc = run_writer(state, "checkpoint_mid_tmp_write=kill")
        assert proc.returncode == -signal.SIGKILL
        assert "saved" not in proc.stdout
        tmp = state.with_name("cursors.json.new")
        assert tmp.exists() and tmp.stat().st_size > 0
        loaded, quarantined = load_state(state)
        assert offsets_of(loaded) == {1000}
        assert quarantined == []
        assert not tmp.exists()

    def test_kill_after_the_temp_fsync_keeps_the_new_version(self, state: Path) -> None:
        """A kill between the temp file's fsync and the rename leaves a complete temp
        file, which wins at the next load and replaces the state file."""
        proc = run_writer(state, "checkpoint_after_tmp_fsync=kill")
        assert proc.returncode == -signal.SIGKILL
        assert offsets_of(msgspec.json.decode(state.read_bytes())) == {1000}
        loaded, quarantined = load_state(state)
        assert offsets_of(loaded) == {2000}
        assert quarantined == []
        assert offsets_of(msgspec.json.decode(state.read_bytes())) == {2000}
        assert not state.with_name("cursors.json.new").exists()

    def test_a_cursor_store_loads_after_either_crash(self, state: Path) -> None:
        """After a crash at each fault point the cursor store starts and can save again."""
        for fault in ("checkpoint_mid_tmp_write=kill", "checkpoint_after_tmp_fsync=kill"):
            assert run_writer(state, fault).returncode == -signal.SIGKILL
            store = CursorStore(state).load()
            assert {c.offset for c in store.files.values()} <= {1000, 2000}
            assert len(store.files) == 40
            assert store.save(force=True)

    def test_enospc_leaves_the_state_file_untouched(self, state: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """A failed state write (ENOSPC) raises and the existing file keeps its bytes (F04)."""
        before = state.read_bytes()
        monkeypatch.setenv("RELAYBURN_FAULTS", "state_write=enospc")
        from relayburnd import faults

        faults.reset()
        with pytest.raises(OSError, match="no space left"):
            atomic_write_bytes(state, state_doc(5000))
        assert state.read_bytes() == before

    def test_previous_version_is_kept(self, tmp_path: Path) -> None:
        """Each write keeps the version it replaced as ``<name>.prev``, and nothing else."""
        (tmp_path / "state").mkdir()
        path = tmp_path / "state" / "cursors.json"
        atomic_write_bytes(path, state_doc(1))
        atomic_write_bytes(path, state_doc(2))
        assert offsets_of(msgspec.json.decode(path.with_name("cursors.json.prev").read_bytes())) \
            == {1}
        assert offsets_of(msgspec.json.decode(path.read_bytes())) == {2}
        assert siblings(path) == ["cursors.json", "cursors.json.prev"]


CORRUPT = {
    "empty": b"",
    "nul-filled": b"\0" * 4096,
    "truncated-json": b'{"version":1,"files":{"/x.jsonl":{"dev',
    "wrong-version": b'{"version": 99, "files": {}, "polls": {}}',
    "not-an-object": b"[1, 2, 3]",
    "invalid-utf8": b'{"version":1,"files":{"\xff\xfe":1}}',
}


class TestQuarantine:
    """F03: corrupt state at start is renamed aside and loading continues."""

    @pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
    def test_corrupt_state_is_renamed_aside(self, tmp_path: Path, content: bytes) -> None:
        """The corrupt file moves to ``<name>.corrupt-<time>`` with its bytes intact."""
        path = tmp_path / "cursors.json"
        path.write_bytes(content)
        loaded, quarantined = load_state(path)
        assert loaded is None
        assert len(quarantined) == 1
        aside = quarantined[0]
        assert aside.parent == tmp_path
        assert aside.name.startswith("cursors.json.corrupt-")
        assert aside.read_bytes() == content
        assert not path.exists()

    @pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
    def test_cursor_store_starts_empty_and_saves(self, tmp_path: Path, content: bytes) -> None:
        """A cursor store over corrupt state starts empty, reports the quarantine and
        writes a valid file on the next save."""
        path = tmp_path / "cursors.json"
        path.write_bytes(content)
        store = CursorStore(path).load()
        assert store.files == {}
        assert len(store.quarantined) == 1
        store.put("/logs/a.jsonl", Cursor(source="claude", dev=1, ino=2, size=3, mtime_ns=4,
                                          offset=3))
        assert store.save()
        again = CursorStore(path).load()
        assert again.files["/logs/a.jsonl"].offset == 3
        assert again.quarantined == []

    @pytest.mark.parametrize("doc", [
        {"version": 1, "files": [{"dev": 1}], "polls": {}},
        {"version": 1, "files": {}, "polls": ["claude"]},
        {"version": 1, "files": "nope"},
    ], ids=["files-list", "polls-list", "files-string"])
    def test_cursor_store_quarantines_a_misshapen_document(self, tmp_path: Path,
                                                           doc: dict[str, object]) -> None:
        """Valid JSON of the right version but the wrong shape is quarantined, not a crash."""
        path = tmp_path / "cursors.json"
        path.write_bytes(msgspec.json.encode(doc))
        store = CursorStore(path).load()
        assert store.files == {} and store.polls == {}
        assert len(store.quarantined) == 1
        assert store.quarantined[0].read_bytes() == msgspec.json.encode(doc)

    def test_an_invalid_entry_is_dropped_and_the_rest_kept(self, tmp_path: Path) -> None:
        """One malformed cursor entry is dropped; its neighbours load."""
        path = tmp_path / "cursors.json"
        good = Cursor(source="claude", dev=1, ino=2, size=3, mtime_ns=4, offset=3).to_json()
        path.write_bytes(msgspec.json.encode(
            {"version": 1, "files": {"/a": good, "/b": {"source": "claude"}, "/c": "x"}}
        ))
        store = CursorStore(path).load()
        assert list(store.files) == ["/a"]
        assert store.quarantined == []

    @pytest.mark.parametrize("odd", [
        {"state": 5}, {"state": []}, {"ino": "2"}, {"gone_since": "soon"},
    ], ids=["state-number", "state-list", "ino-string", "gone-since-string"])
    def test_an_unusual_entry_takes_the_lenient_path(self, tmp_path: Path,
                                                    odd: dict[str, object]) -> None:
        """A well-formed file loads in one typed decode; an entry that decode refuses (or
        a state that is not an object) sends the file through the lenient reading, which
        keeps what it can convert and drops the rest, as it always did."""
        path = tmp_path / "cursors.json"
        good = Cursor(source="claude", dev=1, ino=2, size=3, mtime_ns=4, offset=3,
                      state=encode_state({"tools": {"t1": "Bash"}})).to_json()
        path.write_bytes(msgspec.json.encode({"version": 1, "files": {"/a": good}}))
        assert CursorStore(path).load().files["/a"].parser_state() == {"tools": {"t1": "Bash"}}
        path.write_bytes(msgspec.json.encode(
            {"version": 1, "files": {"/a": good, "/b": {**good, **odd}}, "polls": {"o": {}}}))
        store = CursorStore(path).load()
        assert store.files["/a"].parser_state() == {"tools": {"t1": "Bash"}}
        assert store.polls == {"o": {}} and store.quarantined == []
        if "ino" in odd:
            assert store.files["/b"].ino == 2  # converted, as before
        elif odd.get("state") == []:
            assert store.files["/b"].parser_state() == {}  # empty, as before
        else:
            assert "/b" not in store.files
        for cur in store.files.values():
            assert isinstance(cur.parser_state(), dict)

    def test_quarantine_never_overwrites_an_earlier_copy(self, tmp_path: Path) -> None:
        """When ``<name>.corrupt-<time>`` already exists (two quarantines in one second),
        the new copy gets another name and the earlier one keeps its bytes."""
        path = tmp_path / "cursors.json"
        now = int(time.time())
        earlier = {tmp_path / f"cursors.json.corrupt-{t}": f"earlier {t}".encode()
                   for t in range(now - 1, now + 5)}
        for aside, data in earlier.items():
            aside.write_bytes(data)
        path.write_bytes(b"second")
        [moved] = load_state(path)[1]
        assert moved not in earlier
        assert moved.read_bytes() == b"second"
        assert all(aside.read_bytes() == data for aside, data in earlier.items())


class TestRecoveryOrder:
    """A parseable ``.new`` wins, then the file, then ``.prev``."""

    def test_parseable_new_wins_over_the_file(self, tmp_path: Path) -> None:
        """A complete temp file left by a crash is newer than the file and replaces it."""
        path = tmp_path / "cursors.json"
        atomic_write_bytes(path, state_doc(1))
        path.with_name("cursors.json.new").write_bytes(state_doc(2))
        loaded, quarantined = load_state(path)
        assert offsets_of(loaded) == {2}
        assert quarantined == []
        assert offsets_of(msgspec.json.decode(path.read_bytes())) == {2}
        assert not path.with_name("cursors.json.new").exists()

    def test_unparseable_new_is_discarded(self, tmp_path: Path) -> None:
        """A torn temp file is removed and the file is used."""
        path = tmp_path / "cursors.json"
        atomic_write_bytes(path, state_doc(1))
        path.with_name("cursors.json.new").write_bytes(state_doc(2)[:50])
        loaded, quarantined = load_state(path)
        assert offsets_of(loaded) == {1}
        assert quarantined == []
        assert not path.with_name("cursors.json.new").exists()

    def test_new_of_a_wrong_version_is_discarded(self, tmp_path: Path) -> None:
        """A temp file that parses but has another version does not replace the file."""
        path = tmp_path / "cursors.json"
        atomic_write_bytes(path, state_doc(1))
        path.with_name("cursors.json.new").write_bytes(b'{"version": 2, "files": {}}')
        assert offsets_of(load_state(path)[0]) == {1}

    def test_prev_restores_when_the_file_is_corrupt(self, tmp_path: Path) -> None:
        """A corrupt file is quarantined and the previous version is returned."""
        path = tmp_path / "cursors.json"
        atomic_write_bytes(path, state_doc(1))
        atomic_write_bytes(path, state_doc(2))
        path.write_bytes(b"\0" * 100)
        loaded, quarantined = load_state(path)
        assert offsets_of(loaded) == {1}
        assert len(quarantined) == 1

    def test_prev_restores_when_the_file_is_missing(self, tmp_path: Path) -> None:
        """With only ``.prev`` on disk, it is loaded."""
        path = tmp_path / "cursors.json"
        atomic_write_bytes(path, state_doc(1))
        atomic_write_bytes(path, state_doc(2))
        path.unlink()
        assert offsets_of(load_state(path)[0]) == {1}

    def test_nothing_on_disk_loads_nothing(self, tmp_path: Path) -> None:
        """A fresh home has no state and nothing to quarantine."""
        assert load_state(tmp_path / "cursors.json") == (None, [])

    def test_corrupt_file_and_corrupt_prev_give_no_state(self, tmp_path: Path) -> None:
        """When every copy is corrupt, loading returns nothing instead of raising."""
        path = tmp_path / "cursors.json"
        path.write_bytes(b"{")
        path.with_name("cursors.json.prev").write_bytes(b"")
        loaded, quarantined = load_state(path)
        assert loaded is None
        assert len(quarantined) == 1


_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from relayburnd.home import InstanceLock

    with InstanceLock(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.read()
    """
)


class TestInstanceLock:
    """One relayburnd per RELAYBURN_HOME."""

    def test_second_process_is_refused_with_the_holders_pid(self, tmp_path: Path) -> None:
        """While another process holds the lock, acquiring fails with one line naming its pid."""
        lock = tmp_path / "relayburnd.lock"
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(lock)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            with pytest.raises(StateError) as info:
                InstanceLock(lock).acquire()
            message = str(info.value)
            assert f"pid {holder.pid}" in message
            assert str(tmp_path) in message
            assert "\n" not in message
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=30)
        with InstanceLock(lock) as mine:
            assert lock.read_text() == str(os.getpid())
            assert mine is not None

    def test_lock_is_free_after_the_holder_is_killed(self, tmp_path: Path) -> None:
        """A SIGKILLed holder leaves no stale lock: the next process acquires it."""
        lock = tmp_path / "relayburnd.lock"
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(lock)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        holder.kill()
        holder.wait(timeout=30)
        with InstanceLock(lock):
            assert lock.read_text() == str(os.getpid())

    def test_release_lets_another_holder_in(self, tmp_path: Path) -> None:
        """After release, a new InstanceLock on the same file succeeds."""
        lock = tmp_path / "relayburnd.lock"
        first = InstanceLock(lock).acquire()
        with pytest.raises(StateError):
            InstanceLock(lock).acquire()
        first.release()
        InstanceLock(lock).acquire().release()


class TestFileLock:
    """``file_lock``: shared readers, exclusive writers, bounded waits."""

    def test_shared_holders_coexist(self, tmp_path: Path) -> None:
        """Two shared holders of the same lock file do not wait on each other."""
        lock = tmp_path / "store.lock"
        with file_lock(lock, shared=True, timeout=0.5), file_lock(lock, shared=True, timeout=0.5):
            pass

    @pytest.mark.parametrize("held_shared", [True, False], ids=["shared-held", "exclusive-held"])
    def test_exclusive_waits_then_times_out(self, tmp_path: Path, held_shared: bool) -> None:
        """An exclusive request against a held lock raises TimeoutError after the timeout."""
        lock = tmp_path / "store.lock"
        with file_lock(lock, shared=held_shared):
            start = time.monotonic()
            with pytest.raises(TimeoutError, match=str(lock)), file_lock(lock, timeout=0.3):
                pass
            waited = time.monotonic() - start
        assert 0.3 <= waited < 2.0

    def test_shared_waits_for_an_exclusive_holder(self, tmp_path: Path) -> None:
        """A shared request against an exclusive holder times out too."""
        lock = tmp_path / "store.lock"
        with file_lock(lock), pytest.raises(TimeoutError), \
                file_lock(lock, shared=True, timeout=0.1):
            pass

    def test_waiter_gets_the_lock_when_it_is_released(self, tmp_path: Path) -> None:
        """A waiting exclusive request succeeds once the holder releases within the timeout."""
        lock = tmp_path / "store.lock"
        held = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with file_lock(lock):
                held.set()
                release.wait(10)

        thread = threading.Thread(target=hold)
        thread.start()
        assert held.wait(10)
        threading.Timer(0.2, release.set).start()
        start = time.monotonic()
        with file_lock(lock, timeout=10):
            waited = time.monotonic() - start
        thread.join(10)
        assert 0.1 <= waited < 5

    def test_lock_is_released_when_the_body_raises(self, tmp_path: Path) -> None:
        """An exception inside the block releases the lock."""
        lock = tmp_path / "store.lock"
        with pytest.raises(RuntimeError), file_lock(lock):
            raise RuntimeError("boom")
        with file_lock(lock, timeout=0):
            pass

    def test_exclusive_is_held_against_another_process(self, tmp_path: Path) -> None:
        """A lock held in this process makes another process's non-blocking attempt fail."""
        lock = tmp_path / "store.lock"
        probe = textwrap.dedent(
            """
            import sys
            from pathlib import Path
            from relayburnd.home import file_lock
            try:
                with file_lock(Path(sys.argv[1]), shared=True, timeout=0.1):
                    print("acquired")
            except TimeoutError:
                print("timeout")
            """
        )
        with file_lock(lock):
            out = subprocess.run([sys.executable, "-c", probe, str(lock)],
                                 capture_output=True, text=True, timeout=60).stdout
        assert out.strip() == "timeout"
        out = subprocess.run([sys.executable, "-c", probe, str(lock)],
                             capture_output=True, text=True, timeout=60).stdout
        assert out.strip() == "acquired"


class TestFaultPoints:
    """``RELAYBURN_FAULTS`` fires at the named step, on the chosen hits only."""

    def _plan(self, monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
        from relayburnd import faults

        monkeypatch.setenv("RELAYBURN_FAULTS", spec)
        faults.reset()

    def _fires(self, name: str) -> bool:
        from relayburnd import faults

        try:
            faults.hit(name)
        except OSError:
            return True
        return False

    def test_unset_never_fires(self) -> None:
        """Without RELAYBURN_FAULTS every hit is a no-op."""
        assert not any(self._fires("state_write") for _ in range(5))

    def test_every_hit_fires_without_a_count(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``name=eio`` raises EIO at every hit of that name and nowhere else."""
        self._plan(monkeypatch, "state_write=eio")
        assert [self._fires("state_write") for _ in range(3)] == [True, True, True]
        assert not self._fires("after_ledger_write")

    def test_nth_hit_only(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``@3`` fires on the third hit only."""
        self._plan(monkeypatch, "state_write=enospc@3")
        assert [self._fires("state_write") for _ in range(5)] == [False, False, True, False, False]

    def test_from_the_nth_hit_on(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``@2+`` fires on the second hit and every later one."""
        self._plan(monkeypatch, " other = eio ; state_write=enospc@2+ ;junk")
        assert [self._fires("state_write") for _ in range(4)] == [False, True, True, True]
        assert self._fires("other")

    def test_sleep_action_waits(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``sleep:<s>`` pauses the caller for that long."""
        from relayburnd import faults

        self._plan(monkeypatch, "state_write=sleep:0.2")
        start = time.monotonic()
        faults.hit("state_write")
        assert time.monotonic() - start >= 0.2


class TestHomeLayout:
    """``HomeLayout.ensure`` creates the home or explains why it cannot."""

    def test_creates_home_and_content_dir_private(self, tmp_path: Path) -> None:
        """A missing home is created with mode 0700, with its content directory."""
        layout = HomeLayout(tmp_path / "a" / "b").ensure()
        assert layout.content_dir.is_dir()
        assert layout.root.stat().st_mode & 0o777 == 0o700

    def test_home_below_a_file_is_a_one_line_state_error(self, tmp_path: Path) -> None:
        """A home that cannot be created raises StateError naming it and the fix."""
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(StateError) as info:
            HomeLayout(blocker / "home").ensure()
        message = str(info.value)
        assert str(blocker / "home") in message
        assert "RELAYBURN_HOME" in message
        assert "\n" not in message
