"""``cursors.journal``: checkpoints append what changed; the snapshot is rewritten rarely.

Why: ``cursors.json`` lists every file ever read with its parser state, so writing
it whole at every checkpoint cost disk writes in proportion to the history, not to
what changed. These tests pin the journal's contract: what a load returns, when the
snapshot is rewritten, and that a torn, stale or failed journal write only ever
makes files be read again (older acknowledged cursors), never loses a cursor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from relayburnd import cursors as cursors_module
from relayburnd import faults
from relayburnd.cursors import CursorStore, journal_path, merged_doc
from relayburnd.tail import Cursor, encode_state


def cursor(offset: int, *, ino: int = 1, tools: int = 0) -> Cursor:
    state = {"tools": {f"toolu_{i:06d}": "Bash" for i in range(tools)}} if tools else {}
    return Cursor(source="claude", dev=1, ino=ino, size=offset, mtime_ns=offset,
                  offset=offset, state=encode_state(state))


def offsets(store: CursorStore) -> dict[str, int]:
    return {k: c.offset for k, c in store.files.items()}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cursors.json"


@pytest.fixture
def saved(path: Path) -> CursorStore:
    """A store of 50 files whose first save wrote the snapshot."""
    store = CursorStore(path).load()
    for i in range(50):
        store.put(f"/logs/{i:02d}.jsonl", cursor(100, ino=i))
    store.save()
    assert store.last_save_kind == "snapshot"
    return store


class TestJournal:
    def test_first_save_writes_the_snapshot_then_changes_are_appended(
        self, path: Path, saved: CursorStore
    ) -> None:
        snapshot = path.read_bytes()
        saved.put("/logs/07.jsonl", cursor(200, ino=7))
        assert saved.save()
        assert saved.last_save_kind == "journal"
        assert path.read_bytes() == snapshot
        line = journal_path(path).read_bytes()
        assert line.count(b"\n") == 1 and b"/logs/07.jsonl" in line
        assert b"/logs/08.jsonl" not in line
        assert offsets(CursorStore(path).load()) == offsets(saved)

    def test_a_checkpoint_writes_what_changed_not_the_history(self, path: Path) -> None:
        """One changed cursor among 2,000 long sessions: a line, not megabytes."""
        store = CursorStore(path).load()
        for i in range(2000):
            store.put(f"/logs/{i:04d}.jsonl", cursor(100, ino=i, tools=50))
        store.save()
        snapshot = path.stat().st_size
        assert snapshot > 2_000_000
        for n in range(10):
            store.put("/logs/0007.jsonl", cursor(200 + n, ino=7, tools=50))
            store.save()
        assert store.last_save_kind == "journal"
        assert journal_path(path).stat().st_size < 10 * 3000
        assert path.stat().st_size == snapshot
        assert CursorStore(path).load().files["/logs/0007.jsonl"].offset == 209

    def test_drops_and_polls_are_journalled(self, path: Path, saved: CursorStore) -> None:
        saved.drop("/logs/03.jsonl")
        saved.put_poll_state("opencode", {"db": {"max_time": 5}})
        saved.save()
        assert saved.last_save_kind == "journal"
        again = CursorStore(path).load()
        assert "/logs/03.jsonl" not in again.files and len(again.files) == 49
        assert again.poll_state("opencode") == {"db": {"max_time": 5}}

    def test_gone_marks_are_journalled(self, path: Path, saved: CursorStore) -> None:
        saved.mark_seen(set(), now=1000.0)  # none of the /logs files exist
        saved.save()
        assert saved.last_save_kind == "journal"
        assert {c.gone_since for c in CursorStore(path).load().files.values()} == {1000.0}

    def test_the_snapshot_is_rewritten_once_the_journal_outgrows_it(
        self, path: Path, saved: CursorStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(cursors_module, "COMPACT_MIN_BYTES", 0)
        kinds = []
        for n in range(200):
            saved.put(f"/logs/{n % 50:02d}.jsonl", cursor(1000 + n, ino=n % 50))
            saved.save()
            kinds.append(saved.last_save_kind)
            assert journal_path(path).exists() == (saved.last_save_kind == "journal")
            if journal_path(path).exists():
                assert journal_path(path).stat().st_size <= path.stat().st_size
        assert "snapshot" in kinds and kinds.count("journal") > 100
        doc = msgspec.json.decode(path.read_bytes())
        assert doc["gen"] > 1
        assert offsets(CursorStore(path).load()) == offsets(saved)

    def test_force_rewrites_the_snapshot(self, path: Path, saved: CursorStore) -> None:
        saved.put("/logs/01.jsonl", cursor(300, ino=1))
        saved.save()
        assert journal_path(path).exists()
        assert saved.save(force=True)
        assert saved.last_save_kind == "snapshot"
        assert not journal_path(path).exists()
        assert CursorStore(path).load().files["/logs/01.jsonl"].offset == 300

    def test_merged_doc_is_what_a_load_gives(self, path: Path, saved: CursorStore) -> None:
        saved.put("/logs/01.jsonl", cursor(300, ino=1))
        saved.drop("/logs/02.jsonl")
        saved.save()
        doc = merged_doc(path)
        assert doc is not None
        assert {k: v["offset"] for k, v in doc["files"].items()} == offsets(saved)


class TestDamage:
    def test_a_torn_last_line_is_skipped_and_the_snapshot_rewritten(
        self, path: Path, saved: CursorStore
    ) -> None:
        saved.put("/logs/01.jsonl", cursor(300, ino=1))
        saved.save()
        with open(journal_path(path), "ab") as fh:
            fh.write(b'{"gen":1,"files":{"/logs/02.jsonl":{"sou')
        again = CursorStore(path).load()
        assert again.files["/logs/01.jsonl"].offset == 300  # the complete line counts
        assert again.files["/logs/02.jsonl"].offset == 100  # the torn one does not
        again.put("/logs/05.jsonl", cursor(400, ino=5))
        again.save()
        assert again.last_save_kind == "snapshot"
        assert not journal_path(path).exists()
        final = CursorStore(path).load()
        assert final.files["/logs/01.jsonl"].offset == 300
        assert final.files["/logs/05.jsonl"].offset == 400

    def test_lines_of_another_generation_are_skipped(self, path: Path,
                                                     saved: CursorStore) -> None:
        """A crash between a snapshot rewrite and the journal's removal leaves lines
        that continue the replaced snapshot: the new one already holds them."""
        saved.put("/logs/01.jsonl", cursor(300, ino=1))
        saved.save()
        stale = journal_path(path).read_bytes()
        saved.save(force=True)
        journal_path(path).write_bytes(stale.replace(b'"offset":300', b'"offset":7'))
        again = CursorStore(path).load()
        assert again.files["/logs/01.jsonl"].offset == 300
        again.put("/logs/09.jsonl", cursor(500, ino=9))
        again.save()
        assert again.last_save_kind == "snapshot"

    def test_a_journal_without_a_snapshot_is_ignored(self, path: Path) -> None:
        journal_path(path).write_bytes(msgspec.json.encode(
            {"gen": 1, "files": {"/logs/x.jsonl": cursor(5)}}) + b"\n")
        store = CursorStore(path).load()
        assert store.files == {}
        store.put("/logs/y.jsonl", cursor(6))
        store.save()
        assert store.last_save_kind == "snapshot"
        assert not journal_path(path).exists()

    def test_an_older_snapshot_without_a_generation_is_read_and_rewritten(
        self, path: Path
    ) -> None:
        """cursors.json as the previous release wrote it (no ``gen``)."""
        path.write_bytes(msgspec.json.encode({
            "version": 1, "files": {"/logs/a.jsonl": cursor(42)}, "polls": {}}))
        store = CursorStore(path).load()
        assert offsets(store) == {"/logs/a.jsonl": 42}
        store.put("/logs/b.jsonl", cursor(43, ino=2))
        store.save()
        assert store.last_save_kind == "snapshot"
        assert msgspec.json.decode(path.read_bytes())["gen"] == 1

    def test_a_failed_append_keeps_the_changes_for_a_snapshot(
        self, path: Path, saved: CursorStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ENOSPC on the journal (F04): the call raises, nothing on disk is lost, and the
        next save writes the snapshot with every change since the last good one."""
        saved.put("/logs/01.jsonl", cursor(300, ino=1))
        monkeypatch.setenv("RELAYBURN_FAULTS", "state_write=enospc@1")
        faults.reset()
        try:
            with pytest.raises(OSError, match="no space left"):
                saved.save()
            assert saved.dirty
            saved.put("/logs/02.jsonl", cursor(301, ino=2))
            assert saved.save()
            assert saved.last_save_kind == "snapshot"
        finally:
            monkeypatch.delenv("RELAYBURN_FAULTS")
            faults.reset()
        again = CursorStore(path).load()
        assert again.files["/logs/01.jsonl"].offset == 300
        assert again.files["/logs/02.jsonl"].offset == 301


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from relayburnd.cursors import CursorStore
    from relayburnd.tail import Cursor

    store = CursorStore(Path(sys.argv[1])).load()
    for n in range(1, 4):
        for i in range(50):
            store.put(f"/logs/{i:02d}.jsonl",
                      Cursor(source="claude", dev=1, ino=i, size=100 * n, mtime_ns=0,
                             offset=100 * n))
        store.save()
    print("saved")
    """
)


@pytest.mark.parametrize("nth", [2, 3])
def test_a_kill_in_the_middle_of_an_append_leaves_the_cursors_before_it(
    path: Path, nth: int
) -> None:
    """SIGKILL with half a journal line written: a load gives the cursors of the last
    complete checkpoint, and the store can save again."""
    proc = subprocess.run(
        [sys.executable, "-c", _WRITER, str(path)], capture_output=True, text=True,
        env=dict(os.environ, RELAYBURN_FAULTS=f"journal_mid_write=kill@{nth - 1}"), timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not journal_path(path).read_bytes().endswith(b"\n")
    store = CursorStore(path).load()
    assert set(offsets(store).values()) == {100 * (nth - 1)}
    store.put("/logs/00.jsonl", cursor(999))
    store.save()
    assert store.last_save_kind == "snapshot"
    assert CursorStore(path).load().files["/logs/00.jsonl"].offset == 999


def test_a_line_with_a_state_that_is_not_an_object_is_skipped(path: Path,
                                                              saved: CursorStore) -> None:
    """The parser gets its state as an object; a line that says otherwise is not applied."""
    saved.put("/logs/01.jsonl", cursor(300, ino=1))
    saved.save()
    line = msgspec.json.encode({"gen": 1, "files": {"/logs/02.jsonl": {
        "source": "claude", "dev": 1, "ino": 2, "size": 9, "mtime_ns": 9, "offset": 9,
        "state": [1, 2]}}}) + b"\n"
    with open(journal_path(path), "ab") as fh:
        fh.write(line)
    again = CursorStore(path).load()
    assert again.files["/logs/01.jsonl"].offset == 300
    assert again.files["/logs/02.jsonl"].offset == 100
    assert again.files["/logs/02.jsonl"].parser_state() == {}
