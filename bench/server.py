"""Server benchmark: turns/s through ``relayburnd serve`` into PostgreSQL beside direct writes.

For 1 and 4 concurrent clients (separate processes, as separate hosts would be),
each writing its own share of the turns in 1,000-record batches, prints:

* records/s and per-batch latency (p50, p99) of ``PostgresAdapter.write``
  straight into the database;
* the same through a ``relayburnd serve`` process (``HttpAdapter``: JSON
  encoding, zstd level 1 as the daemon sends it (``--http-compression gzip``
  for gzip level 1), HTTP on loopback, strict validation, the same adapter
  write on the server);
* the ratio of the two (the target is >= 60% of direct);
* CPU per 1,000 records of each path: the clients, the server (all its
  workers) and PostgreSQL (every ``postgres`` process on the machine, when
  it runs there), which a shared machine disturbs less than the rates;
* WAL written and bytes stored per record, for the capacity model in
  ``docs/scaling.md``.

With ``--corpus DIR`` (a tree written by ``bench/corpus.py``) the workload is
every record the corpus yields instead: turns, user turns, tool results,
relationships and content with its text, interleaved by time as a daemon ships
them.

Every phase starts from empty tables, in one database of its own
(``relayburn_bench_<random>``) that is dropped at the end. Clients, server and
PostgreSQL share the machine, so on a small machine the CPU is shared too;
the numbers are for comparing, not for quoting without the machine. Usage::

    python bench/server.py [--admin-dsn "host=127.0.0.1 user=postgres"] [--records 100000]
        [--clients 1,4] [--batch 1000] [--repeat 3] [--server-workers 1]
        [--http-compression zstd|gzip] [--corpus DIR [--content-store full|hash-only|off]]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sink import make_turns, scratch_database

from relayburnd.config import load_settings
from relayburnd.records import Batch, Record
from relayburnd.storage import open_adapter
from relayburnd.storage.sql_common import SPECS

TOKEN = "bench-token-0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent


def _settings(store: str, target: str, home: str, compression: str = "zstd") -> Any:
    env = {"RELAYBURN_HOME": home, "RELAYBURN_STORAGE": store}
    if store == "postgres":
        env["RELAYBURN_PG_DSN"] = target
    else:
        env.update(RELAYBURN_HTTP_URL=target, RELAYBURN_HTTP_TOKEN=TOKEN,
                   RELAYBURN_HTTP_COMPRESSION=compression)
    return load_settings(env=env)


def workload(source: str) -> list[Record]:
    """``turns:<n>`` (made-up turns) or ``sqlite:<path>`` (every record of a store, in order)."""
    kind, _, arg = source.partition(":")
    if kind == "turns":
        return list(make_turns(int(arg)))
    store = open_adapter(load_settings(env={
        "RELAYBURN_STORAGE": "sqlite", "RELAYBURN_SQLITE_PATH": arg,
        "RELAYBURN_HOME": "/tmp/relayburn-bench-corpus"}))
    try:
        records: list[Record] = [*store.turns(), *store.user_turns(), *store.compactions(),
                                 *store.tool_results(), *store.relationships()]
        for session in sorted({r.session_id for r in records}):
            records.extend(store.content(session))
    finally:
        store.close()
    records.sort(key=lambda r: (r.ts, r.id))  # interleaved kinds, as a daemon ships them
    return records


def corpus_store(corpus: Path, into: Path, content_store: str) -> str:
    """Ingest a corpus written by bench/corpus.py into a SQLite store; its path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBURN_")}
    env.update(RELAYBURN_HOME=str(into), RELAYBURN_STORAGE="sqlite",
               RELAYBURN_CONTENT_STORE=content_store,
               RELAYBURN_SQLITE_PATH=str(into / "corpus.sqlite"),
               CLAUDE_CONFIG_DIR=str(corpus / "claude"), CODEX_HOME=str(corpus / "codex"),
               OPENCODE_DATA_DIR=str(corpus / "opencode"))
    subprocess.run([sys.executable, "-m", "relayburnd", "ingest"], env=env, check=True,
                   cwd=str(REPO), stdout=subprocess.DEVNULL)
    return str(into / "corpus.sqlite")


