"""The file store: idempotent writes, the rank merge, crash and torn-tail recovery of the
ledger and its index, content sidecars, and session ids that must not become paths."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relayburnd.config import load_settings
from relayburnd.errors import SinkRejected
from relayburnd.records import (
    Batch,
    ContentRecord,
    Record,
    Turn,
    UserTurn,
    decode,
    encode,
    fold,
    make_id,
    seal,
)
from relayburnd.storage import file as file_store
from relayburnd.storage.file import FileAdapter, is_safe_session_id
from tests.conftest import PUBLIC, run_cli

TS = 1_718_000_000_000


def turn(n: int, *, output: int = 10, session: str = "sess-1", lines: int = 1) -> Turn:
    rec = Turn(id=make_id("msg", n, "req", n), source="claude", session_id=session,
               ts=TS + n * 1000, model="claude-sonnet-4-5", input_tokens=100 + n,
               output_tokens=output, snapshot_lines=lines, message_id=f"msg_{n}",
               request_id=f"req_{n}", project="/work/app")
    seal(rec)
    return rec


def user_turn(n: int, session: str = "sess-1") -> UserTurn:
    rec = UserTurn(id=make_id("user", n), source="claude", session_id=session,
                   ts=TS + n * 1000 + 1, message_id=f"u_{n}", text_chars=5 * n)
    seal(rec)
    return rec


def content(n: int, *, session: str = "sess-1", seq: int = 0, ts: int | None = None,
            text: str | None = None) -> ContentRecord:
    rec = ContentRecord(id=make_id("content", session, n, seq), source="claude",
                        session_id=session, ts=TS + n * 1000 if ts is None else ts,
                        message_id=f"msg_{n}", seq=seq, role="assistant", block_type="text",
                        text=text if text is not None else f"answer {n}.{seq}",
                        chars=len(text or f"answer {n}.{seq}"))
    seal(rec)
    return rec


def batch(*records: Record) -> Batch:
    b = Batch()
    for rec in records:
        b.add(rec)
    return b


@pytest.fixture
def store() -> Iterator[FileAdapter]:
    adapter = FileAdapter(load_settings())
    yield adapter
    adapter.close()


def reopen(adapter: FileAdapter) -> FileAdapter:
    adapter.close()
    return FileAdapter(load_settings())


def ledger_ids(adapter: FileAdapter) -> Counter[str]:
    """How often each id occurs in the ledger file."""
    path = adapter.layout.ledger
    if not path.exists():
        return Counter()
    return Counter(decode(line).id for line in path.read_bytes().splitlines() if line)


def content_ids(adapter: FileAdapter) -> Counter[str]:
    out: Counter[str] = Counter()
    for path in adapter.layout.content_dir.glob("*.jsonl"):
        out.update(decode(line).id for line in path.read_bytes().splitlines() if line)
    return out


def file_sizes(adapter: FileAdapter) -> dict[str, int]:
    root = adapter.layout.root
    return {str(p.relative_to(root)): p.stat().st_size
            for p in [adapter.layout.ledger, *adapter.layout.content_dir.glob("*.jsonl")]
            if p.exists()}


def every_file(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


FIRST: list[Record] = [turn(1), turn(2), user_turn(1), content(1), content(2),
                       content(3, session="sess-2")]


class TestIdempotentWrites:
    """Re-delivery is a no-op."""

    def test_first_write_inserts_every_record(self, store: FileAdapter) -> None:
        """A new batch counts every record as inserted, per kind."""
        result = store.write(batch(*FIRST))
        assert result.as_dict() == {
            "content": {"inserted": 3, "updated": 0, "unchanged": 0},
            "turn": {"inserted": 2, "updated": 0, "unchanged": 0},
            "user-turn": {"inserted": 1, "updated": 0, "unchanged": 0},
        }

    def test_same_batch_again_is_unchanged_and_writes_nothing(self, store: FileAdapter) -> None:
        """Writing the same batch twice reports every record unchanged and grows no file."""
        store.write(batch(*FIRST))
        sizes = file_sizes(store)
        result = store.write(batch(*FIRST))
        assert (result.inserted, result.updated, result.unchanged) == (0, 0, len(FIRST))
        assert file_sizes(store) == sizes

    def test_redelivery_after_reopening_is_unchanged(self, store: FileAdapter) -> None:
        """A new adapter on the same home knows what is stored."""
        store.write(batch(*FIRST))
        store = reopen(store)
        assert store.write(batch(*FIRST)).unchanged == len(FIRST)

    def test_duplicates_within_a_batch_are_stored_once(self, store: FileAdapter) -> None:
        """The same record twice in one batch is one insert and one ledger line."""
        result = store.write(batch(turn(1), turn(1), content(1), content(1)))
        assert result.inserted == 2
        assert ledger_ids(store) == Counter({turn(1).id: 1})
        assert content_ids(store) == Counter({content(1).id: 1})


class TestRankMerge:
    """Per id the record with the greatest rank is kept, whatever the order."""

    @pytest.mark.parametrize("order", ["small-first", "large-first", "same-batch"])
    def test_larger_snapshot_wins(self, store: FileAdapter, order: str) -> None:
        """A later, larger snapshot of a response replaces the smaller one; a smaller one
        arriving later changes nothing."""
        small, large = turn(1, output=10), turn(1, output=500, lines=3)
        assert large.rank > small.rank
        if order == "small-first":
            store.write(batch(small))
            assert store.write(batch(large)).updated == 1
        elif order == "large-first":
            store.write(batch(large))
            assert store.write(batch(small)).unchanged == 1
        else:
            assert store.write(batch(small, large)).inserted == 1
        [stored] = list(store.turns())
        assert stored.output_tokens == 500
        assert [r for r in store.iter_records() if r.id == large.id] == [large]

    def test_rank_decides_on_snapshot_lines_when_output_is_equal(self, store: FileAdapter) -> None:
        """With equal output, the snapshot built from more lines wins."""
        store.write(batch(turn(1, output=50, lines=4)))
        store.write(batch(turn(1, output=50, lines=2)))
        [stored] = list(store.turns())
        assert stored.snapshot_lines == 4

    def test_every_order_converges_to_the_same_ledger_fold(self, tmp_path: Path) -> None:
        """Three snapshots written in all six orders leave the same folded records."""
        import itertools

        snaps = [turn(7, output=o, lines=n) for o, n in ((5, 1), (80, 2), (80, 3))]
        results = set()
        for i, perm in enumerate(itertools.permutations(snaps)):
            adapter = FileAdapter(load_settings().replace(home=tmp_path / f"h{i}"))
            for rec in perm:
                adapter.write(batch(rec))
            results.add(encode(next(iter(adapter.iter_records()))))
            adapter.close()
        assert results == {encode(snaps[2])}


class TestTornLedger:
    """A torn last line (a write that never returned) is cut on the next write."""

    def test_torn_tail_is_removed_before_appending(self, store: FileAdapter) -> None:
        """The partial line is cut, the next records parse, earlier records stay."""
        store.write(batch(turn(1), turn(2)))
        good = store.layout.ledger.read_bytes()
        with store.layout.ledger.open("ab") as fh:
            fh.write(b'{"kind":"turn","id":"' + turn(3).id.encode() + b'","rank":"0')
        store.write(batch(turn(4)))
        data = store.layout.ledger.read_bytes()
        assert data.startswith(good)
        assert data[len(good):] == encode(turn(4)) + b"\n"
        assert ledger_ids(store) == Counter({turn(1).id: 1, turn(2).id: 1, turn(4).id: 1})

    def test_torn_record_is_not_in_the_index(self, store: FileAdapter) -> None:
        """After the cut, the torn record is new: writing it inserts it."""
        store.write(batch(turn(1)))
        with store.layout.ledger.open("ab") as fh:
            fh.write(encode(turn(2))[:-3])
        assert store.write(batch(turn(2))).inserted == 1
        assert ledger_ids(store) == Counter({turn(1).id: 1, turn(2).id: 1})

    def test_corrupt_lines_inside_the_ledger_are_skipped(self, store: FileAdapter) -> None:
        """NUL runs and invalid UTF-8 lines between records (disk damage) are skipped by
        readers and by index recovery; the records around them stay readable."""
        store.write(batch(turn(1)))
        with store.layout.ledger.open("ab") as fh:
            fh.write(b"\0" * 64 + b"\n")
            fh.write(b'{"kind":"turn","id":"\xff\xfe","rank":"1","source":"claude"}\n')
        store.write(batch(turn(2)))
        for name in ("ledger.index.sqlite", "ledger.index.sqlite-wal", "ledger.index.sqlite-shm"):
            (store.layout.root / name).unlink(missing_ok=True)
        store = reopen(store)
        assert store.write(batch(turn(1), turn(2))).unchanged == 2
        assert {r.id for r in store.iter_records()} == {turn(1).id, turn(2).id}


class TestIndexRecovery:
    """The index is derived data: lost or behind, it is rebuilt from the files."""

    def _drop_index(self, adapter: FileAdapter) -> None:
        adapter.close()
        for name in ("ledger.index.sqlite", "ledger.index.sqlite-wal", "ledger.index.sqlite-shm"):
            (adapter.layout.root / name).unlink(missing_ok=True)

    def test_deleted_index_is_rebuilt(self, store: FileAdapter) -> None:
        """With the index deleted, re-delivering everything (content included) is unchanged
        and no file grows."""
        store.write(batch(*FIRST))
        sizes = file_sizes(store)
        self._drop_index(store)
        store = FileAdapter(load_settings())
        result = store.write(batch(*FIRST))
        assert result.as_dict()["turn"]["unchanged"] == 2
        assert result.as_dict()["content"]["unchanged"] == 3
        assert (result.inserted, result.updated) == (0, 0)
        assert file_sizes(store) == sizes

    def test_rebuilt_index_keeps_the_largest_rank(self, store: FileAdapter) -> None:
        """A rebuilt index remembers the larger snapshot, so the smaller stays unchanged."""
        store.write(batch(turn(1, output=10)))
        store.write(batch(turn(1, output=900)))
        self._drop_index(store)
        store = FileAdapter(load_settings())
        assert store.write(batch(turn(1, output=10))).unchanged == 1
        assert store.write(batch(turn(1, output=900))).unchanged == 1

    def test_index_catches_up_with_a_ledger_that_grew_without_it(
        self, store: FileAdapter
    ) -> None:
        """Lines appended to the ledger behind the index's back are indexed on the next write."""
        store.write(batch(turn(1)))
        with store.layout.ledger.open("ab") as fh:
            fh.write(encode(turn(2)) + b"\n" + encode(turn(3, output=99)) + b"\n")
        result = store.write(batch(turn(2), turn(3, output=5), turn(4)))
        assert result.as_dict()["turn"] == {"inserted": 1, "updated": 0, "unchanged": 2}
        assert ledger_ids(store) == Counter({turn(n).id: 1 for n in (1, 2, 3, 4)})

    def test_replaced_ledger_resets_the_index(self, store: FileAdapter) -> None:
        """A ledger replaced by another file (another inode) is indexed from scratch."""
        store.write(batch(turn(1), turn(2)))
        other = store.layout.root / "other.jsonl"
        other.write_bytes(encode(turn(2)) + b"\n")
        os.replace(other, store.layout.ledger)
        result = store.write(batch(turn(1), turn(2)))
        assert result.as_dict()["turn"] == {"inserted": 1, "updated": 0, "unchanged": 1}


