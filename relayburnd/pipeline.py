"""One ingest pass: changed files -> parse -> content policy -> price -> batch -> sink -> cursors.

The commit protocol (the reason this module exists): records are parsed from
complete lines past a file's cursor; the new cursor (offset + parser state) is
held aside; only after the sink acknowledged every record parsed from bytes
before it is the cursor committed and ``cursors.json`` written. A crash at
any point therefore re-reads at most what was not acknowledged, and record ids
make the re-delivery a no-op.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from . import faults, pricing
from .config import Settings
from .content import ContentPolicy
from .cursors import CursorStore
from .delivery import DeadLetters, Deliverer, Origin
from .errors import SinkUnavailable
from .logging import get_logger
from .records import KIND_OF, Batch, Record, Turn, WriteResult, seal_line
from .sources import load_source, roots_for, source_kind
from .sources.base import FileContext, ParseResult, PollSource, TailSource
from .tail import Cursor, iter_chunks, make_cursor, resume_point

log = get_logger("pipeline")
_LOGGED_SKIPS = 20  # per chunk; the dead-letter file lists every skipped line

SOURCE_NAMES = ("claude", "codex", "opencode")

FinalPolicy = Callable[[str, os.stat_result], bool]


class PassReport(msgspec.Struct):
    """What one pass did; printed by ``ingest`` and exported as metrics."""

    files_seen: int = 0
    files_read: int = 0
    bytes_read: int = 0
    parsed: Counter[str] = msgspec.field(default_factory=Counter)
    written: WriteResult = msgspec.field(default_factory=WriteResult)
    skipped: Counter[str] = msgspec.field(default_factory=Counter)
    dead_lettered: int = 0
    resets: Counter[str] = msgspec.field(default_factory=Counter)
    errors: list[str] = msgspec.field(default_factory=list)
    batches: int = 0
    undelivered: dict[str, int] = msgspec.field(default_factory=dict)
    unterminated: int = 0  # unterminated last lines consumed (drain or deleted file)

    def merge(self, other: PassReport) -> None:
        self.files_seen = max(self.files_seen, other.files_seen)
        self.files_read += other.files_read
        self.bytes_read += other.bytes_read
        self.parsed.update(other.parsed)
        self.written.add(other.written)
        self.skipped.update(other.skipped)
        self.dead_lettered += other.dead_lettered
        self.resets.update(other.resets)
        self.errors.extend(other.errors)
        self.batches += other.batches
        self.unterminated += other.unterminated

    def one_line(self) -> str:
        w = self.written
        skipped = (
            ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            or "none"
        )
        line = (
            f"{self.files_read} of {self.files_seen} files read ({self.bytes_read:,} bytes); "
            f"records: {w.inserted} new, {w.updated} updated, {w.unchanged} unchanged; "
            f"lines skipped: {skipped}"
        )
        if self.dead_lettered:
            line += f"; {self.dead_lettered} dead-lettered"
        if self.errors:
            line += f"; {len(self.errors)} error(s)"
        return line


class _FileWork(msgspec.Struct):
    source: str
    path: Path
    root: Path
    key: str
    st: os.stat_result
    cursor: Cursor | None
    fh: BinaryIO | None = None  # an open handle to read instead of opening ``path``


class Unit(msgspec.Struct):
    """A sealed batch and the cursors it covers (see ``Pipeline.seal``).

    The long-running daemon delivers one unit while it reads the next; the
    cursors of a unit are committed only after the sink acknowledged its batch,
    and units are committed in the order they were sealed.
    """

    batch: Batch
    origins: dict[str, Origin]
    files: dict[str, Cursor]
    polls: dict[str, dict[str, Any]]

    @property
    def records(self) -> int:
        return len(self.batch)


class Pipeline:
    """Reads sources and ships their records; owns the commit order (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        deliverer: Deliverer,
        cursors: CursorStore,
        *,
        sources: tuple[str, ...] = SOURCE_NAMES,
        chunk_bytes: int | None = None,
    ) -> None:
        self.settings = settings
        self.deliverer = deliverer
        self.cursors = cursors
        self.source_names = sources
        self.policy = ContentPolicy(settings.content_store, _redactor(settings))
        self.chunk_bytes = chunk_bytes or min(8 * 1024 * 1024, settings.batch_max_bytes)
        self._sources: dict[str, Any] = {}
        self._batch = Batch()
        self._origins: dict[str, Origin] = {}
        self._pending_files: dict[str, Cursor] = {}
        self._pending_polls: dict[str, dict[str, Any]] = {}
        self._sealed: list[Unit] = []
        self._saved_at = time.monotonic()

    def source(self, name: str) -> Any:
        if name not in self._sources:
            self._sources[name] = load_source(name)
        return self._sources[name]

    # ------------------------------------------------------------ discovery

    def discover(self) -> Iterator[tuple[str, Path, Path]]:
        for name in self.source_names:
            if source_kind(name) != "tail":
                continue
            src: TailSource = self.source(name)
            for path, root in src.discover(roots_for(self.settings, name)):
                yield name, path, root

    def plan(self, only: set[str] | None = None) -> tuple[list[_FileWork], int]:
        """Files with bytes or held records to process, and how many files were seen."""
        work: list[_FileWork] = []
        seen: set[str] = set()
        for name, path, root in self.discover():
            key = str(path)
            seen.add(key)
            if only is not None and key not in only:
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            cur = self.cursors.get(key)
            if cur is not None and cur.unchanged(st) and not cur.pending:
                continue
            work.append(_FileWork(name, path, root, key, st, cur))
        if only is None:
            self.cursors.mark_seen(seen)
        return work, len(seen)

    # ------------------------------------------------------------ pass

    def run_pass(
        self,
        *,
        final: bool | FinalPolicy = True,
        deadline: float | None = None,
        only: set[str] | None = None,
        progress: Callable[[int], None] | None = None,
        work: list[_FileWork] | None = None,
        files_seen: int | None = None,
    ) -> PassReport:
        """Process every changed file and poll source once; flush and commit."""
        report = PassReport()
        if work is None:
            work, report.files_seen = self.plan(only)
        else:
            report.files_seen = files_seen or len(work)
        for item in work:
            is_final = final if isinstance(final, bool) else final(item.key, item.st)
            try:
                self._read_file(item, is_final, report, deadline, progress)
            except OSError as exc:
                msg = f"{item.path}: cannot read ({exc.strerror or exc})"
                report.errors.append(msg)
                log.error("file.read_failed", file=str(item.path), reason=exc.strerror,
                          error_type="os_error", stage="read")
        if only is None:
            for name in self.source_names:
                if source_kind(name) == "poll":
                    self._poll(name, report, deadline)
        self.flush(report, deadline)
        return report

    def _ctx(self, item: _FileWork, offset: int) -> FileContext:
        return FileContext(
            path=item.path, root=item.root, offset=offset,
            with_content=self.policy.wants_content,
        )

    def _read_file(
        self,
        item: _FileWork,
        final: bool,
        report: PassReport,
        deadline: float | None,
        progress: Callable[[int], None] | None,
        *,
        stop_when_full: bool = False,
        partial_tail: bool = False,
    ) -> bool:
        """Read ``item`` past its cursor; False when ``stop_when_full`` stopped it early."""
        src: TailSource = self.source(item.source)
        opened = (
            contextlib.nullcontext(item.fh) if item.fh is not None else item.path.open("rb")
        )
        with opened as fh:
            fst = os.fstat(fh.fileno())
            resume = resume_point(fh, fst, item.cursor)
            if resume.reason in ("replaced", "truncated"):
                report.resets[resume.reason] += 1
                log.warning(f"file.{resume.reason}", file=str(item.path),
                            offset=item.cursor.offset if item.cursor else 0, stage="tail")
            offset, state = resume.offset, resume.state
            pending = item.cursor.pending if item.cursor else False
            read_any = False
            finished = False  # the parser was told the file is idle after its last line
            held = False  # the cursor held is the one for (offset, state, pending)
            for chunk in iter_chunks(
                fh, offset, chunk_bytes=self.chunk_bytes,
                max_record_bytes=self.settings.max_record_bytes, limit=fst.st_size,
            ):
                read_any = True
                for off, length in chunk.skipped:
                    self._skip_line(report, item, off, length, "too_long")
                # a chunk that ends the file is parsed as final at once, instead of being
                # followed by a separate empty final parse
                finished = final and chunk.end >= fst.st_size
                res = src.parse(chunk.data, state, self._ctx(item, chunk.offset),
                                final=finished)
                self._take(res, item, chunk.offset, report)
                state, pending = res.state, res.pending
                report.bytes_read += chunk.end - offset
                if progress is not None:
                    progress(chunk.end - offset)
                offset = chunk.end
                self._hold_cursor(item, fh, fst, offset, state, pending)
                held = True
                if self._batch_full():
                    if stop_when_full:
                        report.files_read += 1
                        return False
                    self.flush(report, deadline, checkpoint=False)
            if partial_tail and offset < fst.st_size:
                tail_end = self._read_tail(item, src, fh, offset, fst.st_size, state, pending,
                                           report)
                if tail_end is not None:
                    read_any = True
                    finished = held = False
                    offset, state, pending = tail_end
            if final and (pending or read_any) and not finished:
                res = src.parse(b"", state, self._ctx(item, offset), final=True)
                self._take(res, item, offset, report)
                state, pending = res.state, res.pending
                held = False
            if not held:
                self._hold_cursor(item, fh, fst, offset, state, pending)
            report.files_read += 1
        return True

    def _read_tail(
        self, item: _FileWork, src: TailSource, fh: BinaryIO, offset: int, size: int,
        state: dict[str, Any], pending: bool, report: PassReport,
    ) -> tuple[int, dict[str, Any], bool] | None:
        """Consume an unterminated last line (file deleted, or draining).

        A tail that is one complete JSON value is parsed as a line; anything
        else is dead-lettered. Either way the cursor moves to ``size``, so a
        restart never sends it twice. Returns (offset, state, pending).
        """
        length = size - offset
        if length > self.settings.max_record_bytes:
            self._skip_line(report, item, offset, length, "too_long")
            return size, state, pending
        data = os.pread(fh.fileno(), length, offset)
        if len(data) != length or b"\n" in data:
            return None  # the file changed under us; the next read sees it whole
        try:
            msgspec.json.decode(data)
        except msgspec.DecodeError:
            self._skip_line(report, item, offset, length, "unterminated_invalid")
            return size, state, pending
        res = src.parse(data + b"\n", state, self._ctx(item, offset), final=False)
        self._take(res, item, offset, report)
        report.unterminated += 1
        report.bytes_read += length
        log.warning("line.unterminated", file=str(item.path), offset=offset, length=length,
                    stage="tail")
        return size, res.state, res.pending

    def _hold_cursor(
        self, item: _FileWork, fh: BinaryIO, fst: os.stat_result, offset: int,
        state: dict[str, Any], pending: bool,
    ) -> None:
        cur = make_cursor(item.source, fh, fst, offset, state)
        cur.pending = pending
        self._pending_files[item.key] = cur

    def _skip_line(
        self, report: PassReport, item: _FileWork, offset: int, length: int, reason: str
    ) -> None:
        self._skip_lines(report, item, [(offset, length, reason)])

    def _skip_lines(
        self, report: PassReport, item: _FileWork, lines: Sequence[tuple[int, int, str]]
    ) -> None:
        """Count and dead-letter skipped lines: one fsync for all, a bounded number of logs."""
        if not lines:
            return
        path = str(item.path)
        self.deliverer.dead_letters.add_many([
            {"source": item.source, "file": path, "offset": offset, "length": length,
             "reason": reason}
            for offset, length, reason in lines
        ])
        report.skipped.update(reason for _offset, _length, reason in lines)
        report.dead_lettered += len(lines)
        for offset, length, reason in lines[:_LOGGED_SKIPS]:
            log.info("line.skipped", file=path, offset=offset, length=length,
                     error_type=reason, stage="parse")
        if len(lines) > _LOGGED_SKIPS:
            log.warning("line.skipped.more", file=path, count=len(lines) - _LOGGED_SKIPS,
                        stage="parse", hint="every skipped line is in deadletter.jsonl")

    def _take(self, res: ParseResult, item: _FileWork, base: int, report: PassReport) -> None:
        if res.skipped_lines:
            self._skip_lines(report, item, [(base + off, length, reason)
                                            for off, length, reason in res.skipped_lines])
        self._add(res.records, Origin(item.source, str(item.path), base), report)

    def _add(self, records: list[Record], origin: Origin, report: PassReport) -> None:
        # the per-record work of every ingest: each step is one loop, most of them in C
        if not records:
            return
        prices = pricing.PriceTable.bundled()  # loaded by the first pass with records
        kept = self.policy.apply(records)
        for rec in kept:
            if type(rec) is Turn:
                pricing.apply_pricing(rec, prices)
        self._batch.add_sealed(kept, [seal_line(rec) for rec in kept])
        self._origins.update(zip([rec.id for rec in kept], repeat(origin)))
        for kind, n in Counter(map(type, kept)).items():
            report.parsed[KIND_OF[kind]] += n

    def _poll(self, name: str, report: PassReport, deadline: float | None) -> None:
        src: PollSource = self.source(name)
        state = self.poll_position(name)
        try:
            res = src.poll(roots_for(self.settings, name), state)
        except OSError as exc:
            report.errors.append(f"{name}: {exc}")
            return
        for err in res.errors:
            report.errors.append(err)
            log.warning("source.error", source=name, reason=err, stage="poll")
        report.skipped.update(res.skipped)
        report.files_read += res.files_read
        self._add(res.records, Origin(name, name, 0), report)
        self._pending_polls[name] = res.state

    # ------------------------------------------------------------ flush

    def _batch_full(self) -> bool:
        return (
            len(self._batch) >= self.settings.batch_max_records
            or self._batch.nbytes >= self.settings.batch_max_bytes
        )

    def has_unflushed(self) -> bool:
        return bool(self._batch.records or self._pending_files or self._pending_polls)

    def flush(
        self, report: PassReport, deadline: float | None = None, *, checkpoint: bool = True
    ) -> None:
        """Deliver the batch, then commit the cursors it covers. Raises SinkUnavailable
        (cursors untouched) when ``deadline`` passes first.

        ``checkpoint=False`` (a batch that filled up in the middle of a pass) saves the
        cursors only when the last save is ``checkpoint_interval`` seconds old: a save
        per batch made a long backfill quadratic when each rewrote ``cursors.json``,
        still costs an fsync per batch, and a crash in between re-reads at most those
        seconds of acknowledged records, which the store recognises as unchanged."""
        if self._batch.records:
            dl_before = self.deliverer.stats.dead_lettered
            result = self.deliverer.deliver(self._batch, self._origins, deadline=deadline)
            report.written.add(result)
            report.batches += 1
            report.dead_lettered += self.deliverer.stats.dead_lettered - dl_before
            log.info("batch.delivered", records=len(self._batch),
                     inserted=result.inserted, updated=result.updated,
                     unchanged=result.unchanged)
        self._batch = Batch()
        self._origins = {}
        for key, cur in self._pending_files.items():
            self.cursors.put(key, cur)
        for name, state in self._pending_polls.items():
            self.cursors.put_poll_state(name, state)
        self._pending_files.clear()
        self._pending_polls.clear()
        faults.hit("before_checkpoint")
        now = time.monotonic()
        if checkpoint or now - self._saved_at >= self.settings.checkpoint_interval:
            self.cursors.save()
            self._saved_at = now

    def discard_unflushed(self) -> dict[str, int]:
        """Forget what was read but not delivered (it will be re-read); per-file bytes."""
        left: dict[str, int] = {}
        for key, cur in self._pending_files.items():
            old = self.cursors.get(key)
            left[key] = cur.offset - (old.offset if old and old.ino == cur.ino else 0)
        self._batch = Batch()
        self._origins = {}
        self._pending_files.clear()
        self._pending_polls.clear()
        return left

    # ------------------------------------------------------------ incremental use
    # The long-running daemon reads a little at a time and delivers sealed
    # units from another thread; these methods never flush by themselves.

    def position(self, key: str) -> Cursor | None:
        """The latest read position of a file: read but unsealed, sealed, else committed."""
        cur = self._pending_files.get(key)
        if cur is not None:
            return cur
        for unit in reversed(self._sealed):
            cur = unit.files.get(key)
            if cur is not None:
                return cur
        return self.cursors.get(key)

    def poll_position(self, name: str) -> dict[str, Any]:
        """The latest state of a poll source, in the same order as ``position``."""
        state = self._pending_polls.get(name)
        if state is None:
            for unit in reversed(self._sealed):
                state = unit.polls.get(name)
                if state is not None:
                    break
        return dict(state) if state is not None else self.cursors.poll_state(name)

    def batch_full(self) -> bool:
        return self._batch_full()

    def read_path(
        self,
        source: str,
        path: Path,
        root: Path,
        report: PassReport,
        *,
        fh: BinaryIO | None = None,
        final: bool = False,
        partial_tail: bool = False,
    ) -> bool:
        """Read one file past its latest position into the open batch, without flushing.

        Returns False when the batch filled up first; the next call goes on from
        there (the source file is the buffer, nothing is held back in memory).
        ``fh`` reads an already open handle, e.g. of a file deleted or renamed
        since; ``partial_tail`` consumes an unterminated last line.
        """
        if self._batch_full():
            return False
        key = str(path)
        try:
            st = os.fstat(fh.fileno()) if fh is not None else path.stat()
            item = _FileWork(source, path, root, key, st, self.position(key), fh)
            return self._read_file(item, final, report, None, None, stop_when_full=True,
                                   partial_tail=partial_tail)
        except OSError as exc:
            report.errors.append(f"{path}: cannot read ({exc.strerror or exc})")
            cur = self.position(key)
            log.error("file.read_failed", file=key, offset=cur.offset if cur else 0,
                      reason=exc.strerror or str(exc), error_type="os_error", stage="read")
            return True

    def poll_sources(self, report: PassReport) -> None:
        """Run every poll source once into the open batch."""
        for name in self.source_names:
            if source_kind(name) == "poll":
                self._poll(name, report, None)

    def seal(self) -> Unit | None:
        """Close the open batch with the cursors it covers; None when there is nothing."""
        if not (self._batch.records or self._pending_files or self._pending_polls):
            return None
        unit = Unit(self._batch, self._origins, dict(self._pending_files),
                    dict(self._pending_polls))
        self._batch = Batch()
        self._origins = {}
        self._pending_files.clear()
        self._pending_polls.clear()
        self._sealed.append(unit)
        return unit

    def commit(self, unit: Unit) -> None:
        """Advance cursors to what ``unit`` covered: only after the sink acknowledged it.

        Units are committed in the order they were sealed. ``cursors.json`` is
        not written here; the caller decides when (``CursorStore.save``).
        """
        if not self._sealed or self._sealed[0] is not unit:
            raise RuntimeError("units must be committed once, in the order they were sealed")
        self._sealed.pop(0)
        for key, cur in unit.files.items():
            self.cursors.put(key, cur)
        for name, state in unit.polls.items():
            self.cursors.put_poll_state(name, state)

    def unacknowledged(self) -> int:
        """Sealed units not committed yet (in flight, or failed at a deadline)."""
        return len(self._sealed)


def _redactor(settings: Settings) -> Any:
    if not settings.redact_secrets or settings.content_store != "full":
        return None
    from .redact import redact_many

    return redact_many


def build(settings: Settings, sink: Any | None = None) -> tuple[Pipeline, Any]:
    """A pipeline wired to the configured sink, cursors and dead-letter file."""
    from .home import HomeLayout
    from .storage import open_adapter

    layout = HomeLayout(settings.home).ensure()
    sink = sink or open_adapter(settings)
    deliverer = Deliverer(sink, DeadLetters(layout.deadletter))
    cursors = CursorStore(layout.cursors).load()
    return Pipeline(settings, deliverer, cursors), sink


def undelivered_error(exc: SinkUnavailable, left: dict[str, int]) -> str:
    files = ", ".join(f"{k} ({v} bytes)" for k, v in sorted(left.items())) or "none"
    return f"sink still unavailable at the deadline ({exc}); not delivered: {files}"


__all__ = ["PassReport", "Pipeline", "Unit", "build", "undelivered_error"]
