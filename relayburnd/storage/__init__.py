"""Storage adapters, chosen by ``RELAYBURN_STORAGE`` and imported lazily.

``open_adapter(settings)`` is the only way the rest of the package gets one,
so a laptop that uses the file store never imports a database driver.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Filter, StorageAdapter, SummarySpec

if TYPE_CHECKING:
    from ..config import Settings

# name -> (module, class, one-line description)
ADAPTERS: dict[str, tuple[str, str, str]] = {
    "file": (
        "relayburnd.storage.file",
        "FileAdapter",
        "JSONL ledger and content sidecars in RELAYBURN_HOME",
    ),
    "sqlite": ("relayburnd.storage.sqlite", "SqliteAdapter", "one SQLite file in WAL mode"),
    "postgres": (
        "relayburnd.storage.postgres",
        "PostgresAdapter",
        "PostgreSQL shared by many hosts",
    ),
    "http": ("relayburnd.storage.http", "HttpAdapter", "a relayburnd server over HTTP"),
}


def open_adapter(settings: Settings, name: str | None = None) -> StorageAdapter:
    """Build the adapter named by ``name`` or ``settings.storage``."""
    name = name or settings.storage
    try:
        module_name, class_name, _ = ADAPTERS[name]
    except KeyError:
        raise ConfigError(
            f"RELAYBURN_STORAGE={name!r} is invalid: expected one of {', '.join(ADAPTERS)}"
        ) from None
    cls = getattr(import_module(module_name), class_name)
    adapter: StorageAdapter = cls(settings)
    return adapter


__all__ = ["ADAPTERS", "Filter", "StorageAdapter", "SummarySpec", "open_adapter"]