_CRASHING_WRITER = textwrap.dedent(
    """
    import sys
    from relayburnd.config import load_settings
    from relayburnd.records import Batch, decode
    from relayburnd.storage.file import FileAdapter

    records = [decode(line) for line in open(sys.argv[1], "rb").read().splitlines()]
    FileAdapter(load_settings()).write(Batch(records=records))
    print("written")
    """
)


class TestCrashBetweenAppendAndIndex:
    """A kill after the ledger append and before the index commit (the batch was never
    acknowledged) leaves a store where re-delivery stores each record exactly once."""

    def _crash_write(self, tmp_path: Path, records: list[Record]) -> None:
        spec = tmp_path / "batch.jsonl"
        spec.write_bytes(b"".join(encode(r) + b"\n" for r in records))
        env = dict(os.environ, RELAYBURN_FAULTS="after_ledger_write=kill")
        proc = subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(spec)],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert "written" not in proc.stdout

    def test_redelivery_after_the_crash_stores_each_record_once(
        self, store: FileAdapter, tmp_path: Path
    ) -> None:
        """After the crash, earlier records are intact and re-delivering the batch leaves
        every record exactly once in the ledger and the content files."""
        store.write(batch(turn(1), content(1)))
        second: list[Record] = [turn(2), turn(3), user_turn(2), content(2),
                                content(4, session="sess-9")]
        store.close()
        self._crash_write(tmp_path, second)
        assert store.layout.ledger.stat().st_size > 0
        store = FileAdapter(load_settings())
        result = store.write(batch(*second))
        assert result.inserted + result.unchanged == len(second)
        assert store.write(batch(*second)).unchanged == len(second)
        expected = {r.id for r in [turn(1), *second] if not isinstance(r, ContentRecord)}
        assert ledger_ids(store) == Counter({rid: 1 for rid in expected})
        assert content_ids(store) == Counter(
            {r.id: 1 for r in [content(1), *second] if isinstance(r, ContentRecord)}
        )
        assert {t.id for t in store.turns()} == {turn(n).id for n in (1, 2, 3)}

    def test_reads_after_the_crash_never_show_a_half_batch(
        self, store: FileAdapter, tmp_path: Path
    ) -> None:
        """Queries after the crash show either none or all of the unacknowledged batch."""
        store.write(batch(turn(1)))
        store.close()
        self._crash_write(tmp_path, [turn(2), turn(3), turn(4)])
        store = FileAdapter(load_settings())
        seen = {t.id for t in store.turns()} - {turn(1).id}
        assert seen in (set(), {turn(n).id for n in (2, 3, 4)})


