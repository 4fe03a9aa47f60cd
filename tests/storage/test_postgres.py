"""PostgreSQL adapter beyond the contract: migrations under concurrency, deadlines,
lost connections, error classes, secrets, and many hosts converging."""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from storage_corpus import corpus, turn
from storage_net import freezable_proxy, silent_server
from storage_support import (
    PgServer,
    assert_same_summary,
    content_sessions,
    expected_state,
    pg_settings,
    state,
    truncate_all,
)
from storage_workers import migrate_worker, write_worker

from relayburnd.errors import (
    SchemaTooNew,
    SinkMisconfigured,
    SinkRejected,
    SinkUnavailable,
)
from relayburnd.records import Batch, ContentRecord, ToolCall, Turn, encode, fold, make_id, seal
from relayburnd.storage.migrations import load, migrate
from relayburnd.storage.pg_conn import PgTimeouts
from relayburnd.storage.postgres import PostgresAdapter
from relayburnd.storage.sql_common import SPECS, RowCodec, column_list, fold_by_kind

pytestmark = pytest.mark.postgres

ALL_MIGRATIONS = [m.name for m in load("postgres")]
SECRET = "Sup3r-S3cret-pw"


def adapter_for(dsn: str, tmp_path: Path, **timeouts: float) -> PostgresAdapter:
    return PostgresAdapter(pg_settings(dsn, tmp_path), timeouts=PgTimeouts(**timeouts))


def count(dsn: str, table: str = "turns") -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def terminate(admin_dsn: str, dsn: str, where: str = "TRUE") -> int:
    """Kill the relayburnd backends connected to ``dsn``'s database; how many."""
    db = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = %s AND application_name = 'relayburnd' AND {where}", [db]
        ).fetchall()
    return len(rows)