def client(store: str, target: str, source: str, batch: int, index: int, clients: int,
           compression: str, barrier: Barrier, out: Any) -> None:
    """One host: write every ``clients``-th batch of the workload, timing each write."""
    records = workload(source)
    n = len(records)
    mine = [records[i:i + batch] for i in range(index * batch, n, clients * batch)]
    adapter = open_adapter(_settings(store, target, f"/tmp/relayburn-bench-{os.getpid()}",
                                     compression))
    try:
        adapter.healthcheck()
        barrier.wait(120)
        started = time.perf_counter()
        cpu = time.process_time()
        latencies = []
        for records in mine:
            t0 = time.perf_counter()
            adapter.write(Batch(list(records)))
            latencies.append(time.perf_counter() - t0)
        out.put((started, time.perf_counter(), sum(len(b) for b in mine), latencies,
                 time.process_time() - cpu))
    finally:
        adapter.close()


def run_phase(store: str, target: str, source: str, batch: int, clients: int,
              compression: str) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(clients), ctx.Queue()
    procs = [ctx.Process(target=client, args=(store, target, source, batch, i, clients,
                                              compression, barrier, out))
             for i in range(clients)]
    for p in procs:
        p.start()
    results = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join(60)
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    records = sum(r[2] for r in results)
    lat = sorted(x for r in results for x in r[3])
    return {
        "rate": records / (end - start),
        "p50": statistics.median(lat) * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "records": records,
        "client_cpu": sum(r[4] for r in results),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (the server and its workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _cpu_seconds(int(child))
    except (OSError, IndexError, ValueError):
        pass
    return total


def _postgres_cpu() -> float | None:
    """User + system CPU of every ``postgres`` process on this machine (None if none is seen),
    including the backends that have ended (the postmaster has reaped them)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, seen = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, rest = stat.read_text().rpartition(")")
        except OSError:
            continue
        if not head.endswith("(postgres"):
            continue
        fields = rest.split()  # utime, stime, then cutime, cstime (reaped children)
        total += sum(int(f) for f in fields[11:15]) / ticks
        seen = True
    return total if seen else None


def _wal_lsn(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
    return int(row[0]) if row else 0


def _stored_bytes(dsn: str) -> int:
    """Heap, indexes and TOAST of every table records go to."""
    tables = [s.table for s in SPECS.values()]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {', '.join(tables)}")
        total = " + ".join(f"pg_total_relation_size('{t}')" for t in tables)
        row = conn.execute(f"SELECT {total}").fetchone()
    return int(row[0]) if row else 0


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median rate (its latencies with it)."""
    return sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]


def empty(dsn: str) -> None:
    tables = ", ".join(s.table for s in SPECS.values())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables}")
        conn.execute("VACUUM ANALYZE")


class Server:
    """``relayburnd serve`` on a free port in front of ``dsn``."""

    def __init__(self, dsn: str, connections: int, workers: int) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBURN_")}
        env.update(RELAYBURN_STORAGE="postgres", RELAYBURN_PG_DSN=dsn,
                   RELAYBURN_HOME="/tmp/relayburn-bench-server",
                   RELAYBURN_SERVER_TOKENS=f"bench:{TOKEN}", RELAYBURN_LOG_LEVEL="warning",
                   RELAYBURN_SERVER_DB_CONNECTIONS=str(connections))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relayburnd", "serve", "--port", str(self.port),
             "--workers", str(workers)],
            env=env, cwd=str(REPO))
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--admin-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    ap.add_argument("--records", type=int, default=100_000, help="turns written per phase")
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--clients", default="1,4", help="comma-separated client counts")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each phase, alternating direct and server (median kept)")
    ap.add_argument("--content-store", default="full", choices=["full", "hash-only", "off"],
                    help="with --corpus: the content mode the records are made with")
    ap.add_argument("--server-workers", type=int, default=1,
                    help="relayburnd serve --workers (processes behind the one port)")
    ap.add_argument("--http-compression", default="zstd", choices=["zstd", "gzip"],
                    help="RELAYBURN_HTTP_COMPRESSION of the server path's clients")
    ap.add_argument("--corpus", type=Path,
                    help="a bench/corpus.py output: ship its records (every kind, content "
                         "text included) instead of made-up turns")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory(prefix="relayburn-bench-") as tmp:
        source = f"turns:{args.records}"
        if args.corpus:
            source = "sqlite:" + corpus_store(args.corpus, Path(tmp), args.content_store)
        return _run(args, counts, source)


