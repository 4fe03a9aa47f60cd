"""PostgreSQL sink benchmark: adapter write rate beside raw COPY, and summary latency.

Prints, for one PostgreSQL server and one run (each rate the median of
``--repeat`` measurements, interleaved so that a busy moment of the machine
does not fall on one of them only):

* two ceilings for getting rows into that server from Python, both binary
  COPY of rows encoded beforehand, a commit per batch: into a plain table with
  the turns columns (no keys, no indexes), and into a table with the same
  primary key as ``turns`` (a uuid key: the least any store of records keyed
  by id pays);
* turns/s through ``PostgresAdapter.write`` into an empty database (cold) and
  with half of every batch re-delivered, and their ratio to both ceilings.
  The adapter also encodes and checks the records, folds each batch, writes
  the tool calls (a third of the turns carry one, in a column of the turn's
  row; the ceilings copy the same rows) and maintains the indexes reports use;
* the latency of ``summary --by day,model`` over all turns (median of runs),
  in UTC and in a zone with a half-hour offset.

It creates a database of its own (``relayburn_bench_<random>``) and drops it
at the end; nothing else on the server is touched. Usage::

    python bench/sink.py [--admin-dsn "host=127.0.0.1 user=postgres"] [--turns 1000000]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.string import BytesBinaryDumper

from relayburnd.config import load_settings
from relayburnd.records import Batch, ToolCall, Turn, make_id, seal
from relayburnd.storage.base import SummarySpec
from relayburnd.storage.pg_conn import APPLICATION_NAME
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


RAW_TABLES = {
    "plain": "CREATE TABLE raw_turns (LIKE turns)",
    "primary key": "CREATE TABLE raw_turns (LIKE turns, PRIMARY KEY (id))",
}
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def backend_cpu(pid: int) -> float | None:
    """CPU seconds used so far by a server process, when the server runs on this host."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class Measured:
    """One timed write: rows/s, and CPU per row of this process and of the server backend."""

    rate: float
    client_us: float
    server_us: float | None


@contextmanager
def measuring(n: int, pid: int, out: list[Measured]) -> Iterator[None]:
    s0, c0, t0 = backend_cpu(pid), time.process_time(), time.perf_counter()
    yield
    elapsed = time.perf_counter() - t0
    s1 = backend_cpu(pid)
    server = None if s0 is None or s1 is None else (s1 - s0) / n * 1e6
    out.append(Measured(n / elapsed, (time.process_time() - c0) / n * 1e6, server))


def raw_copy(dsn: str, rows: list[tuple[object, ...]], batch: int, ddl: str,
             out: list[Measured]) -> None:
    """Binary COPY of ready-made rows into a new table, a commit per batch."""
    merge = MergeSql(SPECS["turn"])
    with psycopg.connect(dsn) as conn:
        conn.adapters.register_dumper(bytes, BytesBinaryDumper)  # as the adapter does
        conn.execute(ddl)
        conn.commit()
        sql = merge.copy_direct.replace("COPY turns", "COPY raw_turns")
        with measuring(len(rows), conn.info.backend_pid, out):
            for i in range(0, len(rows), batch):
                with conn.cursor().copy(sql) as copy:
                    copy.set_types(merge.copy_types)
                    for row in rows[i : i + batch]:
                        copy.write_row(row)
                conn.commit()
        conn.execute("DROP TABLE raw_turns")
        conn.commit()


def adapter_rate(adapter: PostgresAdapter, batches: list[list[Turn]]) -> float:
    n = sum(len(b) for b in batches)
    t0 = time.perf_counter()
    for records in batches:
        adapter.write(Batch(list(records)))
    return n / (time.perf_counter() - t0)


