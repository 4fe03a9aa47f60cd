"""Settings: precedence, one-line validation errors, secrets kept out of output,
and the README configuration table generated from the declarations."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from relayburnd.config import SETTINGS, Settings, load_settings, redact_dsn, settings_markdown
from relayburnd.errors import ConfigError
from tests.conftest import REPO, run_cli


def write_config(home: Path, values: dict[str, object]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.json").write_bytes(msgspec.json.encode(values))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "rb-home"


def env_for(home: Path, **values: str) -> dict[str, str]:
    return {"RELAYBURN_HOME": str(home), **values}


class TestPrecedence:
    """Environment beats config.json, which beats the defaults."""

    def test_defaults_apply_without_env_or_file(self, home: Path) -> None:
        """With nothing set, each setting has its declared default."""
        s = load_settings(env_for(home))
        assert s.home == home
        assert (s.storage, s.content_store, s.content_ttl_days) == ("file", "full", 90)
        assert s.batch_max_bytes == 8 * 1024 * 1024
        assert s.max_record_bytes == 64 * 1024 * 1024
        assert s.redact_secrets is True
        assert s.claude_dirs == () and s.metrics_addr == ""

    def test_config_file_beats_defaults(self, home: Path) -> None:
        """Values in config.json replace defaults, including lists, booleans and null."""
        write_config(home, {"version": 1, "storage": "sqlite", "batch_max_bytes": "512k",
                            "redact_secrets": False, "claude_dirs": ["/a", "/b"],
                            "content_ttl_days": None, "flush_interval": 2.5})
        s = load_settings(env_for(home))
        assert s.storage == "sqlite"
        assert s.batch_max_bytes == 512 * 1024
        assert s.redact_secrets is False
        assert s.claude_dirs == (Path("/a"), Path("/b"))
        assert s.content_ttl_days is None
        assert s.flush_interval == 2.5

    def test_environment_beats_config_file(self, home: Path) -> None:
        """An environment variable wins over config.json for the same setting."""
        write_config(home, {"storage": "sqlite", "content_store": "off"})
        s = load_settings(env_for(home, RELAYBURN_STORAGE="postgres"))
        assert s.storage == "postgres"
        assert s.content_store == "off"

    def test_empty_environment_value_still_counts(self, home: Path) -> None:
        """An empty variable is a value: RELAYBURN_CONTENT_TTL_DAYS= means no limit."""
        write_config(home, {"content_ttl_days": 7})
        assert load_settings(env_for(home, RELAYBURN_CONTENT_TTL_DAYS="")).content_ttl_days \
            is None

    def test_explicit_overrides_beat_environment(self, home: Path) -> None:
        """Keyword overrides (command-line flags) win over the environment."""
        s = load_settings(env_for(home, RELAYBURN_STORAGE="postgres"), storage="sqlite")
        assert s.storage == "sqlite"

    def test_pg_dsn_falls_back_to_database_url(self, home: Path) -> None:
        """DATABASE_URL is used when RELAYBURN_PG_DSN is unset, and loses when it is set."""
        assert load_settings(env_for(home, DATABASE_URL="postgresql://a/b")).pg_dsn == \
            "postgresql://a/b"
        assert load_settings(env_for(home, DATABASE_URL="postgresql://a/b",
                                     RELAYBURN_PG_DSN="postgresql://c/d")).pg_dsn == \
            "postgresql://c/d"

    def test_home_comes_from_the_environment(self, home: Path) -> None:
        """config.json is read from the RELAYBURN_HOME of the environment."""
        write_config(home, {"log_level": "debug"})
        assert load_settings(env_for(home)).log_level == "debug"
        assert load_settings(env_for(home.parent / "elsewhere")).log_level == "info"

    def test_directory_lists_are_trimmed_and_expanded(self, home: Path) -> None:
        """Comma-separated directories tolerate spaces and expand ``~``."""
        s = load_settings(env_for(home, CLAUDE_CONFIG_DIR="/a, ~/b ,", HOME="/home/u"))
        assert s.claude_dirs[0] == Path("/a")
        assert s.claude_dirs[1] == Path("~/b").expanduser()
        assert len(s.claude_dirs) == 2

    @pytest.mark.parametrize(("raw", "size"), [("64MiB", 64 << 20), ("512k", 512 << 10),
                                               ("1048576", 1 << 20), ("2 GB", 2 << 30),
                                               ("10b", 10), ("3m", 3 << 20)])
    def test_sizes_accept_units(self, home: Path, raw: str, size: int) -> None:
        """Byte sizes take plain numbers and k/M/G units with optional i and B."""
        assert load_settings(env_for(home, RELAYBURN_MAX_RECORD_BYTES=raw)).max_record_bytes \
            == size


# Every setting with a validator, and values it must refuse.
BAD: dict[str, list[str]] = {
    "storage": ["bogus", ""],
    "content_store": ["maybe"],
    "content_ttl_days": ["-3", "soon", "1.5"],
    "redact_secrets": ["perhaps"],
    "watch": ["fsevents"],
    "flush_interval": ["0", "-1", "nan", "inf", "fast"],
    "batch_max_records": ["0", "lots", "1.5"],
    "batch_max_bytes": ["lots", "0", "-5MiB", "1.5MiB"],
    "max_record_bytes": ["12 parsecs"],
    "idle_grace": ["-1", "nan", "later"],
    "grace_period": ["0", "-5", "nan", "a minute"],
    "checkpoint_interval": ["-1", "nan", "soon"],
    "drain_timeout": ["0", "inf"],
    "metrics_addr": ["9464", "host:99999", "host:port"],
    "log_format": ["xml"],
    "log_level": ["verbose"],
    "server_max_body": ["0", "big"],
    "server_max_decompressed": ["-1MiB", "1.5GiB"],
    "server_request_timeout": ["0", "nan", "soon"],
    "server_db_connections": ["0", "many"],
    "http_compression": ["br", "none"],
}
# Settings that take any text (server tokens are checked when the server starts).
FREE_FORM = {"home", "sqlite_path", "pg_dsn", "http_url", "http_token", "claude_dirs",
             "codex_dirs", "opencode_dirs", "server_tokens", "server_tokens_file"}
CASES = [(s.name, s.env, value) for s in SETTINGS for value in BAD.get(s.name, [])]


class TestValidation:
    """An invalid value is one line naming the variable, the value and what is accepted."""

    def test_every_setting_is_either_validated_here_or_free_form(self) -> None:
        """A new setting must be added to this test's table of invalid values."""
        assert set(BAD) | FREE_FORM == {s.name for s in SETTINGS}
        assert not set(BAD) & FREE_FORM

    @pytest.mark.parametrize(("name", "env", "value"), CASES,
                             ids=[f"{n}={v!r}" for n, _, v in CASES])
    def test_invalid_environment_value(self, home: Path, name: str, env: str,
                                       value: str) -> None:
        """The error names the variable and the value and says what it expects."""
        with pytest.raises(ConfigError) as info:
            load_settings(env_for(home, **{env: value}))
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"{env}={value!r} is invalid: expected ")
        assert info.value.exit_code == 2

    @pytest.mark.parametrize(("name", "env", "value"), CASES[:6],
                             ids=[f"{n}={v!r}" for n, _, v in CASES[:6]])
    def test_invalid_config_file_value(self, home: Path, name: str, env: str,
                                       value: str) -> None:
        """An invalid config.json value names the file's key instead of the variable."""
        write_config(home, {name: value})
        with pytest.raises(ConfigError) as info:
            load_settings(env_for(home))
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"config.json {name}={value!r} is invalid: expected ")

    def test_errors_never_show_secrets(self, home: Path) -> None:
        """A failing setting does not echo the DSN or token configured next to it."""
        with pytest.raises(ConfigError) as info:
            load_settings(env_for(home, RELAYBURN_PG_DSN="postgresql://u:hunter2@h/d",
                                  RELAYBURN_HTTP_TOKEN="tok-XYZ", RELAYBURN_WATCH="nope"))
        assert "hunter2" not in str(info.value) and "tok-XYZ" not in str(info.value)

    def test_unknown_config_keys_are_listed_with_the_valid_ones(self, home: Path) -> None:
        """config.json with unknown keys fails naming each of them and every valid key."""
        write_config(home, {"storge": "file", "colour": True, "storage": "file"})
        with pytest.raises(ConfigError) as info:
            load_settings(env_for(home))
        message = str(info.value)
        assert "\n" not in message
        assert "unknown setting(s) colour, storge;" in message
        for s in SETTINGS:
            assert s.name in message.split("valid:", 1)[1]
        assert str(home / "config.json") in message

    @pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"storage": "\xff"}', b""],
                             ids=["syntax", "not-an-object", "invalid-utf8", "empty"])
    def test_corrupt_config_file_is_one_config_error(self, home: Path, content: bytes) -> None:
        """A config.json that is not a JSON object raises ConfigError naming the file."""
        home.mkdir(parents=True)
        (home / "config.json").write_bytes(content)
        with pytest.raises(ConfigError) as info:
            load_settings(env_for(home))
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"{home / 'config.json'}: ")


