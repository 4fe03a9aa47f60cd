"""relayburnd: ships what AI coding agents spend from local session logs to one durable store."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
