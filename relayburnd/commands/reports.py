"""``relayburnd sessions``, ``compare``, ``tools`` and ``blocks``: reports beyond ``summary``.

They share ``summary``'s scope options (inclusive ``--since``/``--until`` dates
in ``--tz``, ``--source``, ``--project``, ``--model``) and output options, and
read through the storage adapter's query API, so they work on every store.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..cli import (
    EXIT_USAGE,
    Abort,
    get_settings,
    handle_errors,
    output_options,
    parse_agents,
)
from ..errors import RelayburnError
from ..reporting.load import Scope
from ..reporting.render import render
from ..reports import local_zone_name
from ..storage import StorageAdapter, open_adapter

F = TypeVar("F", bound=Callable[..., Any])


def scope_options(fn: F) -> F:
    """The filter options every report shares, folded into one ``scope`` argument."""

    @click.option("--since", help="First day (YYYY-MM-DD or YYYYMMDD), in --tz.")
    @click.option("--until", help="Last day (inclusive), in --tz.")
    @click.option("--tz", default="local", show_default=True,
                  help="Time zone for dates and times: local, UTC or an IANA name.")
    @click.option("--source", "sources", default="",
                  help="Only these agents, comma-separated (claude,codex,opencode).")
    @click.option("--project", help="Only this project (working directory).")
    @click.option("--model", help="Only this model label (as summary prints it).")
    @functools.wraps(fn)
    def wrapper(*args: Any, since: str | None, until: str | None, tz: str, sources: str,
                project: str | None, model: str | None, **kwargs: Any) -> Any:
        chosen = parse_agents(sources)
        zone = local_zone_name() if tz == "local" else tz
        try:
            scope = Scope.from_options(since=since, until=until, tz=zone, sources=chosen,
                                       project=project, model=model)
        except RelayburnError as exc:
            raise Abort(str(exc), exc.exit_code) from None
        return fn(*args, scope=scope, **kwargs)

    return wrapper  # type: ignore[return-value]


def _with_adapter(work: Callable[[StorageAdapter], str]) -> None:
    adapter = open_adapter(get_settings())
    try:
        text = work(adapter)
    finally:
        adapter.close()
    click.echo(text, nl=False)


@click.command()
@scope_options
@click.option("--sort", "sort_key", type=click.Choice(["cost", "tokens", "start", "duration"]),
              default="start", show_default=True,
              help="Largest first; for start, newest first.")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many sessions.")
@output_options
@handle_errors
def sessions(scope: Scope, sort_key: str, limit: int | None, fmt: str) -> None:
    """Sessions with their cost, tokens, duration, models and user turns."""
    from ..reporting import sessions as report

    def work(adapter: StorageAdapter) -> str:
        rows = report.sort_rows(report.session_rows(adapter, scope.filter), sort_key, limit)
        return render([r.as_dict(scope.tz) for r in rows], report.columns(), fmt,
                      totals=report.totals(rows))

    _with_adapter(work)


@click.command()
@scope_options
@output_options
@handle_errors
def compare(scope: Scope, fmt: str) -> None:
    """Models side by side per activity (editing, reading, shell, ...) of each request."""
    from ..reporting import compare as report

    def work(adapter: StorageAdapter) -> str:
        rows = report.compare_rows(adapter, scope.filter)
        return render([r.as_dict() for r in rows], report.COLUMNS, fmt)

    _with_adapter(work)


@click.command()
@scope_options
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many tools.")
@output_options
@handle_errors
def tools(scope: Scope, limit: int | None, fmt: str) -> None:
    """Most used tools, their results, errors and error rates."""
    from ..reporting import tools as report

    def work(adapter: StorageAdapter) -> str:
        rows = report.tool_rows(adapter, scope.filter)[:limit]
        return render([r.as_dict() for r in rows], report.COLUMNS, fmt)

    _with_adapter(work)


@click.command()
@scope_options
@click.option("--now", "now_iso", hidden=True,
              help="Evaluate the active block at this ISO 8601 time instead of now.")
@output_options
@handle_errors
def blocks(scope: Scope, now_iso: str | None, fmt: str) -> None:
    """5-hour billing windows with burn rate and, for the active one, a projection."""
    from ..reporting import blocks as report
    from ..timeutil import to_ms

    now_ms = int(time.time() * 1000)
    if now_iso is not None:
        parsed = to_ms(now_iso)
        if parsed is None:
            raise Abort(f"--now {now_iso!r}: expected an ISO 8601 time", EXIT_USAGE)
        now_ms = parsed

    def work(adapter: StorageAdapter) -> str:
        rows = report.block_rows(adapter, scope.filter)
        notes = []
        if any(b.unpriced_requests for b in rows):
            n = sum(b.unpriced_requests for b in rows)
            notes.append(f"{n} request(s) have no known price and count as 0 USD.")
        return render([b.as_dict(scope.tz, now_ms) for b in rows], report.columns(), fmt,
                      notes=notes)

    _with_adapter(work)
