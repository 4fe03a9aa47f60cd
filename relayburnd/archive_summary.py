"""``summary`` from the archive, with exactly the rows of ``reports.summarize``.

Why it is exact in every zone although SQLite knows none: billable turns are
pre-summed per UTC 15-minute slot (``usage_15m``). Over the data's time range
the reporting zone's UTC offset is constant between transitions, so the range
splits into pieces of slots with one offset each; in a piece whose offset is a
whole number of quarter hours no slot straddles a local midnight, and SQL can
name each slot's local day as ``floor((slot start + offset) / 1 day)``. The
database therefore returns one row per local day and dimension values, and
Python turns day numbers into day/week/month labels with ``reports.bucket``
and merges with ``reports.merge_partial_rows``.

When every piece's offset is a whole number of hours and every change falls
on a UTC hour (UTC and most zones), ``usage_1h`` serves the same query with a
quarter of the rows. What SQL cannot name is summed per timestamp from
``turns`` and bucketed in Python: a slot in which the offset changes, and
pieces whose offset is not a quarter-hour multiple (local mean time before
standard time). Reports by session, or filtered to one session, read
``turns`` (the usage tables have no session); filter bounds off the grain's
edges read the partial units from ``turns``.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from datetime import UTC, tzinfo
from typing import Any

from .archive_schema import HOUR_SLOTS, SLOT_MS, USAGE_TABLES
from .reports import bucket, get_tz, local_dt, merge_partial_rows
from .storage.base import Filter, SummaryResult, SummaryRow, SummarySpec

TIME_DIMS = ("day", "week", "month")
DAY_MS = 86_400_000
DAY_SLOTS = DAY_MS // SLOT_MS
_SAMPLE_SLOTS = 48  # look for offset changes every 12 hours, then bisect

_DIM_SQL = {"source": "source", "project": "project", "model": "model_label",
            "session": "session_id"}
_TURN_METRICS = (
    "count(*), sum(input_tokens), sum(output_tokens), sum(cache_write_tokens), "
    "sum(cache_read_tokens), sum(reasoning_tokens), total(cost_usd), sum(1 - priced)"
)
_USAGE_METRICS = (
    "sum(requests), sum(input_tokens), sum(output_tokens), sum(cache_write_tokens), "
    "sum(cache_read_tokens), sum(reasoning_tokens), total(cost_usd), sum(unpriced)"
)

Piece = tuple[int, int, int | None]  # [first slot, end slot), offset ms or None (exact)


def _offset(tz: tzinfo, ms: int) -> int:
    off = local_dt(ms, tz).utcoffset()
    return int(off.total_seconds() * 1000) if off is not None else 0


def zone_pieces(tz: tzinfo, lo: int, hi: int) -> list[Piece]:
    """Slots ``lo``..``hi`` split where ``tz``'s offset changes (see the module docstring)."""
    changes: list[int] = []
    p, po = lo, _offset(tz, lo * SLOT_MS)
    while p < hi:
        q = min(p + _SAMPLE_SLOTS, hi)
        if _offset(tz, q * SLOT_MS) == po:
            p = q
            continue
        a, b = p, q  # offset at a is po, at b it is not: bisect to the first changed slot
        while b - a > 1:
            m = (a + b) // 2
            if _offset(tz, m * SLOT_MS) == po:
                a = m
            else:
                b = m
        changes.append(b)
        p, po = b, _offset(tz, b * SLOT_MS)
    pieces: list[Piece] = []
    bounds = [lo, *changes, hi + 1]
    for a, b in itertools.pairwise(bounds):
        off = _offset(tz, a * SLOT_MS)
        mixed = _offset(tz, b * SLOT_MS - 1) != off  # the offset changes inside slot b-1
        end = b - 1 if mixed else b
        if end > a:
            pieces.append((a, end, off if off % SLOT_MS == 0 else None))
        if mixed:
            pieces.append((b - 1, b, None))
    return pieces


def _floor_div(expr: str, n: int) -> str:
    """``floor(expr / n)`` in SQL (SQLite's ``/`` truncates toward zero)."""
    return f"((({expr}) - (((({expr}) % {n}) + {n}) % {n})) / {n})"