def index_rows(adapter: FileAdapter) -> tuple[dict[str, str], int]:
    """id -> rank in the index, and the ledger size it says it covers (a second reader)."""
    db = sqlite3.connect(adapter.layout.ledger_index)
    try:
        rows = dict(db.execute("SELECT id, rank FROM idx").fetchall())
        covered = db.execute("SELECT value FROM meta WHERE key='ledger_size'").fetchone()
    finally:
        db.close()
    return rows, int(covered[0]) if covered else 0


_KILLED_BACKFILL = textwrap.dedent(
    """
    import os, signal, sys
    from relayburnd.config import load_settings
    from relayburnd.records import Batch, decode
    from relayburnd.storage.file import FileAdapter

    records = [decode(line) for line in open(sys.argv[1], "rb").read().splitlines()]
    adapter = FileAdapter(load_settings())
    for i in range(0, len(records), 2):
        adapter.write(Batch(records=records[i : i + 2]))  # acknowledged, batch by batch
    print("written", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # before close: the index rows were never written
    """
)


class TestBackfillIndex:
    """A backfill into an empty store writes its index rows once, in key order, at close
    (or when its copy in memory grows too large); whatever ends the process first, the
    ledger stays the truth and nothing is doubled."""

    def test_rows_go_in_at_close_and_cover_the_whole_ledger(self, store: FileAdapter) -> None:
        store.write(batch(turn(1), turn(2)))
        store.write(batch(turn(2, output=500), user_turn(1)))
        store.write(batch(turn(3), turn(1)))
        assert index_rows(store) == ({}, 0)
        store.close()
        rows, covered = index_rows(store)
        assert covered == store.layout.ledger.stat().st_size
        assert rows == {r.id: r.rank for r in (turn(1), turn(2, output=500), turn(3),
                                              user_turn(1))}
        again = FileAdapter(load_settings())
        result = again.write(batch(turn(1), turn(2), turn(2, output=500), turn(3), user_turn(1)))
        assert (result.inserted, result.updated, result.unchanged) == (0, 0, 4)
        again.close()
        assert index_rows(again)[1] == again.layout.ledger.stat().st_size

    def test_a_process_killed_before_close_loses_and_doubles_nothing(
        self, store: FileAdapter, tmp_path: Path
    ) -> None:
        records: list[Record] = [turn(n) for n in range(1, 7)] + [user_turn(1), user_turn(2)]
        spec = tmp_path / "records.jsonl"
        spec.write_bytes(b"".join(encode(r) + b"\n" for r in records))
        proc = subprocess.run([sys.executable, "-c", _KILLED_BACKFILL, str(spec)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert "written" in proc.stdout
        assert index_rows(store) == ({}, 0)  # the kill came before the deferred rows
        result = store.write(batch(*records))
        assert (result.inserted, result.unchanged) == (0, len(records))
        assert ledger_ids(store) == Counter({r.id: 1 for r in records})
        rows, covered = index_rows(store)
        assert covered == store.layout.ledger.stat().st_size
        assert set(rows) == {r.id for r in records}

    def test_a_large_backfill_moves_to_the_index_on_the_way(
        self, store: FileAdapter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(file_store, "_MIRROR_MAX", 3)
        store.write(batch(turn(1), turn(2)))
        assert index_rows(store)[0] == {}
        store.write(batch(turn(3), turn(4)))  # past the bound: the index takes over
        rows, covered = index_rows(store)
        assert set(rows) == {turn(n).id for n in (1, 2, 3, 4)}
        assert covered == store.layout.ledger.stat().st_size
        result = store.write(batch(turn(4), turn(5), turn(1, output=700)))
        assert result.as_dict()["turn"] == {"inserted": 1, "updated": 1, "unchanged": 1}
        assert index_rows(store)[0][turn(1).id] == turn(1, output=700).rank

    def test_rows_written_from_another_thread_go_in_at_close(self, store: FileAdapter) -> None:
        """The daemon writes from its shipper thread and closes from the main thread."""
        import threading

        writer = threading.Thread(target=store.write, args=(batch(turn(1), turn(2)),))
        writer.start()
        writer.join()
        store.close()
        rows, covered = index_rows(store)
        assert set(rows) == {turn(1).id, turn(2).id}
        assert covered == store.layout.ledger.stat().st_size

    def test_close_does_not_wait_for_a_busy_lock(self, store: FileAdapter) -> None:
        """A shutdown has seconds left: with the lock held elsewhere, close leaves the
        rows to the next writer at once, and that writer indexes them from the ledger."""
        import time

        from relayburnd.home import file_lock

        store.write(batch(turn(1), turn(2)))
        with file_lock(store.layout.store_lock):
            start = time.monotonic()
            store.close()
            assert time.monotonic() - start < 1.0
        assert index_rows(store) == ({}, 0)
        other = FileAdapter(load_settings())
        assert other.write(batch(turn(1), turn(2), turn(3))).as_dict()["turn"] == {
            "inserted": 1, "updated": 0, "unchanged": 2}
        other.close()
        assert set(index_rows(other)[0]) == {turn(n).id for n in (1, 2, 3)}

    def test_release_after_a_backfill_moves_it_to_the_index(self, store: FileAdapter) -> None:
        """A daemon gone quiet after a backlog drops the in-memory copy: the deferred
        rows go into the index first, and later writes are classified from it."""
        store.write(batch(turn(1), turn(2), content(1, text="hello")))
        assert index_rows(store) == ({}, 0)
        assert store.release_memory() is True
        rows, covered = index_rows(store)
        assert set(rows) == {turn(1).id, turn(2).id}
        assert covered == store.layout.ledger.stat().st_size
        result = store.write(batch(turn(2), turn(3), turn(1, output=700), content(1, text="hello")))
        assert result.as_dict()["turn"] == {"inserted": 1, "updated": 1, "unchanged": 1}
        assert result.as_dict()["content"] == {"inserted": 0, "updated": 0, "unchanged": 1}
        assert ledger_ids(store) == Counter({turn(1).id: 2, turn(2).id: 1, turn(3).id: 1})

    def test_release_leaves_a_busy_store_alone(self, store: FileAdapter) -> None:
        from relayburnd.home import file_lock

        store.write(batch(turn(1)))
        with file_lock(store.layout.store_lock):
            assert store.release_memory() is False
        assert store.write(batch(turn(1))).as_dict()["turn"]["unchanged"] == 1

    def test_another_writer_in_between_indexes_the_backfill_from_the_ledger(
        self, store: FileAdapter
    ) -> None:
        store.write(batch(turn(1), turn(2)))
        other = FileAdapter(load_settings())
        assert other.write(batch(turn(1), turn(3))).as_dict()["turn"] == {
            "inserted": 1, "updated": 0, "unchanged": 1}
        other.close()
        assert set(index_rows(store)[0]) == {turn(n).id for n in (1, 2, 3)}
        result = store.write(batch(turn(2), turn(3), turn(4)))
        assert result.as_dict()["turn"] == {"inserted": 1, "updated": 0, "unchanged": 2}
        store.close()
        rows, covered = index_rows(store)
        assert set(rows) == {turn(n).id for n in (1, 2, 3, 4)}
        assert covered == store.layout.ledger.stat().st_size
        assert ledger_ids(store) == Counter({turn(n).id: 1 for n in (1, 2, 3, 4)})


class TestContent:
    """Content sidecars read back folded and in conversation order."""

    def test_content_is_folded_and_ordered(self, store: FileAdapter) -> None:
        """Records written out of order over several batches come back one per id, sorted
        by time, message and position."""
        a0 = content(2, seq=0, ts=TS + 2000)
        a1 = content(2, seq=1, ts=TS + 2000)
        b0 = content(1, seq=0, ts=TS + 1000)
        c0 = content(3, seq=0, ts=TS + 3000)
        store.write(batch(c0, a1))
        store.write(batch(b0, a1))
        store.write(batch(a0, c0))
        got = store.content("sess-1")
        assert [r.id for r in got] == [b0.id, a0.id, a1.id, c0.id]
        assert [r.text for r in got] == ["answer 1.0", "answer 2.0", "answer 2.1", "answer 3.0"]

    def test_sessions_are_separate_files(self, store: FileAdapter) -> None:
        """Each session's content lives in its own sidecar and is read alone."""
        store.write(batch(content(1, session="s-a"), content(2, session="s-b")))
        assert store.content_sessions() == ["s-a", "s-b"]
        assert [r.session_id for r in store.content("s-a")] == ["s-a"]
        assert (store.layout.content_dir / "s-b.jsonl").exists()
        assert store.content("missing") == []

    def test_a_store_filled_from_empty_still_sees_other_writers(
        self, store: FileAdapter
    ) -> None:
        """The first writer of an empty store answers "is it new?" from memory; a write by
        anyone else in between makes it ask the index again, so nothing is doubled."""
        store.write(batch(turn(1), turn(2)))
        other = FileAdapter(load_settings())
        assert other.write(batch(turn(3), turn(2, output=500))).as_dict()["turn"] == {
            "inserted": 1, "updated": 1, "unchanged": 0}
        other.close()
        result = store.write(batch(turn(1), turn(2, output=500), turn(3), turn(4)))
        assert result.as_dict()["turn"] == {"inserted": 1, "updated": 0, "unchanged": 3}
        assert store.write(batch(turn(2), turn(4))).unchanged == 2
        assert ledger_ids(store) == Counter(
            {turn(1).id: 1, turn(2).id: 2, turn(3).id: 1, turn(4).id: 1})

    def test_content_written_by_another_process_is_seen(self, store: FileAdapter) -> None:
        """A session's content ids are cached between writes; appends by another writer,
        a prune that rewrites the sidecar, and a sidecar removed and written again are
        all noticed, so nothing is appended twice and nothing is skipped."""
        store.write(batch(content(1), content(2)))
        other = FileAdapter(load_settings())
        assert other.write(batch(content(3), content(1))).as_dict()["content"] == {
            "inserted": 1, "updated": 0, "unchanged": 1}
        other.close()
        result = store.write(batch(content(1), content(2), content(3), content(4)))
        assert result.as_dict()["content"] == {"inserted": 1, "updated": 0, "unchanged": 3}
        assert content_ids(store) == Counter({content(n).id: 1 for n in (1, 2, 3, 4)})
        # a prune rewrites the sidecar (new inode): what it removed can come back once
        assert store.prune_content(TS + 2500) == 2
        result = store.write(batch(content(1), content(3)))
        assert result.as_dict()["content"] == {"inserted": 1, "updated": 0, "unchanged": 1}
        # the sidecar removed and written again, longer than before, by someone else
        path = store.layout.content_dir / "sess-1.jsonl"
        path.unlink()
        other = FileAdapter(load_settings())
        other.write(batch(*(content(n, seq=s) for n in (7, 8) for s in range(6))))
        other.close()
        result = store.write(batch(content(1), content(7, seq=5)))
        assert result.as_dict()["content"] == {"inserted": 1, "updated": 0, "unchanged": 1}
        assert content_ids(store) == Counter(
            {content(n, seq=s).id: 1 for n in (7, 8) for s in range(6)} | {content(1).id: 1})

    def test_content_never_enters_the_ledger(self, store: FileAdapter) -> None:
        """The ledger holds no content text."""
        store.write(batch(turn(1), content(1, text="the secret plan")))
        assert b"the secret plan" not in store.layout.ledger.read_bytes()


UNSAFE = ["../x", "a/b", "", "/etc/passwd", "..", "a..b", ".hidden", "x\n", "tab\tid",
          "nul\0", "ünïcode", "x" * 201]


class TestUnsafeSessionIds:
    """A session id that is not a safe file name never becomes a path."""

    @pytest.mark.parametrize("session_id", UNSAFE, ids=[repr(s)[:20] for s in UNSAFE])
    def test_unsafe_id_is_refused(self, session_id: str) -> None:
        """The predicate refuses separators, dot names, control characters and non-ASCII."""
        assert not is_safe_session_id(session_id)

    @pytest.mark.parametrize("session_id", ["0b8e7c1a-5d0f-4c1e-9a55-3c9a1d2e4f60",
                                            "ses_01HZX3", "agent-a1b2.c3", "x" * 200])
    def test_realistic_ids_are_accepted(self, session_id: str) -> None:
        """UUIDs and the agents' own id styles are accepted."""
        assert is_safe_session_id(session_id)

    @pytest.mark.parametrize("session_id", UNSAFE, ids=[repr(s)[:20] for s in UNSAFE])
    def test_content_with_an_unsafe_id_is_rejected_and_writes_nothing(
        self, store: FileAdapter, tmp_path: Path, session_id: str
    ) -> None:
        """The batch is refused with SinkRejected naming the offending records, and no file
        appears anywhere, inside or outside the content directory."""
        before = every_file(tmp_path)
        bad = [content(1, session=session_id), content(2, session=session_id)]
        with pytest.raises(SinkRejected) as info:
            store.write(batch(turn(1), content(3), *bad))
        assert set(info.value.record_ids) == {r.id for r in bad}
        assert "\n" not in str(info.value)
        assert every_file(tmp_path) - before <= {store.layout.store_lock}
        assert store.content(session_id) == []

    def test_unsafe_ids_on_other_records_do_not_touch_the_file_system(
        self, store: FileAdapter, tmp_path: Path
    ) -> None:
        """Turns only enter the ledger, so an odd session id there creates no file."""
        before = every_file(tmp_path)
        store.write(batch(turn(1, session="../../escape")))
        created = every_file(tmp_path) - before
        assert all(p.parent == store.layout.root for p in created)
        assert [t.session_id for t in store.turns()] == ["../../escape"]


class TestIndexDurability:
    """The index commit is what makes a write acknowledged."""

    def test_index_commits_are_synchronous(self, store: FileAdapter) -> None:
        """The index syncs every commit: a commit lost to a power cut would bring back the
        ``pending`` marker, and the next open would cut acknowledged records from the ledger."""
        store.write(batch(turn(1)))
        db = store._index()
        assert db.execute("PRAGMA synchronous").fetchone()[0] >= 2


class TestSealAndFold:
    """Ids, ``seal`` and ``fold``: the merge order every store applies."""

    def test_ids_separate_their_parts(self) -> None:
        """Moving text between identity fields gives another id."""
        assert make_id("ab", "c") != make_id("a", "bc")
        assert make_id("a", "b") == make_id("a", "b")
        assert len(make_id("x")) == 32

    def test_seal_is_deterministic_and_idempotent(self) -> None:
        """Sealing twice, or sealing an equal record, gives the same rank."""
        a, b = turn(1, output=42), turn(1, output=42)
        assert a.rank == b.rank == seal(a).rank
        assert turn(1, output=42, lines=2).rank != a.rank

    @settings(max_examples=60, deadline=None)
    @given(snapshots=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 50)),
                              min_size=1, max_size=8),
           seed=st.randoms(use_true_random=False))
    def test_fold_keeps_the_most_complete_snapshot_in_any_order(
        self, snapshots: list[tuple[int, int]], seed: random.Random
    ) -> None:
        """Whatever order snapshots arrive in, fold keeps the one with the most output,
        then the most lines."""
        records = [turn(9, output=o, lines=n) for o, n in snapshots]
        shuffled = list(records)
        seed.shuffle(shuffled)
        best = fold(records)[records[0].id]
        assert encode(fold(shuffled)[records[0].id]) == encode(best)
        top = max(snapshots)
        assert isinstance(best, Turn)
        assert (best.output_tokens, best.snapshot_lines) == top


