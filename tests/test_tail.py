"""Tailing: cursor identity (F16-F21), complete lines only (F12), over-long lines (F14),
and a model-based test of write / rotate / truncate / delete / restart / read."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from relayburnd import tail
from relayburnd.cursors import GONE_TTL, CursorStore
from relayburnd.tail import (
    Cursor,
    Resume,
    encode_state,
    iter_chunks,
    make_cursor,
    resume_point,
)

SHM = Path("/dev/shm")


def tmpfs_dir() -> str | None:
    """A directory on tmpfs, where a freed inode number is reused at once, if there is one."""
    return str(SHM) if SHM.is_dir() and os.access(SHM, os.W_OK) else None


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def fake_stat(st: os.stat_result, **changes: int) -> os.stat_result:
    """A copy of ``st`` with some fields replaced (``st_dev``, ``st_ino``, ...)."""
    names = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
             "st_atime", "st_mtime", "st_ctime")
    values = [changes.get(n, getattr(st, n)) for n in names]
    extra = {n: changes.get(n, getattr(st, n))
             for n in ("st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize", "st_blocks")}
    return os.stat_result(values, extra)


@dataclass
class Read:
    """What one read of a file delivered."""

    resume: Resume
    lines: list[tuple[int, bytes]] = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)
    cursor: Cursor | None = None


def lines_of(chunk: tail.Chunk, max_record_bytes: int) -> list[tuple[int, bytes]]:
    """The delivered lines of a chunk with their absolute offsets; blanked lines dropped."""
    if not chunk.data:
        assert chunk.skipped and chunk.end == chunk.skipped[-1][0] + chunk.skipped[-1][1]
        return []
    assert chunk.end - chunk.offset == len(chunk.data)
    assert chunk.data.endswith(b"\n")
    blanked = {off for off, _ in chunk.skipped}
    out: list[tuple[int, bytes]] = []
    pos = 0
    for line in chunk.data.splitlines(keepends=True):
        off = chunk.offset + pos
        if off in blanked:
            assert line.strip(b" ") == b"\n"
        else:
            assert len(line) <= max_record_bytes
            out.append((off, line))
        pos += len(line)
    return out


def read_file(
    path: Path,
    cursor: Cursor | None,
    *,
    chunk_bytes: int = 1 << 20,
    max_record_bytes: int = 1 << 20,
) -> Read:
    """Read ``path`` past ``cursor`` the way an ingest pass does; returns the new cursor."""
    with path.open("rb") as fh:
        st = os.fstat(fh.fileno())
        res = resume_point(fh, st, cursor)
        out = Read(res)
        offset = res.offset
        for chunk in iter_chunks(fh, offset, chunk_bytes=chunk_bytes,
                                 max_record_bytes=max_record_bytes, limit=st.st_size):
            assert chunk.offset == offset
            assert len(chunk.data) <= chunk_bytes + max_record_bytes
            out.lines.extend(lines_of(chunk, max_record_bytes))
            out.skipped.extend(chunk.skipped)
            offset = chunk.end
        out.cursor = make_cursor("test", fh, st, offset, dict(res.state))
    return out


def texts(read: Read) -> list[bytes]:
    return [line for _, line in read.lines]


# ---------------------------------------------------------------- identity


class TestResumePoint:
    """``resume_point`` decides resume / new / replaced / truncated / device-changed."""

    def test_no_cursor_is_a_new_file(self, tmp_path: Path) -> None:
        """A file without a cursor is read from 0."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"a\n")
        assert read_file(path, None).resume == Resume(0, {}, "new")

    def test_appended_file_resumes_at_the_offset_with_its_state(self, tmp_path: Path) -> None:
        """Appending keeps identity: reading resumes at the offset with the parser state."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"one\ntwo\n")
        first = read_file(path, None)
        assert first.cursor is not None
        first.cursor.state = encode_state({"open": ["msg_1"]})
        append(path, b"three\n")
        second = read_file(path, first.cursor)
        assert second.resume == Resume(8, {"open": ["msg_1"]}, "resume")
        assert second.lines == [(8, b"three\n")]

    def test_resumed_state_is_a_copy(self, tmp_path: Path) -> None:
        """Changing the returned state does not change the stored cursor."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"a\n")
        with path.open("rb") as fh:
            cur = make_cursor("test", fh, os.fstat(fh.fileno()), 2, {"k": 1})
            res = resume_point(fh, os.fstat(fh.fileno()), cur)
        res.state["k"] = 2
        assert cur.parser_state() == {"k": 1}

    def test_new_inode_at_the_path_is_replaced(self, tmp_path: Path) -> None:
        """A file renamed over the path (another inode) is read from 0 (F16)."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"one\ntwo\n")
        cur = read_file(path, None).cursor
        other = tmp_path / "other"
        other.write_bytes(b"one\ntwo\nthree\n")
        os.replace(other, path)
        again = read_file(path, cur)
        assert again.resume.reason == "replaced"
        assert texts(again) == [b"one\n", b"two\n", b"three\n"]

    def test_rotated_file_keeps_its_identity_under_the_new_name(self, tmp_path: Path) -> None:
        """After ``mv s.jsonl s.jsonl.1`` the old cursor still resumes the renamed file (F16)."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"one\n")
        cur = read_file(path, None).cursor
        append(path, b"two\n")
        rotated = tmp_path / "s.jsonl.1"
        path.rename(rotated)
        path.write_bytes(b"fresh\n")
        old = read_file(rotated, cur)
        assert old.resume.reason == "resume" and texts(old) == [b"two\n"]
        new = read_file(path, cur)
        assert new.resume.reason == "replaced" and texts(new) == [b"fresh\n"]

    def test_rewritten_head_is_replaced(self, tmp_path: Path) -> None:
        """Same inode and size, different first bytes: a new file, read from 0."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"aaaa\nbbbb\n")
        cur = read_file(path, None).cursor
        with path.open("r+b") as fh:
            fh.write(b"AAAA\nBBBB\ncccc\n")
        again = read_file(path, cur)
        assert again.resume.reason == "replaced"
        assert texts(again) == [b"AAAA\n", b"BBBB\n", b"cccc\n"]

    def test_shrunk_below_the_offset_is_truncated(self, tmp_path: Path) -> None:
        """A file shorter than the offset is read from 0 (F17)."""
        header = b"h" * 2000 + b"\n"
        path = tmp_path / "s.jsonl"
        path.write_bytes(header + b"one\ntwo\n")
        cur = read_file(path, None).cursor
        os.truncate(path, len(header))
        append(path, b"x\n")
        again = read_file(path, cur)
        assert again.resume == Resume(0, {}, "truncated")
        assert texts(again) == [header, b"x\n"]

    def test_truncate_to_zero_is_detected(self, tmp_path: Path) -> None:
        """copytruncate: after truncation to 0 the new lines are read from 0 (F17)."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"one\ntwo\n")
        cur = read_file(path, None).cursor
        os.truncate(path, 0)
        append(path, b"new\n")
        again = read_file(path, cur)
        assert again.resume.offset == 0
        assert texts(again) == [b"new\n"]

    def test_regrown_past_the_offset_with_the_same_head_is_truncated(
        self, tmp_path: Path
    ) -> None:
        """F18: rewritten while nobody watched, longer than the cursor, sharing the first
        kilobyte: the hash before the offset catches it and everything is read again."""
        header = b'{"type":"summary","text":"' + b"s" * 1100 + b'"}\n'
        path = tmp_path / "s.jsonl"
        path.write_bytes(header + b'{"n":1}\n{"n":2}\n')
        cur = read_file(path, None).cursor
        assert cur is not None and cur.head_len == tail.HEAD_BYTES
        os.truncate(path, 0)
        append(path, header + b'{"n":7}\n{"n":8}\n{"n":9}\n' * 3)
        assert path.stat().st_size > cur.offset
        again = read_file(path, cur)
        assert again.resume == Resume(0, {}, "truncated")
        assert texts(again)[:3] == [header, b'{"n":7}\n', b'{"n":8}\n']
        assert len(again.lines) == 10

    def test_regrown_past_the_offset_with_another_head_is_replaced(
        self, tmp_path: Path
    ) -> None:
        """F18 with different first bytes: the head hash catches it."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b'{"n":1}\n{"n":2}\n')
        cur = read_file(path, None).cursor
        os.truncate(path, 0)
        append(path, b'{"n":3}\n' * 10)
        again = read_file(path, cur)
        assert again.resume.reason == "replaced"
        assert len(again.lines) == 10

    def test_only_the_device_changed_resumes(self, tmp_path: Path) -> None:
        """Same inode and content under another st_dev (remount): the offset is kept."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"one\ntwo\n")
        cur = read_file(path, None).cursor
        assert cur is not None
        with path.open("rb") as fh:
            st = fake_stat(os.fstat(fh.fileno()), st_dev=cur.dev + 1)
            res = resume_point(fh, st, cur)
        assert res == Resume(8, {}, "device-changed")

    def test_device_and_inode_changed_is_replaced(self, tmp_path: Path) -> None:
        """A different device and inode is a different file even with identical bytes."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"one\ntwo\n")
        cur = read_file(path, None).cursor
        assert cur is not None
        with path.open("rb") as fh:
            st = fake_stat(os.fstat(fh.fileno()), st_dev=cur.dev + 1, st_ino=cur.ino + 1)
            assert resume_point(fh, st, cur).reason == "replaced"

    def test_device_changed_with_other_content_is_replaced(self, tmp_path: Path) -> None:
        """A new device with the same inode number but other bytes is a new file."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"one\ntwo\n")
        cur = read_file(path, None).cursor
        assert cur is not None
        path.write_bytes(b"uno\ndos\n")
        with path.open("rb") as fh:
            st = fake_stat(os.fstat(fh.fileno()), st_dev=cur.dev + 1, st_ino=cur.ino)
            assert resume_point(fh, st, cur).reason == "replaced"

    def test_cursor_survives_json_round_trip(self, tmp_path: Path) -> None:
        """A cursor saved and loaded through CursorStore resumes exactly like the original."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"one\ntwo\n")
        cur = read_file(path, None).cursor
        assert cur is not None
        cur.state = encode_state({"pending": {"msg": 3}})
        cur.pending = True
        store = CursorStore(tmp_path / "cursors.json")
        store.put(str(path), cur)
        store.save()
        loaded = CursorStore(tmp_path / "cursors.json").load().get(str(path))
        assert loaded == cur
        append(path, b"three\n")
        assert read_file(path, loaded).resume == Resume(8, {"pending": {"msg": 3}}, "resume")


class TestInodeReuse:
    """F20: a deleted file's inode number given to a new file does not resume the old offset."""

    def _reuse(self, directory: Path, old_ino: int) -> Path | None:
        path = directory / "s.jsonl"
        for _ in range(200):
            path.write_bytes(b"")
            if path.stat().st_ino == old_ino:
                return path
            path.unlink()
        return None

    def test_new_file_with_a_reused_inode_is_read_from_zero(self, tmp_path: Path) -> None:
        """Unlink and create until the inode repeats (tmpfs) or present the old inode
        in the stat; either way all lines of the longer new file are delivered."""
        directory = Path(tempfile.mkdtemp(dir=tmpfs_dir()))
        try:
            path = directory / "s.jsonl"
            path.write_bytes(b'{"old":1}\n{"old":2}\n')
            cur = read_file(path, None).cursor
            assert cur is not None
            path.unlink()
            reused = self._reuse(directory, cur.ino)
            new_lines = [b'{"new":%d}\n' % i for i in range(20)]
            if reused is not None:
                append(reused, b"".join(new_lines))
                again = read_file(reused, cur)
                assert again.resume.reason == "replaced"
                assert texts(again) == new_lines
            path = directory / "s.jsonl"
            path.write_bytes(b"".join(new_lines))
            with path.open("rb") as fh:
                st = fake_stat(os.fstat(fh.fileno()), st_ino=cur.ino, st_dev=cur.dev)
                res = resume_point(fh, st, cur)
            assert res.reason == "replaced" and res.offset == 0
        finally:
            shutil.rmtree(directory)

    def test_reused_inode_with_a_shared_first_kilobyte_is_truncated(self) -> None:
        """Even when old and new files share a long header, the bytes before the offset
        differ, so the new file is read from 0."""
        directory = Path(tempfile.mkdtemp(dir=tmpfs_dir()))
        try:
            header = b'{"header":"' + b"x" * 1200 + b'"}\n'
            path = directory / "s.jsonl"
            path.write_bytes(header + b'{"old":1}\n')
            cur = read_file(path, None).cursor
            assert cur is not None
            path.unlink()
            path.write_bytes(header + b'{"new":1}\n{"new":2}\n')
            with path.open("rb") as fh:
                st = fake_stat(os.fstat(fh.fileno()), st_ino=cur.ino, st_dev=cur.dev)
                res = resume_point(fh, st, cur)
            assert res == Resume(0, {}, "truncated")
        finally:
            shutil.rmtree(directory)


