"""RELAYBURN_HOME: layout, atomic versioned JSON state, quarantine, single-instance lock.

State files are written temp -> fsync -> rename -> fsync(dir), only when they
changed. On load a parseable ``<name>.new`` left by a crash wins, then the file
itself, then ``<name>.prev``; an unparseable one is renamed aside to
``<name>.corrupt-<unix time>`` and logged instead of crashing the daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from . import faults
from .errors import StateError
from .logging import get_logger

log = get_logger("home")

STATE_VERSION = 1


class HomeLayout(msgspec.Struct, frozen=True):
    """Where each host-local file lives (see docs/state.md)."""

    root: Path

    @property
    def cursors(self) -> Path:
        return self.root / "cursors.json"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.jsonl"

    @property
    def ledger_index(self) -> Path:
        return self.root / "ledger.index.sqlite"

    @property
    def content_dir(self) -> Path:
        return self.root / "content"

    @property
    def deadletter(self) -> Path:
        return self.root / "deadletter.jsonl"

    @property
    def instance_lock(self) -> Path:
        return self.root / "relayburnd.lock"

    @property
    def store_lock(self) -> Path:
        return self.root / "store.lock"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def prestop(self) -> Path:
        return self.root / "prestop.json"

    def ensure(self) -> HomeLayout:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.content_dir.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(
                f"RELAYBURN_HOME {self.root} cannot be created: {exc.strerror}; "
                "set RELAYBURN_HOME to a writable directory"
            ) from exc
        if not os.access(self.root, os.W_OK):
            raise StateError(
                f"RELAYBURN_HOME {self.root} is not writable; "
                "set RELAYBURN_HOME to a writable directory"
            )
        return self


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _no_fault(name: str) -> None:
    return None


def atomic_write_bytes(
    path: Path, data: bytes, *, keep_prev: bool = True, fault_points: bool = True
) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never half.

    ``fault_points`` is the cursor checkpoint's: other state files turn them off so a
    test's injected fault hits the write it means.
    """
    hit = faults.hit if fault_points else _no_fault
    tmp = path.with_name(path.name + ".new")
    hit("state_write")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        half = len(data) // 2
        os.write(fd, data[:half])
        hit("checkpoint_mid_tmp_write")
        view = memoryview(data)[half:]
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    hit("checkpoint_after_tmp_fsync")
    if keep_prev and path.exists():
        prev = path.with_name(path.name + ".prev")
        with contextlib.suppress(FileNotFoundError):
            prev.unlink()
        with contextlib.suppress(OSError):
            os.link(path, prev)
    os.replace(tmp, path)
    fsync_dir(path.parent)


StateCheck = Callable[[dict[str, Any]], bool]


def _decode_state(data: bytes, valid: StateCheck | None = None) -> dict[str, Any] | None:
    try:
        obj = msgspec.json.decode(data)
    except ValueError:  # msgspec.DecodeError, and UnicodeDecodeError for invalid UTF-8
        return None
    if not isinstance(obj, dict) or obj.get("version") != STATE_VERSION:
        return None
    if valid is not None and not valid(obj):
        return None
    return obj


def quarantine(path: Path, reason: str) -> Path:
    stamp = int(time.time())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():  # never overwrite an earlier quarantined copy
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.replace(path, aside)
    log.error("state.quarantined", file=str(path), moved_to=str(aside), reason=reason)
    return aside


def load_state(
    path: Path, *, valid: StateCheck | None = None
) -> tuple[dict[str, Any] | None, list[Path]]:
    """Load a versioned state file; returns (state or None, quarantined files).

    ``valid`` checks the shape of a decoded document; one it refuses is treated
    like an unparseable file.
    """
    quarantined: list[Path] = []
    new = path.with_name(path.name + ".new")
    if new.exists():
        obj = _decode_state(new.read_bytes(), valid)
        if obj is not None:
            os.replace(new, path)
            return obj, quarantined
        new.unlink()  # a half-written temp file: the rename never happened
    if path.exists():
        data = path.read_bytes()
        obj = _decode_state(data, valid)
        if obj is not None:
            return obj, quarantined
        quarantined.append(quarantine(path, "empty" if not data.strip(b"\0 \n") else "unparseable"))
    prev = path.with_name(path.name + ".prev")
    if prev.exists():
        obj = _decode_state(prev.read_bytes(), valid)
        if obj is not None:
            log.warning("state.restored_previous", file=str(path))
            return obj, quarantined
    return None, quarantined


class InstanceLock:
    """One relayburnd writer per RELAYBURN_HOME (``flock`` on relayburnd.lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> InstanceLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateError(
                f"another relayburnd (pid {holder}) is using {self.path.parent}; "
                "stop it or set a different RELAYBURN_HOME"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False, timeout: float = 30.0) -> Iterator[None]:
    """An ``flock`` shared between writers and pruning; waits up to ``timeout`` seconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} is locked by another process") from None
                time.sleep(0.02)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
