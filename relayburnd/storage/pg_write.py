"""Bulk writes to PostgreSQL: look up what is stored, COPY what is new, merge what grew.

A batch is folded by id first: two rows with one id in a single
``INSERT ... ON CONFLICT`` make PostgreSQL refuse the whole batch. Then, per
kind, in one transaction:

1. One indexed lookup fetches the stored rank of every id in the batch.
   When the previous batch of the kind was all new (the daemon's usual case),
   step 2 is tried for the whole batch first and the lookup happens only if
   an id turns out to be stored.
2. Ids not stored are written with a binary ``COPY`` straight into the table
   (inside a savepoint). Ids stored with the same or a greater rank are
   re-deliveries and are not sent again.
3. Ids stored with a lower rank (a later, larger snapshot) are copied into a
   session-local staging table and merged with ``INSERT ... ON CONFLICT (id)
   DO UPDATE ... WHERE excluded.rank > t.rank``, which re-checks the rank
   under the row lock, so the greatest rank wins whatever the arrival order.

If another host inserted one of the "new" ids since step 1, the COPY fails
with a unique violation; the savepoint is rolled back and the whole kind goes
through the staging merge instead, whose ``RETURNING (xmax = 0)`` tells
inserted from updated rows. Either way the counts are exact and the stored
rows are the same. Merges run in id order, so writers on many hosts take row
locks in the same order and cannot deadlock.

Measured on the bench (see ``bench/sink.py``): copying new rows straight into
the table costs about half of staging them and merging, and re-delivered rows
cost one index probe each.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ..records import Record, WriteResult
from .pg_schema import MERGED_TABLE, stage_table
from .sql_common import (
    TOOL_CALL_COLUMNS,
    TOOL_CALL_TABLE,
    ColType,
    Row,
    RowCodec,
    TableSpec,
    column_list,
    fold_by_kind,
)
from .sql_query import update_set

Conn = psycopg.Connection[tuple[object, ...]]
Cursor = psycopg.Cursor[Any]

# COPY types of the columns. Ids are sent as 16 raw bytes ("bytea" to the
# client library), which is exactly the binary COPY format of a uuid.
_PG_TYPES = {
    ColType.ID: ("bytea",),
    ColType.TEXT: ("text",),
    ColType.INT: ("int8",),
    ColType.BOOL: ("bool",),
    ColType.FLOAT: ("float8",),
    ColType.TEXT_LIST: ("text[]",),
    ColType.CONTENT_TEXT: ("text", "bytea"),
}
_TOOL_CALL_TYPES = ["bytea", "int4", "text", "text", "text", "int8"]
_TOOL_CALL_COLS = column_list(TOOL_CALL_COLUMNS)

# Merge plans are small; compiling them would cost more than it saves.
_NO_JIT = "SET LOCAL jit = off"


class KindBatch:
    """One kind of a folded batch: records in id order, encoded as the COPY asks for them.

    Encoding inside the COPY loop lets Python build the next rows while the
    server stores the previous ones. A row lives only until the COPY has
    taken it: rows kept for a second pass (a staging merge after a lost race,
    rare) would let thousands of tuples pile up per batch and set off the
    garbage collector, whose passes over the process's objects cost more than
    encoding again (measured). A turn's tool-call rows are built in the same
    pass, from its encoded id, and kept until their own COPY follows.
    """

    def __init__(self, codec: RowCodec, records: list[Record]) -> None:
        self.spec = codec.spec
        self.records = records
        self._codec = codec
        self._calls: list[Row] = []

    def rows_of(self, picks: Sequence[int]) -> Iterator[Row]:
        """Rows of the picked records; for turns, collects their tool-call rows."""
        encode, records = self._codec.encode, self.records
        self._calls = calls = []
        if not self.spec.is_turns:
            for i in picks:
                yield encode(records[i])
            return
        call_rows = self._codec.tool_call_rows
        for i in picks:
            rec = records[i]
            row = encode(rec)
            if rec.tool_calls:  # type: ignore[union-attr]
                calls.extend(call_rows(rec, row[0]))  # type: ignore[arg-type]
            yield row

    def calls_of(self) -> list[Row]:
        """The tool-call rows of the turns the last ``rows_of`` went through."""
        calls, self._calls = self._calls, []
        return calls


def stage_batch(codecs: dict[str, RowCodec], records: Sequence[Record]) -> list[KindBatch]:
    """Fold a batch by kind and id before any connection is touched."""
    return [KindBatch(codecs[kind], folded) for kind, folded in fold_by_kind(records).items()]


class MergeSql:
    """The statements that write one kind."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        # Whether the last batch of this kind held only new ids; then the next
        # one is copied without looking up what is stored first.
        self.expect_new = True
        cols = column_list(spec.sql_columns)
        stage = stage_table(spec.table)
        self.copy_types = [t for col in spec.fields for t in _PG_TYPES[col.type]]
        # One primary-key probe per id (a scalar subquery cannot become a scan of
        # the table); positions come back instead of ids, which load faster. The
        # ids travel as one byte string, 16 bytes each: an array of 5,000 strings
        # cost the client more to send than the server takes to probe them (the
        # library checks each element for quoting; measured), and text would be
        # cut by character position, which PostgreSQL finds by counting from the
        # start.
        self.lookup = (
            f'SELECT n, r FROM (SELECT g.n, (SELECT x."rank" FROM {spec.table} x '
            "WHERE x.id = encode(substring(%s::bytea FROM g.n * 16 - 15 FOR 16), 'hex')::uuid"
            ") AS r FROM generate_series(1, %s::integer) AS g(n)) s WHERE r IS NOT NULL"
        )
        self.copy_direct = f"COPY {spec.table} ({cols}) FROM STDIN (FORMAT BINARY)"
        self.copy_stage = f"COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)"
        upsert = (
            f"INSERT INTO {spec.table} AS t ({cols}) SELECT {cols} FROM {stage} ORDER BY id "
            f'ON CONFLICT (id) DO UPDATE SET {update_set(spec)} WHERE excluded."rank" > t."rank" '
            "RETURNING t.id, (t.xmax = 0) AS ins"
        )
        if spec.is_turns:
            # Turns note which ids were written so their tool calls can follow.
            self.merge = (
                f"WITH m AS ({upsert}) INSERT INTO {MERGED_TABLE} (id, ins) "
                "SELECT id, ins FROM m"
            )
        else:
            self.merge = (
                f"WITH m AS ({upsert}) "
                "SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM m"
            )