def write_before_schema_3(dsn: str, version: int, records: list[Any]) -> None:
    """A database at schema ``version`` (1 or 2) holding ``records`` as that schema
    stored them: tool calls in their own table, keyed by (turn id, position)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                     "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for mig in load("postgres")[:version]:
            conn.execute(mig.sql)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                         [mig.version, mig.name])
        for kind, recs in fold_by_kind(records).items():
            spec = SPECS[kind]
            codec = RowCodec(spec, "postgres")
            names = [c for c in spec.sql_columns if c != "tool_calls"]
            at = spec.sql_columns.index("tool_calls") if spec.is_turns else len(names)
            insert = (f"INSERT INTO {spec.table} ({column_list(names)}) "
                      f"VALUES ({', '.join('%s' for _ in names)})")
            for rec in recs:
                row = codec.encode(rec)
                conn.execute(insert, [rec.id, *row[1:at], *row[at + 1:]])
                for seq, c in enumerate(getattr(rec, "tool_calls", [])):
                    conn.execute("INSERT INTO tool_calls VALUES (%s, %s, %s, %s, %s, %s)",
                                 [rec.id, seq, c.id, c.name, c.args_sha256, c.args_bytes])


class TestMigrations:
    def test_migrate_applies_each_version_once(self, pg_server: PgServer, tmp_path: Path) -> None:
        """The first run applies every migration, the next none."""
        settings = pg_settings(pg_server.new_database(), tmp_path)
        assert migrate(settings) == ALL_MIGRATIONS
        assert migrate(settings) == []

    def test_tool_calls_move_onto_their_turns(self, pg_server: PgServer,
                                              tmp_path: Path) -> None:
        """Schema 3 copies each turn's tool calls from the child table, in call order."""
        dsn = pg_server.new_database()
        rnd = random.Random(31)
        calls = [ToolCall(id="b", name="Read", args_sha256="ab" * 32, args_bytes=2**40),
                 ToolCall(id="a", name="Bash")]
        records = [turn(rnd, 1, tool_calls=calls), turn(rnd, 2, tool_calls=[])]
        write_before_schema_3(dsn, 2, records)
        assert migrate(pg_settings(dsn, tmp_path)) == ALL_MIGRATIONS[2:]
        adapter = adapter_for(dsn, tmp_path)
        assert sorted(adapter.turns(), key=lambda t: t.id) == sorted(records, key=lambda t: t.id)
        adapter.close()
        assert count(dsn, "pg_tables WHERE tablename = 'tool_calls'") == 0

    def test_adapter_migrates_when_it_opens(self, pg_server: PgServer, tmp_path: Path) -> None:
        """An adapter on an empty database creates the schema on first use."""
        dsn = pg_server.new_database()
        adapter = adapter_for(dsn, tmp_path)
        adapter.healthcheck()
        adapter.close()
        with psycopg.connect(dsn) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == list(range(1, len(ALL_MIGRATIONS) + 1))

    def test_ids_are_uuid_keys_and_every_row_has_a_rank(self, pg_server: PgServer,
                                                       tmp_path: Path) -> None:
        """Each record table keys on a uuid id and stores rank as text."""
        dsn = pg_server.new_database()
        assert migrate(pg_settings(dsn, tmp_path)) == ALL_MIGRATIONS
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT c.table_name, c.data_type FROM information_schema.columns c "
                "JOIN information_schema.key_column_usage k USING (table_name, column_name) "
                "JOIN information_schema.table_constraints t USING (constraint_name) "
                "WHERE t.constraint_type = 'PRIMARY KEY' AND c.column_name = 'id'"
            ).fetchall()
            ranks = conn.execute(
                "SELECT table_name FROM information_schema.columns "
                "WHERE column_name = 'rank' AND data_type = 'text' AND is_nullable = 'NO'"
            ).fetchall()
        tables = {"turns", "user_turns", "compactions", "tool_results", "content", "relationships"}
        assert {r[0] for r in rows if r[1] == "uuid"} == tables
        assert {r[0] for r in ranks} == tables

    def test_concurrent_starts_migrate_once(self, pg_server: PgServer, tmp_path: Path) -> None:
        """Threads migrating one empty database at once apply each migration exactly once."""
        settings = pg_settings(pg_server.new_database(), tmp_path)
        barrier = threading.Barrier(8)
        results: list[list[str]] = []

        def run() -> None:
            barrier.wait()
            results.append(migrate(settings))

        threads = [threading.Thread(target=run) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 8
        assert sorted(name for r in results for name in r) == sorted(ALL_MIGRATIONS)

    @pytest.mark.slow
    def test_concurrent_processes_migrate_once(self, pg_server: PgServer, tmp_path: Path) -> None:
        """Separate processes (hosts) starting together apply each migration exactly once."""
        dsn = pg_server.new_database()
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=migrate_worker, args=(dsn, str(tmp_path), barrier, out))
                 for _ in range(6)]
        for p in procs:
            p.start()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
        assert all(status == "ok" for status, _ in results), results
        assert sorted(n for _, names in results for n in names) == sorted(ALL_MIGRATIONS)

    def test_schema_newer_than_the_code_is_refused(self, pg_server: PgServer,
                                                   tmp_path: Path) -> None:
        """A database migrated by a newer relayburnd is refused with one clear line."""
        dsn = pg_server.new_database()
        settings = pg_settings(dsn, tmp_path)
        migrate(settings)
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (999, '0999_x')")
        adapter = adapter_for(dsn, tmp_path)
        for action in (adapter.healthcheck, lambda: adapter.write(Batch(corpus(n=2)))):
            with pytest.raises(SchemaTooNew) as err:
                action()
            message = str(err.value)
            assert "\n" not in message
            assert "999" in message and "upgrade relayburnd" in message
        with pytest.raises(SchemaTooNew):
            migrate(settings)
        adapter.close()


class TestUpgrade:
    def test_version_1_database_upgrades(self, pg_server: PgServer, tmp_path: Path) -> None:
        """A database written at schema 1 is migrated when an adapter opens it: the
        indexes of schema 2 replace the old ones, tool calls move onto their turns
        (schema 3), and every record and report stays."""
        from relayburnd.reports import summarize
        from relayburnd.storage.base import SummarySpec

        dsn = pg_server.new_database()
        records = corpus(seed=32, n=150)
        write_before_schema_3(dsn, 1, records)
        with psycopg.connect(dsn) as conn:
            assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == [1]
        adapter = adapter_for(dsn, tmp_path)
        adapter.healthcheck()
        with psycopg.connect(dsn) as conn:
            indexes = dict(conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'turns'"
            ).fetchall())
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == list(range(1, len(ALL_MIGRATIONS) + 1))
        assert "turns_main_message" not in indexes
        assert indexes["turns_session"].endswith("(session_id)")
        assert indexes["turns_side_message"].endswith(
            "WHERE (is_sidechain AND (message_id <> ''::text))")
        sessions = content_sessions(records)
        assert state(adapter, sessions) == expected_state(records, sessions)
        turns = [r for r in fold(records).values() if isinstance(r, Turn)]
        for by in [("day", "model"), ("session",)]:
            spec = SummarySpec(by=by, tz="Asia/Tokyo")
            assert_same_summary(adapter.summary(spec), summarize(turns, spec))
        adapter.close()


