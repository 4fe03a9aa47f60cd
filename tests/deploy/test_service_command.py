"""``relayburnd service install``: the unit it writes, the env file, what it prints."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from deploy_support import REPO, UNIT_FILE

from relayburnd.cli import cli
from relayburnd.commands.service import ENABLE_COMMAND, ENV_TEMPLATE, systemd_word

EXEC_PREFIX = "ExecStart="


def without_exec_start(text: str) -> tuple[str, str]:
    """The unit with its ExecStart command cut out, and that command."""
    lines = text.splitlines(keepends=True)
    found = [i for i, ln in enumerate(lines) if ln.startswith(EXEC_PREFIX)]
    assert len(found) == 1, found
    command = lines[found[0]][len(EXEC_PREFIX):].rstrip("\n")
    lines[found[0]] = EXEC_PREFIX + "<relayburnd> run\n"
    return "".join(lines), command


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty home directory for the command."""
    path = tmp_path / "user"
    path.mkdir()
    return path


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "relayburnd", *args], capture_output=True,
                          text=True, env=env, timeout=60)


class TestPrint:
    def test_prints_the_shipped_unit_with_this_installation_path(self, home: Path) -> None:
        """--print equals systemd/relayburnd.service except for the executable, which is an
        absolute, executable path followed by `run`."""
        proc = run_cli("service", "install", "--print", home=home)
        assert proc.returncode == 0, proc.stderr
        printed, command = without_exec_start(proc.stdout)
        shipped, shipped_command = without_exec_start(UNIT_FILE.read_text())
        assert printed == shipped
        assert shipped_command == "%h/.local/bin/relayburnd run"
        assert command.endswith(" run")
        exe = command.removesuffix(" run").split(" ")[0]
        assert os.path.isabs(exe) and os.access(exe, os.X_OK), exe

    def test_changes_nothing(self, home: Path) -> None:
        """--print writes no file."""
        run_cli("service", "install", "--print", home=home)
        assert list(home.iterdir()) == []


class TestInstall:
    def test_writes_the_unit_and_a_private_env_file_and_prints_the_enable_command(
            self, home: Path) -> None:
        """The unit lands in ~/.config/systemd/user, the env file is created 0600 in a 0700
        directory, and the last line is the one command that enables the service."""
        proc = run_cli("service", "install", "--user", home=home)
        assert proc.returncode == 0, proc.stderr
        unit = home / ".config" / "systemd" / "user" / "relayburnd.service"
        printed = run_cli("service", "install", "--print", home=home).stdout
        assert unit.read_text() == printed
        env_file = home / ".config" / "relayburnd" / "env"
        assert env_file.read_text() == ENV_TEMPLATE
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o700
        lines = proc.stdout.splitlines()
        assert lines[0] == f"wrote {unit}"
        assert lines[-1] == f"  {ENABLE_COMMAND}"
        assert ENABLE_COMMAND == (
            "systemctl --user daemon-reload && systemctl --user enable --now relayburnd")

    def test_again_keeps_the_env_file_and_reports_the_unit_unchanged(self, home: Path) -> None:
        """A second install never overwrites settings the user wrote."""
        run_cli("service", "install", home=home)
        env_file = home / ".config" / "relayburnd" / "env"
        env_file.write_text("RELAYBURN_STORAGE=postgres\n")
        proc = run_cli("service", "install", home=home)
        assert proc.returncode == 0, proc.stderr
        assert env_file.read_text() == "RELAYBURN_STORAGE=postgres\n"
        assert proc.stdout.splitlines()[0].startswith("unchanged ")
        assert f"kept {env_file}" in proc.stdout

    def test_warns_when_the_env_file_is_readable_by_others(self, home: Path) -> None:
        """An env file with mode 0644 holds secrets others can read: say so, with the fix."""
        env_file = home / ".config" / "relayburnd" / "env"
        env_file.parent.mkdir(parents=True)
        env_file.write_text("RELAYBURN_PG_DSN=postgresql://u:secret@db/x\n")
        env_file.chmod(0o644)
        proc = run_cli("service", "install", home=home)
        assert proc.returncode == 0
        assert f"chmod 600 {env_file}" in proc.stderr
        assert "secret@" not in proc.stdout + proc.stderr

    def test_updates_a_unit_from_an_older_installation(self, home: Path) -> None:
        """A unit that differs (another path, an older template) is replaced."""
        unit = home / ".config" / "systemd" / "user" / "relayburnd.service"
        unit.parent.mkdir(parents=True)
        unit.write_text("[Service]\nExecStart=/old/relayburnd run\n")
        proc = run_cli("service", "install", home=home)
        assert proc.stdout.splitlines()[0] == f"wrote {unit}"
        assert "Type=notify" in unit.read_text()

    def test_is_listed_in_the_command_line_help(self) -> None:
        """`relayburnd service install` is reachable from the top-level command."""
        result = CliRunner().invoke(cli, ["service", "install", "--help"])
        assert result.exit_code == 0
        assert "--print" in result.output


class TestSystemdWord:
    def test_plain_paths_stay_plain(self) -> None:
        assert systemd_word("/home/a/.local/bin/relayburnd") == "/home/a/.local/bin/relayburnd"

    def test_specifiers_and_variables_are_escaped(self) -> None:
        """% and $ would be expanded by systemd; doubled they stay literal."""
        assert systemd_word("/opt/100%/$HOME/relayburnd") == "/opt/100%%/$$HOME/relayburnd"

    def test_spaces_and_quotes_are_quoted(self) -> None:
        assert systemd_word('/a b/"c"\\d') == '"/a b/\\"c\\"\\\\d"'
