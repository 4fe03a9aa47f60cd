"""SQL text shared by the SQLite and PostgreSQL adapters: filters and reads.

Filters reproduce, per kind, what the file store's ledger scan selects, so
every adapter answers a query with the same records. Reads page through a
kind in (ts, id) order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..records import (
    Compaction,
    Record,
    SessionRelationship,
    ToolResultEvent,
    Turn,
    UserTurn,
)
from .base import Filter
from .sql_common import (
    SPECS,
    RowCodec,
    TableSpec,
    column_list,
    q,
)


@dataclass(frozen=True)
class Dialect:
    """The few spellings that differ between SQLite and PostgreSQL."""

    name: str
    param: str  # placeholder: "?" or "%s"

    def mod(self, a: str, b: int) -> str:
        return f"({a} % {b})" if self.name == "sqlite" else f"mod({a}, {b})"

    def in_values(
        self, expr: str, values: Sequence[Any], sql_type: str = ""
    ) -> tuple[str, list[Any]]:
        """``expr IN values``: one array parameter (PostgreSQL) or one per value (SQLite)."""
        if not values:
            return self.false, []
        if self.name == "postgres":
            array = f"{self.param}::{sql_type}[]" if sql_type else self.param
            return f"{expr} = ANY({array})", [list(values)]
        marks = ", ".join(self.param for _ in values)
        return f"{expr} IN ({marks})", list(values)

    @property
    def true(self) -> str:
        return "TRUE" if self.name == "postgres" else "1"

    @property
    def false(self) -> str:
        return "FALSE" if self.name == "postgres" else "0"

    def id_param(self) -> str:
        return f"{self.param}::uuid" if self.name == "postgres" else self.param


SQLITE = Dialect("sqlite", "?")
POSTGRES = Dialect("postgres", "%s")

MODEL_LABEL_SQL = (
    "CASE WHEN t.model IS NULL OR t.model = '' THEN 'unknown' "
    "WHEN t.speed = 'fast' THEN t.model || '-fast' ELSE t.model END"
)


def model_filter(dialect: Dialect, label: str) -> tuple[str, list[Any]]:
    """Turns whose model label (``reports.model_label``) equals ``label``.

    Spelled on the raw columns rather than the label expression so an index
    on ``model`` applies (SQLite has one).
    """
    p = dialect.param
    not_fast = "(t.speed IS NULL OR t.speed <> 'fast')"
    clauses: list[str] = []
    params: list[Any] = []
    if label == "unknown":
        clauses.append("(t.model IS NULL OR t.model = '')")
    if label:
        clauses.append(f"(t.model = {p} AND {not_fast})")
        params.append(label)
    if label.endswith("-fast") and len(label) > len("-fast"):
        clauses.append(f"(t.model = {p} AND t.speed = 'fast')")
        params.append(label[: -len("-fast")])
    if not clauses:
        return dialect.false, []
    return "(" + " OR ".join(clauses) + ")", params


def where_clause(
    dialect: Dialect, spec: TableSpec, flt: Filter | None
) -> tuple[str, list[Any]]:
    """SQL conditions (on alias ``t``) selecting what the file store's ledger scan does.

    Per record ``Filter.matches``, so kinds without a ``project`` column match
    no project filter; the model label filter applies to turns only; and a
    relationship matches a session as child or parent, whatever its time or
    project.
    """
    if flt is None:
        return dialect.true, []
    p = dialect.param
    parts: list[str] = []
    params: list[Any] = []
    if spec.kind == "relationship":
        if flt.session_id is not None:
            parts.append(f"(t.session_id = {p} OR t.parent_session_id = {p})")
            params += [flt.session_id, flt.session_id]
        if flt.sources:
            sql, vals = dialect.in_values("t.source", flt.sources)
            parts.append(sql)
            params.extend(vals)
        return (" AND ".join(parts) or dialect.true), params
    if flt.since_ms is not None:
        parts.append(f"t.ts >= {p}")
        params.append(flt.since_ms)
    if flt.until_ms is not None:
        parts.append(f"t.ts < {p}")
        params.append(flt.until_ms)
    if flt.sources:
        sql, vals = dialect.in_values("t.source", flt.sources)
        parts.append(sql)
        params.extend(vals)
    if flt.session_id is not None:
        parts.append(f"t.session_id = {p}")
        params.append(flt.session_id)
    if flt.project is not None:
        if spec.has_project:
            parts.append(f"t.project = {p}")
            params.append(flt.project)
        else:
            parts.append(dialect.false)
    if flt.model is not None and spec.is_turns:
        sql, vals = model_filter(dialect, flt.model)
        parts.append(sql)
        params.extend(vals)
    return (" AND ".join(parts) or dialect.true), params


def page_query(
    dialect: Dialect, spec: TableSpec, flt: Filter | None, after: tuple[int, str] | None, limit: int
) -> tuple[str, list[Any]]:
    """One page of a kind in (ts, id) order, after the last (ts, id) seen."""
    where, params = where_clause(dialect, spec, flt)
    if after is not None:
        p = dialect.param
        where += f" AND t.ts >= {p} AND (t.ts, t.id) > ({p}, {dialect.id_param()})"
        params.extend((after[0], *after))
    sql = (
        f"SELECT {column_list(spec.sql_columns, 't.')} FROM {spec.table} t "
        f"WHERE {where} ORDER BY t.ts, t.id LIMIT {int(limit)}"
    )
    return sql, params


def content_query(dialect: Dialect) -> str:
    spec = SPECS["content"]
    return (
        f"SELECT {column_list(spec.sql_columns, 't.')} FROM {spec.table} t "
        f"WHERE t.session_id = {dialect.param} ORDER BY t.ts, t.message_id, t.seq, t.id"
    )


PAGE_SIZE = 2000

Page = Sequence[Sequence[Any]]


def iter_pages(
    codec: RowCodec, fetch: Callable[[tuple[int, str] | None], Page], page_size: int = PAGE_SIZE
) -> Iterator[Record]:
    """Records of one kind in (ts, id) order, fetched a page at a time.

    Each page is read in its own short snapshot, so a long iteration holds no
    transaction open and writers are never blocked by a slow reader.
    """
    ts_at = codec.spec.sql_columns.index("ts")
    after: tuple[int, str] | None = None
    while True:
        rows = fetch(after)
        for row in rows:
            yield codec.decode(row)
        if len(rows) < page_size:
            return
        last = rows[-1]
        after = (last[ts_at], last[0])


def update_set(spec: TableSpec) -> str:
    """``SET`` list replacing every column but the id with the incoming row's."""
    return ", ".join(f"{q(c)} = excluded.{q(c)}" for c in spec.sql_columns if c != "id")