class TestDeadlines:
    def test_silent_server_at_connect(self, tmp_path: Path) -> None:
        """A server that accepts and never answers fails the call within the connect timeout."""
        with silent_server() as server:
            dsn = f"host=127.0.0.1 port={server.port} user=postgres dbname=x password={SECRET}"
            adapter = adapter_for(dsn, tmp_path, connect=2)
            t0 = time.monotonic()
            with pytest.raises(SinkUnavailable) as err:
                adapter.write(Batch(corpus(n=2)))
            assert time.monotonic() - t0 < 6
            assert SECRET not in str(err.value)

    def test_server_that_stops_answering_mid_call(self, pg_dsn: str, tmp_path: Path) -> None:
        """A connection that goes silent after connecting fails at the call deadline, then heals."""
        params = conninfo_to_dict(pg_dsn)
        with freezable_proxy(params.get("host", "127.0.0.1"), int(params.get("port", 5432))) as p:
            dsn = make_conninfo(pg_dsn, host="127.0.0.1", port=str(p.port))
            adapter = adapter_for(dsn, tmp_path, statement=1, grace=1)
            adapter.healthcheck()
            p.frozen.set()
            t0 = time.monotonic()
            with pytest.raises(SinkUnavailable, match="no answer within 2 s"):
                adapter.write(Batch(corpus(seed=21, n=20)))
            assert time.monotonic() - t0 < 4
            p.frozen.clear()
            rnd = random.Random(22)
            recs = [turn(rnd, 5000 + i) for i in range(5)]
            assert adapter.write(Batch(recs)).inserted == 5  # on a new connection
            adapter.close()


class TestLostConnections:
    def test_backend_killed_while_idle_reconnects(self, pg_server: PgServer,
                                                  tmp_path: Path) -> None:
        """The call after the server dropped an idle connection reconnects and succeeds."""
        dsn = pg_server.new_database()
        adapter = adapter_for(dsn, tmp_path)
        adapter.write(Batch(corpus(seed=23, n=5)))
        assert terminate(pg_server.admin_dsn, dsn) == 1
        time.sleep(0.2)
        rnd = random.Random(24)
        recs = [turn(rnd, 1000 + i) for i in range(5)]
        assert adapter.write(Batch(recs)).inserted == 5
        adapter.close()

    @pytest.mark.slow
    def test_backend_killed_mid_batch_loses_nothing(self, pg_server: PgServer,
                                                    tmp_path: Path) -> None:
        """Killing the backend during a large write leaves no partial batch; the retry stores it."""
        dsn = pg_server.new_database()
        adapter = adapter_for(dsn, tmp_path)
        adapter.healthcheck()
        rnd = random.Random(25)
        batch = Batch([turn(rnd, i) for i in range(150_000)])
        outcome: queue.Queue[BaseException | None] = queue.Queue()

        def run() -> None:
            try:
                adapter.write(batch)
                outcome.put(None)
            except BaseException as exc:
                outcome.put(exc)

        writer = threading.Thread(target=run)
        writer.start()
        killed = 0
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline and writer.is_alive():
            killed = terminate(pg_server.admin_dsn, dsn,
                               "state = 'active' AND query ILIKE 'copy%%'")
            time.sleep(0.005)
        writer.join(120)
        error = outcome.get_nowait()
        assert killed == 1, "the write finished before it could be interrupted"
        assert isinstance(error, SinkUnavailable), error
        assert count(dsn) == 0
        result = adapter.write(batch)
        assert result.inserted == len(batch) == count(dsn)
        adapter.close()


