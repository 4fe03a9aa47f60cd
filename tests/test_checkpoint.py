"""The daemon's ``cursors.json`` schedule: about once a second, stretched for a large file
so writing it never takes more than about 1 % of the time."""

from __future__ import annotations

from pathlib import Path

from relayburnd.checkpoint import BACKOFF_CAP, SAVE_EVERY, SAVE_SHARE, Checkpointer
from relayburnd.cursors import CursorStore
from relayburnd.metrics import Metrics
from relayburnd.tail import Cursor, encode_state


def cursor(i: int, tools: int = 0) -> Cursor:
    """A cursor with a parser state the size a long Claude session leaves behind."""
    state = {"tools": {f"toolu_{i:08d}_{k:04d}": "Bash" for k in range(tools)}}
    return Cursor(source="claude", dev=1, ino=i, size=100 + i, mtime_ns=i, offset=100 + i,
                  head_len=1024, head_sha="a" * 64, tail_sha="b" * 64, state=encode_state(state))


def store_with(path: Path, files: int, tools: int) -> CursorStore:
    store = CursorStore(path)
    for i in range(files):
        store.put(f"/home/dev/.claude/projects/p/{i:08d}.jsonl", cursor(i, tools))
    return store


def test_a_small_file_is_written_once_a_second(tmp_path: Path) -> None:
    store = store_with(tmp_path / "cursors.json", files=10, tools=2)
    cp = Checkpointer(store, store.path, Metrics())
    assert cp.maybe_save(100.0) is True
    assert cp.last_write_seconds < SAVE_EVERY * SAVE_SHARE  # a few KB: well under 10 ms
    assert cp.next_save_at == 100.0 + SAVE_EVERY
    store.put("/x.jsonl", cursor(99))
    assert cp.maybe_save(100.0 + SAVE_EVERY - 0.01) is False
    assert cp.maybe_save(100.0 + SAVE_EVERY) is True


def test_a_large_file_waits_a_hundred_times_its_write(tmp_path: Path) -> None:
    """Thousands of sessions with tool-heavy parser states make a file of tens of MB; the
    next write waits 1 / SAVE_SHARE times as long as this one took (capped), so it
    takes at most about 1 % of the time, unless ``force`` (exit, drain) asks now."""
    store = store_with(tmp_path / "cursors.json", files=5_000, tools=100)
    cp = Checkpointer(store, store.path, Metrics())
    assert cp.maybe_save(100.0) is True
    took = cp.last_write_seconds
    assert store.path.stat().st_size > 15_000_000
    gap = cp.next_save_at
    assert gap == 100.0 + min(BACKOFF_CAP, max(SAVE_EVERY, took / SAVE_SHARE))
    assert gap > 100.0 + SAVE_EVERY  # writing 15 MB (and its fsync) takes more than 10 ms
    store.put("/x.jsonl", cursor(99_999))
    assert cp.maybe_save(gap - 0.01) is False
    assert cp.maybe_save(gap - 0.01, force=True) is True
    assert CursorStore(store.path).load().get("/x.jsonl") == cursor(99_999)
