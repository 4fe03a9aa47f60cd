"""Report rules shared by every adapter: time buckets, model labels, grouping, output.

The file adapter groups in Python with ``summarize``; SQL adapters group in the
database but must produce the same rows (the contract suite compares them).
Rules:

* one row per turn id (greatest rank), sidechain replays of a main-thread
  response not counted (``records.is_replay``);
* ``day``/``week``/``month`` are calendar buckets of the turn's timestamp in the
  reporting time zone; a week is ISO (starts Monday) and named by its Monday;
* ``model`` is the model label: ``<model>-fast`` for fast-mode requests,
  ``unknown`` when the log named no model;
* ``--since``/``--until`` are inclusive dates in the reporting time zone.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache

import msgspec

from .errors import UsageError
from .records import Turn, is_replay, replay_message_ids
from .storage.base import (
    DIMENSIONS,
    SUMMARY_METRICS,
    Filter,
    SummaryResult,
    SummaryRow,
    SummarySpec,
)

UNKNOWN_MODEL = "unknown"


@lru_cache(maxsize=64)
def get_tz(name: str) -> tzinfo:
    """``UTC``, ``local`` or an IANA zone name; one-line error otherwise."""
    if name.upper() == "UTC" or name == "Z":
        return UTC
    if name == "local":
        return get_tz(local_zone_name())
    # zoneinfo (like csv below) is imported where it is used: every ingest imports
    # this module through the file store and never looks a zone up.
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"--tz {name!r} is not a known time zone (try UTC or Europe/Paris)"
        ) from None


def local_zone_name() -> str:
    """The IANA name of the host's zone (``TZ``, else /etc/localtime), else a fixed offset."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    tz_env = os.environ.get("TZ", "").lstrip(":")
    candidates = [tz_env] if tz_env else []
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        try:
            ZoneInfo(name)
            return name
        except (ZoneInfoNotFoundError, ValueError):
            continue
    offset = datetime.now().astimezone().utcoffset()
    hours = int(offset.total_seconds() // 3600) if offset else 0
    return "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"


def parse_by(value: str) -> tuple[str, ...]:
    dims = tuple(d.strip().lower() for d in value.split(",") if d.strip())
    if not dims:
        raise UsageError("--by needs at least one of " + ",".join(DIMENSIONS))
    bad = [d for d in dims if d not in DIMENSIONS]
    if bad:
        raise UsageError(f"--by {','.join(bad)}: unknown dimension; use {','.join(DIMENSIONS)}")
    if len(set(dims)) != len(dims):
        raise UsageError(f"--by {value}: a dimension is repeated")
    return dims


_DATE_RE = r"^(\d{4})-?(\d{2})-?(\d{2})$"


def parse_date(value: str, option: str) -> date:
    m = re.match(_DATE_RE, value.strip())
    if not m:
        raise UsageError(f"{option} {value!r}: expected YYYY-MM-DD or YYYYMMDD")
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise UsageError(f"{option} {value!r}: not a calendar date") from None


def day_start_ms(d: date, tz: tzinfo) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp() * 1000)


def date_range_filter(
    since: str | None, until: str | None, tz: tzinfo, base: Filter | None = None
) -> Filter:
    """A Filter whose time bounds are the inclusive local dates ``since``..``until``."""
    base = base or Filter()
    since_ms = day_start_ms(parse_date(since, "--since"), tz) if since else None
    until_ms = day_start_ms(parse_date(until, "--until") + timedelta(days=1), tz) if until else None
    if since_ms is not None and until_ms is not None and until_ms <= since_ms:
        raise UsageError("--until is before --since")
    return Filter(
        since_ms=since_ms,
        until_ms=until_ms,
        session_id=base.session_id,
        project=base.project,
        model=base.model,
        sources=base.sources,
    )


def model_label(model: str | None, speed: str | None) -> str:
    if not model:
        return UNKNOWN_MODEL
    return f"{model}-fast" if speed == "fast" else model


def local_dt(ts_ms: int, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz)


def bucket(dim: str, ts_ms: int, tz: tzinfo) -> str:
    d = local_dt(ts_ms, tz).date()
    if dim == "day":
        return d.isoformat()
    if dim == "week":
        return (d - timedelta(days=d.weekday())).isoformat()
    if dim == "month":
        return f"{d.year:04d}-{d.month:02d}"
    raise ValueError(dim)