class TestIdenticalPrefix:
    """F21: two files with identical first bytes are tracked independently."""

    def test_copied_session_files_are_both_fully_read(self, tmp_path: Path) -> None:
        """``cp a b`` then different appends: each file delivers all of its own lines, and
        a cursor of one never resumes the other although their first kilobyte is equal."""
        header = b'{"type":"summary","text":"' + b"s" * 1100 + b'"}\n'
        a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
        a.write_bytes(header + b'{"n":2}\n')
        cur_a = read_file(a, None).cursor
        shutil.copyfile(a, b)
        append(a, b'{"a":3}\n')
        append(b, b'{"b":3}\n{"b":4}\n')
        assert cur_a is not None
        read_a = read_file(a, cur_a)
        read_b = read_file(b, None)
        assert texts(read_a) == [b'{"a":3}\n']
        assert texts(read_b) == [header, b'{"n":2}\n', b'{"b":3}\n', b'{"b":4}\n']
        assert read_a.cursor is not None and read_b.cursor is not None
        assert read_a.cursor.head_sha == read_b.cursor.head_sha
        assert read_a.cursor.ino != read_b.cursor.ino
        assert read_file(b, read_a.cursor).resume.reason == "replaced"
        assert read_file(a, read_b.cursor).resume.reason == "replaced"


