"""PostgreSQL sink benchmark: adapter write rate beside raw COPY, and summary latency.

Prints, for one PostgreSQL server and one run:

* raw binary COPY into a plain table with the turns columns (no keys, no
  indexes): the ceiling for getting rows into that server from Python;
* turns/s through ``PostgresAdapter.write`` into an empty database (cold) and
  with half of every batch re-delivered, and their ratio to the raw rate;
* the latency of ``summary --by day,model`` over all turns (median of runs).

It creates a database of its own (``relayburn_bench_<random>``) and drops it
at the end; nothing else on the server is touched. Usage::

    python bench/sink.py [--admin-dsn "host=127.0.0.1 user=postgres"] [--turns 1000000]
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from relayburnd.config import load_settings
from relayburnd.records import Batch, ToolCall, Turn, make_id, seal
from relayburnd.storage.base import SummarySpec
from relayburnd.storage.pg_write import MergeSql
from relayburnd.storage.postgres import PostgresAdapter
from relayburnd.storage.sql_common import SPECS, RowCodec

MODELS = ("claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5-codex", None)
DAY_MS = 86_400_000


def make_turns(n: int, seed: int = 7, days: int = 90) -> list[Turn]:
    """``n`` sealed turns from interleaved sessions over ``days``, in time order.

    About 10% are sidechain turns and 1% of those replay a main-thread
    response; a third carry a tool call: roughly what agent logs hold.
    """
    rnd = random.Random(seed)
    start = 1_750_000_000_000
    step = days * DAY_MS // n
    turns: list[Turn] = []
    live: list[tuple[str, str, str]] = []
    recent_main: list[str] = []
    for i in range(n):
        if not live or rnd.random() < 0.005:
            sid = f"{rnd.getrandbits(128):032x}"
            source = rnd.choice(("claude", "codex", "opencode"))
            live.append((sid, source, f"/home/dev/p{rnd.randrange(40)}"))
            if len(live) > 8:
                live.pop(0)
        session, source, project = rnd.choice(live)
        sidechain = rnd.random() < 0.10
        message_id = f"msg_{i:012d}"
        if sidechain and recent_main and rnd.random() < 0.01:
            message_id = rnd.choice(recent_main)
        elif not sidechain:
            recent_main.append(message_id)
            recent_main = recent_main[-100:]
        rec = seal(
            Turn(
                id=make_id(message_id, f"req_{i}"),
                source=source,
                session_id=session,
                project=project,
                ts=start + i * step + rnd.randrange(step),
                model=rnd.choice(MODELS),
                speed="fast" if rnd.random() < 0.05 else None,
                input_tokens=rnd.randrange(5_000),
                output_tokens=rnd.randrange(3_000),
                cache_read_tokens=rnd.randrange(200_000),
                cache_write_tokens=rnd.randrange(20_000),
                cost_usd=rnd.random() / 10 if rnd.random() < 0.97 else None,
                is_sidechain=sidechain,
                message_id=message_id,
                request_id=f"req_{i}",
                stop_reason="end_turn",
                tool_calls=[ToolCall(id=f"toolu_{i}", name="Bash", args_sha256="0" * 64)]
                if i % 3 == 0
                else [],
                complete=True,
            )
        )
        assert isinstance(rec, Turn)
        turns.append(rec)
    return turns


@contextmanager
def scratch_database(admin_dsn: str) -> Iterator[str]:
    name = f"relayburn_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def raw_copy_rate(dsn: str, turns: list[Turn], batch: int) -> float:
    """Rows/s of binary COPY of ready-made rows into a plain table, a commit per batch."""
    spec = SPECS["turn"]
    codec = RowCodec(spec, "postgres")
    rows = [codec.encode(t) for t in turns]
    merge = MergeSql(spec)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE raw_turns (LIKE turns)")
        conn.commit()
        sql = merge.copy_direct.replace("COPY turns", "COPY raw_turns")
        t0 = time.perf_counter()
        for i in range(0, len(rows), batch):
            with conn.cursor().copy(sql) as copy:
                copy.set_types(merge.copy_types)
                for row in rows[i : i + batch]:
                    copy.write_row(row)
            conn.commit()
        elapsed = time.perf_counter() - t0
        conn.execute("DROP TABLE raw_turns")
        conn.commit()
    return len(rows) / elapsed


def adapter_rate(adapter: PostgresAdapter, batches: list[list[Turn]]) -> float:
    n = sum(len(b) for b in batches)
    t0 = time.perf_counter()
    for records in batches:
        adapter.write(Batch(list(records)))
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--admin-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    ap.add_argument("--turns", type=int, default=1_000_000, help="turns for the summary")
    ap.add_argument("--write-turns", type=int, default=200_000, help="turns per write test")
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=5, help="summary runs (median)")
    args = ap.parse_args(argv)
    conninfo_to_dict(args.admin_dsn)  # fail early on a malformed DSN

    w = args.write_turns
    if args.turns < 2 * w:
        ap.error("--turns must be at least twice --write-turns")
    print(f"generating {args.turns:,} turns ...", flush=True)
    turns = make_turns(args.turns)

    with scratch_database(args.admin_dsn) as dsn:
        settings = load_settings(env={"RELAYBURN_PG_DSN": dsn, "RELAYBURN_HOME": "/nonexistent"})
        adapter = PostgresAdapter(settings)
        adapter.healthcheck()  # migrate

        b = args.batch
        first = turns[:w]
        raw = raw_copy_rate(dsn, first, b)
        cold_rate = adapter_rate(adapter, [first[i : i + b] for i in range(0, w, b)])

        # Half of every batch was delivered before (and is unchanged), half is new.
        half = b // 2
        rnd = random.Random(1)
        fresh = turns[w : 2 * w]
        mixed: list[list[Turn]] = []
        for k, i in enumerate(range(0, len(fresh), half)):
            batch = fresh[i : i + half] + first[(k * half) % w : (k * half) % w + half]
            rnd.shuffle(batch)
            mixed.append(batch)
        redelivery_rate = adapter_rate(adapter, mixed)

        rest = turns[2 * w :]
        print(f"loading the remaining {len(rest):,} turns ...", flush=True)
        adapter_rate(adapter, [rest[i : i + b] for i in range(0, len(rest), b)])
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            total = conn.execute("SELECT count(*) FROM turns").fetchone()[0]  # type: ignore[index]

        spec = SummarySpec(by=("day", "model"), tz="UTC")
        times, rows = [], 0
        for _ in range(args.runs):
            t0 = time.perf_counter()
            rows = len(adapter.summary(spec).rows)
            times.append(time.perf_counter() - t0)
        tz_spec = SummarySpec(by=("day", "model"), tz="America/St_Johns")
        tz_times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            adapter.summary(tz_spec)
            tz_times.append(time.perf_counter() - t0)
        adapter.close()

    print(f"raw binary COPY (plain table)    {raw:>10,.0f} rows/s")
    print(
        f"adapter write, cold              {cold_rate:>10,.0f} turns/s   "
        f"ratio {cold_rate / raw:.2f}"
    )
    print(
        f"adapter write, 50% re-delivered  {redelivery_rate:>10,.0f} turns/s   "
        f"ratio {redelivery_rate / raw:.2f}"
    )
    print(
        f"summary --by day,model, {total:,} turns: median {statistics.median(times) * 1000:.0f} ms "
        f"(UTC, {rows} rows), {statistics.median(tz_times) * 1000:.0f} ms (America/St_Johns); "
        f"runs {[round(t * 1000) for t in times]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
