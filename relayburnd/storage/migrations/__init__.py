"""Versioned schema migrations for the SQL adapters, one directory per dialect.

Files are named ``NNNN_name.sql``; version ``NNNN`` is applied once, in its
own transaction together with its row in ``schema_migrations``. Both dialects
carry the same versions and names (one logical schema). Adapters apply what is
missing when they open; ``relayburnd db migrate`` does the same on demand. A
store whose version is newer than the newest file here was migrated by a newer
relayburnd and is refused with ``SchemaTooNew`` rather than written blindly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from ...errors import ConfigError, SchemaTooNew

if TYPE_CHECKING:
    from ...config import Settings

DIALECTS = ("sqlite", "postgres")
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

SCHEMA_TABLE = "schema_migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # file name without .sql, e.g. "0001_initial"
    sql: str


@cache
def load(dialect: str) -> tuple[Migration, ...]:
    """The migrations of ``dialect`` in version order (versions 1..N, no gaps)."""
    if dialect not in DIALECTS:
        raise ValueError(dialect)
    folder = resources.files(__name__).joinpath(dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name[:-4], entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    if [mig.version for mig in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..N: {[m.name for m in found]}")
    return tuple(found)


def latest(dialect: str) -> int:
    return len(load(dialect))


def pending(dialect: str, current: int) -> tuple[Migration, ...]:
    return tuple(m for m in load(dialect) if m.version > current)


def check_not_newer(dialect: str, current: int, where: str) -> None:
    """Refuse a store migrated by a newer relayburnd (one line, names both versions)."""
    known = latest(dialect)
    if current > known:
        raise SchemaTooNew(
            f"{where} has schema version {current} but this relayburnd knows only up to "
            f"{known}; upgrade relayburnd on this host"
        )


def migrate(settings: Settings, storage: str | None = None) -> list[str]:
    """Apply missing migrations to the configured SQL store; return the names applied."""
    name = storage or settings.storage
    if name == "sqlite":
        from ..sqlite import migrate_sqlite

        return migrate_sqlite(settings)
    if name == "postgres":
        from ..postgres import migrate_postgres

        return migrate_postgres(settings)
    raise ConfigError(
        f"RELAYBURN_STORAGE={name}: migrations apply to sqlite or postgres storage only"
    )


__all__ = ["Migration", "check_not_newer", "latest", "load", "migrate", "pending"]