class TestCursorStore:
    """``cursors.json``: saved when changed, entries of vanished files aged out."""

    def _cursor(self, offset: int = 10) -> Cursor:
        return Cursor(source="claude", dev=1, ino=2, size=offset, mtime_ns=3, offset=offset)

    def test_saves_only_when_something_changed(self, tmp_path: Path) -> None:
        """``save`` writes after a change and is a no-op otherwise."""
        store = CursorStore(tmp_path / "cursors.json").load()
        assert store.save() is False and not store.path.exists()
        store.put("/a", self._cursor())
        assert store.save() is True
        before = store.path.stat().st_mtime_ns
        assert store.save() is False
        store.put_poll_state("opencode", {"db": 1})
        assert store.save() is True
        store.put_poll_state("opencode", {"db": 1})
        assert store.dirty is False
        assert store.path.stat().st_mtime_ns >= before

    def test_round_trip_keeps_files_and_polls(self, tmp_path: Path) -> None:
        """Cursors and poll states come back equal after a save and load."""
        store = CursorStore(tmp_path / "cursors.json")
        store.put("/a", self._cursor(5))
        store.put_poll_state("opencode", {"mark": [1, "x"]})
        store.save()
        loaded = CursorStore(tmp_path / "cursors.json").load()
        assert loaded.get("/a") == self._cursor(5)
        assert loaded.poll_state("opencode") == {"mark": [1, "x"]}
        assert msgspec.json.decode(store.path.read_bytes())["version"] == 1

    def test_fields_at_their_defaults_are_left_out_and_read_back(self, tmp_path: Path) -> None:
        """An entry omits fields at their defaults (offset 0, no state, not pending, not
        gone) and loads equal; set fields, ``gone_since`` included, are written."""
        store = CursorStore(tmp_path / "cursors.json")
        fresh = Cursor(source="claude", dev=1, ino=2, size=0, mtime_ns=3)
        gone = self._cursor(7)
        gone.gone_since = 1234.5
        gone.pending = True
        store.put("/fresh", fresh)
        store.put("/gone", gone)
        store.save()
        files = msgspec.json.decode(store.path.read_bytes())["files"]
        assert files["/fresh"] == {"source": "claude", "dev": 1, "ino": 2, "size": 0,
                                   "mtime_ns": 3}
        assert files["/gone"]["gone_since"] == 1234.5 and files["/gone"]["pending"] is True
        assert list(files) == ["/fresh", "/gone"]  # sorted by path
        loaded = CursorStore(tmp_path / "cursors.json").load()
        assert loaded.get("/fresh") == fresh and loaded.get("/gone") == gone

    def test_parser_states_are_held_as_json_until_their_file_is_read(
        self, tmp_path: Path
    ) -> None:
        """The daemon keeps the cursor of every file ever read: their states stay the
        bytes they were loaded as (a third of their size as objects), and each read
        decodes a fresh copy."""
        state = {"tools": {f"toolu_{i}": "Bash" for i in range(50)}, "agents": ["a|"]}
        store = CursorStore(tmp_path / "cursors.json")
        store.put("/a", Cursor(source="claude", dev=1, ino=2, size=9, mtime_ns=3, offset=9,
                               state=encode_state(state)))
        store.save()
        loaded = CursorStore(tmp_path / "cursors.json").load().get("/a")
        assert loaded is not None and isinstance(loaded.state, msgspec.Raw)
        assert bytes(loaded.state) == msgspec.json.encode(state)
        first = loaded.parser_state()
        first["tools"].clear()
        assert loaded.parser_state() == state

    def test_vanished_file_is_dropped_after_the_ttl(self, tmp_path: Path) -> None:
        """A file that disappeared is remembered for GONE_TTL seconds, then dropped."""
        gone = str(tmp_path / "gone.jsonl")
        store = CursorStore(tmp_path / "cursors.json")
        store.put(gone, self._cursor())
        store.mark_seen(set(), now=1000.0)
        assert store.files[gone].gone_since == 1000.0
        store.mark_seen(set(), now=1000.0 + GONE_TTL)
        assert store.get(gone) is not None
        store.mark_seen(set(), now=1001.0 + GONE_TTL)
        assert store.get(gone) is None

    def test_pending_records_keep_a_vanished_file(self, tmp_path: Path) -> None:
        """A cursor still holding unsent records is never aged out."""
        gone = str(tmp_path / "gone.jsonl")
        store = CursorStore(tmp_path / "cursors.json")
        cur = self._cursor()
        cur.pending = True
        store.put(gone, cur)
        store.mark_seen(set(), now=0.0)
        store.mark_seen(set(), now=10 * GONE_TTL)
        assert store.get(gone) is not None

    def test_a_file_seen_again_is_no_longer_gone(self, tmp_path: Path) -> None:
        """A file that comes back (or was only missing from one scan) loses its mark."""
        path = tmp_path / "back.jsonl"
        store = CursorStore(tmp_path / "cursors.json")
        store.put(str(path), self._cursor())
        store.mark_seen(set(), now=0.0)
        path.write_bytes(b"x\n")
        store.mark_seen({str(path)}, now=2 * GONE_TTL)
        assert store.files[str(path)].gone_since is None

    def test_bytes_behind_counts_unread_bytes(self, tmp_path: Path) -> None:
        """Bytes on disk past each acknowledged offset, for files that still exist."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"a" * 25)
        store = CursorStore(tmp_path / "cursors.json")
        store.put(str(path), self._cursor(10))
        store.put(str(tmp_path / "missing"), self._cursor(10))
        assert store.bytes_behind() == {str(path): 15}


# ---------------------------------------------------------------- complete lines


class TestPartialLine:
    """F12 at the tail level: a partial last line is never consumed, then read once."""

    def test_partial_line_waits_and_is_completed_once(self, tmp_path: Path) -> None:
        """The cursor stops at the partial line's start; once completed it is read exactly once,
        also after the cursor went through cursors.json (a restart)."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b'{"n":1}\n{"type":"assistant","x":"')
        first = read_file(path, None, chunk_bytes=5)
        assert texts(first) == [b'{"n":1}\n']
        assert first.cursor is not None and first.cursor.offset == 8
        again = read_file(path, first.cursor)
        assert again.lines == [] and again.cursor is not None and again.cursor.offset == 8
        store = CursorStore(tmp_path / "cursors.json")
        store.put(str(path), again.cursor)
        store.save()
        restored = CursorStore(tmp_path / "cursors.json").load().get(str(path))
        append(path, b'tail"}\n')
        done = read_file(path, restored, chunk_bytes=5)
        assert done.resume.reason == "resume"
        assert done.lines == [(8, b'{"type":"assistant","x":"tail"}\n')]
        assert done.cursor is not None
        assert read_file(path, done.cursor).lines == []

    def test_file_without_any_newline_yields_nothing(self, tmp_path: Path) -> None:
        """A file that is one unterminated line produces no chunk at all."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b'{"a":1}')
        with path.open("rb") as fh:
            assert list(iter_chunks(fh, 0)) == []

    def test_crlf_lines_keep_their_carriage_return(self, tmp_path: Path) -> None:
        """CRLF files split on LF; a chunk boundary between CR and LF changes nothing."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b'{"a":1}\r\n{"b":2}\r\n{"c":')
        for size in range(1, 12):
            read = read_file(path, None, chunk_bytes=size)
            assert read.lines == [(0, b'{"a":1}\r\n'), (9, b'{"b":2}\r\n')]
            assert read.cursor is not None and read.cursor.offset == 18

    def test_limit_stops_before_bytes_written_later(self, tmp_path: Path) -> None:
        """With ``limit`` a line that crosses it is treated as partial."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"aa\nbb\ncc\n")
        with path.open("rb") as fh:
            chunks = list(iter_chunks(fh, 0, limit=7))
        assert b"".join(c.data for c in chunks) == b"aa\nbb\n"
        assert chunks[-1].end == 6


line_st = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")).map(lambda b: b + b"\n")


class TestIterChunks:
    """``iter_chunks`` yields exactly the complete lines, in order, at any chunk size."""

    @settings(max_examples=200, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(lines=st.lists(line_st, max_size=30), partial=st.binary(max_size=30),
           chunk_bytes=st.integers(1, 100), start_line=st.integers(0, 30))
    def test_chunks_are_exactly_the_complete_lines(
        self, tmp_path: Path, lines: list[bytes], partial: bytes, chunk_bytes: int,
        start_line: int,
    ) -> None:
        """Concatenated chunk data from a line start is the complete part of the file,
        chunk offsets are contiguous and every chunk ends at a newline."""
        partial = partial.replace(b"\n", b"")
        path = tmp_path / "chunks.jsonl"
        path.write_bytes(b"".join(lines) + partial)
        start_line = min(start_line, len(lines))
        start = sum(len(x) for x in lines[:start_line])
        with path.open("rb") as fh:
            chunks = list(iter_chunks(fh, start, chunk_bytes=chunk_bytes,
                                      max_record_bytes=1 << 20))
        pos = start
        for chunk in chunks:
            assert chunk.offset == pos and chunk.skipped == []
            assert chunk.data.endswith(b"\n") and chunk.end == pos + len(chunk.data)
            pos = chunk.end
        assert b"".join(c.data for c in chunks) == b"".join(lines[start_line:])

    @settings(max_examples=200, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(lengths=st.lists(st.integers(1, 120), max_size=25), partial=st.integers(0, 120),
           chunk_bytes=st.integers(1, 64), max_record_bytes=st.integers(1, 60))
    def test_over_long_lines_are_skipped_with_exact_offsets(
        self, tmp_path: Path, lengths: list[int], partial: int, chunk_bytes: int,
        max_record_bytes: int,
    ) -> None:
        """Lines longer than the limit (newline included) are reported once as (offset,
        length) and never delivered; every other complete line is delivered intact."""
        lines = [(b"%d:" % i + b"x" * n)[: max(n - 1, 0)] + b"\n" for i, n in enumerate(lengths)]
        path = tmp_path / "long.jsonl"
        path.write_bytes(b"".join(lines) + b"p" * partial)
        expect_lines: list[tuple[int, bytes]] = []
        expect_skipped: list[tuple[int, int]] = []
        off = 0
        for line in lines:
            if len(line) > max_record_bytes:
                expect_skipped.append((off, len(line)))
            else:
                expect_lines.append((off, line))
            off += len(line)
        read = read_file(path, None, chunk_bytes=chunk_bytes, max_record_bytes=max_record_bytes)
        assert read.lines == expect_lines
        assert read.skipped == expect_skipped
        assert read.cursor is not None and read.cursor.offset == off

    def test_a_huge_line_is_skipped_in_bounded_memory(self, tmp_path: Path) -> None:
        """A 24 MiB line over a 1 MiB limit is skipped while holding about one chunk and one
        record in memory, and the lines after it are delivered intact (F14)."""
        path = tmp_path / "huge.jsonl"
        big = b'{"tool_result":"' + b"z" * (24 * 1024 * 1024) + b'"}\n'
        with path.open("wb") as fh:
            fh.write(b'{"n":1}\n')
            fh.write(big)
            fh.write(b'{"n":2}\n{"n":3}\n')
        del big
        tracemalloc.start()
        try:
            read = read_file(path, None, chunk_bytes=64 * 1024, max_record_bytes=1024 * 1024)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024
        assert read.lines == [(0, b'{"n":1}\n'),
                              (8 + 24 * 1024 * 1024 + 19, b'{"n":2}\n'),
                              (8 + 24 * 1024 * 1024 + 27, b'{"n":3}\n')]
        assert read.skipped == [(8, 24 * 1024 * 1024 + 19)]

    def test_an_unfinished_long_line_is_reported_once_when_it_ends(self, tmp_path: Path) -> None:
        """An over-long line still being written is not reported; when its newline arrives
        it is reported once and the cursor moves past it."""
        path = tmp_path / "s.jsonl"
        path.write_bytes(b"ok\n" + b"L" * 500)
        first = read_file(path, None, chunk_bytes=64, max_record_bytes=100)
        assert first.skipped == [] and first.cursor is not None and first.cursor.offset == 3
        append(path, b"L" * 500 + b"\nafter\n")
        second = read_file(path, first.cursor, chunk_bytes=64, max_record_bytes=100)
        assert second.skipped == [(3, 1001)]
        assert second.lines == [(1004, b"after\n")]


# ---------------------------------------------------------------- model-based


MAX_RECORD = 64


@dataclass
class Generation:
    """One life of a file: the bytes written since it was created or truncated."""

    number: int
    data: bytearray = field(default_factory=bytearray)
    remainder: bytes = b""  # the rest of a partially written line, newline included
    read_upto: int = 0

    @property
    def complete_end(self) -> int:
        return self.data.rfind(b"\n") + 1

    def lines_from(self, start: int) -> list[tuple[int, bytes]]:
        out, pos = [], start
        for line in bytes(self.data[start : self.complete_end]).splitlines(keepends=True):
            out.append((pos, line))
            pos += len(line)
        return out


class TailMachine(RuleBasedStateMachine):
    """A writer and a reader share a file; the model knows every line ever written.

    The reader is the real ``resume_point`` / ``iter_chunks`` / ``make_cursor`` with
    cursors kept in a real ``CursorStore``; rotated files are finished by matching the
    stored cursor's inode, as a watcher following a rename does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tail-model-", dir=tmpfs_dir()))
        self.path = self.dir / "s.jsonl"
        self.store = CursorStore(self.dir / "cursors.json").load()
        self.serial = 0
        self.generations = 0
        self.current: Generation | None = None
        self.rotated: list[tuple[Path, Generation]] = []
        self.delivered: set[bytes] = set()
        self.reported: set[tuple[int, int, int]] = set()

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -------------------------------------------------------- writer

    def _new_generation(self) -> Generation:
        self.generations += 1
        return Generation(self.generations)

    def _line(self, filler: int, crlf: bool) -> bytes:
        self.serial += 1
        end = b"\r\n" if crlf else b"\n"
        return b'{"n":"' + b"abcdefgh"[self.serial % 8 :][:1] * filler + \
            b'","id":"L%06d"}' % self.serial + end

    def _append(self, data: bytes) -> None:
        if self.current is None:
            self.current = self._new_generation()
        append(self.path, data)
        self.current.data += data

    @rule(fillers=st.lists(st.one_of(st.integers(0, 30), st.integers(40, 250)),
                           min_size=1, max_size=4),
          crlf=st.booleans())
    def write_lines(self, fillers: list[int], crlf: bool) -> None:
        data = b""
        if self.current is not None and self.current.remainder:
            data += self.current.remainder
            self.current.remainder = b""
        data += b"".join(self._line(f, crlf) for f in fillers)
        self._append(data)

    @rule(filler=st.one_of(st.integers(0, 30), st.integers(40, 250)),
          fraction=st.floats(0.0, 1.0))
    def write_partial(self, filler: int, fraction: float) -> None:
        if self.current is not None and self.current.remainder:
            pending = self.current.remainder
        else:
            pending = self._line(filler, crlf=False)
        cut = max(1, min(len(pending) - 1, int(len(pending) * fraction)))
        self._append(pending[:cut])
        assert self.current is not None
        self.current.remainder = pending[cut:]

    @precondition(lambda self: self.current is not None)
    @rule()
    def rotate(self) -> None:
        assert self.current is not None
        target = self.dir / f"s.jsonl.{self.generations}"
        self.path.rename(target)
        self.current.remainder = b""
        self.rotated.append((target, self.current))
        self.path.write_bytes(b"")
        self.current = self._new_generation()

    @precondition(lambda self: self.current is not None)
    @rule()
    def truncate(self) -> None:
        os.truncate(self.path, 0)
        self.current = self._new_generation()

    @precondition(lambda self: self.current is not None)
    @rule(fillers=st.lists(st.integers(0, 30), min_size=1, max_size=4), crlf=st.booleans())
    def truncate_and_regrow(self, fillers: list[int], crlf: bool) -> None:
        """F18: rewritten with other lines, longer than before, while nobody reads."""
        assert self.current is not None
        old_size = len(self.current.data)
        self.truncate()
        data = b"".join(self._line(f, crlf) for f in fillers)
        while len(data) <= old_size:
            data += self._line(fillers[0], crlf)
        self._append(data)

    @precondition(lambda self: self.current is not None)
    @rule()
    def delete(self) -> None:
        self.path.unlink()
        self.current = None

    @rule()
    def restart(self) -> None:
        saved = {k: c.to_json() for k, c in self.store.files.items()}
        self.store = CursorStore(self.dir / "cursors.json").load()
        assert {k: c.to_json() for k, c in self.store.files.items()} == saved
        assert self.store.quarantined == []

    # -------------------------------------------------------- reader

    def _check_read(self, gen: Generation, read: Read) -> None:
        assert read.resume.offset == gen.read_upto, (read.resume, gen.read_upto)
        expected = gen.lines_from(gen.read_upto)
        assert read.lines == [(o, x) for o, x in expected if len(x) <= MAX_RECORD]
        assert read.skipped == [(o, len(x)) for o, x in expected if len(x) > MAX_RECORD]
        for _, line in read.lines:
            assert line not in self.delivered, f"delivered twice: {line!r}"
            self.delivered.add(line)
        for off, length in read.skipped:
            key = (gen.number, off, length)
            assert key not in self.reported, f"reported twice: {key}"
            self.reported.add(key)
        assert read.cursor is not None
        assert read.cursor.offset == gen.complete_end
        gen.read_upto = gen.complete_end

    def _cursor_by_identity(self, path: Path) -> tuple[str | None, Cursor | None]:
        if str(path) in self.store.files:
            return str(path), self.store.files[str(path)]
        st_ = path.stat()
        for key, cur in self.store.files.items():
            if cur.ino == st_.st_ino and cur.dev == st_.st_dev:
                return key, cur
        return None, None

    @rule(chunk_bytes=st.sampled_from([3, 7, 16, 61, 4096]))
    def read(self, chunk_bytes: int) -> None:
        for path, gen in self.rotated:
            key, cur = self._cursor_by_identity(path)
            read = read_file(path, cur, chunk_bytes=chunk_bytes, max_record_bytes=MAX_RECORD)
            self._check_read(gen, read)
            if key is not None:
                self.store.drop(key)
            path.unlink()
        self.rotated.clear()
        if self.current is not None:
            read = read_file(self.path, self.store.get(str(self.path)),
                             chunk_bytes=chunk_bytes, max_record_bytes=MAX_RECORD)
            self._check_read(self.current, read)
            assert read.cursor is not None
            self.store.put(str(self.path), read.cursor)
        self.store.save()

    @invariant()
    def partial_bytes_are_never_delivered(self) -> None:
        gen = self.current
        if gen is not None:
            assert gen.read_upto <= gen.complete_end


