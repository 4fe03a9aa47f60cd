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
locks in the same order and cannot deadlock. A turn's tool calls are a column
of its row: written, and replaced by a merge, with it.

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
from .pg_conn import IdArray
from .pg_schema import stage_table
from .sql_common import (
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
    # JSON text, sent as the UTF-8 bytes RowCodec encodes (the binary format of text).
    ColType.TOOL_CALLS: ("bytea",),
}

# Merge plans are small; compiling them would cost more than it saves. The
# id lookup must stay one index probe per id whatever the statistics say:
# right after a bulk load they count far fewer rows than the table holds,
# and a hash join would then scan the whole table for every batch (measured).
# No other statement of a write joins anything. One statement, with the
# effect of three SET LOCAL.
_SETTINGS = (
    "SELECT set_config('jit', 'off', true), set_config('enable_hashjoin', 'off', true), "
    "set_config('enable_mergejoin', 'off', true)"
)


class KindBatch:
    """One kind of a folded batch: records in id order, encoded as the COPY asks for them.

    Encoding inside the COPY loop lets Python build the next rows while the
    server stores the previous ones. A row lives only until the COPY has
    taken it: rows kept for a second pass (a staging merge after a lost race,
    rare) would let thousands of tuples pile up per batch and set off the
    garbage collector, whose passes over the process's objects cost more than
    encoding again (measured).
    """

    def __init__(self, codec: RowCodec, records: list[Record]) -> None:
        self.spec = codec.spec
        self.records = records
        self._codec = codec

    def rows_of(self, picks: Sequence[int]) -> Iterator[Row]:
        """Rows of the picked records."""
        encode, records = self._codec.encode, self.records
        for i in picks:
            yield encode(records[i])


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
        # One primary-key probe per id (a nested loop over the ids: hash and
        # merge joins are off in a write, see _SETTINGS); positions come back
        # instead of ids, which load faster. The ids travel as one binary uuid[]
        # (``IdArray``): a scalar subquery per id cut out of one byte string
        # took 1.7 times as long for 5,000 ids (measured), and an array of
        # 5,000 strings costs the client more to send than the server takes to
        # probe them (the library checks each element for quoting).
        self.lookup = (
            f'SELECT u.n, x."rank" FROM unnest(%s::uuid[]) WITH ORDINALITY AS u(id, n) '
            f"JOIN {spec.table} x ON x.id = u.id"
        )
        self.copy_direct = f"COPY {spec.table} ({cols}) FROM STDIN (FORMAT BINARY)"
        self.copy_stage = f"COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)"
        upsert = (
            f"INSERT INTO {spec.table} AS t ({cols}) SELECT {cols} FROM {stage} ORDER BY id "
            f'ON CONFLICT (id) DO UPDATE SET {update_set(spec)} WHERE excluded."rank" > t."rank" '
            "RETURNING (t.xmax = 0) AS ins"
        )
        self.merge = (
            f"WITH m AS ({upsert}) "
            "SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM m"
        )


def _copy(cur: Cursor, sql: str, types: list[str], rows: Iterable[Row]) -> None:
    with cur.copy(sql) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _merge_staged(cur: Cursor, merge: MergeSql, kb: KindBatch, picks: list[int]) -> tuple[int, int]:
    """Upsert the picked rows through the staging table; (inserted, updated)."""
    _copy(cur, merge.copy_stage, merge.copy_types, kb.rows_of(picks))
    row = cur.execute(merge.merge).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _copy_new(conn: Conn, cur: Cursor, merge: MergeSql, kb: KindBatch, picks: list[int]) -> bool:
    """COPY the picked rows straight into the table; False if one of the ids is stored."""
    try:
        with conn.transaction():  # a savepoint: a failed COPY leaves the batch intact
            _copy(cur, merge.copy_direct, merge.copy_types, kb.rows_of(picks))
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
        for n, rank in cur.execute(merge.lookup, [IdArray(ids)]).fetchall()
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
        cur.execute(_SETTINGS)
        for kb in kinds:
            inserted, updated = _write_kind(conn, cur, merges[kb.spec.kind], kb)
            counts = result.kind(kb.spec.kind)
            counts.inserted += inserted
            counts.updated += updated
            counts.unchanged += len(kb.records) - inserted - updated
    return result