class TestLedgerFormat:
    """The ledger is JSON lines of records tagged with their kind."""

    def test_ledger_lines_round_trip(self, store: FileAdapter) -> None:
        """Every ledger line is the encoding of a record written, kind first."""
        records: list[Record] = [turn(1), turn(2, output=33), user_turn(5)]
        store.write(batch(*records))
        lines = store.layout.ledger.read_bytes().splitlines()
        assert sorted(lines) == sorted(encode(r) for r in records)
        assert all(line.startswith(b'{"kind":"') for line in lines)
        assert {msgspec.json.decode(line)["kind"] for line in lines} == {"turn", "user-turn"}


def test_an_ingest_process_ends_with_its_index_written_and_its_output_whole(
    tmp_path: Path,
) -> None:
    """``ingest`` ends without the interpreter's teardown: the store was closed first
    (the deferred index rows are in), and everything it printed reached the pipe."""
    proc = run_cli("ingest", env={"CLAUDE_CONFIG_DIR": str(PUBLIC / "ccusage" / "claude"),
                                  "RELAYBURN_CONTENT_STORE": "off"})
    assert proc.stdout.endswith("\n") and "records:" in proc.stdout
    adapter = FileAdapter(load_settings())
    try:
        rows, covered = index_rows(adapter)
        assert covered == adapter.layout.ledger.stat().st_size > 0
        assert set(rows) == set(ledger_ids(adapter))
        assert not (adapter.layout.root / "ledger.index.sqlite-wal").exists() or (
            adapter.layout.root / "ledger.index.sqlite-wal").stat().st_size == 0
    finally:
        adapter.close()
    bad = run_cli("summary", "--by", "nope", check=False)
    assert bad.returncode == 2 and "unknown dimension" in bad.stderr