class TestRedactDsn:
    """``redact_dsn`` removes passwords from URL and key=value DSNs."""

    @pytest.mark.parametrize(("dsn", "shown"), [
        ("postgresql://app:s3cr3t@db.internal:5432/usage",
         "postgresql://app:***@db.internal:5432/usage"),
        ("postgres://app:p@ss@db/usage", "postgres://app:***@db/usage"),
        ("postgresql://app@db/usage", "postgresql://app@db/usage"),
        ("postgresql://db/usage?user=app&password=s3cr3t&sslmode=require",
         "postgresql://db/usage?user=app&password=***&sslmode=require"),
        ("postgresql://:s3cr3t@db/usage", "postgresql://:***@db/usage"),
        ("host=db user=app password=s3cr3t dbname=usage",
         "host=db user=app password=*** dbname=usage"),
        ("host=db password = 's3 cr3t' dbname=usage", "host=db password = *** dbname=usage"),
        (r"host=db password='it\'s s3cr3t' dbname=usage", "host=db password=*** dbname=usage"),
        ("host=db PASSWORD=s3cr3t", "host=db PASSWORD=***"),
        ("host=db dbname=usage", "host=db dbname=usage"),
        ("", ""),
    ])
    def test_password_is_replaced(self, dsn: str, shown: str) -> None:
        """The password becomes ``***``; everything else is kept."""
        assert redact_dsn(dsn) == shown

    def test_malformed_url_does_not_raise(self) -> None:
        """A URL the parser refuses is hidden entirely rather than raising."""
        shown = redact_dsn("postgresql://app:s3cr3t@[::1/usage")
        assert "s3cr3t" not in shown
        assert shown.startswith("postgresql://")