def dimension_value(dim: str, t: Turn, tz: tzinfo) -> str:
    if dim in ("day", "week", "month"):
        return bucket(dim, t.ts, tz)
    if dim == "model":
        return model_label(t.model, t.speed)
    if dim == "source":
        return t.source
    if dim == "project":
        return t.project or ""
    if dim == "session":
        return t.session_id
    raise ValueError(dim)


def billable(turns: Iterable[Turn]) -> list[Turn]:
    """Folded turns minus sidechain replays of main-thread responses."""
    turns = list(turns)
    main_ids = replay_message_ids(turns)
    return [t for t in turns if not is_replay(t, main_ids)]


def summarize(turns: Iterable[Turn], spec: SummarySpec) -> SummaryResult:
    """Group folded turns by ``spec.by`` (the reference implementation of ``summary``)."""
    tz = get_tz(spec.tz)
    flt = spec.filter
    groups: dict[tuple[str, ...], SummaryRow] = {}
    totals = SummaryRow(keys={})
    for t in billable(turns):
        if not flt.matches(ts=t.ts, source=t.source, session_id=t.session_id, project=t.project):
            continue
        if flt.model is not None and model_label(t.model, t.speed) != flt.model:
            continue
        key = tuple(dimension_value(d, t, tz) for d in spec.by)
        row = groups.get(key)
        if row is None:
            row = groups[key] = SummaryRow(keys=dict(zip(spec.by, key, strict=True)))
        row.add_turn(t)
        totals.add_turn(t)
    rows = [groups[k] for k in sorted(groups)]
    return SummaryResult(by=spec.by, rows=rows, totals=totals)


def merge_partial_rows(
    partials: Iterable[tuple[dict[str, str], SummaryRow]], by: tuple[str, ...]
) -> SummaryResult:
    """Combine rows pre-grouped by a finer key (SQL adapters) into ``by`` rows."""
    groups: dict[tuple[str, ...], SummaryRow] = {}
    totals = SummaryRow(keys={})
    for keys, part in partials:
        key = tuple(keys[d] for d in by)
        row = groups.get(key)
        if row is None:
            row = groups[key] = SummaryRow(keys=dict(zip(by, key, strict=True)))
        row.add_row(part)
        totals.add_row(part)
    return SummaryResult(by=by, rows=[groups[k] for k in sorted(groups)], totals=totals)


# ---------------------------------------------------------------- output


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def render_json(result: SummaryResult) -> str:
    return msgspec.json.format(msgspec.json.encode(result.as_dict()), indent=2).decode()


def render_csv(result: SummaryResult) -> str:
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*result.by, *SUMMARY_METRICS])
    for row in result.rows:
        d = row.as_dict()
        writer.writerow([*(row.keys[k] for k in result.by), *(d[m] for m in SUMMARY_METRICS)])
    return buf.getvalue()


def render_table(result: SummaryResult, console_width: int | None = None) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_footer=True)
    metric_cols: list[tuple[str, str, Callable[[SummaryRow], str]]] = [
        ("requests", "Requests", lambda r: _fmt_int(r.requests)),
        ("input", "Input", lambda r: _fmt_int(r.input_tokens)),
        ("output", "Output", lambda r: _fmt_int(r.output_tokens)),
        ("cache_write", "Cache write", lambda r: _fmt_int(r.cache_write_tokens)),
        ("cache_read", "Cache read", lambda r: _fmt_int(r.cache_read_tokens)),
        ("total", "Total tokens", lambda r: _fmt_int(r.total_tokens)),
        ("cost", "Cost (USD)", lambda r: f"{r.cost_usd:,.4f}"),
    ]
    for i, dim in enumerate(result.by):
        table.add_column(dim.capitalize(), footer="Total" if i == 0 else "")
    for _, title, fn in metric_cols:
        table.add_column(title, justify="right", footer=fn(result.totals))
    for row in result.rows:
        table.add_row(*(row.keys[d] for d in result.by), *(fn(row) for _, _, fn in metric_cols))
    console = Console(
        file=io.StringIO(), width=console_width or 160, force_terminal=False, color_system=None
    )
    console.print(table)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    if result.totals.unpriced_requests:
        out += (
            f"{result.totals.unpriced_requests} request(s) have no known price "
            "and count as 0 USD.\n"
        )
    return str(out)