def _run(args: argparse.Namespace, counts: list[int], source: str) -> int:
    total = len(workload(source))
    what = "records of the corpus" if args.corpus else "turns"
    print(f"{os.cpu_count()} CPUs; {total:,} {what} per phase in batches of {args.batch:,}; "
          f"server workers: {args.server_workers}; server path in {args.http_compression}",
          flush=True)
    rows = []
    budget: list[tuple[float, float]] = []  # (WAL bytes, stored bytes) per record, per phase
    with scratch_database(args.admin_dsn) as dsn:
        open_adapter(_settings("postgres", dsn, "/tmp/relayburn-bench")).healthcheck()  # migrate
        server = Server(dsn, max(counts), args.server_workers)
        try:
            for clients in counts:
                runs: dict[str, list[dict[str, float]]] = {"postgres": [], "http": []}
                for _ in range(args.repeat):
                    for store, target in (("postgres", dsn), ("http", server.url)):
                        empty(dsn)
                        wal, cpu = _wal_lsn(dsn), _cpu_seconds(server.proc.pid)
                        pg_cpu = _postgres_cpu()
                        run = run_phase(store, target, source, args.batch, clients,
                                        args.http_compression)
                        run["server_cpu"] = (_cpu_seconds(server.proc.pid) - cpu
                                             if store == "http" else 0.0)
                        after = _postgres_cpu()
                        run["pg_cpu"] = (after - pg_cpu if pg_cpu is not None
                                         and after is not None else math.nan)
                        runs[store].append(run)
                        budget.append(((_wal_lsn(dsn) - wal) / total,
                                       _stored_bytes(dsn) / total))
                rows.append((clients, runs["postgres"], runs["http"]))
                shown = {k: ", ".join(f"{r['rate']:,.0f}" for r in v) for k, v in runs.items()}
                print(f"  {clients} client(s): direct {shown['postgres']}; "
                      f"server {shown['http']} records/s", flush=True)
        finally:
            server.stop()

    print()
    print("clients  path     records/s   p50 ms   p99 ms   vs direct")
    for clients, direct_runs, http_runs in rows:
        direct = _median(direct_runs)
        for name, r in (("direct", direct), ("server", _median(http_runs))):
            ratio = r["rate"] / direct["rate"]
            print(f"{clients:>7}  {name:<7} {r['rate']:>10,.0f} {r['p50']:>8.1f} "
                  f"{r['p99']:>8.1f}   {ratio:>8.0%}")
    print("\nCPU ms per 1,000 records (median of the runs; the server's includes its "
          "share of the adapter write)")
    print("clients  path       clients   server  PostgreSQL    total")
    for clients, direct_runs, http_runs in rows:
        for name, runs_ in (("direct", direct_runs), ("server", http_runs)):
            per = {k: statistics.median(r[k] for r in runs_) / total * 1e6
                   for k in ("client_cpu", "server_cpu", "pg_cpu")}
            server_cpu = f"{per['server_cpu']:.2f}" if name == "server" else "-"
            print(f"{clients:>7}  {name:<7} {per['client_cpu']:>10.2f} {server_cpu:>8} "
                  f"{per['pg_cpu']:>11.2f} {sum(per.values()):>8.2f}")
    wal = statistics.median(b[0] for b in budget)
    size = statistics.median(b[1] for b in budget)
    print(f"\nper record written into empty tables: {wal:,.0f} bytes of WAL, "
          f"{size:,.0f} bytes stored (heap + indexes + TOAST of every table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
