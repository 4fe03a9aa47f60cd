"""Cursors and reading complete lines past them.

A cursor records, per file, its identity and how far the sink has acknowledged:
``dev``/``ino``, ``size``/``mtime_ns`` at the last read, ``offset`` (just after
the last newline consumed), a SHA-256 of the first ``head_len`` bytes and of
the up to 64 bytes before ``offset``, and the parser ``state``.

Identity rules (architecture section 2, reliability F16-F21):
* another inode, or a changed head hash -> a new file: read from 0;
* size below the offset, or a changed hash before the offset -> truncated or
  replaced: read from 0 (record ids absorb the re-read);
* only the device changed (reboot, overlay remount) but inode and head match
  -> the same file.

Reading never consumes a partial last line: chunks end at a newline. A line
longer than ``max_record_bytes`` is skipped (reported with its offset and
length) without being held in memory, and reading continues after it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

import msgspec

HEAD_BYTES = 1024
TAIL_BYTES = 64
CHUNK_BYTES = 8 * 1024 * 1024


_EMPTY_STATE = msgspec.Raw(b"{}")


def encode_state(state: dict[str, Any]) -> msgspec.Raw:
    """A parser state as a cursor holds it: JSON bytes (see ``Cursor``)."""
    return msgspec.Raw(msgspec.json.encode(state)) if state else _EMPTY_STATE


class Cursor(msgspec.Struct, omit_defaults=True):
    """Where a file stands: its identity and the acknowledged offset + parser state.

    ``omit_defaults``: ``cursors.json`` lists every file ever read and is written
    about once a second while agents work, so its entries are encoded by msgspec
    straight from the struct (a fifth of the CPU of building dicts first), and a
    field at its default is left out; ``from_json`` reads it back as that default.

    ``state`` is held as the JSON it is saved as, and decoded only when its file
    is read again (``parser_state``): a long session's state (the names of its
    recent tool calls, its open response) takes a few KB as JSON and three times
    that as Python objects, and the daemon holds the cursor of every file ever read.
    """

    source: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    offset: int = 0
    head_len: int = 0
    head_sha: str = ""
    tail_sha: str = ""
    state: msgspec.Raw = _EMPTY_STATE
    pending: bool = False  # parser holds records not yet emitted (e.g. a streaming response)
    gone_since: float | None = None

    def parser_state(self) -> dict[str, Any]:
        """A fresh copy of the parser state, for the next parse of the file."""
        out: dict[str, Any] = msgspec.json.decode(self.state)
        return out

    def to_json(self) -> dict[str, Any]:
        """The entry as ``cursors.json`` holds it."""
        out: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(self))
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Cursor:
        return cls(
            source=str(obj["source"]),
            dev=int(obj["dev"]),
            ino=int(obj["ino"]),
            size=int(obj["size"]),
            mtime_ns=int(obj["mtime_ns"]),
            offset=int(obj.get("offset", 0)),
            head_len=int(obj.get("head_len", 0)),
            head_sha=str(obj.get("head_sha", "")),
            tail_sha=str(obj.get("tail_sha", "")),
            state=encode_state(dict(obj.get("state") or {})),
            pending=bool(obj.get("pending", False)),
            gone_since=None if obj.get("gone_since") is None else float(obj["gone_since"]),
        )

    def unchanged(self, st: os.stat_result) -> bool:
        """Nothing new to read: same inode, size and mtime as at the last read."""
        return (
            st.st_ino == self.ino
            and st.st_size == self.size
            and st.st_mtime_ns == self.mtime_ns
            and self.offset == self.size
        )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pread(fh: BinaryIO, offset: int, length: int) -> bytes:
    return os.pread(fh.fileno(), length, offset) if length > 0 else b""


class Resume(msgspec.Struct):
    """Where to start reading a file and why."""

    offset: int
    state: dict[str, Any]
    reason: str  # new | resume | replaced | truncated | device-changed


def resume_point(fh: BinaryIO, st: os.stat_result, cursor: Cursor | None) -> Resume:
    """Validate a stored cursor against the open file (see module docstring)."""
    if cursor is None:
        return Resume(0, {}, "new")
    if st.st_ino != cursor.ino:
        return Resume(0, {}, "replaced")
    if cursor.head_len and _sha(_pread(fh, 0, cursor.head_len)) != cursor.head_sha:
        return Resume(0, {}, "replaced")
    if st.st_size < cursor.offset:
        return Resume(0, {}, "truncated")
    if cursor.offset:
        start = max(0, cursor.offset - TAIL_BYTES)
        if _sha(_pread(fh, start, cursor.offset - start)) != cursor.tail_sha:
            return Resume(0, {}, "truncated")
    reason = "device-changed" if st.st_dev != cursor.dev else "resume"
    return Resume(cursor.offset, cursor.parser_state(), reason)


def make_cursor(
    source: str, fh: BinaryIO, st: os.stat_result, offset: int, state: dict[str, Any]
) -> Cursor:
    """A cursor at ``offset`` with fresh identity hashes."""
    head_len = min(HEAD_BYTES, max(st.st_size, offset))
    head = _pread(fh, 0, head_len)
    start = max(0, offset - TAIL_BYTES)
    tail = _pread(fh, start, offset - start)
    return Cursor(
        source=source,
        dev=st.st_dev,
        ino=st.st_ino,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        offset=offset,
        head_len=len(head),
        head_sha=_sha(head),
        tail_sha=_sha(tail),
        state=encode_state(state),
    )


class Chunk(msgspec.Struct):
    """Complete lines ``data`` starting at ``offset``; ``end`` is the offset after them.

    ``skipped`` lists over-long lines passed over: (absolute offset, length).
    """

    offset: int
    data: bytes
    end: int
    skipped: list[tuple[int, int]] = msgspec.field(default_factory=list)


def iter_chunks(
    fh: BinaryIO,
    offset: int,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    max_record_bytes: int = 64 * 1024 * 1024,
    limit: int | None = None,
) -> Iterator[Chunk]:
    """Yield chunks of complete lines from ``offset`` to EOF (or ``limit``).

    Memory stays bounded by about ``chunk_bytes + max_record_bytes``: a line is
    held whole only while it is within ``max_record_bytes``.
    """
    fd = fh.fileno()
    pos = offset
    end_limit = limit if limit is not None else os.fstat(fd).st_size
    carry = b""
    carry_start = pos
    skipping_from: int | None = None  # start offset of an over-long line being skipped
    while pos < end_limit:
        want = min(chunk_bytes, end_limit - pos)
        block = os.pread(fd, want, pos)
        if not block:
            break
        pos += len(block)
        if skipping_from is not None:
            nl = block.find(b"\n")
            if nl < 0:
                continue
            line_end = pos - len(block) + nl + 1
            yield Chunk(skipping_from, b"", line_end, [(skipping_from, line_end - skipping_from)])
            skipping_from = None
            block = block[nl + 1 :]
            carry, carry_start = b"", line_end
            if not block:
                continue
        buf = carry + block if carry else block
        last_nl = buf.rfind(b"\n")
        if last_nl < 0:
            if len(buf) > max_record_bytes:
                skipping_from = carry_start
                carry = b""
            else:
                carry = buf
            continue
        data = buf[: last_nl + 1]
        carry = buf[last_nl + 1 :]
        data_start = carry_start
        carry_start = data_start + len(data)
        skipped: list[tuple[int, int]] = []
        if len(data) > max_record_bytes:
            data, skipped = _blank_long_lines(data, data_start, max_record_bytes)
        yield Chunk(data_start, data, carry_start, skipped)
        if len(carry) > max_record_bytes:
            skipping_from = carry_start
            carry = b""


def _blank_long_lines(
    data: bytes, start: int, max_record_bytes: int
) -> tuple[bytes, list[tuple[int, int]]]:
    """Blank out lines longer than the limit (reported, not parsed); offsets stay exact."""
    kept: list[bytes] = []
    skipped: list[tuple[int, int]] = []
    pos = 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        if nl + 1 - pos > max_record_bytes:
            skipped.append((start + pos, nl + 1 - pos))
            kept.append(b" " * (nl - pos) + b"\n")
        else:
            kept.append(data[pos : nl + 1])
        pos = nl + 1
    return b"".join(kept), skipped