class RecordQueries:
    """The per-kind query methods of the SQL adapters, over their paged ``_fetch_page``.

    Subclasses provide ``_codecs`` (kind -> RowCodec), ``page_size`` and
    ``_fetch_page(spec, flt, after)``.
    """

    _codecs: dict[str, RowCodec]
    page_size: int

    def _fetch_page(self, spec: TableSpec, flt: Filter | None, after: Any) -> Page:
        raise NotImplementedError

    def _iter(self, kind: str, flt: Filter | None) -> Iterator[Any]:
        spec = SPECS[kind]
        return iter_pages(
            self._codecs[kind], lambda after: self._fetch_page(spec, flt, after), self.page_size
        )

    def turns(self, flt: Filter | None = None) -> Iterator[Turn]:
        return self._iter("turn", flt)

    def user_turns(self, flt: Filter | None = None) -> Iterator[UserTurn]:
        return self._iter("user-turn", flt)

    def compactions(self, flt: Filter | None = None) -> Iterator[Compaction]:
        return self._iter("compaction", flt)

    def tool_results(self, flt: Filter | None = None) -> Iterator[ToolResultEvent]:
        return self._iter("tool-result", flt)

    def relationships(self, flt: Filter | None = None) -> Iterator[SessionRelationship]:
        return self._iter("relationship", flt)

