"""Driving ``relayburnd run`` as a real subprocess, writing Claude logs, reading the store.

The oracle is independent of the daemon's code: the writer records what it
wrote (line uuids, response ids and their final output counts), and the
store is read from ``ledger.jsonl`` directly, folded the way the ledger's
contract says (per id, the greatest rank wins).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import free_port, json_events, wait_for

REPO = Path(__file__).resolve().parents[2]






@dataclass
class Layout:
    """Directories of one test: agent logs and RELAYBURN_HOME."""

    tmp: Path
    home: Path
    claude: Path
    codex: Path
    empty: Path

    @classmethod
    def make(cls, tmp: Path) -> Layout:
        claude = tmp / "claude"
        (claude / "projects").mkdir(parents=True)
        empty = tmp / "empty-agent-dir"
        empty.mkdir(exist_ok=True)
        return cls(tmp, tmp / "relayburn", claude, tmp / "codex", empty)

    def project(self, name: str = "-work-proj") -> Path:
        d = self.claude / "projects" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "RELAYBURN_HOME": str(self.home),
            "CLAUDE_CONFIG_DIR": str(self.claude),
            "CODEX_HOME": str(self.empty),
            "OPENCODE_DATA_DIR": str(self.empty),
            "RELAYBURN_LOG_FORMAT": "json",
            "RELAYBURN_FLUSH_INTERVAL": "0.2",
            "RELAYBURN_IDLE_GRACE": "1",
            "RELAYBURN_DRAIN_TIMEOUT": "10",
            "PYTHONPATH": str(REPO),
        })
        env.update(extra)
        return env


LIVE: list[Daemon] = []  # started in the current test; killed by conftest if left running


class Daemon:
    """``python -m relayburnd run`` under test."""

    def __init__(self, layout: Layout, *args: str, sources: tuple[str, ...] = ("claude",),
                 command: str = "run", prefix: tuple[str, ...] = (),
                 extra_env: dict[str, str] | None = None, **env: str) -> None:
        self.layout = layout
        self.prefix = list(prefix)
        self.port = free_port()
        self.env = layout.env(RELAYBURN_METRICS_ADDR=f"127.0.0.1:{self.port}",
                              **(extra_env or {}), **env)
        self.args = [command, *(a for s in sources for a in ("--source", s)), *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = layout.tmp / f"daemon-{time.monotonic_ns()}.log"

    def start(self, *, ready: bool = True) -> Daemon:
        self._log_fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "relayburnd", *self.args], env=self.env,
            stdout=self._log_fh, stderr=subprocess.STDOUT, cwd=REPO,
        )
        LIVE.append(self)
        if ready:
            self.wait_ready()
        return self

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                        timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError):
                # ready, and past the first sweep (the families of the scanner exist)
                return self.get("/readyz")[0] == 200 and "watch_mode{" in self.get("/metrics")[1]
            return False

        wait_for(ready, timeout, what="/readyz")

    def metrics(self) -> dict[str, float]:
        code, text = self.get("/metrics")
        assert code == 200
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key.removeprefix("relayburnd_")] = float(value)
        return out

    def metric(self, key: str) -> float:
        return self.metrics().get(key, 0.0)

    def caught_up(self, source: str = "claude") -> bool:
        """Files discovered and nothing on disk past the acknowledged cursors."""
        m = self.metrics()
        return (m.get(f'files_tracked{{source="{source}"}}', 0) > 0
                and m.get(f'lag_bytes{{source="{source}"}}', 1) == 0
                and m["oldest_unacked_age_seconds"] == 0)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> tuple[int, float]:
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - start

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return json_events(self.output())

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def run_relayburnd(layout: Layout, *args: str, timeout: float = 120,
                   **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relayburnd", *args], env=layout.env(**env),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


# ------------------------------------------------------------------ writing logs


@dataclass
class Writer:
    """Appends Claude Code lines to one session file and remembers what to expect."""

    path: Path
    session: str = "sess-1"
    prefix: str = "w"
    compactions: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    turns: dict[str, int] = field(default_factory=dict)  # message id -> final output
    n: int = 0

    def _ts(self) -> str:
        secs = 1767607200 + self.n
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + ".000Z"

    def _uuid(self) -> str:
        self.n += 1
        return f"{self.prefix}-{self.n:07d}"

    def compaction_line(self) -> tuple[str, bytes]:
        uid = self._uuid()
        line = {"type": "system", "subtype": "compact_boundary", "uuid": uid,
                "timestamp": self._ts(), "sessionId": self.session, "cwd": "/work/proj",
                "compactMetadata": {"trigger": "auto", "preTokens": self.n}}
        return uid, (json.dumps(line, separators=(",", ":")) + "\n").encode()

    def user_line(self, text: str | None = None) -> tuple[str, bytes]:
        uid = self._uuid()
        line = {"type": "user", "uuid": uid, "timestamp": self._ts(), "sessionId": self.session,
                "cwd": "/work/proj",
                "message": {"role": "user", "content": text or f"question {self.n}"}}
        return uid, (json.dumps(line, separators=(",", ":")) + "\n").encode()

    def assistant_line(self, msg: str, output: int, *, stop: bool) -> bytes:
        uid = self._uuid()
        line = {"type": "assistant", "uuid": uid, "timestamp": self._ts(),
                "sessionId": self.session, "cwd": "/work/proj", "requestId": f"req-{msg}",
                "message": {"id": msg, "model": "claude-sonnet-4-20250514", "role": "assistant",
                            "content": [{"type": "text", "text": "ok"}],
                            "stop_reason": "end_turn" if stop else None,
                            "usage": {"input_tokens": 10, "output_tokens": output,
                                      "cache_read_input_tokens": 0,
                                      "cache_creation_input_tokens": 0}}}
        return (json.dumps(line, separators=(",", ":")) + "\n").encode()

    def append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def compaction(self) -> str:
        uid, data = self.compaction_line()
        self.append(data)
        self.compactions.append(uid)
        return uid

    def user(self, text: str | None = None) -> str:
        uid, data = self.user_line(text)
        self.append(data)
        self.users.append(uid)
        return uid

    def response(self, msg: str, outputs: tuple[int, ...] = (1, 42)) -> None:
        """A streamed response: one line per output count, the last one final."""
        for i, out in enumerate(outputs):
            self.append(self.assistant_line(msg, out, stop=i == len(outputs) - 1))
        self.turns[msg] = outputs[-1]

    def exchange(self) -> None:
        """A user line, a streamed response, a compaction: every kind, in one stream."""
        self.user()
        self.response(f"msg-{self.prefix}-{self.n}")
        self.compaction()


# ------------------------------------------------------------------ reading the store


def committed_cursors(home: Path) -> dict[str, Any]:
    """``cursors.json`` with its journal applied: what the next start will load."""
    from relayburnd.cursors import merged_doc

    doc = merged_doc(home / "cursors.json")
    assert doc is not None, "cursors.json is unreadable"
    return doc


def ledger_lines(home: Path) -> list[dict[str, Any]]:
    path = home / "ledger.jsonl"
    if not path.exists():
        return []
    data = path.read_bytes()
    # The daemon may be mid-append: a line without its newline is not written yet.
    data = data[: data.rfind(b"\n") + 1]
    out = []
    for line in data.splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def folded(home: Path, kind: str) -> dict[str, dict[str, Any]]:
    """Per message id, the stored record of ``kind`` with the greatest rank."""
    by_id: dict[str, dict[str, Any]] = {}
    for rec in ledger_lines(home):
        if rec.get("kind") != kind:
            continue
        cur = by_id.get(rec["id"])
        if cur is None or rec["rank"] > cur["rank"]:
            by_id[rec["id"]] = rec
    return {r.get("message_id") or r["id"]: r for r in by_id.values()}


def raw_counts(home: Path, kind: str) -> dict[str, int]:
    """How many ledger lines each message id of ``kind`` has (not folded)."""
    counts: dict[str, int] = {}
    for rec in ledger_lines(home):
        if rec.get("kind") == kind:
            counts[rec["message_id"]] = counts.get(rec["message_id"], 0) + 1
    return counts


def assert_exactly_once(home: Path, writers: list[Writer]) -> None:
    """Every written record stored once (folded), nothing else, compactions never twice."""
    comps = folded(home, "compaction")
    users = folded(home, "user-turn")
    turns = folded(home, "turn")
    want_comps = {u for w in writers for u in w.compactions}
    want_users = {u for w in writers for u in w.users}
    want_turns = {m: out for w in writers for m, out in w.turns.items()}
    assert set(comps) == want_comps, (
        f"compactions: missing {sorted(want_comps - set(comps))[:5]}, "
        f"extra {sorted(set(comps) - want_comps)[:5]}")
    doubled = {k: n for k, n in raw_counts(home, "compaction").items() if n != 1}
    assert not doubled, f"compactions stored more than once: {list(doubled.items())[:5]}"
    assert set(users) == want_users, (
        f"user turns: missing {sorted(want_users - set(users))[:5]}, "
        f"extra {sorted(set(users) - want_users)[:5]}")
    got_turns = {m: r["output_tokens"] for m, r in turns.items()}
    assert got_turns == want_turns, (
        f"turns differ: {sorted(set(want_turns.items()) ^ set(got_turns.items()))[:5]}")


class LedgerWatch:
    """Follows ledger.jsonl from a thread and notes when each message id first appears."""

    def __init__(self, home: Path) -> None:
        self.path = home / "ledger.jsonl"
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LedgerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        pos = 0
        carry = b""
        while not self._stop.is_set():
            try:
                with self.path.open("rb") as fh:
                    fh.seek(pos)
                    data = fh.read()
            except FileNotFoundError:
                data = b""
            now = time.monotonic()
            if data:
                pos += len(data)
                lines = (carry + data).split(b"\n")
                carry = lines.pop()
                for line in lines:
                    if line:
                        mid = json.loads(line).get("message_id")
                        if mid is not None:
                            self.seen.setdefault(mid, now)
            time.sleep(0.005)


@contextlib.contextmanager
def store_locked(home: Path) -> Iterator[None]:
    """Hold the file store's lock: writes wait, then fail as SinkUnavailable (10 s)."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "store.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]
