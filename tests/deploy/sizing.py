#!/usr/bin/env python3
"""What the relayburnd sidecar costs: CPU and peak memory when busy and idle.

Runs ``relayburnd run`` with the sidecar's settings from ``k8s/`` (PostgreSQL
store, metrics on, drain deadline) against a scratch database on the local
server, over a corpus from ``bench/corpus.py`` laid out as the agent's home:

* busy: shipping the whole corpus as a backlog (the worst case: a Pod that
  starts on a volume full of logs, or catches up after an outage), then an
  agent appending exchanges at a steady rate;
* idle: nothing written, everything shipped;
* drain: SIGTERM, until exit.

CPU comes from ``/proc/<pid>/stat`` (utime + stime), memory from
``/proc/<pid>/status`` (VmRSS, VmHWM = peak RSS). The figures behind the
resources in ``k8s/`` were measured with the defaults::

    python tests/deploy/sizing.py            # ~126 MB corpus; about a minute
    python tests/deploy/sizing.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# run as a script: its own directory (deploy_support) and the repository (tests.support)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_support import (
    K8S,
    REPO,
    Bundle,
    ClaudeAgent,
    DaemonProcess,
    PgDatabase,
    PodPaths,
    cpu_seconds,
    grace_seconds,
    sidecar_env,
    status_kib,
    wait_for,
)


@dataclass
class Figures:
    corpus_mb: float
    backlog_seconds: float
    backlog_cpu_seconds: float
    backlog_cpu_mean_cores: float
    backlog_cpu_peak_cores: float  # busiest one-second window
    idle_cpu_percent: float  # of one core
    idle_rss_mib: float
    steady_write_kb_s: float
    steady_cpu_percent: float
    peak_rss_mib: float  # VmHWM over the whole run
    drain_seconds: float
    exit_code: int


class Sampler:
    """CPU per second of a process, from a thread, until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_cores = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        last_cpu, last_t = cpu_seconds(self.pid), time.monotonic()
        while not self._stop.wait(1.0):
            try:
                cpu, now = cpu_seconds(self.pid), time.monotonic()
            except OSError:
                return
            self.peak_cores = max(self.peak_cores, (cpu - last_cpu) / (now - last_t))
            last_cpu, last_t = cpu, now


def _corpus(target: Path, claude_mb: int, codex_mb: int, opencode_sessions: int) -> float:
    subprocess.run([sys.executable, str(REPO / "bench" / "corpus.py"), "--out", str(target),
                    "--claude-mb", str(claude_mb), "--codex-mb", str(codex_mb),
                    "--opencode-sessions", str(opencode_sessions)],
                   check=True, stdout=subprocess.DEVNULL)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return size / 1e6


def _cpu_share(pid: int, seconds: float) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def measure(work: Path, *, claude_mb: int = 100, codex_mb: int = 20,
            opencode_sessions: int = 20, idle_s: float = 20.0, steady_s: float = 20.0,
            steady_exchanges_s: float = 20.0, db: PgDatabase | None = None) -> Figures:
    """Measure in ``work`` (a new directory); ``db`` is an empty database, else one is
    created on the local server and dropped afterwards."""
    bundle = Bundle.load(K8S)
    paths = PodPaths(bundle, work / "pod")
    corpus = work / "corpus"
    corpus_mb = _corpus(corpus, claude_mb, codex_mb, opencode_sessions)
    agent_home = paths.host(bundle.agent(), bundle.env_of(bundle.agent())["HOME"])
    (agent_home / ".local" / "share").mkdir(parents=True, exist_ok=True)
    os.replace(corpus / "claude", agent_home / ".claude")
    os.replace(corpus / "codex", agent_home / ".codex")
    os.replace(corpus / "opencode", agent_home / ".local" / "share" / "opencode")

    own = db is None
    db = PgDatabase.create() if db is None else db
    try:
        env = sidecar_env(bundle, paths, RELAYBURN_PG_DSN=db.dsn, RELAYBURN_LOG_LEVEL="warning")
        daemon = DaemonProcess(env, work / "relayburnd.log").start()
        try:
            t0 = time.monotonic()
            daemon.wait_ready()
            with Sampler(daemon.pid) as sampler:
                wait_for(daemon.caught_up, 600, "the backlog to be shipped", interval=0.2)
                backlog_s = time.monotonic() - t0
                backlog_cpu = cpu_seconds(daemon.pid)
                time.sleep(3)  # let the last checkpoint and idle back-off settle
                idle = _cpu_share(daemon.pid, idle_s)
                idle_rss = status_kib(daemon.pid, "VmRSS") / 1024

                agent = ClaudeAgent(agent_home / ".claude" / "projects", name="steady")
                c0, t1 = cpu_seconds(daemon.pid), time.monotonic()
                written = 0
                while time.monotonic() - t1 < steady_s:
                    before = agent.n
                    agent.exchange(f"steady-{int(time.monotonic() - t1) % 4}")
                    written += (agent.n - before) * 450  # bytes per line, roughly
                    time.sleep(1 / steady_exchanges_s)
                wait_for(daemon.caught_up, 60, "the steady writes to be shipped")
                steady_wall = time.monotonic() - t1
                steady = 100 * (cpu_seconds(daemon.pid) - c0) / steady_wall
                peak_rss = status_kib(daemon.pid, "VmHWM") / 1024
            code, drain_s = daemon.terminate(grace_seconds(bundle))
        finally:
            daemon.kill()
    finally:
        if own:
            db.drop()
    return Figures(
        corpus_mb=round(corpus_mb, 1),
        backlog_seconds=round(backlog_s, 1),
        backlog_cpu_seconds=round(backlog_cpu, 2),
        backlog_cpu_mean_cores=round(backlog_cpu / backlog_s, 2),
        backlog_cpu_peak_cores=round(sampler.peak_cores, 2),
        idle_cpu_percent=round(idle, 2),
        idle_rss_mib=round(idle_rss, 1),
        steady_write_kb_s=round(written / steady_wall / 1000, 1),
        steady_cpu_percent=round(steady, 2),
        peak_rss_mib=round(peak_rss, 1),
        drain_seconds=round(drain_s, 2),
        exit_code=code,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--claude-mb", type=int, default=100)
    ap.add_argument("--codex-mb", type=int, default=20)
    ap.add_argument("--opencode-sessions", type=int, default=20)
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of the idle window")
    ap.add_argument("--steady", type=float, default=20.0, help="seconds of steady writing")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="relayburnd-sizing-"))
    try:
        figures = measure(work, claude_mb=args.claude_mb, codex_mb=args.codex_mb,
                          opencode_sessions=args.opencode_sessions, idle_s=args.idle,
                          steady_s=args.steady)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(asdict(figures), indent=2))
    else:
        for key, value in asdict(figures).items():
            print(f"{key:26} {value}")
    return 0 if figures.exit_code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
