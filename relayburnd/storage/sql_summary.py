"""``summary`` in SQL, with exactly the rows of ``reports.summarize``.

The database groups billable turns (sidechain replays of main-thread
responses left out: the ``billable_turns`` view, or a condition the adapter
passes) by the non-time dimensions and, when the report has day, week or
month, by a UTC window of ``g`` milliseconds. Python then names each window's
calendar bucket in the reporting zone with ``reports.bucket`` itself, so both
adapters agree with the reference for every IANA zone whatever time zone data
the database server has (SQLite has none).

``g`` is the greatest common divisor of one day and the zone's UTC offsets over
the data's time range (a day for UTC, 3 h for Asia/Tokyo, 30 min for
America/St_Johns), so local midnights fall on window edges. A window is used
only when its first and last millisecond have the same local date and UTC
offset; any other window (historic local-mean-time offsets, a transition off
the grid) is grouped again by exact timestamp. The result is exact for every
zone and costs one grouped scan. PostgreSQL also receives the list of windows
with their bucket names, so it returns one row per report row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import tzinfo
from typing import Any

from ..reports import bucket, get_tz, local_dt
from .base import SummaryResult, SummaryRow, SummarySpec
from .sql_common import SPECS
from .sql_query import MODEL_LABEL_SQL, Dialect, where_clause

Query = Callable[[str, list[Any]], Sequence[Sequence[Any]]]

TIME_DIMS = frozenset(("day", "week", "month"))
DAY_MS = 86_400_000
QUARTER_MS = 900_000
EXACT = 0  # a "window" that groups by the exact timestamp
# Windows the PostgreSQL schema keeps planner statistics for, widest first.
_STAT_WINDOWS = (DAY_MS, 3_600_000, 1_800_000, QUARTER_MS)
_MAX_SAMPLES = 4096  # offsets sampled to choose the window
_MAX_MAPPED_WINDOWS = 20_000  # windows listed for PostgreSQL to name in SQL
_CHUNK = 500  # odd windows per regrouping query

DIMENSION_SQL = {
    "source": "t.source",
    "project": "t.project",
    "session": "t.session_id",
    "model": MODEL_LABEL_SQL,
}

# count, input, output, cache write, cache read, reasoning, cost, unpriced
_METRIC_EXPRS = (
    "count(*)",
    "sum(t.input_tokens)",
    "sum(t.output_tokens)",
    "sum(t.cache_write_tokens)",
    "sum(t.cache_read_tokens)",
    "sum(t.reasoning_tokens)",
    "sum(t.cost_usd)",
    "sum(CASE WHEN t.cost_usd IS NULL THEN 1 ELSE 0 END)",
)
METRICS_SQL = ", ".join(_METRIC_EXPRS)
_METRIC_NAMES = ("n", "inp", "outp", "cw", "cr", "rs", "cost", "unpriced")
_N_METRICS = len(_METRIC_EXPRS)


def window_ms(tz: tzinfo, lo: int, hi: int) -> int:
    """The widest window (dividing a day) whose edges include every local midnight in range."""
    g = DAY_MS
    step = max(DAY_MS, (hi - lo) // _MAX_SAMPLES)
    t = lo
    while True:
        offset = local_dt(t, tz).utcoffset()
        if offset is not None:
            g = math.gcd(g, int(offset.total_seconds() * 1000) % DAY_MS)
        if t >= hi:
            break
        t = min(t + step, hi)
    return max(g, 1)


def _window_sql(dialect: Dialect, g: int, ts: str = "t.ts") -> str:
    """Start of the ``g``-wide UTC window holding ``ts`` (a floor, also before 1970)."""
    inner = dialect.mod(ts, g)
    return f"({ts} - {dialect.mod(f'({inner} + {g})', g)})"


class _Groups:
    """Accumulates metric sums per report key."""

    def __init__(self, by: tuple[str, ...]) -> None:
        self.by = by
        self.sums: dict[tuple[str, ...], list[Any]] = {}

    def add(self, key: tuple[str, ...], metrics: Sequence[Any]) -> None:
        acc = self.sums.get(key)
        if acc is None:
            acc = self.sums[key] = [0, 0, 0, 0, 0, 0, 0.0, 0]
        for i in range(6):
            acc[i] += int(metrics[i] or 0)
        acc[6] += float(metrics[6] or 0.0)
        acc[7] += int(metrics[7] or 0)

    def result(self) -> SummaryResult:
        rows: list[SummaryRow] = []
        totals = SummaryRow(keys={})
        for key in sorted(self.sums):
            row = _row(dict(zip(self.by, key, strict=True)), self.sums[key])
            rows.append(row)
            totals.add_row(row)
        return SummaryResult(by=self.by, rows=rows, totals=totals)


def _row(keys: dict[str, str], acc: list[Any]) -> SummaryRow:
    n, inp, out, cw, cr, reasoning, cost, unpriced = acc
    return SummaryRow(
        keys=keys,
        requests=n,
        input_tokens=inp,
        output_tokens=out,
        cache_write_tokens=cw,
        cache_read_tokens=cr,
        reasoning_tokens=reasoning,
        total_tokens=inp + out + cw + cr,
        cost_usd=cost,
        unpriced_requests=unpriced,
    )


def _uniform_labels(w: int, g: int, tz: tzinfo, dims: Sequence[str]) -> dict[str, str] | None:
    """Bucket names shared by every millisecond of window ``[w, w+g)``, or None."""
    first, last = local_dt(w, tz), local_dt(w + g - 1, tz)
    if first.date() != last.date() or first.utcoffset() != last.utcoffset():
        return None
    return {d: bucket(d, w, tz) for d in dims}


def summarize_sql(
    dialect: Dialect,
    spec: SummarySpec,
    query: Query,
    *,
    source: str = "billable_turns",
    billable: str = "",
) -> SummaryResult:
    """Run ``spec`` through ``query`` (one snapshot); equal to ``reports.summarize``.

    ``source`` is what is scanned (as ``t``); ``billable`` an extra condition
    that, with it, leaves exactly the billable turns.
    """
    tz = get_tz(spec.tz)
    by = spec.by
    time_dims = [d for d in by if d in TIME_DIMS]
    dims_sql = [DIMENSION_SQL[d] for d in by if d not in TIME_DIMS]
    where, params = where_clause(dialect, SPECS["turn"], spec.filter)
    if billable:
        where = f"{where} AND {billable}"
    groups = _Groups(by)

    if not time_dims:
        sql = _grouped_sql(dialect, dims_sql, where, None, source)
        _collect(query(sql, params), len(dims_sql), groups, _plain_key)
        return groups.result()

    bounds = query("SELECT min(t.ts), max(t.ts) FROM turns t", [])
    lo, hi = (bounds[0][0], bounds[0][1]) if bounds else (None, None)
    if lo is None or hi is None:
        return groups.result()
    flt = spec.filter
    lo = max(int(lo), flt.since_ms) if flt.since_ms is not None else int(lo)
    hi = min(int(hi), flt.until_ms - 1) if flt.until_ms is not None else int(hi)
    if lo > hi:
        return groups.result()
    g = window_ms(tz, lo, hi)
    labels_of: dict[int, dict[str, str] | None] = {}
    odd_windows: list[int] = []

    def window_key(keys: Sequence[Any]) -> tuple[str, ...] | None:
        w = int(keys[0])
        if w not in labels_of:
            labels_of[w] = _uniform_labels(w, g, tz, time_dims)
            if labels_of[w] is None:
                odd_windows.append(w)
        labels = labels_of[w]
        return None if labels is None else _compose(by, labels, keys[1:])

    def exact_key(keys: Sequence[Any]) -> tuple[str, ...]:
        ts = int(keys[0])
        return _compose(by, {d: bucket(d, ts, tz) for d in time_dims}, keys[1:])

    nk = 1 + len(dims_sql)
    mapped = _window_map(lo, hi, g, tz, time_dims) if dialect.name == "postgres" else None
    if mapped is not None:
        starts, names, odd_windows = mapped
        nt = len(time_dims)
        rows = query(_mapped_sql(dialect, dims_sql, where, g, nt, source),
                     [*params, starts, *names])
        _collect(rows, nt + len(dims_sql), groups,
                 lambda keys: _compose(by, dict(zip(time_dims, keys[:nt], strict=True)),
                                       keys[nt:]))
    else:
        _collect(query(_grouped_sql(dialect, dims_sql, where, g, source), params), nk, groups,
                 window_key)
    window = _window_sql(dialect, g)
    for i in range(0, len(odd_windows), _CHUNK):
        cond, extra = dialect.in_values(window, odd_windows[i : i + _CHUNK], "bigint")
        sql = _grouped_sql(dialect, dims_sql, f"{where} AND {cond}", EXACT, source)
        _collect(query(sql, [*params, *extra]), nk, groups, exact_key)
    return groups.result()


def _grouped_sql(
    dialect: Dialect, dims_sql: list[str], where: str, window: int | None, source: str
) -> str:
    """One grouped scan of ``source``: by ``dims_sql``, after a window key if any.

    PostgreSQL groups by a whole day, hour, half or quarter hour first, expressions
    its planner has statistics for (migration 0001), so it estimates the group
    count right and aggregates in parallel; a window of several such units
    (3 h for Asia/Tokyo) is then formed from those few rows.
    """
    if window is None:
        return _select([*dims_sql], where, source)
    if window == EXACT:
        return _select(["t.ts", *dims_sql], where, source)
    base = next((b for b in _STAT_WINDOWS if window % b == 0), None)
    if dialect.name != "postgres" or base is None or base == window:
        return _select([_window_sql(dialect, window), *dims_sql], where, source)
    inner = _select([_window_sql(dialect, base), *dims_sql], where, source, named=True)
    outer_keys = [
        _window_sql(dialect, window, "p.k0"),
        *(f"p.k{i + 1}" for i in range(len(dims_sql))),
    ]
    sums = ", ".join(f"sum(p.{m})" for m in _METRIC_NAMES)
    group = ", ".join(str(i + 1) for i in range(len(outer_keys)))
    return f"SELECT {', '.join(outer_keys)}, {sums} FROM ({inner}) p GROUP BY {group}"


def _select(keys: list[str], where: str, source: str, *, named: bool = False) -> str:
    if named:
        key_list = ", ".join(f"{k} AS k{i}" for i, k in enumerate(keys))
        metrics = ", ".join(
            f"{expr} AS {name}" for expr, name in zip(_METRIC_EXPRS, _METRIC_NAMES, strict=True)
        )
    else:
        key_list, metrics = ", ".join(keys), METRICS_SQL
    sql = f"SELECT {key_list + ', ' if keys else ''}{metrics} FROM {source} t WHERE {where}"
    if keys:
        sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(keys)))
    return sql


def _window_map(
    lo: int, hi: int, g: int, tz: tzinfo, time_dims: Sequence[str]
) -> tuple[list[int], list[list[str]], list[int]] | None:
    """Every window in ``[lo, hi]``: the uniform ones with their bucket names, and the odd ones.

    PostgreSQL joins its windows to this list and returns one row per bucket
    instead of one per window (30-minute windows for America/St_Johns are 48
    a day). None when the range has too many windows to list.
    """
    first, last = lo - lo % g, hi - hi % g
    if (last - first) // g >= _MAX_MAPPED_WINDOWS:
        return None
    starts: list[int] = []
    names: list[list[str]] = [[] for _ in time_dims]
    odd: list[int] = []
    for w in range(first, last + 1, g):
        labels = _uniform_labels(w, g, tz, time_dims)
        if labels is None:
            odd.append(w)
            continue
        starts.append(w)
        for column, dim in zip(names, time_dims, strict=True):
            column.append(labels[dim])
    return starts, names, odd


def _mapped_sql(
    dialect: Dialect, dims_sql: list[str], where: str, g: int, n_time: int, source: str
) -> str:
    """Windows grouped as in ``_grouped_sql``, then joined to their bucket names and summed."""
    base = next((b for b in _STAT_WINDOWS if g % b == 0), g)
    inner = _select([_window_sql(dialect, base), *dims_sql], where, source, named=True)
    keys = [*(f"b.l{i}" for i in range(n_time)), *(f"p.k{i + 1}" for i in range(len(dims_sql)))]
    sums = ", ".join(
        f"sum(p.{m})" if m == "cost" else f"sum(p.{m})::bigint" for m in _METRIC_NAMES
    )
    p = dialect.param
    arrays = ", ".join([f"{p}::bigint[]", *(f"{p}::text[]" for _ in range(n_time))])
    columns = ", ".join(["w", *(f"l{i}" for i in range(n_time))])
    group = ", ".join(str(i + 1) for i in range(len(keys)))
    return (
        f"SELECT {', '.join(keys)}, {sums} FROM ({inner}) p "
        f"JOIN unnest({arrays}) AS b({columns}) ON b.w = {_window_sql(dialect, g, 'p.k0')} "
        f"GROUP BY {group}"
    )


def _plain_key(keys: Sequence[Any]) -> tuple[str, ...]:
    return tuple(str(k) for k in keys)


def _compose(by: Sequence[str], labels: dict[str, str], others: Sequence[Any]) -> tuple[str, ...]:
    rest = iter(others)
    return tuple(labels[d] if d in labels else str(next(rest)) for d in by)


def _collect(
    rows: Sequence[Sequence[Any]],
    nk: int,
    groups: _Groups,
    make_key: Callable[[Sequence[Any]], tuple[str, ...] | None],
) -> None:
    """Add grouped rows (keys, then the metrics) to ``groups``; None keys are skipped."""
    for row in rows:
        if int(row[nk] or 0) == 0:
            continue  # no key columns and nothing matched
        key = make_key(row[:nk])
        if key is not None:
            groups.add(key, row[nk : nk + _N_METRICS])
