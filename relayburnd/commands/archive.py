"""``relayburnd archive``: the file store's derived analytics archive (``archive.sqlite``).

Reports bring the archive up to date on their own; these commands exist to
build it ahead of time (e.g. after a large import), to start it over, to see
how far it has applied the ledger, and to give back disk space.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from ..cli import EXIT_USAGE, Abort, get_settings, handle_errors


def _file_adapter() -> Any:
    from ..storage.file import FileAdapter

    settings = get_settings()
    if settings.storage != "file":
        raise Abort(
            f"the archive is built from the file store's ledger; RELAYBURN_STORAGE="
            f"{settings.storage} answers reports from its own database", EXIT_USAGE,
        )
    return FileAdapter(settings)


@click.group()
def archive() -> None:
    """The derived analytics archive of the file store (archive.sqlite)."""


@archive.command("build")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def build(as_json: bool) -> None:
    """Apply the ledger lines added since the last build."""
    adapter = _file_adapter()
    try:
        report = adapter.archive().build()
    finally:
        adapter.close()
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.one_line())


@archive.command("rebuild")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def rebuild(as_json: bool) -> None:
    """Drop the archive's rows and apply the whole ledger again."""
    adapter = _file_adapter()
    try:
        report = adapter.archive().rebuild()
    finally:
        adapter.close()
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.one_line())


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@archive.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def status(as_json: bool) -> None:
    """Schema version, row counts, how much of the ledger is applied, file sizes."""
    adapter = _file_adapter()
    try:
        info = adapter.archive().status()
    finally:
        adapter.close()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"archive: {info['path']}")
    if not info["exists"]:
        click.echo("not built yet (any report builds it; or run `relayburnd archive build`)")
        return
    current = "current" if info["schema_current"] else "outdated: the next build rebuilds"
    click.echo(f"schema: version {info['schema_version']} ({current})")
    click.echo(f"ledger applied: {info['ledger_offset']:,} of {info['ledger_size']:,} bytes "
               f"({info['behind_bytes']:,} behind)")
    click.echo(f"last build: {_when(info['last_build_ms'])}")
    reason = f" ({info['rebuild_reason']})" if info["rebuild_reason"] else ""
    click.echo(f"last rebuild: {_when(info['last_rebuild_ms'])}{reason}")
    if info["derived_dirty"]:
        click.echo("derived tables: pending (a bulk load was interrupted; "
                   "the next build redoes them)")
    for table, n in info["rows"].items():
        click.echo(f"rows {table}: {n:,}")
    for name, size in info["files"].items():
        click.echo(f"file {name}: {size:,} bytes")


@archive.command("vacuum")
@handle_errors
def vacuum() -> None:
    """Compact archive.sqlite and truncate its write-ahead log."""
    adapter = _file_adapter()
    try:
        before, after = adapter.archive().vacuum()
    finally:
        adapter.close()
    click.echo(f"archive compacted: {before:,} -> {after:,} bytes")