class TestErrors:
    def test_password_never_shown(self, pg_dsn: str, tmp_path: Path) -> None:
        """No message or repr carries the password, whatever fails."""
        dsns = [
            f"host=127.0.0.1 port=1 user=postgres password={SECRET} connect_timeout=2",
            make_conninfo(pg_dsn, password=SECRET, dbname="relayburn_test_missing_db"),
            f"postgresql://postgres:{SECRET}@127.0.0.1:1/db?connect_timeout=2",
            f"host=127.0.0.1 user=postgres password={SECRET} bogus_option=1",
        ]
        for dsn in dsns:
            settings = pg_settings(dsn, tmp_path)
            assert SECRET not in repr(settings)
            try:
                adapter = PostgresAdapter(settings)
                assert SECRET not in repr(adapter)
                adapter.healthcheck()
            except (SinkUnavailable, SinkMisconfigured) as exc:
                assert SECRET not in str(exc), dsn
                assert exc.__cause__ is None or SECRET not in str(exc.__cause__)
            else:
                pytest.fail(f"{dsn!r} should not connect")

    def test_missing_database_is_misconfigured(self, pg_dsn: str, tmp_path: Path) -> None:
        """A database that does not exist is a settings problem, not a transient one."""
        dsn = make_conninfo(pg_dsn, dbname="relayburn_test_no_such_db")
        with pytest.raises(SinkMisconfigured, match="does not exist"):
            adapter_for(dsn, tmp_path).healthcheck()

    def test_unknown_role_is_misconfigured(self, pg_dsn: str, tmp_path: Path) -> None:
        """A role the server refuses is a settings problem."""
        dsn = make_conninfo(pg_dsn, user="relayburn_test_no_such_role")
        with pytest.raises(SinkMisconfigured):
            adapter_for(dsn, tmp_path).healthcheck()

    def test_refused_connection_is_unavailable(self, tmp_path: Path) -> None:
        """Nothing listening is transient: retry later."""
        with pytest.raises(SinkUnavailable):
            adapter_for("host=127.0.0.1 port=1 user=postgres", tmp_path).healthcheck()

    def test_malformed_dsn_is_misconfigured(self, tmp_path: Path) -> None:
        """An unparsable DSN fails when the adapter is built, naming no secret."""
        with pytest.raises(SinkMisconfigured, match="invalid"):
            PostgresAdapter(pg_settings(f"host=x password={SECRET} nonsense", tmp_path))

    def test_values_postgres_cannot_hold_are_rejected_by_id(
        self, store_pg: PostgresAdapter
    ) -> None:
        """NUL outside content text, or an integer beyond 64 bits, rejects naming the record."""
        rnd = random.Random(26)
        good = turn(rnd, 1)
        bad_text = turn(rnd, 2, model="a\x00b")
        bad_int = turn(rnd, 3, input_tokens=2**70)
        for bad in (bad_text, bad_int):
            with pytest.raises(SinkRejected) as err:
                store_pg.write(Batch([good, bad]))
            assert err.value.record_ids == (bad.id,)
        assert list(store_pg.turns()) == []
        store_pg.write(Batch([good]))
        assert list(store_pg.turns()) == [good]

    def test_tool_calls_hold_any_text_and_integer(self, store_pg: PostgresAdapter) -> None:
        """Tool calls are stored as JSON text: NUL and integers beyond 64 bits round-trip."""
        rec = turn(random.Random(33), 1, tool_calls=[
            ToolCall(id="t\x00", name="n\u00e9\x00", args_bytes=2**70),
            ToolCall(id="u", name="Bash", args_bytes=-(2**63) - 1)])
        assert store_pg.write(Batch([rec])).inserted == 1
        assert list(store_pg.turns()) == [rec]

    def test_ids_must_be_digests(self, store_pg: PostgresAdapter) -> None:
        """An id that is not 32 lowercase hex characters is rejected by id."""
        rec = turn(random.Random(27), 1, id="not-a-digest")
        with pytest.raises(SinkRejected) as err:
            store_pg.write(Batch([rec]))
        assert err.value.record_ids == ("not-a-digest",)


@pytest.fixture
def store_pg(pg_dsn: str, tmp_path: Path) -> Iterator[PostgresAdapter]:
    """An adapter on the emptied session database."""
    truncate_all(pg_dsn)
    adapter = adapter_for(pg_dsn, tmp_path)
    yield adapter
    adapter.close()


