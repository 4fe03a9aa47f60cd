"""Agent sources and where their logs live.

Roots are resolved here from settings (which read the environment), never
inside a source module, so fixture trees drive the parsers in tests.
"""

from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Settings

# name -> (module, class, kind) ; kind "tail" = append-only JSONL, "poll" = rewritten files/DB
SOURCE_CLASSES: dict[str, tuple[str, str, str]] = {
    "claude": ("relayburnd.sources.claude", "ClaudeSource", "tail"),
    "codex": ("relayburnd.sources.codex", "CodexSource", "tail"),
    "opencode": ("relayburnd.sources.opencode", "OpenCodeSource", "poll"),
}


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def default_roots(name: str, env: dict[str, str] | None = None) -> tuple[Path, ...]:
    env = dict(os.environ) if env is None else env
    home = _home()
    if name == "claude":
        xdg = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        return (xdg / "claude", home / ".claude")
    if name == "codex":
        return (home / ".codex",)
    if name == "opencode":
        return (home / ".local" / "share" / "opencode",)
    raise KeyError(name)


def roots_for(settings: Settings, name: str) -> tuple[Path, ...]:
    """The configured roots of a source, else its defaults."""
    configured: tuple[Path, ...] = {
        "claude": settings.claude_dirs,
        "codex": settings.codex_dirs,
        "opencode": settings.opencode_dirs,
    }[name]
    return configured or default_roots(name)


def load_source(name: str) -> Any:
    module_name, class_name, _ = SOURCE_CLASSES[name]
    return getattr(import_module(module_name), class_name)()


def source_kind(name: str) -> str:
    return SOURCE_CLASSES[name][2]