def adapter_pid(dsn: str) -> int:
    """The backend of the adapter's connection (the only relayburnd one in the database)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND pid <> pg_backend_pid()", [APPLICATION_NAME]
        ).fetchone()
    assert row is not None, "the adapter has no connection"
    return int(row[0])


def redelivery_batches(first: list[Turn], fresh: list[Turn], batch: int) -> list[list[Turn]]:
    """Batches of which half was delivered before (and is unchanged) and half is new."""
    half = batch // 2
    w = len(first)
    rnd = random.Random(1)
    mixed: list[list[Turn]] = []
    for k, i in enumerate(range(0, len(fresh), half)):
        part = fresh[i : i + half] + first[(k * half) % w : (k * half) % w + half]
        rnd.shuffle(part)
        mixed.append(part)
    return mixed


def empty_turns(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE turns")
        conn.execute("VACUUM ANALYZE turns")


def timed_summary(adapter: PostgresAdapter, spec: SummarySpec, runs: int
                  ) -> tuple[list[float], int]:
    times, rows = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        rows = len(adapter.summary(spec).rows)
        times.append(time.perf_counter() - t0)
    return times, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--admin-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    ap.add_argument("--turns", type=int, default=1_000_000, help="turns for the summary")
    ap.add_argument("--write-turns", type=int, default=200_000, help="turns per write test")
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=5, help="summary runs (median)")
    ap.add_argument("--repeat", type=int, default=5, help="measurements per write rate (median)")
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
        first, fresh = turns[:w], turns[w : 2 * w]
        codec = RowCodec(SPECS["turn"], "postgres")
        rows = [codec.encode(t) for t in first]
        cold_batches = [first[i : i + b] for i in range(0, w, b)]
        mixed = redelivery_batches(first, fresh, b)
        pid = adapter_pid(dsn)
        runs: dict[str, list[Measured]] = {name: [] for name in (*RAW_TABLES, "cold", "mixed")}
        for n in range(args.repeat):
            print(f"measuring write rates ({n + 1}/{args.repeat}) ...", flush=True)
            for name, ddl in RAW_TABLES.items():
                raw_copy(dsn, rows, b, ddl, runs[name])
            empty_turns(dsn)
            with measuring(w, pid, runs["cold"]):
                adapter_rate(adapter, cold_batches)
            with measuring(sum(map(len, mixed)), pid, runs["mixed"]):
                adapter_rate(adapter, mixed)
        rate = {name: statistics.median(m.rate for m in ms) for name, ms in runs.items()}

        rest = turns[2 * w :]
        print(f"loading the remaining {len(rest):,} turns ...", flush=True)
        adapter_rate(adapter, [rest[i : i + b] for i in range(0, len(rest), b)])
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            total = conn.execute("SELECT count(*) FROM turns").fetchone()[0]  # type: ignore[index]

        times, rows_utc = timed_summary(adapter, SummarySpec(by=("day", "model"), tz="UTC"),
                                        args.runs)
        tz_times, _ = timed_summary(
            adapter, SummarySpec(by=("day", "model"), tz="America/St_Johns"), args.runs)
        adapter.close()

    plain, keyed = rate["plain"], rate["primary key"]
    print(f"write rates: median of {args.repeat}, {w:,} turns in batches of {b:,}")
    print(f"  ceiling: raw binary COPY, plain table (no keys)     {plain:>10,.0f} rows/s")
    print(f"  ceiling: raw binary COPY, turns' primary key only   {keyed:>10,.0f} rows/s")
    for label, name in (("cold", "cold"), ("50% re-delivered", "mixed")):
        r = rate[name]
        print(f"  adapter write, {label:<17}                  {r:>10,.0f} turns/s   "
              f"ratio {r / keyed:.2f} to the primary-key ceiling, {r / plain:.2f} to the plain one")
    each = "; ".join(f"{k} {[round(m.rate) for m in ms]}" for k, ms in runs.items())
    print(f"  (each run: {each})")
    print("CPU per row in microseconds (median): this process / the server backend (local only)")
    for name, ms in runs.items():
        client = statistics.median(m.client_us for m in ms)
        known = [m.server_us for m in ms if m.server_us is not None]
        server = f"{statistics.median(known):.2f}" if known else "n/a"
        print(f"  {name:<12} {client:.2f} / {server}")
    print(
        f"summary --by day,model, {total:,} turns: median {statistics.median(times) * 1000:.0f} ms "
        f"(UTC, {rows_utc} rows), {statistics.median(tz_times) * 1000:.0f} ms "
        f"(America/St_Johns); runs {[round(t * 1000) for t in times]} and "
        f"{[round(t * 1000) for t in tz_times]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
