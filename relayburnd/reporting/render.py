"""Table, JSON and CSV output of report rows (lists of dicts with one key per column).

Why one renderer: every report prints the same three ways (``--table`` default,
``--json``, ``--csv``), and JSON/CSV keep raw numbers (``None`` = no value)
while the table formats them for people.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from ..reports import get_tz


@dataclass(frozen=True)
class Col:
    key: str
    title: str
    fmt: Callable[[Any], str] = str
    right: bool = True


def fmt_int(v: Any) -> str:
    return "-" if v is None else f"{int(v):,}"


def fmt_usd(v: Any) -> str:
    return "-" if v is None else f"{float(v):,.4f}"


def fmt_num(v: Any) -> str:
    return "-" if v is None else f"{float(v):,.1f}"


def fmt_pct(v: Any) -> str:
    return "-" if v is None else f"{float(v) * 100:.1f}%"


def fmt_duration(ms: Any) -> str:
    if ms is None:
        return "-"
    minutes = int(ms) // 60_000
    return f"{minutes // 60}h{minutes % 60:02d}m"


def local_time(ms: int | None, tz: str, *, seconds: bool = False) -> str | None:
    """``YYYY-MM-DD HH:MM[:SS]`` in the reporting zone (None stays None)."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, get_tz(tz))
    return dt.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def iso_time(ms: int | None, tz: str) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, get_tz(tz)).isoformat(timespec="seconds")


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 10)
    return v


def render(
    rows: Sequence[dict[str, Any]], cols: Sequence[Col], fmt: str, *,
    totals: dict[str, Any] | None = None, notes: Sequence[str] = (),
) -> str:
    """Rows as ``fmt`` (table, json or csv); ``totals`` is a footer / a JSON key."""
    if fmt == "json":
        doc: dict[str, Any] = {"rows": [{k: _clean(v) for k, v in r.items()} for r in rows]}
        if totals is not None:
            doc["totals"] = {k: _clean(v) for k, v in totals.items()}
        return msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([c.key for c in cols])
        for r in rows:
            writer.writerow(["" if r.get(c.key) is None else _csv_value(r.get(c.key))
                             for c in cols])
        return buf.getvalue()
    return _table(rows, cols, totals, notes)


def _csv_value(v: Any) -> Any:
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    return _clean(v)


def _table(
    rows: Sequence[dict[str, Any]], cols: Sequence[Col], totals: dict[str, Any] | None,
    notes: Sequence[str],
) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_footer=totals is not None)
    for c in cols:
        footer = ""
        if totals is not None and c.key in totals:
            footer = c.fmt(totals[c.key])
        table.add_column(c.title, justify="right" if c.right else "left", footer=footer)
    for r in rows:
        table.add_row(*(c.fmt(r.get(c.key)) for c in cols))
    # wide enough that rows never wrap; the padding rich adds is stripped
    console = Console(file=io.StringIO(), width=1000, force_terminal=False, color_system=None)
    if not rows:
        console.print("No matching usage.")
    else:
        console.print(table)
    out = str(console.file.getvalue())  # type: ignore[attr-defined]
    lines = [line.rstrip() for line in out.splitlines()]
    return "".join(f"{line}\n" for line in lines) + "".join(f"{n}\n" for n in notes)


def fmt_list(v: Any) -> str:
    return ", ".join(v) if v else "-"