class TestWritePaths:
    def test_mixed_batch_after_a_new_one(self, store_pg: PostgresAdapter) -> None:
        """A batch mixing stored, grown and new ids counts each right after an all-new one."""
        rnd = random.Random(28)
        old = [turn(rnd, i) for i in range(10)]
        store_pg.write(Batch(old))
        grown = Turn(**{**{f: getattr(old[0], f) for f in old[0].__struct_fields__},
                        "output_tokens": old[0].output_tokens + 5, "rank": ""})
        grown = seal(grown)  # type: ignore[assignment]
        new = [turn(rnd, 100 + i) for i in range(5)]
        result = store_pg.write(Batch([*old[1:], grown, *new]))
        assert (result.inserted, result.updated, result.unchanged) == (5, 1, 9)
        assert sorted(store_pg.turns(), key=lambda t: t.id) == sorted(
            [grown, *old[1:], *new], key=lambda t: t.id)

    def test_id_inserted_by_another_host_meanwhile(self, pg_dsn: str,
                                                   store_pg: PostgresAdapter) -> None:
        """An id another host inserts between our lookup and our copy is merged, not duplicated."""
        rnd = random.Random(29)
        seen = turn(rnd, 1)
        store_pg.write(Batch([seen]))
        store_pg.write(Batch([seen, turn(rnd, 2)]))  # a stored id: the next write looks first
        racing, fresh = turn(rnd, 3), turn(rnd, 4)
        other = psycopg.connect(pg_dsn)
        other.execute(
            "INSERT INTO turns (id, rank, source, session_id, ts) "
            "VALUES (%s::uuid, 'z', 'x', 's', 1)",
            [racing.id],
        )  # not committed yet: invisible to the lookup, blocks the copy
        done: queue.Queue[object] = queue.Queue()
        writer = threading.Thread(target=lambda: done.put(store_pg.write(Batch([racing, fresh]))))
        writer.start()
        time.sleep(0.5)
        other.commit()
        other.close()
        writer.join(30)
        result = done.get_nowait()
        assert (result.inserted, result.updated, result.unchanged) == (1, 0, 1)  # type: ignore[attr-defined]
        ranks = {t.id: t.rank for t in store_pg.turns()}
        assert ranks[racing.id] == "z" and ranks[fresh.id] == fresh.rank


class TestConvergence:
    @pytest.mark.slow
    def test_hosts_writing_the_same_records_converge(self, pg_server: PgServer,
                                                     tmp_path: Path) -> None:
        """Processes writing overlapping, shuffled batches end in the fold of all records."""
        dsn = pg_server.new_database()
        migrate(pg_settings(dsn, tmp_path))
        records = corpus(seed=30, n=400)
        lines = [encode(r) for r in records]
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=write_worker,
                             args=(dsn, str(tmp_path), lines, seed, barrier, out))
                 for seed in range(4)]
        for p in procs:
            p.start()
        results = [out.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(30)
        assert results == [("ok", 0)] * 4, results  # and no retries: no deadlock
        adapter = adapter_for(dsn, tmp_path)
        sessions = content_sessions(records)
        assert state(adapter, sessions) == expected_state(records, sessions)
        assert count(dsn) == len({r.id for r in records if isinstance(r, Turn)})
        adapter.close()



class TestPrune:
    @staticmethod
    def contents(n: int) -> list[ContentRecord]:
        rnd = random.Random(31)
        out = []
        for i in range(n):
            rec = seal(ContentRecord(id=make_id("prune", i), source="claude",
                                     session_id=f"s{i % 3}", ts=1_000 + rnd.randrange(20),
                                     message_id="m", seq=i, role="user", block_type="text",
                                     text=f"text {i}"))
            assert isinstance(rec, ContentRecord)
            out.append(rec)
        return out

    @staticmethod
    def left(adapter: PostgresAdapter) -> list[ContentRecord]:
        return sorted((r for s in ("s0", "s1", "s2") for r in adapter.content(s)),
                      key=lambda r: (r.ts, r.id))

    def test_chunks(self, store_pg: PostgresAdapter) -> None:
        """Deleting in chunks removes and counts every old row, a last full chunk included."""
        recs = self.contents(28)
        store_pg.write(Batch(recs))  # type: ignore[arg-type]
        store_pg.prune_chunk = 7
        assert store_pg.prune_content(1_010) == sum(r.ts < 1_010 for r in recs)
        assert store_pg.prune_content(2_000) == sum(r.ts >= 1_010 for r in recs)
        assert self.left(store_pg) == []

    def test_interrupted_prune_leaves_the_newest(self, store_pg: PostgresAdapter) -> None:
        """A connection lost in the third chunk: exactly the oldest two chunks are gone, and
        the next prune finishes the job on a new connection."""
        recs = self.contents(30)
        store_pg.write(Batch(recs))  # type: ignore[arg-type]
        store_pg.prune_chunk = 5
        session = store_pg._session
        real = session.call
        calls = 0

        def killed(conn: Any) -> Any:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        def call(where: str, fn: Any) -> Any:
            nonlocal calls
            if where == "prune content":
                calls += 1
                if calls == 3:
                    return real(where, killed)
            return real(where, fn)

        session.call = call  # type: ignore[method-assign]
        with pytest.raises(SinkUnavailable, match="prune content"):
            store_pg.prune_content(10_000)
        session.call = real  # type: ignore[method-assign]
        assert self.left(store_pg) == sorted(recs, key=lambda r: (r.ts, r.id))[10:]
        assert store_pg.prune_content(10_000) == 20
