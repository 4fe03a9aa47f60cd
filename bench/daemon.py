#!/usr/bin/env python3
"""Daemon cost at rest and append-to-stored latency, on a tree of 5,000 watched files.

What it measures (targets from the daemon's design notes):

* idle CPU of ``relayburnd run`` over fixed windows once the backlog is shipped,
  from ``/proc/<pid>/stat`` (utime + stime), as a share of one core (< 1 %);
* resident memory over the same windows, from ``/proc/<pid>/status`` (< 80 MiB);
* latency from ``write()`` of a line to its record in ``ledger.jsonl``, over
  appends spread across random session files (p99 < 2 s);
* the bytes the daemon writes meanwhile, split into the store's growth and the
  rest (its state files: cursors and their journal, ``status.json``).

Each idle window is measured separately and the median is printed with its
ratio to the target, so one noisy window does not decide the result.

    python bench/daemon.py                       # inotify (auto), 5,000 files
    python bench/daemon.py --watch poll --files 1000 --windows 3 --window 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def line(uid: str, session: str, n: int) -> bytes:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1767607200 + n)) + ".000Z"
    obj = {"type": "system", "subtype": "compact_boundary", "uuid": uid, "timestamp": ts,
           "sessionId": session, "cwd": "/work", "compactMetadata": {"trigger": "auto"}}
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def tool_lines(session: str, i: int, calls: int) -> bytes:
    """``calls`` responses of one tool call each, then their results: what a working
    session leaves in the parser state a cursor holds (the calls' names, the open
    response)."""
    rows = []
    for k in range(calls):
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1767607300 + k)) + ".000Z"
        call = f"toolu_{i:08d}{k:04d}ABCDEFGHIJKLMN"
        rows.append({"type": "assistant", "uuid": f"a-{i}-{k}", "timestamp": ts,
                     "sessionId": session, "cwd": "/work", "requestId": f"req_{i}_{k}",
                     "message": {"id": f"msg_{i}_{k}", "model": "claude-sonnet-4-5",
                                 "role": "assistant", "stop_reason": "tool_use",
                                 "content": [{"type": "tool_use", "id": call, "name": "Bash",
                                              "input": {"command": f"ls /work/{k}"}}],
                                 "usage": {"input_tokens": 10, "output_tokens": 20}}})
        rows.append({"type": "user", "uuid": f"u-{i}-{k}", "timestamp": ts,
                     "sessionId": session, "cwd": "/work",
                     "message": {"role": "user", "content": [
                         {"type": "tool_result", "tool_use_id": call, "content": "ok"}]}})
    return b"".join((json.dumps(r, separators=(",", ":")) + "\n").encode() for r in rows)


def make_tree(root: Path, files: int, per_project: int = 50, calls: int = 0) -> list[Path]:
    """``files`` sessions of a few lines (and ``calls`` tool calls), ``per_project`` per
    project; every tenth session also has a ``subagents/`` directory, as Claude Code
    writes them."""
    out = []
    projects = root / "projects"
    for i in range(files):
        proj = projects / f"-home-dev-project-{i // per_project:03d}"
        proj.mkdir(parents=True, exist_ok=True)
        session = f"{i:08d}-0000-4000-8000-000000000000"
        path = proj / f"{session}.jsonl"
        path.write_bytes(b"".join(line(f"init-{i}-{k}", session, k) for k in range(3))
                         + tool_lines(session, i, calls))
        if i >= 20:  # a real tree: a few sessions of today, the rest over the past month
            past = time.time() - 3600 - (i % 30) * 86400
            os.utime(path, (past, past))
        if i % 10 == 0:
            (proj / session / "subagents").mkdir(parents=True)
        out.append(path)
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for row in fh:
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) / 1024
    return 0.0


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for row in text.splitlines():
        if row and not row.startswith("#"):
            key, _, value = row.rpartition(" ")
            out[key] = float(value)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def follow_ledger(path: Path, seen: dict[str, float], stop: threading.Event, start: int) -> None:
    # from where the ledger ends when appending starts: reading the backlog's records
    # first would time this thread, not the daemon
    pos, carry = start, b""
    while not stop.is_set():
        try:
            with path.open("rb") as fh:
                fh.seek(pos)
                data = fh.read()
        except FileNotFoundError:
            data = b""
        now = time.monotonic()
        if data:
            pos += len(data)
            rows = (carry + data).split(b"\n")
            carry = rows.pop()
            for row in rows:
                if row:
                    seen.setdefault(json.loads(row).get("message_id", ""), now)
        time.sleep(0.005)


def written_bytes(pid: int) -> int:
    """Bytes the process passed to write calls (``wchar``: counted whatever the file
    system does with them)."""
    with open(f"/proc/{pid}/io") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("wchar:"))


def stored_bytes(home: Path) -> int:
    """Bytes of the file store (ledger and sidecars): what the appends must write."""
    files = [home / "ledger.jsonl", *(home / "content").glob("*.jsonl")]
    return sum(p.stat().st_size for p in files if p.exists())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--watch", default="auto", choices=["auto", "inotify", "poll"])
    ap.add_argument("--window", type=float, default=30.0, help="seconds per idle window")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--appends", type=int, default=200)
    ap.add_argument("--tool-calls", type=int, default=0,
                    help="tool calls per session, for parser states of working sessions")
    ap.add_argument("--keep", action="store_true", help="keep the temporary tree")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="relayburnd-bench-"))
    claude, home, empty = tmp / "claude", tmp / "home", tmp / "empty"
    empty.mkdir()
    t0 = time.monotonic()
    files = make_tree(claude, args.files, calls=args.tool_calls)
    print(f"tree: {len(files)} session files in {time.monotonic() - t0:.1f}s")
    port = free_port()
    env = dict(os.environ, RELAYBURN_HOME=str(home), CLAUDE_CONFIG_DIR=str(claude),
               CODEX_HOME=str(empty), OPENCODE_DATA_DIR=str(empty), RELAYBURN_WATCH=args.watch,
               RELAYBURN_METRICS_ADDR=f"127.0.0.1:{port}", RELAYBURN_LOG_LEVEL="warning",
               PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "relayburnd", "run", "--source", "claude"],
                            env=env, cwd=REPO)
    try:
        t0 = time.monotonic()
        while True:
            time.sleep(0.5)
            try:
                m = metrics(port)
            except OSError:
                continue
            if m.get('relayburnd_files_tracked{source="claude"}', 0) >= len(files) \
                    and m.get('relayburnd_lag_bytes{source="claude"}', 1) == 0:
                break
            if time.monotonic() - t0 > 600:
                raise SystemExit("backlog not shipped within 10 minutes")
        print(f"backlog shipped in {time.monotonic() - t0:.1f}s; watch mode "
              + next(k.split('"')[1] for k, v in m.items()
                     if k.startswith("relayburnd_watch_mode") and v == 1))
        time.sleep(3)  # let the last batch settle

        cpu_pct, rss = [], []
        for _ in range(args.windows):
            c0, w0 = cpu_seconds(proc.pid), time.monotonic()
            end = w0 + args.window
            while time.monotonic() < end:
                rss.append(rss_mib(proc.pid))
                time.sleep(1.0)
            cpu_pct.append(100 * (cpu_seconds(proc.pid) - c0) / (time.monotonic() - w0))
        cpu = statistics.median(cpu_pct)
        mem = statistics.median(rss)
        print(f"idle CPU over {args.windows} x {args.window:g}s windows: median {cpu:.3f}% "
              f"of one core (windows: {', '.join(f'{c:.3f}' for c in cpu_pct)}); "
              f"target < 1% -> ratio {cpu / 1.0:.2f}")
        print(f"RSS: median {mem:.1f} MiB, max {max(rss):.1f} MiB; target < 80 MiB -> "
              f"ratio {max(rss) / 80:.2f}")

        seen: dict[str, float] = {}
        stop = threading.Event()
        ledger = home / "ledger.jsonl"
        follower = threading.Thread(
            target=follow_ledger, args=(ledger, seen, stop, ledger.stat().st_size), daemon=True)
        follower.start()
        rng = random.Random(1)
        written: dict[str, float] = {}
        targets = rng.sample(files, min(20, len(files)))
        wchar0, stored0 = written_bytes(proc.pid), stored_bytes(home)
        for n in range(args.appends):
            path = rng.choice(targets)
            uid = f"bench-{n}"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, line(uid, path.stem, 100 + n))
            written[uid] = time.monotonic()
            os.close(fd)
            time.sleep(rng.uniform(0.005, 0.05))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(u in seen for u in written):
            time.sleep(0.05)
        stop.set()
        wrote = written_bytes(proc.pid) - wchar0
        stored = stored_bytes(home) - stored0
        print(f"bytes written by the daemon during the appends: {wrote / 1e6:.2f} MB, of which "
              f"{stored / 1e6:.2f} MB ledger and sidecars and {(wrote - stored) / 1e6:.2f} MB "
              f"state (cursors, status)")
        lat = sorted(seen[u] - t for u, t in written.items() if u in seen)
        missing = len(written) - len(lat)
        p50 = lat[len(lat) // 2]
        p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
        print(f"append-to-stored latency over {len(written)} appends: p50 {p50:.3f}s "
              f"p99 {p99:.3f}s max {lat[-1]:.3f}s; target p99 < 2s -> ratio {p99 / 2:.2f}"
              + (f"; {missing} never stored" if missing else ""))
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        print(f"exit code after SIGTERM: {code}")
        ok = cpu < 1.0 and max(rss) < 80 and p99 < 2.0 and not missing and code == 0
        return 0 if ok else 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