def all_values(**secrets: str) -> Settings:
    return load_settings({"RELAYBURN_HOME": "/tmp/rb", **secrets})


class TestSettingsRepr:
    """``repr(settings)`` never shows a password or token."""

    def test_dsn_and_token_are_hidden(self) -> None:
        """The DSN keeps its host but not its password; the token is ``***``."""
        text = repr(all_values(RELAYBURN_PG_DSN="postgresql://app:s3cr3t@db/usage",
                               RELAYBURN_HTTP_TOKEN="tok-abcdef123456"))
        assert "s3cr3t" not in text and "tok-abcdef123456" not in text
        assert "pg_dsn='postgresql://app:***@db/usage'" in text
        assert "http_token='***'" in text

    def test_credentials_in_the_server_url_are_hidden(self) -> None:
        """A server URL with user:password keeps its host and loses the password."""
        text = repr(all_values(RELAYBURN_HTTP_URL="https://bot:hunter2@burn.example.com/"))
        assert "hunter2" not in text
        assert "https://bot:***@burn.example.com/" in text

    def test_malformed_dsn_does_not_break_repr(self) -> None:
        """repr works whatever the DSN looks like."""
        text = repr(all_values(RELAYBURN_PG_DSN="postgresql://u:s3cr3t@[::1"))
        assert "s3cr3t" not in text

    def test_unset_secrets_show_empty(self) -> None:
        """Unset secrets are shown as empty strings, not as ``***``."""
        text = repr(all_values())
        assert "pg_dsn=''" in text and "http_token=''" in text

    def test_replace_keeps_the_repr_rules(self) -> None:
        """A copy made with ``replace`` hides secrets too."""
        text = repr(all_values().replace(http_token="tok-zzz"))
        assert "tok-zzz" not in text


class TestMarkdown:
    """The configuration table lists every setting and matches the README."""

    def test_every_setting_has_one_row(self) -> None:
        """Each variable appears in exactly one row, with its default and help."""
        table = settings_markdown().splitlines()
        assert table[:2] == ["| variable | default | meaning |", "| --- | --- | --- |"]
        rows = table[2:]
        assert len(rows) == len(SETTINGS)
        for s, row in zip(SETTINGS, rows, strict=True):
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[0] == f"`{s.env}`"
            assert cells[1] == (f"`{s.default}`" if s.default else "(unset)")
            assert cells[2] == s.help and s.help.endswith(".")

    def test_readme_table_matches_the_command(self) -> None:
        """The README section between the config-table markers is the command's output."""
        readme = (REPO / "README.md").read_text()
        match = re.search(r"<!-- config-table -->\n(.*?)<!-- /config-table -->", readme, re.S)
        assert match, "README.md needs the table between <!-- config-table --> markers"
        generated = run_cli("config", "markdown").stdout
        assert match.group(1) == generated
