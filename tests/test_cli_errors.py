"""User mistakes on the command line: exactly one ``Error: ...`` line on stderr, the
documented exit code and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayburnd.cli import EXIT_ERROR, EXIT_USAGE
from tests.conftest import run_cli


def assert_one_error(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The process failed with ``code`` and printed one ``Error:`` line containing
    every fragment, nothing else on stderr and nothing on stdout."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    return lines[0]


class TestBadOptions:
    """Invalid option values are usage errors (exit 2)."""

    @pytest.mark.parametrize(("args", "fragments"), [
        (["--by", "colour"], ["--by colour: unknown dimension", "model"]),
        (["--by", "day,day"], ["--by day,day", "repeated"]),
        (["--by", ","], ["--by needs at least one of"]),
        (["--tz", "Mars/Olympus"], ["--tz 'Mars/Olympus'", "not a known time zone"]),
        (["--since", "yesterday"], ["--since 'yesterday'", "YYYY-MM-DD"]),
        (["--since", "2024-02-30"], ["--since '2024-02-30'", "not a calendar date"]),
        (["--until", "20241399"], ["--until '20241399'"]),
        (["--since", "2024-05-02", "--until", "2024-05-01"], ["--until is before --since"]),
        (["--source", "cursor"], ["--source cursor", "claude, codex or opencode"]),
    ], ids=["by-unknown", "by-repeated", "by-empty", "tz", "since-words", "since-feb-30",
            "until-bad-month", "until-before-since", "source"])
    def test_summary_option(self, args: list[str], fragments: list[str]) -> None:
        """``summary`` with a bad value names the option and what it accepts."""
        proc = run_cli("summary", *args, check=False)
        assert_one_error(proc, EXIT_USAGE, *fragments)


class TestBadSettings:
    """Invalid settings are configuration errors (exit 2) naming the variable."""

    @pytest.mark.parametrize(("var", "value", "expected"), [
        ("RELAYBURN_STORAGE", "bogus", "expected one of file, sqlite, postgres, http"),
        ("RELAYBURN_CONTENT_STORE", "maybe", "expected one of full, hash-only, off"),
        ("RELAYBURN_BATCH_MAX_BYTES", "lots", "expected a size such as 64MiB"),
        ("RELAYBURN_BATCH_MAX_RECORDS", "many", "expected a whole number > 0"),
        ("RELAYBURN_FLUSH_INTERVAL", "nan", "expected a number > 0"),
        ("RELAYBURN_REDACT_SECRETS", "perhaps", "expected true/false"),
    ])
    def test_invalid_value(self, var: str, value: str, expected: str) -> None:
        """``ingest`` refuses the value in one line: variable, value and what is accepted."""
        proc = run_cli("ingest", env={var: value}, check=False)
        assert_one_error(proc, EXIT_USAGE, f"{var}={value!r} is invalid", expected)

    @pytest.mark.parametrize("command", [["summary"], ["config", "show"]],
                             ids=["summary", "config-show"])
    def test_other_commands_refuse_too(self, command: list[str]) -> None:
        """Reading commands validate settings the same way."""
        proc = run_cli(*command, env={"RELAYBURN_STORAGE": "bogus"}, check=False)
        assert_one_error(proc, EXIT_USAGE, "RELAYBURN_STORAGE='bogus' is invalid")

    def test_corrupt_config_json(self) -> None:
        """A config.json that is not JSON names the file and says to fix or remove it."""
        home = Path(os.environ["RELAYBURN_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.json").write_text('{"storage": "file",')
        proc = run_cli("ingest", check=False)
        assert_one_error(proc, EXIT_USAGE, str(home / "config.json"), "not valid JSON",
                         "fix or remove the file")

    def test_unknown_config_key(self) -> None:
        """An unknown key in config.json is named with the valid ones."""
        home = Path(os.environ["RELAYBURN_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.json").write_text('{"storage_mode": "file"}')
        proc = run_cli("summary", check=False)
        assert_one_error(proc, EXIT_USAGE, "unknown setting(s) storage_mode", "valid: home")


class TestUnusableHome:
    """A RELAYBURN_HOME that cannot be used is an error (exit 1) with the fix."""

    @pytest.mark.parametrize("command", [["ingest"], ["summary"]])
    def test_home_below_a_regular_file(self, tmp_path: Path, command: list[str]) -> None:
        """A home that cannot be created names the path and says to change it."""
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("")
        home = blocker / "relayburn"
        proc = run_cli(*command, env={"RELAYBURN_HOME": str(home)}, check=False)
        assert_one_error(proc, EXIT_ERROR, f"RELAYBURN_HOME {home}",
                         "set RELAYBURN_HOME to a writable directory")

    def test_home_that_is_a_file(self, tmp_path: Path) -> None:
        """A home path that is a regular file is refused the same way."""
        home = tmp_path / "file-home"
        home.write_text("")
        proc = run_cli("ingest", env={"RELAYBURN_HOME": str(home)}, check=False)
        assert_one_error(proc, EXIT_ERROR, f"RELAYBURN_HOME {home}")

    @pytest.mark.skipif(os.geteuid() == 0, reason="root can write to any directory")
    def test_read_only_home(self, tmp_path: Path) -> None:
        """A home without write permission is refused."""
        home = tmp_path / "ro"
        home.mkdir(mode=0o500)
        try:
            proc = run_cli("ingest", env={"RELAYBURN_HOME": str(home)}, check=False)
            assert_one_error(proc, EXIT_ERROR, f"RELAYBURN_HOME {home}")
        finally:
            home.chmod(0o700)


_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from relayburnd.home import HomeLayout, InstanceLock

    layout = HomeLayout(Path(sys.argv[1])).ensure()
    with InstanceLock(layout.instance_lock):
        print("locked", flush=True)
        sys.stdin.read()
    """
)


class TestSecondInstance:
    """A second relayburnd on the same home is refused while the first holds the lock."""

    @pytest.fixture
    def holder(self) -> Iterator[subprocess.Popen[str]]:
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, os.environ["RELAYBURN_HOME"]],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        yield proc
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)

    def test_ingest_is_refused_naming_the_holder(self, holder: subprocess.Popen[str]) -> None:
        """``ingest`` exits 1 with one line naming the holder's pid and the fix."""
        proc = run_cli("ingest", check=False)
        assert_one_error(proc, EXIT_ERROR, f"another relayburnd (pid {holder.pid})",
                         os.environ["RELAYBURN_HOME"], "set a different RELAYBURN_HOME")

    def test_ingest_works_once_the_holder_exits(self, holder: subprocess.Popen[str]) -> None:
        """After the first instance stops, the lock is free again."""
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        proc = run_cli("ingest", check=False)
        assert proc.returncode == 0, proc.stderr
        assert "Error" not in proc.stderr