def _trusting(fh: Any, st_: os.stat_result, cursor: Cursor | None) -> Resume:
    """A reader that resumes any cursor the file is long enough for."""
    if cursor is None or st_.st_size < cursor.offset:
        return Resume(0, {}, "new")
    return Resume(cursor.offset, cursor.parser_state(), "resume")


def _without_tail_hash(fh: Any, st_: os.stat_result, cursor: Cursor | None) -> Resume:
    """A reader that checks inode, head and size but not the bytes before the offset."""
    if cursor is None:
        return Resume(0, {}, "new")
    head = os.pread(fh.fileno(), cursor.head_len, 0)
    if st_.st_ino != cursor.ino or hashlib.sha256(head).hexdigest() != cursor.head_sha:
        return Resume(0, {}, "replaced")
    if st_.st_size < cursor.offset:
        return Resume(0, {}, "truncated")
    return Resume(cursor.offset, cursor.parser_state(), "resume")


class TestTailModel:
    """The state machine above, against the real reader and against weakened ones."""

    @pytest.mark.parametrize("head_bytes", [tail.HEAD_BYTES, 4], ids=["head-1KiB", "head-4B"])
    def test_tail_model(self, head_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every complete line of every file generation is delivered exactly once, nothing past a
        partial line, across writes, partial writes, rotation, truncation, deletion and restarts;
        with a 4-byte head every generation shares its head, so identity rests on the tail hash."""
        monkeypatch.setattr(tail, "HEAD_BYTES", head_bytes)
        run_state_machine_as_test(  # type: ignore[no-untyped-call]
            TailMachine,
            settings=settings(max_examples=120, stateful_step_count=40, deadline=None),
        )

    @pytest.mark.parametrize(("reader", "head_bytes"), [(_trusting, tail.HEAD_BYTES),
                                                        (_without_tail_hash, 4)],
                             ids=["trusting", "no-tail-hash"])
    def test_tail_model_notices_a_weaker_reader(
        self, reader: Any, head_bytes: int, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The model test fails for readers that skip an identity check it relies on."""
        monkeypatch.setattr(tail, "HEAD_BYTES", head_bytes)
        monkeypatch.setitem(globals(), "resume_point", reader)
        with pytest.raises(AssertionError):
            run_state_machine_as_test(  # type: ignore[no-untyped-call]
                TailMachine,
                settings=settings(max_examples=300, stateful_step_count=40, deadline=None,
                                  database=None, phases=[Phase.generate], derandomize=True),
            )