def hourly(pieces: list[Piece]) -> bool:
    """Whether ``usage_1h`` can name every local day: whole-hour offsets, changes on hours."""
    inner = [a for a, _, _ in pieces[1:]]
    return all(off is not None and off % (HOUR_SLOTS * SLOT_MS) == 0 for _, _, off in pieces) \
        and all(a % HOUR_SLOTS == 0 for a in inner)


def day_sql(pieces: list[Piece], col: str = "slot", per: int = 1) -> str:
    """SQL naming a row's local day number (days since 1970-01-01); NULL = exact path.

    ``col`` counts units of ``per`` slots; piece edges inside the range are
    multiples of ``per`` (see ``hourly``), the outer ones are rounded outward.
    """
    whens = [f"WHEN {col} < {pieces[0][0] // per} THEN NULL"]
    for i, (_, end, off) in enumerate(pieces):
        edge = -(-end // per) if i == len(pieces) - 1 else end // per
        value = ("NULL" if off is None
                 else _floor_div(f"{col} + {off // (SLOT_MS * per)}", DAY_SLOTS // per))
        whens.append(f"WHEN {col} < {edge} THEN {value}")
    return f"(CASE {' '.join(whens)} ELSE NULL END)"


def _row(m: Sequence[Any]) -> SummaryRow:
    inp, out, cw, cr = (int(m[i] or 0) for i in range(1, 5))
    return SummaryRow(
        keys={}, requests=int(m[0]), input_tokens=inp, output_tokens=out,
        cache_write_tokens=cw, cache_read_tokens=cr, reasoning_tokens=int(m[5] or 0),
        total_tokens=inp + out + cw + cr, cost_usd=float(m[6] or 0.0),
        unpriced_requests=int(m[7] or 0),
    )


def _conditions(flt: Filter, table: str) -> tuple[list[str], list[Any]]:
    """SQL for the non-time parts of ``flt`` on ``turns`` or ``usage_15m``."""
    parts: list[str] = []
    params: list[Any] = []
    if flt.sources:
        parts.append(f"source IN ({', '.join('?' for _ in flt.sources)})")
        params.extend(flt.sources)
    if flt.project is not None:
        parts.append("project = ?")
        params.append(flt.project)
    if flt.model is not None:
        parts.append("model_label = ?")
        params.append(flt.model)
    if flt.session_id is not None:
        parts.append("session_id = ?")
        params.append(flt.session_id)
    if table == "turns":
        parts.append("billable = 1")
    return parts, params


class _Summarizer:
    """One ``summary`` run over one read snapshot."""

    def __init__(self, conn: sqlite3.Connection, spec: SummarySpec) -> None:
        self.conn = conn
        self.spec = spec
        self.flt = spec.filter
        self.tz = get_tz(spec.tz)
        self.time_dims = [d for d in spec.by if d in TIME_DIMS]
        self.other_dims = [d for d in spec.by if d not in TIME_DIMS]
        self.partials: list[tuple[dict[str, str], SummaryRow]] = []
        self.day_labels: dict[int, dict[str, str]] = {}
        self.pieces: list[Piece] = []

    def run(self) -> SummaryResult:
        flt = self.flt
        per = HOUR_SLOTS
        if self.time_dims:
            # two subqueries: each min/max alone is one index lookup, together a scan
            lo, hi = self.conn.execute(
                "SELECT (SELECT min(ts) FROM turns), (SELECT max(ts) FROM turns)").fetchone()
            if lo is None:
                return merge_partial_rows([], self.spec.by)
            lo = max(lo, flt.since_ms) if flt.since_ms is not None else lo
            hi = min(hi, flt.until_ms - 1) if flt.until_ms is not None else hi
            if lo > hi:
                return merge_partial_rows([], self.spec.by)
            self.pieces = zone_pieces(self.tz, lo // SLOT_MS, hi // SLOT_MS)
            per = HOUR_SLOTS if hourly(self.pieces) else 1
        unit = per * SLOT_MS
        first = -(-flt.since_ms // unit) if flt.since_ms is not None else None
        last = flt.until_ms // unit if flt.until_ms is not None else None
        if (flt.session_id is not None or "session" in self.spec.by
                or (first is not None and last is not None and first >= last)):
            self._grouped("turns", flt.since_ms, flt.until_ms)
        else:
            self._grouped("usage_1h" if per == HOUR_SLOTS else "usage_15m", first, last)
            since, until = flt.since_ms, flt.until_ms
            if since is not None and first is not None and since < first * unit:
                self._grouped("turns", since, first * unit)
            if until is not None and last is not None and last * unit < until:
                self._grouped("turns", last * unit, until)
        for a, b, off in self.pieces:
            if off is None:
                self._exact(a * SLOT_MS, b * SLOT_MS)
        return merge_partial_rows(self.partials, self.spec.by)

    def _keys(self, labels: dict[str, str], others: Sequence[Any]) -> dict[str, str]:
        out = dict(labels)
        out.update(zip(self.other_dims, (str(v) for v in others), strict=True))
        return out

    def _labels(self, day: int) -> dict[str, str]:
        labels = self.day_labels.get(day)
        if labels is None:
            labels = self.day_labels[day] = {
                d: bucket(d, day * DAY_MS, UTC) for d in self.time_dims
            }
        return labels

    def _grouped(self, table: str, lo: int | None, hi: int | None) -> None:
        """Sum ``table`` in [lo, hi) (ms for turns, its own unit otherwise) by local day + dims."""
        parts, params = _conditions(self.flt, table)
        unit_col = USAGE_TABLES.get(table, "slot")
        col = "ts" if table == "turns" else unit_col
        if lo is not None:
            parts.append(f"{col} >= ?")
            params.append(lo)
        if hi is not None:
            parts.append(f"{col} < ?")
            params.append(hi)
        keys = [_DIM_SQL[d] for d in self.other_dims]
        if self.time_dims:
            per = HOUR_SLOTS if unit_col == "hour" else 1
            keys.insert(0, day_sql(self.pieces, unit_col, per))
        metrics = _TURN_METRICS if table == "turns" else _USAGE_METRICS
        sql = (f"SELECT {', '.join([*keys, metrics])} FROM {table} "
               f"WHERE {' AND '.join(parts) or '1'} GROUP BY "
               + ", ".join(str(i + 1) for i in range(len(keys))))
        nk = len(keys)
        for row in self.conn.execute(sql, params):
            if self.time_dims:
                if row[0] is None:
                    continue  # summed per timestamp by _exact
                labels, others = self._labels(int(row[0])), row[1:nk]
            else:
                labels, others = {}, row[:nk]
            self.partials.append((self._keys(labels, others), _row(row[nk:])))

    def _exact(self, lo: int, hi: int) -> None:
        """Sum turns in [lo, hi) ms per timestamp and bucket each in the zone."""
        flt = self.flt
        parts, params = _conditions(flt, "turns")
        lo = max(lo, flt.since_ms) if flt.since_ms is not None else lo
        hi = min(hi, flt.until_ms) if flt.until_ms is not None else hi
        parts += ["ts >= ?", "ts < ?"]
        params += [lo, hi]
        keys = ["ts", *(_DIM_SQL[d] for d in self.other_dims)]
        sql = (f"SELECT {', '.join([*keys, _TURN_METRICS])} FROM turns "
               f"WHERE {' AND '.join(parts)} GROUP BY "
               + ", ".join(str(i + 1) for i in range(len(keys))))
        nk = len(keys)
        for row in self.conn.execute(sql, params):
            labels = {d: bucket(d, int(row[0]), self.tz) for d in self.time_dims}
            self.partials.append((self._keys(labels, row[1:nk]), _row(row[nk:])))


def summarize_archive(conn: sqlite3.Connection, spec: SummarySpec) -> SummaryResult:
    """``summary`` from the archive in one read snapshot."""
    conn.execute("BEGIN")
    try:
        return _Summarizer(conn, spec).run()
    finally:
        conn.execute("COMMIT")
