"""Settings: environment > ``RELAYBURN_HOME/config.json`` > defaults, resolved only here.

Every setting is declared once in ``SETTINGS`` (name, environment variable,
type, default, help). The README's configuration table is generated from it
(``relayburnd config --markdown``) and a test keeps the two in step. Unknown
keys in config.json fail with the list of valid ones; an invalid value fails
with one line naming the setting and what it accepts.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from .errors import ConfigError

CONTENT_MODES = ("full", "hash-only", "off")
STORAGES = ("file", "sqlite", "postgres", "http")
WATCH_MODES = ("auto", "inotify", "poll")
LOG_FORMATS = ("auto", "json", "console")
HTTP_COMPRESSIONS = ("zstd", "gzip")


def _paths(value: str) -> tuple[Path, ...]:
    return tuple(Path(p.strip()).expanduser() for p in value.split(",") if p.strip())


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        v = value.strip().lower()
        if v not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return v

    return parse


def _number(value: str, expected: str) -> float:
    """A finite number, else ``ValueError(expected)`` (never Python's own wording)."""
    try:
        v = float(value)
    except ValueError:
        raise ValueError(expected) from None
    if not math.isfinite(v):
        raise ValueError(expected)
    return v


def _whole(value: str, expected: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(expected) from None


def _positive_float(value: str) -> float:
    v = _number(value, "expected a number > 0")
    if not v > 0:
        raise ValueError("expected a number > 0")
    return v


def _nonneg_float(value: str) -> float:
    v = _number(value, "expected a number >= 0")
    if v < 0:
        raise ValueError("expected a number >= 0")
    return v


def _positive_int(value: str) -> int:
    v = _whole(value, "expected a whole number > 0")
    if v <= 0:
        raise ValueError("expected a whole number > 0")
    return v


def _optional_days(value: str) -> int | None:
    if value.strip() == "":
        return None
    expected = "expected a whole number of days >= 0, or empty for no limit"
    v = _whole(value, expected)
    if v < 0:
        raise ValueError(expected)
    return v


def _optional_seconds(value: str) -> float | None:
    if value.strip() == "":
        return None
    return _positive_float(value)


def _size(value: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]i?[bB]?|[bB])?\s*", value)
    if not m:
        raise ValueError("expected a size such as 64MiB, 512k or 1048576")
    n = int(m.group(1))
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    if n * mult <= 0:
        raise ValueError("expected a size > 0")
    return n * mult


def _addr(value: str) -> str:
    if value.strip() == "":
        return ""
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9464")
    return value.strip()


def _str(value: str) -> str:
    return value


class Setting(msgspec.Struct, frozen=True):
    name: str
    env: str
    parse: Callable[[str], Any]
    default: str
    help: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("home", "RELAYBURN_HOME", lambda v: Path(v).expanduser(), "~/.relayburn",
            "Host-local state directory: cursors, file store, locks, dead letters."),
    Setting("storage", "RELAYBURN_STORAGE", _choice(STORAGES), "file",
            "Storage adapter: file, sqlite, postgres or http."),
    Setting("sqlite_path", "RELAYBURN_SQLITE_PATH", _str, "",
            "SQLite database file (default RELAYBURN_HOME/relayburn.sqlite)."),
    Setting("pg_dsn", "RELAYBURN_PG_DSN", _str, "",
            "PostgreSQL DSN (else DATABASE_URL, else the libpq PG* variables).", secret=True),
    Setting("http_url", "RELAYBURN_HTTP_URL", _str, "",
            "Base URL of a relayburnd server (storage=http)."),
    Setting("http_token", "RELAYBURN_HTTP_TOKEN", _str, "",
            "Bearer token for the relayburnd server.", secret=True),
    Setting("http_compression", "RELAYBURN_HTTP_COMPRESSION", _choice(HTTP_COMPRESSIONS), "zstd",
            "How the http adapter compresses batches: zstd, or gzip for a proxy that needs it "
            "(a server too old for zstd gets gzip anyway)."),
    Setting("server_tokens", "RELAYBURN_SERVER_TOKENS", _str, "",
            "Tokens relayburnd serve accepts: comma-separated name:token or bare tokens "
            "(name:token:read or :write limits one).", secret=True),
    Setting("server_tokens_file", "RELAYBURN_SERVER_TOKENS_FILE", _str, "",
            "File of tokens relayburnd serve accepts, one per line (# comments)."),
    Setting("server_max_body", "RELAYBURN_SERVER_MAX_BODY", _size, "8MiB",
            "Largest request body relayburnd serve reads, as sent (compressed)."),
    Setting("server_max_decompressed", "RELAYBURN_SERVER_MAX_DECOMPRESSED", _size, "64MiB",
            "Largest request body relayburnd serve accepts after decompression (gzip or zstd)."),
    Setting("server_request_timeout", "RELAYBURN_SERVER_REQUEST_TIMEOUT", _positive_float, "30",
            "Seconds relayburnd serve waits for a request body (then 408) or a free "
            "database connection (then 503)."),
    Setting("server_db_connections", "RELAYBURN_SERVER_DB_CONNECTIONS", _positive_int, "4",
            "Database connections relayburnd serve writes through (sqlite: 1), plus 2 for "
            "queries and 1 for health checks, per worker."),
    Setting("content_store", "RELAYBURN_CONTENT_STORE", _choice(CONTENT_MODES), "full",
            "Conversation content: full, hash-only (hashes and sizes, never text) or off."),
    Setting("content_ttl_days", "RELAYBURN_CONTENT_TTL_DAYS", _optional_days, "90",
            "Days of content to keep; empty keeps content forever, 0 keeps none."),
    Setting("redact_secrets", "RELAYBURN_REDACT_SECRETS", _bool, "true",
            "Replace API keys, tokens and private keys in content before storing it."),
    Setting("claude_dirs", "CLAUDE_CONFIG_DIR", _paths, "",
            "Claude Code config dirs, comma-separated (default ~/.config/claude and ~/.claude)."),
    Setting("codex_dirs", "CODEX_HOME", _paths, "",
            "Codex homes, comma-separated (default ~/.codex)."),
    Setting("opencode_dirs", "OPENCODE_DATA_DIR", _paths, "",
            "OpenCode data dirs, comma-separated (default ~/.local/share/opencode)."),
    Setting("watch", "RELAYBURN_WATCH", _choice(WATCH_MODES), "auto",
            "File watching: auto (inotify, polling fallback), inotify or poll."),
    Setting("flush_interval", "RELAYBURN_FLUSH_INTERVAL", _positive_float, "1",
            "Seconds before a partly filled batch is shipped."),
    Setting("batch_max_records", "RELAYBURN_BATCH_MAX_RECORDS", _positive_int, "5000",
            "Records per batch at most."),
    Setting("batch_max_bytes", "RELAYBURN_BATCH_MAX_BYTES", _size, "8MiB",
            "Encoded bytes per batch at most."),
    Setting("checkpoint_interval", "RELAYBURN_CHECKPOINT_INTERVAL", _nonneg_float, "2",
            "Seconds between cursor checkpoints while a long pass is still reading "
            "(0: after every batch); cursors never pass unacknowledged records."),
    Setting("max_record_bytes", "RELAYBURN_MAX_RECORD_BYTES", _size, "64MiB",
            "Longest log line read; longer lines are skipped and dead-lettered."),
    Setting("idle_grace", "RELAYBURN_IDLE_GRACE", _nonneg_float, "5",
            "Seconds a file must be idle before a still-open response is committed."),
    Setting("drain_timeout", "RELAYBURN_DRAIN_TIMEOUT", _positive_float, "20",
            "Seconds to keep flushing after SIGTERM before exiting."),
    Setting("grace_period", "RELAYBURN_GRACE_PERIOD", _optional_seconds, "",
            "Seconds the platform allows from `relayburnd ctl prestop` to SIGKILL (Kubernetes "
            "terminationGracePeriodSeconds); the drain then ends 2 s before that."),
    Setting("metrics_addr", "RELAYBURN_METRICS_ADDR", _addr, "",
            "HOST:PORT for /metrics, /livez and /readyz (off when empty)."),
    Setting("log_format", "RELAYBURN_LOG_FORMAT", _choice(LOG_FORMATS), "auto",
            "Logs: auto (console on a terminal, else JSON), json or console."),
    Setting("log_level", "RELAYBURN_LOG_LEVEL",
            _choice(("debug", "info", "warning", "error")), "info", "Log level."),
)
_BY_NAME = {s.name: s for s in SETTINGS}
_BY_ENV = {s.env: s for s in SETTINGS}


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Resolved, validated settings. ``repr`` hides DSNs and tokens."""

    home: Path
    storage: str
    sqlite_path: str
    pg_dsn: str
    http_url: str
    http_token: str
    http_compression: str
    server_tokens: str
    server_tokens_file: str
    server_max_body: int
    server_max_decompressed: int
    server_request_timeout: float
    server_db_connections: int
    content_store: str
    content_ttl_days: int | None
    redact_secrets: bool
    claude_dirs: tuple[Path, ...]
    codex_dirs: tuple[Path, ...]
    opencode_dirs: tuple[Path, ...]
    watch: str
    flush_interval: float
    batch_max_records: int
    batch_max_bytes: int
    checkpoint_interval: float
    max_record_bytes: int
    idle_grace: float
    drain_timeout: float
    grace_period: float | None
    metrics_addr: str
    log_format: str
    log_level: str

    def __repr__(self) -> str:
        parts = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if _BY_NAME[name].secret and value:
                value = redact_dsn(value) if name == "pg_dsn" else "***"
            elif name == "http_url" and value:
                value = redact_dsn(value)  # https://user:token@host
            parts.append(f"{name}={value!r}")
        return f"Settings({', '.join(parts)})"

    @property
    def sqlite_file(self) -> Path:
        if self.sqlite_path:
            return Path(self.sqlite_path).expanduser()
        return self.home / "relayburn.sqlite"

    def replace(self, **changes: Any) -> Settings:
        values = {name: getattr(self, name) for name in self.__struct_fields__}
        values.update(changes)
        return Settings(**values)


def redact_dsn(dsn: str) -> str:
    """A DSN or URL safe to print: password removed from URL and key=value forms.

    Never raises: a URL too malformed to parse is shown as ``<scheme>://***``.
    """
    if "://" in dsn:
        try:
            parts = urlsplit(dsn)
        except ValueError:
            return dsn.split("://", 1)[0] + "://***"
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)", r"\1***", dsn)


def _read_config_file(home: Path) -> dict[str, str]:
    path = home / "config.json"
    if not path.exists():
        return {}
    try:
        raw = msgspec.json.decode(path.read_bytes())
    except (OSError, ValueError) as exc:  # ValueError: msgspec.DecodeError, invalid UTF-8
        raise ConfigError(f"{path}: not valid JSON ({exc}); fix or remove the file") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object of settings")
    raw.pop("version", None)
    unknown = sorted(set(raw) - set(_BY_NAME))
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(_BY_NAME)}"
        )
    out: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif value is None:
            value = ""
        out[key] = str(value)
    return out


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Resolve settings from ``env`` (default ``os.environ``), config.json and defaults."""
    env = os.environ if env is None else env
    home_raw = env.get("RELAYBURN_HOME") or overrides.get("home") or "~/.relayburn"
    home = Path(str(home_raw)).expanduser()
    file_values = _read_config_file(home)
    values: dict[str, Any] = {}
    for s in SETTINGS:
        if s.name in overrides and overrides[s.name] is not None:
            values[s.name] = overrides[s.name]
            continue
        raw: str | None = env.get(s.env)
        where = s.env
        if raw is None and s.name == "pg_dsn":
            raw = env.get("DATABASE_URL")
            where = "DATABASE_URL"
        if raw is None and s.name in file_values:
            raw = file_values[s.name]
            where = f"config.json {s.name}"
        if raw is None:
            raw = s.default
            where = f"default of {s.env}"
        try:
            values[s.name] = s.parse(raw)
        except (ValueError, KeyError) as exc:
            shown = "***" if s.secret else repr(raw)
            raise ConfigError(f"{where}={shown} is invalid: {exc}") from None
    values["home"] = home
    return Settings(**values)


def settings_markdown() -> str:
    """The README configuration table."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(unset)"
        lines.append(f"| `{s.env}` | {default} | {s.help} |")
    return "\n".join(lines)


def setting_for_env(env_name: str) -> Setting | None:
    return _BY_ENV.get(env_name)
