"""PostgreSQL adapter: one database shared by many hosts.

Writes are bulk merges (``pg_write``), deadlines and error translation live
in ``pg_conn``, migrations and staging tables in ``pg_schema``; this module
puts them together and answers the query side in SQL. Reads page through a
kind in (ts, id) order, each page in its own read-only snapshot, so a slow
reader never holds a transaction open.

The adapter connects on first use (a daemon may start while the database is
down); ``healthcheck()`` connects, migrates if needed and checks the schema.

``prune_content(before_ms)`` deletes content older than the cutoff oldest
first, ``PRUNE_CHUNK`` rows per transaction, each within the call deadline: a
first prune of a large store cannot outlive ``statement_timeout`` and fail
every hour, and whatever interrupts it, the store holds all content from
some (ts, id) on, never a hole in a conversation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import sql

from ..errors import SinkRejected
from ..records import (
    Batch,
    ContentRecord,
    WriteResult,
)
from .base import Filter, SummaryResult, SummarySpec
from .migrations import SCHEMA_TABLE, check_not_newer
from .pg_conn import Conn, Dsn, PgSession, PgTimeouts
from .pg_schema import apply_migrations, create_staging, ensure_schema
from .pg_write import MergeSql, stage_batch, write_batch
from .sql_common import SPECS, RowCodec, TableSpec, check_ids, unstorable_ids
from .sql_query import (
    PAGE_SIZE,
    POSTGRES,
    Page,
    RecordQueries,
    content_query,
    page_query,
    where_clause,
)
from .sql_summary import summarize_sql

if TYPE_CHECKING:
    from ..config import Settings

_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

# A report is one or two scans of turns: room to aggregate in memory, and no
# time spent compiling plans that run once.
_REPORT_SETTINGS = ("SET LOCAL work_mem = '64MB'", "SET LOCAL jit = off")

# Message ids of main-thread responses that a sidechain turn in the report
# replays: the message ids of the report's sidechain turns (through a partial
# index on sidechain turns, a tenth of the rows) are hashed, and one parallel
# scan of the main-thread turns probes them. There is no index on the main
# thread's message ids: it held nine tenths of the rows and cost every write
# more than this scan costs a report (migration 0002, docs/scaling.md). A
# report whose filter holds no sidechain turn skips the scan (an empty hash
# ends the join). The report then skips sidechain turns with these ids: a
# condition on constants, which PostgreSQL hashes and evaluates in parallel
# workers (a correlated subquery would keep the scan in one process).
_REPLAYED = (
    "SELECT DISTINCT m.message_id FROM turns m "
    "WHERE NOT m.is_sidechain AND m.message_id IN "
    "(SELECT t.message_id FROM turns t WHERE t.is_sidechain AND t.message_id <> '' AND {where})"
)
# The planner expects most sidechain ids to match (a few do) and would gather
# that many rows from the workers; their cost is the scan, not the gathering.
_REPLAYED_SETTINGS = ("SET LOCAL parallel_tuple_cost = 0",)
_REPLAYED_RESET = ("SET LOCAL parallel_tuple_cost TO DEFAULT",)
_MAX_INLINE_REPLAYS = 20_000  # beyond this the billable_turns view does it

PRUNE_CHUNK = 10_000  # content rows deleted per transaction
# The oldest rows first, found through the content_ts index.
_PRUNE = (
    "DELETE FROM content WHERE id = ANY(ARRAY("
    "SELECT id FROM content WHERE ts < %s ORDER BY ts, id LIMIT %s))"
)


def migrate_postgres(settings: Settings, timeouts: PgTimeouts | None = None) -> list[str]:
    """Apply missing migrations to ``settings.pg_dsn``; return the names applied."""
    dsn = Dsn(settings.pg_dsn)
    session = PgSession(dsn, timeouts or PgTimeouts())
    try:
        return session.call("migrate", lambda conn: apply_migrations(conn, dsn.label))
    finally:
        session.close()


class PostgresAdapter(RecordQueries):
    """The shared schema in PostgreSQL; see the module docstring."""

    name = "postgres"

    def __init__(
        self,
        settings: Settings,
        *,
        timeouts: PgTimeouts | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._dsn = Dsn(settings.pg_dsn)
        self._session = PgSession(self._dsn, timeouts or PgTimeouts(), self._prepare)
        self._codecs = {kind: RowCodec(spec, "postgres") for kind, spec in SPECS.items()}
        self._merges = {kind: MergeSql(spec) for kind, spec in SPECS.items()}
        self.page_size = page_size
        self.prune_chunk = PRUNE_CHUNK

    def __repr__(self) -> str:
        return f"PostgresAdapter({self._dsn.label!r})"

    @property
    def label(self) -> str:
        """The server and database, safe to print."""
        return self._dsn.label

    def _prepare(self, conn: Conn) -> None:
        ensure_schema(conn, self._dsn.label)
        create_staging(conn)

    # ------------------------------------------------------------ writes

    def write(self, batch: Batch) -> WriteResult:
        check_ids(batch.records)
        try:
            kinds = stage_batch(self._codecs, batch.records)
            if not kinds:
                return WriteResult()
            return self._session.call("write", lambda conn: write_batch(conn, kinds, self._merges))
        except SinkRejected as exc:
            if exc.record_ids:
                raise
            raise SinkRejected(str(exc), record_ids=unstorable_ids(batch.records)) from exc
        except (OverflowError, ValueError, UnicodeEncodeError) as exc:
            bad = unstorable_ids(batch.records)
            if not bad:
                raise  # not the data's fault: a bug, not something to dead-letter
            raise SinkRejected(
                f"{self._dsn.label}: write: a record holds a value PostgreSQL cannot store "
                f"({exc})",
                record_ids=bad,
            ) from exc

    # ------------------------------------------------------------ reads

    def _fetch_page(self, spec: TableSpec, flt: Filter | None, after: Any) -> Page:
        text, params = page_query(POSTGRES, spec, flt, after, self.page_size)

        def fetch(conn: Conn) -> Page:
            with conn.transaction(), conn.cursor(binary=True) as cur:
                cur.execute(_SNAPSHOT)
                return cur.execute(text, params).fetchall()

        return self._session.call(f"read {spec.table}", fetch)

    def content(self, session_id: str) -> list[ContentRecord]:
        codec = self._codecs["content"]

        def fetch(conn: Conn) -> list[Any]:
            with conn.transaction(), conn.cursor(binary=True) as cur:
                return cur.execute(content_query(POSTGRES), [session_id]).fetchall()

        rows = self._session.call("read content", fetch)
        return [codec.decode(r) for r in rows]  # type: ignore[misc]

    def summary(self, spec: SummarySpec) -> SummaryResult:
        def run(conn: Conn) -> SummaryResult:
            with conn.transaction(), conn.cursor(binary=True) as cur:
                cur.execute(_SNAPSHOT)  # one snapshot for every query of the report
                for setting in _REPORT_SETTINGS:
                    cur.execute(setting)
                for setting in _REPLAYED_SETTINGS:
                    cur.execute(setting)
                where, params = where_clause(POSTGRES, SPECS["turn"], spec.filter)
                replayed = [str(r[0]) for r in cur.execute(
                    _REPLAYED.format(where=where), params or None).fetchall()]
                for setting in _REPLAYED_RESET:
                    cur.execute(setting)
                source, billable = "turns", ""
                if len(replayed) > _MAX_INLINE_REPLAYS:
                    source = "billable_turns"
                elif replayed:
                    literal = sql.Literal(replayed).as_string(conn)
                    billable = (
                        f"NOT (t.is_sidechain AND coalesce(t.message_id = ANY({literal}::text[]), "
                        "false))"
                    )

                def query(text: str, params: list[Any]) -> list[Any]:
                    return cur.execute(text, params or None).fetchall()

                return summarize_sql(POSTGRES, spec, query, source=source, billable=billable)

        return self._session.call("summary", run)

    # ------------------------------------------------------------ retention

    def prune_content(self, before_ms: int) -> int:
        """Delete content records with ``ts < before_ms``; how many were deleted."""
        limit = self.prune_chunk

        def chunk(conn: Conn) -> int:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(_PRUNE, [before_ms, limit])
                return cur.rowcount

        removed = 0
        while True:
            n = self._session.call("prune content", chunk)
            removed += n
            if n < limit:
                return removed

    # ------------------------------------------------------------ lifecycle

    def healthcheck(self) -> None:
        def check(conn: Conn) -> None:
            with conn.transaction():
                row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA_TABLE}")
                version = row.fetchone()
            check_not_newer("postgres", int(version[0]) if version else 0,  # type: ignore[call-overload]
                            self._dsn.label)

        self._session.call("healthcheck", check)

    def close(self) -> None:
        self._session.close()
