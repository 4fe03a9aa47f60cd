"""``relayburnd db``: the schema of the SQL stores.

Adapters migrate on their own when they open, so this is for operators who
want the schema in place (or its state shown) before any daemon starts, for
example as a deployment step with a DSN that may alter tables.
"""

from __future__ import annotations

import click

from ..config import load_settings
from ..errors import RelayburnError
from ..storage.migrations import latest, migrate


def _fail(exc: RelayburnError) -> click.ClickException:
    """``Error: <message>`` with relayburnd's exit code for the error."""
    err = click.ClickException(str(exc))
    err.exit_code = exc.exit_code
    return err


def _describe(storage: str) -> str:
    settings = load_settings()
    if storage == "sqlite":
        return f"sqlite {settings.sqlite_file}"
    from ..storage.pg_conn import Dsn

    return Dsn(settings.pg_dsn).label


@click.group()
def db() -> None:
    """Schema of the sqlite and postgres stores."""


@db.command("migrate")
@click.option(
    "--storage",
    type=click.Choice(["sqlite", "postgres"]),
    default=None,
    help="Store to migrate (default: RELAYBURN_STORAGE).",
)
def migrate_cmd(storage: str | None) -> None:
    """Apply missing schema migrations and print their names."""
    try:
        settings = load_settings()
        target = storage or settings.storage
        applied = migrate(settings, target)
        where = _describe(target)
    except RelayburnError as exc:
        raise _fail(exc) from None
    for name in applied:
        click.echo(f"applied {name}")
    if not applied:
        click.echo(f"{where}: schema is up to date (version {latest(target)})")
