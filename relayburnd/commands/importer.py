"""``relayburnd import``: copy the local file store into a SQL store or a server.

For a user moving from the default file store to SQLite, a shared PostgreSQL
or a relayburnd server. Every record keeps its content-addressed id, so the
copy is idempotent: running it again (or after a partial run) stores nothing
twice and a record already there with a greater rank stays as it is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..config import load_settings
from ..errors import RelayburnError, SinkUnavailable
from ..records import Batch, Record, WriteResult, encode
from ..storage import StorageAdapter, open_adapter

RETRIES = 4  # transient failures per batch before giving up (backoff 0.5, 1, 2, 4 s)


@runtime_checkable
class RecordSource(Protocol):
    """A store that can list every folded record it holds (the file store)."""

    def iter_records(self) -> Iterator[Record]: ...


def _fail(exc: RelayburnError) -> click.ClickException:
    """``Error: <message>`` with relayburnd's exit code for the error."""
    err = click.ClickException(str(exc))
    err.exit_code = exc.exit_code
    return err


def batches(records: Iterator[Record], max_records: int, max_bytes: int) -> Iterator[Batch]:
    """Group records into batches bounded by count and encoded size."""
    batch = Batch()
    for rec in records:
        size = len(encode(rec))
        if batch.records and (len(batch) >= max_records or batch.nbytes + size > max_bytes):
            yield batch
            batch = Batch()
        batch.add(rec, size)
    if batch.records:
        yield batch


def _write(target: StorageAdapter, batch: Batch) -> WriteResult:
    """Write one batch, retrying transient failures a few times."""
    for attempt in range(RETRIES + 1):
        try:
            return target.write(batch)
        except SinkUnavailable:
            if attempt == RETRIES:
                raise
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def copy_records(
    source: RecordSource, target: StorageAdapter, max_records: int, max_bytes: int,
    progress: Progress | None = None,
) -> WriteResult:
    """Copy every record of ``source`` into ``target``; the summed write results."""
    total = WriteResult()
    task = progress.add_task("importing", total=None) if progress else None
    for batch in batches(source.iter_records(), max_records, max_bytes):
        total.add(_write(target, batch))
        if progress is not None and task is not None:
            progress.advance(task, len(batch))
    return total


@click.command("import")
@click.option(
    "--from", "source", type=click.Choice(["file"]), default="file", show_default=True,
    help="Store to read (the local file store).",
)
@click.option(
    "--to", "target", type=click.Choice(["sqlite", "postgres", "http"]), required=True,
    help="Store to write, configured as for RELAYBURN_STORAGE.",
)
@click.option(
    "--batch-size", type=click.IntRange(1, 100_000), default=None,
    help="Records per batch (default: RELAYBURN_BATCH_MAX_RECORDS).",
)
def import_cmd(source: str, target: str, batch_size: int | None) -> None:
    """Copy the local file store into another store; safe to run again."""
    console = Console(stderr=True)
    try:
        settings = load_settings()
        reader = open_adapter(settings, source)
        try:
            if not isinstance(reader, RecordSource):
                raise click.ClickException(f"the {source} store cannot list its records")
            writer = open_adapter(settings, target)
            try:
                with Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    TextColumn("{task.completed:,.0f} records"),
                    TimeElapsedColumn(),
                    console=console,
                    disable=not console.is_terminal,
                ) as progress:
                    result = copy_records(
                        reader, writer, batch_size or settings.batch_max_records,
                        settings.batch_max_bytes, progress,
                    )
            finally:
                writer.close()
        finally:
            reader.close()
    except RelayburnError as exc:
        raise _fail(exc) from None
    n = result.inserted + result.updated + result.unchanged
    click.echo(
        f"imported {n:,} records into {target}: {result.inserted:,} inserted, "
        f"{result.updated:,} updated, {result.unchanged:,} already there"
    )
    for kind, counts in sorted(result.counts.items()):
        click.echo(
            f"  {kind}: {counts.inserted:,} inserted, {counts.updated:,} updated, "
            f"{counts.unchanged:,} already there"
        )