_COPY_TOOL_CALLS = f"COPY {TOOL_CALL_TABLE} ({_TOOL_CALL_COLS}) FROM STDIN (FORMAT BINARY)"
_STAGE_TOOL_CALLS = (
    f"COPY {stage_table(TOOL_CALL_TABLE)} ({_TOOL_CALL_COLS}) FROM STDIN (FORMAT BINARY)"
)
_REPLACE_TOOL_CALLS = (
    f"DELETE FROM {TOOL_CALL_TABLE} "
    f"WHERE turn_id = ANY (ARRAY(SELECT id FROM {MERGED_TABLE} WHERE NOT ins))",
    f"INSERT INTO {TOOL_CALL_TABLE} ({_TOOL_CALL_COLS}) "
    f"SELECT {column_list(TOOL_CALL_COLUMNS, 's.')} FROM {stage_table(TOOL_CALL_TABLE)} s "
    f"JOIN {MERGED_TABLE} m ON m.id = s.turn_id ORDER BY s.turn_id, s.seq",
)
_COUNT_MERGED = (
    f"SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM {MERGED_TABLE}"
)


def _copy(cur: Cursor, sql: str, types: list[str], rows: Iterable[Row]) -> None:
    with cur.copy(sql) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _merge_staged(cur: Cursor, merge: MergeSql, kb: KindBatch, picks: list[int]) -> tuple[int, int]:
    """Upsert the picked rows through the staging table; (inserted, updated)."""
    _copy(cur, merge.copy_stage, merge.copy_types, kb.rows_of(picks))
    if not kb.spec.is_turns:
        row = cur.execute(merge.merge).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])
    calls = kb.calls_of()
    if calls:
        _copy(cur, _STAGE_TOOL_CALLS, _TOOL_CALL_TYPES, calls)
    cur.execute(merge.merge)
    for sql in _REPLACE_TOOL_CALLS:
        cur.execute(sql)
    row = cur.execute(_COUNT_MERGED).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _copy_new(conn: Conn, cur: Cursor, merge: MergeSql, kb: KindBatch, picks: list[int]) -> bool:
    """COPY the picked rows straight into the table; False if one of the ids is stored."""
    try:
        with conn.transaction():  # a savepoint: a failed COPY leaves the batch intact
            _copy(cur, merge.copy_direct, merge.copy_types, kb.rows_of(picks))
            calls = kb.calls_of()
            if calls:
                _copy(cur, _COPY_TOOL_CALLS, _TOOL_CALL_TYPES, calls)
    except pg_errors.UniqueViolation:
        return False
    return True


def _write_kind(conn: Conn, cur: Cursor, merge: MergeSql, kb: KindBatch) -> tuple[int, int]:
    """Write one kind; (inserted, updated)."""
    everything = list(range(len(kb.records)))
    # The last batch was all new (the daemon's usual case): skip the lookup.
    if merge.expect_new and _copy_new(conn, cur, merge, kb, everything):
        return len(everything), 0
    ids = [r.id for r in kb.records]
    stored: dict[str, str] = {
        ids[int(n) - 1]: rank
        for n, rank in cur.execute(merge.lookup, [bytes.fromhex("".join(ids)), len(ids)]).fetchall()
    }
    new = [i for i, rid in enumerate(ids) if rid not in stored]
    newer = [i for i, rid in enumerate(ids) if rid in stored and kb.records[i].rank > stored[rid]]
    merge.expect_new = not stored
    if new and not _copy_new(conn, cur, merge, kb, new):
        # Another writer stored one of these ids since the lookup.
        return _merge_staged(cur, merge, kb, everything)
    inserted, updated = len(new), 0
    if newer:
        extra, updated = _merge_staged(cur, merge, kb, newer)
        inserted += extra
    return inserted, updated


def write_batch(conn: Conn, kinds: list[KindBatch], merges: dict[str, MergeSql]) -> WriteResult:
    """Write a whole batch in one transaction."""
    result = WriteResult()
    with conn.transaction(), conn.cursor(binary=True) as cur:
        cur.execute(_NO_JIT)
        for kb in kinds:
            inserted, updated = _write_kind(conn, cur, merges[kb.spec.kind], kb)
            counts = result.kind(kb.spec.kind)
            counts.inserted += inserted
            counts.updated += updated
            counts.unchanged += len(kb.records) - inserted - updated
    return result
