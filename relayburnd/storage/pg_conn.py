"""One PostgreSQL connection with deadlines, error translation and reconnects.

A server that accepts a connection and then never answers blocks a libpq
call forever, and ``statement_timeout`` cannot help when the server (or the
network) is what hangs. So every call runs under three limits: libpq's
``connect_timeout``, the server's ``statement_timeout`` and TCP keepalives,
plus a client-side deadline: a watchdog that shuts the socket down if the call
outlives it, which turns a hung peer into ``SinkUnavailable``.

psycopg errors become relayburnd's sink errors here and nowhere else. Messages
name the server (``postgres://user@host:port/db``), never the password.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper, Loader
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.string import BytesBinaryDumper

from ..config import redact_dsn
from ..errors import SinkError, SinkMisconfigured, SinkRejected, SinkUnavailable

T = TypeVar("T")

APPLICATION_NAME = "relayburnd"


@dataclass(frozen=True)
class PgTimeouts:
    """Limits on every call (defaults from reliability.md: connect 5 s, statements 30 s).

    ``call`` bounds a whole adapter call (a batch is several statements) on the
    client side; it is longer than ``statement`` so the server normally gives
    up first and the connection survives.
    """

    connect: float = 5.0
    statement: float = 30.0
    grace: float = 10.0
    keepalives_idle: int = 10
    keepalives_interval: int = 5
    keepalives_count: int = 3
    idle_in_transaction: float = 60.0

    @property
    def call(self) -> float:
        return self.statement + self.grace


# ------------------------------------------------------------------ DSN


def _secrets(dsn: str, params: dict[str, str]) -> list[str]:
    found = [params.get("password", ""), os.environ.get("PGPASSWORD", "")]
    m = re.search(r"://[^/@:]*:([^@/]*)@", dsn)
    if m:
        found.append(m.group(1))
    return sorted({s for s in found if s}, key=len, reverse=True)


class Dsn:
    """A connection string, its printable name and the secrets to keep out of messages."""

    def __init__(self, dsn: str) -> None:
        self.raw = dsn
        try:
            self.params: dict[str, str] = {
                k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None
            }
        except psycopg.Error as exc:
            self.params = {}
            self.secrets = _secrets(dsn, {})
            raise SinkMisconfigured(
                f"postgres DSN {redact_dsn(dsn)!r} is invalid: {self.scrub(str(exc))}"
            ) from None
        self.secrets = _secrets(dsn, self.params)

    @property
    def label(self) -> str:
        p, env = self.params, os.environ
        host = p.get("host") or p.get("hostaddr") or env.get("PGHOST") or "localhost"
        port = p.get("port") or env.get("PGPORT") or "5432"
        user = p.get("user") or env.get("PGUSER") or ""
        db = p.get("dbname") or env.get("PGDATABASE") or user
        return f"postgres://{user + '@' if user else ''}{host}:{port}/{db}"

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", text)


def connect_kwargs(dsn: Dsn, timeouts: PgTimeouts) -> dict[str, str | int]:
    """libpq parameters added to the DSN: deadlines, keepalives and the application name.

    What the DSN (or PGOPTIONS) already sets is left as the operator chose it.
    """
    options = dsn.params.get("options") or os.environ.get("PGOPTIONS", "")
    for name, ms in (
        ("statement_timeout", timeouts.statement * 1000),
        ("idle_in_transaction_session_timeout", timeouts.idle_in_transaction * 1000),
    ):
        if name not in options:
            options = f"{options} -c {name}={int(ms)}".strip()
    wanted: dict[str, str | int] = {
        "connect_timeout": max(1, round(timeouts.connect)),
        "fallback_application_name": APPLICATION_NAME,
        "keepalives": 1,
        "keepalives_idle": timeouts.keepalives_idle,
        "keepalives_interval": timeouts.keepalives_interval,
        "keepalives_count": timeouts.keepalives_count,
        "tcp_user_timeout": int(timeouts.call * 1000),
    }
    out = {k: v for k, v in wanted.items() if k not in dsn.params}
    out["options"] = options
    return out


# ------------------------------------------------------------------ uuid as hex


class _HexUuidBinaryLoader(Loader):
    format = pq.Format.BINARY

    def load(self, data: pq.abc.Buffer) -> str:
        return bytes(data).hex()


class _HexUuidTextLoader(Loader):
    format = pq.Format.TEXT

    def load(self, data: pq.abc.Buffer) -> str:
        return bytes(data).decode().replace("-", "")


_UUID_OID = 2950
_UUID_ARRAY_OID = 2951
_LENGTH_16 = b"\x00\x00\x00\x10"


class IdArray:
    """Record ids (32 hex characters each) as one ``uuid[]`` parameter, built in
    its binary format: the server reads 16 bytes per id, and the client joins
    byte strings instead of checking thousands of strings one by one."""

    __slots__ = ("data",)

    def __init__(self, ids: Sequence[str]) -> None:
        n = len(ids)
        if not n:
            self.data = struct.pack("!iiI", 0, 0, _UUID_OID)
            return
        raw = bytes.fromhex("".join(ids))
        head = struct.pack("!iiIii", 1, 0, _UUID_OID, n, 1)
        self.data = head + _LENGTH_16 + _LENGTH_16.join(
            [raw[i : i + 16] for i in range(0, 16 * n, 16)])


class _IdArrayDumper(Dumper):
    format = pq.Format.BINARY
    oid = _UUID_ARRAY_OID

    def dump(self, obj: IdArray) -> bytes:
        return obj.data


def _register_adapters(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Ids are read back as the same 32-hex strings the records use, not ``uuid.UUID``.

    Bytes (ids and raw content on their way in) are dumped by the library's plain
    bytes dumper, which has a C version, rather than by the DB-API ``Binary``
    dumper it registers by default, which runs Python code for every value
    (measured on a binary COPY of turns: 0.82 instead of 1.09 microseconds of
    client time per row).
    """
    conn.adapters.register_loader("uuid", _HexUuidBinaryLoader)
    conn.adapters.register_loader("uuid", _HexUuidTextLoader)
    conn.adapters.register_dumper(bytes, BytesBinaryDumper)
    conn.adapters.register_dumper(IdArray, _IdArrayDumper)


