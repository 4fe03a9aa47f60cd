#!/usr/bin/env python3
"""Benchmark of the file store's archive on a ledger of a million requests.

Why it exists: the archive is what keeps ``summary`` and the other reports fast
on a big ledger; this measures the three numbers that matter, on a ledger
written directly in the file store's format (no parsing involved):

* ``archive build`` from nothing (cold),
* ``summary --by day,model`` with an up-to-date archive (target < 300 ms),
* ``archive build`` after 1,000 new requests were written (target < 1 s).

The ledger looks like a year of real use: sessions of a few dozen requests in
working hours (weekdays busier), a mix of Claude and Codex models, tool calls
with their result events, user turns, sub-agent turns, a few sidechain
replays, and streamed responses stored twice (a small snapshot, then the final
one). The same seed gives the same ledger.

Usage::

    python bench/archive.py [--turns 1000000] [--runs 7] [--dir DIR] [--seed 1]

Timings are medians of ``--runs`` (the machine may be busy); the cold build
runs once. The directory is kept for inspection when ``--dir`` is given.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from relayburnd.config import load_settings  # noqa: E402
from relayburnd.records import (  # noqa: E402
    Batch,
    Record,
    ToolCall,
    ToolResultEvent,
    Turn,
    UserTurn,
    encode,
    make_id,
    seal,
)
from relayburnd.storage.base import SummarySpec  # noqa: E402
from relayburnd.storage.file import FileAdapter  # noqa: E402

DAY_MS = 86_400_000
YEAR_START = 1_735_689_600_000  # 2025-01-01T00:00:00Z

# model, source, share, USD per million (input, output, cache write, cache read)
MODELS = [
    ("claude-sonnet-4-5-20250929", "claude", 0.55, (3.0, 15.0, 3.75, 0.30)),
    ("claude-opus-4-1-20250805", "claude", 0.12, (15.0, 75.0, 18.75, 1.50)),
    ("claude-haiku-4-5-20251001", "claude", 0.10, (1.0, 5.0, 1.25, 0.10)),
    ("gpt-5", "codex", 0.15, (1.25, 10.0, 0.0, 0.125)),
    ("gpt-5-mini", "codex", 0.05, (0.25, 2.0, 0.0, 0.025)),
    ("kimi-k2", "claude", 0.03, None),  # no known price
]
TOOLS = {
    "claude": [("Read", 30), ("Bash", 25), ("Edit", 15), ("Grep", 10), ("Glob", 5),
               ("Write", 4), ("TodoWrite", 4), ("Task", 2), ("WebFetch", 2),
               ("mcp__github__search", 3)],
    "codex": [("exec_command", 50), ("apply_patch", 30), ("update_plan", 10),
              ("web_search", 5), ("view_image", 5)],
}


def _pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([n for n, _ in weighted], [w for _, w in weighted])[0]


def _cost(prices: tuple[float, float, float, float] | None, t: Turn) -> float | None:
    if prices is None:
        return None
    i, o, cw, cr = prices
    return (t.input_tokens * i + t.output_tokens * o + t.cache_write_tokens * cw
            + t.cache_read_tokens * cr) / 1e6


def session_records(rng: random.Random, n: int, start_turn: int, ts0: int,
                    sid: str) -> Iterator[Record]:
    """One session of ``n`` requests starting at ``ts0``."""
    model, source, _, prices = rng.choices(MODELS, [m[2] for m in MODELS])[0]
    project = f"/home/dev/project-{rng.randrange(14)}"
    ts = ts0
    context = rng.randrange(2_000, 20_000)
    for k in range(n):
        key = start_turn + k
        if k % 6 == 0:
            ts += rng.randrange(20_000, 400_000)
            yield seal(UserTurn(id=make_id("user-turn", "bench", key), source=source,
                                session_id=sid, project=project, ts=ts,
                                message_id=f"u{key}", text_chars=rng.randrange(20, 800),
                                block_types=["text"]))
        ts += rng.randrange(2_000, 90_000)
        context = min(context + rng.randrange(500, 6_000), 180_000)
        sub = rng.random() < 0.08
        calls = [ToolCall(id=f"call{key}-{j}", name=_pick(rng, TOOLS[source]),
                          args_sha256="0" * 64, args_bytes=rng.randrange(20, 2000))
                 for j in range(rng.choices([0, 1, 2, 3], [30, 45, 17, 8])[0])]
        turn = Turn(
            id=make_id("turn", "bench", key), source=source, session_id=sid,
            project=project, ts=ts, model="claude-haiku-4-5-20251001" if sub else model,
            input_tokens=rng.randrange(1, 400), output_tokens=rng.randrange(20, 3000),
            cache_write_tokens=rng.randrange(0, 4000), cache_read_tokens=context,
            is_sidechain=sub, agent_id="sub" if sub else None, message_id=f"msg{key}",
            request_id=f"req{key}", tool_calls=calls, snapshot_lines=3, complete=True,
        )
        turn.cost_usd = _cost(prices if not sub else MODELS[2][3], turn)
        if rng.random() < 0.05:  # a streamed response also stored at an early snapshot
            early = Turn(**{**{f: getattr(turn, f) for f in turn.__struct_fields__},
                            "output_tokens": 1, "snapshot_lines": 1, "complete": False})
            yield seal(early)
        yield seal(turn)
        if rng.random() < 0.003:  # a side question replaying this response
            replay = Turn(**{**{f: getattr(turn, f) for f in turn.__struct_fields__},
                             "id": make_id("turn", "bench-replay", key), "is_sidechain": True,
                             "request_id": f"req{key}-replay"})
            yield seal(replay)
        for c in calls:
            yield seal(ToolResultEvent(
                id=make_id("tool-result", "bench", c.id), source=source, session_id=sid,
                ts=ts + rng.randrange(200, 30_000), tool_use_id=c.id, tool_name=c.name,
                is_error=rng.random() < 0.06, output_bytes=int(rng.paretovariate(1.2) * 300)))


def session_starts(rng: random.Random, total_turns: int) -> Iterator[tuple[int, int]]:
    """(first turn ts, number of turns) for sessions until ``total_turns`` are placed."""
    placed = 0
    while placed < total_turns:
        day = rng.randrange(365)
        weekday = (day + 2) % 7  # 2025-01-01 was a Wednesday
        if weekday >= 5 and rng.random() < 0.7:
            continue
        hour = min(23.5, max(0.0, rng.gauss(14, 3.5)))
        n = min(total_turns - placed, max(1, int(rng.lognormvariate(3.3, 0.8))))
        yield YEAR_START + day * DAY_MS + int(hour * 3_600_000), n
        placed += n


def write_ledger(path: Path, turns: int, seed: int) -> tuple[int, int]:
    """Ledger lines for ``turns`` requests (plus their other records); (lines, bytes)."""
    rng = random.Random(seed)
    lines = 0
    with path.open("wb") as fh:
        buf: list[bytes] = []
        placed = 0
        for i, (ts0, n) in enumerate(session_starts(rng, turns)):
            for rec in session_records(rng, n, placed, ts0, f"bench-session-{i:06d}"):
                buf.append(encode(rec) + b"\n")
            placed += n
            if len(buf) > 20_000:
                fh.write(b"".join(buf))
                lines += len(buf)
                buf.clear()
        fh.write(b"".join(buf))
        lines += len(buf)
    return lines, path.stat().st_size


def new_turns(seed: int, n: int, first: int) -> Batch:
    """``n`` requests of one fresh session, as the pipeline would deliver them."""
    rng = random.Random(seed)
    batch = Batch()
    ts0 = YEAR_START + 360 * DAY_MS + seed * 3_600_000
    for rec in session_records(rng, n, first, ts0, f"bench-new-{seed}"):
        batch.add(rec)
    return batch


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:,.0f} ms (runs: " + ", ".join(
        f"{s * 1000:,.0f}" for s in samples) + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="relayburn-bench-"))
    home = root / "home"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    env = {**os.environ, "RELAYBURN_HOME": str(home), "RELAYBURN_LOG_LEVEL": "error"}
    settings = load_settings(env)
    try:
        t = time.perf_counter()
        lines, size = write_ledger(home / "ledger.jsonl", args.turns, args.seed)
        print(f"ledger: {args.turns:,} requests, {lines:,} lines, {size / 2**20:,.0f} MiB "
              f"written in {time.perf_counter() - t:.1f} s")

        adapter = FileAdapter(settings)
        print(f"ledger index (file store, once): {timed(adapter.committed_ledger_size):.1f} s")

        archive = adapter.archive()
        report = archive.build()
        print(f"archive build, cold: {report.seconds:.1f} s "
              f"({report.steps} steps, {report.stats.written:,} rows)")
        files = archive.files()
        print(f"archive.sqlite: {files.get('archive.sqlite', 0) / 2**20:,.0f} MiB")

        spec = SummarySpec(by=("day", "model"), tz="Europe/Paris")
        rows = len(adapter.summary(spec).rows)
        samples = [timed(lambda: adapter.summary(spec)) for _ in range(args.runs)]
        print(f"summary --by day,model ({rows:,} rows), archive up to date, in process: "
              f"median {median_ms(samples)}")
        cli = [sys.executable, "-m", "relayburnd", "summary", "--by", "day,model",
               "--tz", "Europe/Paris", "--json"]
        samples = [timed(lambda: subprocess.run(cli, env=env, check=True, cwd=REPO,
                                                capture_output=True))
                   for _ in range(args.runs)]
        print(f"summary --by day,model, whole command (interpreter start included): "
              f"median {median_ms(samples)}")
        bare = [sys.executable, "-c", "import relayburnd.cli"]
        samples = [timed(lambda: subprocess.run(bare, env=env, check=True, cwd=REPO))
                   for _ in range(args.runs)]
        print(f"  of which starting Python and importing the CLI: median {median_ms(samples)}")

        tails: list[float] = []
        for run in range(args.runs):
            adapter.write(new_turns(1000 + run, 1000, 10_000_000 + run * 1000))
            report = archive.build()
            tails.append(report.seconds)
        print(f"archive build after 1,000 new requests ({report.stats.lines:,} ledger lines "
              f"incl. results and user turns): median {median_ms(tails)}")

        from relayburnd.reporting.sessions import session_rows
        from relayburnd.reports import summarize
        from relayburnd.storage.base import Filter

        month = Filter(since_ms=YEAR_START + 335 * DAY_MS)
        samples = [timed(lambda: session_rows(adapter, month)) for _ in range(3)]
        print(f"sessions report over the last 30 days of the ledger, in process: "
              f"median {median_ms(samples)}")

        t = time.perf_counter()

        summarize(adapter._ledger_records("turn", Filter()), spec)  # type: ignore[arg-type]
        print(f"for comparison, summary by folding the whole ledger: "
              f"{time.perf_counter() - t:.1f} s")
        adapter.close()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak memory of this process: {peak:,.0f} MiB")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