# ------------------------------------------------------------------ errors

_MISCONFIGURED_TEXT = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "is not permitted to log in",
    "authentication failed",
    "no password supplied",
    "does not support ssl",
    "ssl is not enabled",
    "sslmode",
    "certificate",
    "invalid connection option",
    "invalid uri",
)
_MISCONFIGURED_STATES = ("28", "3D", "42501", "42P01", "42703", "42883", "3F")
_REJECTED_STATES = ("22", "23", "54")


def classify(exc: BaseException) -> type[SinkError]:
    """Which sink error a psycopg error is (reliability.md retry classes)."""
    state = getattr(exc, "sqlstate", None) or ""
    if state:
        if state.startswith(_MISCONFIGURED_STATES):
            return SinkMisconfigured
        if state.startswith(_REJECTED_STATES):
            return SinkRejected
        if isinstance(exc, psycopg.ProgrammingError):
            return SinkMisconfigured
        return SinkUnavailable
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return SinkRejected
    text = str(exc).lower()
    if isinstance(exc, psycopg.ProgrammingError) or any(t in text for t in _MISCONFIGURED_TEXT):
        return SinkMisconfigured
    return SinkUnavailable


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.strip().splitlines() if part.strip())


# ------------------------------------------------------------------ deadline


class _Watchdog:
    """One thread per process that ends the calls still running at their deadline.

    A call registers its deadline and removes it when it returns: two dict
    operations under a lock, where a timer thread per call cost a thread start
    (and, on a busy process, a wait for the interpreter lock) for every batch.
    The thread sleeps until the earliest deadline it knows of and is woken only
    when a call's deadline comes before that (or it had none), so calls that
    all use the same limit almost never wake it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active: dict[int, _Deadline] = {}
        self._wake_at: float | None = None
        self._thread: threading.Thread | None = None

    def add(self, deadline: _Deadline) -> None:
        with self._cond:
            self._active[id(deadline)] = deadline
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="relayburnd-pg-deadline",
                                                daemon=True)
                self._thread.start()
            if self._wake_at is None or deadline.at < self._wake_at:
                self._wake_at = deadline.at
                self._cond.notify()

    def remove(self, deadline: _Deadline) -> None:
        with self._cond:
            self._active.pop(id(deadline), None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key, deadline in list(self._active.items()):
                    if deadline.at <= now:
                        del self._active[key]
                        deadline.fire()
                self._wake_at = min((d.at for d in self._active.values()), default=None)
                self._cond.wait(None if self._wake_at is None else self._wake_at - now)


_watchdog = _Watchdog()


def _new_watchdog() -> None:
    global _watchdog
    _watchdog = _Watchdog()  # a forked child has no watchdog thread, and maybe a held lock


os.register_at_fork(after_in_child=_new_watchdog)


class _Deadline:
    """Shuts the connection's socket down if a call is still running at the deadline.

    ``shutdown`` (unlike ``close``) wakes a thread blocked on the socket, so the
    pending libpq call fails at once with a connection error.
    """

    __slots__ = ("_done", "_fd", "_lock", "_watchdog", "at", "fired")

    def __init__(self, fd: int, seconds: float) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self.at = time.monotonic() + seconds
        self._watchdog = _watchdog
        self._watchdog.add(self)

    def fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            try:
                sock = socket.socket(fileno=os.dup(self._fd))
            except OSError:
                return
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                sock.close()

    def finish(self) -> None:
        with self._lock:
            self._done = True
        self._watchdog.remove(self)  # outside our lock: the watchdog fires under its own


# ------------------------------------------------------------------ session

Conn = psycopg.Connection[tuple[object, ...]]


class PgSession:
    """A lazily opened connection; every call is bounded, translated and reconnects.

    ``prepare`` runs on each new connection (schema check, staging tables).
    Calls are serialised by a lock: one connection, one call at a time.
    """

    def __init__(
        self, dsn: Dsn, timeouts: PgTimeouts, prepare: Callable[[Conn], None] | None = None
    ) -> None:
        self.dsn = dsn
        self.timeouts = timeouts
        self._prepare = prepare
        self._conn: Conn | None = None
        self._lock = threading.RLock()

    def call(self, where: str, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` on a live connection within the call deadline."""
        with self._lock:
            conn = self._live_connection(where)
            return self._bounded(conn, where, fn)

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -------------------------------------------------------- internals

    def _bounded(self, conn: Conn, where: str, fn: Callable[[Conn], T]) -> T:
        deadline = _Deadline(conn.fileno(), self.timeouts.call)
        try:
            return fn(conn)
        except psycopg.Error as exc:
            self._recover(conn)
            raise self._translate(exc, where, deadline.fired) from (
                exc if self.dsn.scrub(str(exc)) == str(exc) else None
            )
        except BaseException:
            self._recover(conn)
            raise
        finally:
            deadline.finish()

    def _recover(self, conn: Conn) -> None:
        """Leave no half-done transaction behind; forget a broken connection."""
        if conn.closed or conn.broken:
            self._drop()
            return
        try:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                conn.rollback()
        except psycopg.Error:
            self._drop()

    def _translate(self, exc: psycopg.Error, where: str, timed_out: bool) -> SinkError:
        if timed_out:
            return SinkUnavailable(
                f"{self.dsn.label}: {where}: no answer within {self.timeouts.call:g} s; "
                "connection closed"
            )
        kind = classify(exc)
        text = self.dsn.scrub(_one_line(str(exc)) or type(exc).__name__)
        return kind(f"{self.dsn.label}: {where}: {text}")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _live_connection(self, where: str) -> Conn:
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken or self._went_away(conn)):
            self._drop()
            conn = None
        if conn is None:
            conn = self._connect(where)
        return conn

    def _went_away(self, conn: Conn) -> bool:
        """An idle connection with bytes waiting was most likely terminated by the server.

        Checked before each call at the cost of one ``select``; a probe query then
        tells, so a backend killed while idle costs a reconnect, not a failed call.
        """
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        try:
            self._bounded(conn, "probe", lambda c: c.execute("SELECT 1").fetchall())
        except SinkError:
            return True
        return False

    def _connect(self, where: str) -> Conn:
        try:
            conninfo = make_conninfo(self.dsn.raw, **connect_kwargs(self.dsn, self.timeouts))
            conn: Conn = psycopg.connect(conninfo, autocommit=False)
        except psycopg.Error as exc:
            raise self._translate(exc, f"{where}: connect", False) from (
                exc if self.dsn.scrub(str(exc)) == str(exc) else None
            )
        _register_adapters(conn)
        self._conn = conn
        if self._prepare is not None:
            prepare = self._prepare
            try:
                self._bounded(conn, f"{where}: prepare", lambda c: prepare(c))
            except BaseException:
                self._drop()
                raise
        return conn
