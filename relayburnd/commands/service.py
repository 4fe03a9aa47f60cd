"""``relayburnd service install``: run relayburnd as a systemd user service.

The unit below is the only copy of its text: ``systemd/relayburnd.service`` in
the repository is this template rendered for ``~/.local/bin/relayburnd`` (the
pipx and ``pip install --user`` location), and a test keeps the two equal.
``service install`` renders it for the absolute path of the relayburnd being
run, so the service starts the same installation the user just tried.

Budgets (reliability.md 1d and 4): systemd sends SIGTERM, relayburnd drains
for at most ``RELAYBURN_DRAIN_TIMEOUT`` (25 s here) and writes its final
checkpoint, and systemd waits ``TimeoutStopSec`` (30 s) before SIGKILL. The
main loop pings the watchdog every half ``WatchdogSec``; a hung loop is
killed and restarted with exponential backoff.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import click

UNIT_NAME = "relayburnd.service"
DRAIN_TIMEOUT_S = 25
STOP_TIMEOUT_S = 30
# ExecStart of the unit shipped in the repository: where pipx and
# `pip install --user` put the command. %h is systemd's home directory specifier.
DEFAULT_EXECUTABLE = "%h/.local/bin/relayburnd"
ENV_FILE_SPEC = "%h/.config/relayburnd/env"
ENABLE_COMMAND = "systemctl --user daemon-reload && systemctl --user enable --now relayburnd"

UNIT_TEMPLATE = """\
# relayburnd as a systemd user service: tails the session logs of AI coding
# agents and ships their usage records to the configured store.
#
# Install:   relayburnd service install
# Settings:  ~/.config/relayburnd/env (KEY=value lines, mode 0600; secrets go there)
# Changes:   systemctl --user edit relayburnd (a drop-in survives reinstalls)
# Logs:      journalctl --user -u relayburnd
# Shipping after logout needs lingering: loginctl enable-linger

[Unit]
Description=relayburnd: ship AI coding agent usage to a store

[Service]
# READY=1 once state is loaded (not once the store answers), WATCHDOG=1 from
# the main loop, STOPPING=1 and EXTEND_TIMEOUT_USEC while draining.
Type=notify
NotifyAccess=main
ExecStart={exec_start} run
EnvironmentFile=-{env_file}
# SIGTERM starts the drain: relayburnd keeps delivering for at most
# RELAYBURN_DRAIN_TIMEOUT seconds, writes its final checkpoint and exits; the
# rest of TimeoutStopSec is the margin before SIGKILL. A value set in the
# environment file wins over this one: keep it below TimeoutStopSec.
Environment=RELAYBURN_DRAIN_TIMEOUT={drain}
KillSignal=SIGTERM
TimeoutStopSec={stop}s
# A main loop that stops pinging for 30 s is killed and restarted.
WatchdogSec=30s
Restart=on-failure
RestartSec=2s
RestartSteps=5
RestartMaxDelaySec=60s
# Exit 2 is an invalid setting: restarting cannot help; fix it, then restart.
RestartPreventExitStatus=2
NoNewPrivileges=yes
# Background work: yield the CPU to the interactive session.
Nice=10

[Install]
WantedBy=default.target
"""

ENV_TEMPLATE = """\
# Settings of the relayburnd user service: KEY=value, one per line; put a value
# with spaces or shell characters (& ; $) in single quotes. This file holds
# secrets: keep it mode 0600. After a change:
#   systemctl --user restart relayburnd
# Every setting: relayburnd config markdown. Check them: relayburnd doctor
#
# PostgreSQL shared by several machines:
#RELAYBURN_STORAGE=postgres
#RELAYBURN_PG_DSN=postgresql://relayburnd:PASSWORD@db.example.com:5432/relayburn
#
# A relayburnd server:
#RELAYBURN_STORAGE=http
#RELAYBURN_HTTP_URL=https://relayburn.example.com
#RELAYBURN_HTTP_TOKEN=TOKEN
#
# Metrics and probes on this machine only:
#RELAYBURN_METRICS_ADDR=127.0.0.1:9464
#
# The unit sets RELAYBURN_DRAIN_TIMEOUT=25 to fit its TimeoutStopSec=30s; a
# larger value here also needs a larger TimeoutStopSec (systemctl --user edit).
"""

_NEEDS_QUOTES = re.compile(r"[\s\"'\\;]")


def render_unit(exec_start: str = DEFAULT_EXECUTABLE) -> str:
    """The unit file; ``exec_start`` is the command in systemd syntax (specifiers allowed)."""
    return UNIT_TEMPLATE.format(exec_start=exec_start, env_file=ENV_FILE_SPEC,
                                drain=DRAIN_TIMEOUT_S, stop=STOP_TIMEOUT_S)


def systemd_word(word: str) -> str:
    """One literal argument for ExecStart: specifiers and variables escaped, quoted if needed."""
    escaped = word.replace("%", "%%").replace("$", "$$")
    if _NEEDS_QUOTES.search(escaped):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def current_command() -> list[str]:
    """The absolute command that runs this relayburnd.

    The console script being run, else the one installed next to this Python,
    else ``python -m relayburnd`` with this interpreter. Symlinks are kept (a
    pipx link survives upgrades); pyenv-style shims are never chosen, because
    ``sys.argv[0]`` is the script the shim executed.
    """
    argv0 = Path(sys.argv[0])
    if argv0.name in ("relayburnd", "burn") and argv0.is_file() and os.access(argv0, os.X_OK):
        main = argv0.with_name("relayburnd")
        chosen = main if main.is_file() and os.access(main, os.X_OK) else argv0
        return [os.path.abspath(chosen)]
    script = Path(sysconfig.get_path("scripts")) / "relayburnd"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "relayburnd"]


def exec_start_for(command: list[str]) -> str:
    return " ".join(systemd_word(w) for w in command)


@dataclass(frozen=True)
class Installed:
    unit: Path
    unit_changed: bool
    env_file: Path
    env_created: bool
    env_mode: int


def install_user_unit(home: Path, unit_text: str) -> Installed:
    """Write the unit under ``home``/.config/systemd/user and create the env file if missing."""
    unit_dir = home / ".config" / "systemd" / "user"
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit = unit_dir / UNIT_NAME
    changed = not unit.is_file() or unit.read_text() != unit_text
    if changed:
        tmp = unit.with_name(f".{UNIT_NAME}.{os.getpid()}.tmp")
        tmp.write_text(unit_text)
        tmp.chmod(0o644)
        os.replace(tmp, unit)

    env_dir = home / ".config" / "relayburnd"
    env_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    env_file = env_dir / "env"
    created = False
    try:
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(ENV_TEMPLATE)
        os.chmod(env_file, 0o600)  # whatever the umask
        created = True
    mode = stat.S_IMODE(env_file.stat().st_mode)
    return Installed(unit, changed, env_file, created, mode)


@click.group()
def service() -> None:
    """Run relayburnd as a systemd user service."""


@service.command("install")
@click.option("--user", "user_unit", is_flag=True, default=True,
              help="Install a user unit (the default and only kind: relayburnd reads "
                   "one user's agent logs).")
@click.option("--print", "print_only", is_flag=True,
              help="Print the unit for this installation and change nothing.")
def install(user_unit: bool, print_only: bool) -> None:
    """Write ~/.config/systemd/user/relayburnd.service for this relayburnd.

    Also creates ~/.config/relayburnd/env (mode 0600) for settings and
    secrets if it does not exist, then prints the command that enables the
    service. Running it again updates the unit; keep changes in a drop-in
    (systemctl --user edit relayburnd).
    """
    unit_text = render_unit(exec_start_for(current_command()))
    if print_only:
        click.echo(unit_text, nl=False)
        return
    done = install_user_unit(Path.home(), unit_text)
    click.echo(f"{'wrote' if done.unit_changed else 'unchanged'} {done.unit}")
    if done.env_created:
        click.echo(f"created {done.env_file} (mode 0600): set RELAYBURN_STORAGE and its "
                   "DSN or token there")
    else:
        click.echo(f"kept {done.env_file}")
        if done.env_mode & 0o077:
            click.echo(f"warning: {done.env_file} is readable by others (mode "
                       f"{done.env_mode:04o}); it holds secrets: chmod 600 {done.env_file}",
                       err=True)
    if shutil.which("systemctl") is None:
        click.echo("warning: systemctl not found; this host does not run systemd "
                   "(see docs/deployment.md)", err=True)
    click.echo("enable and start it with:")
    click.echo(f"  {ENABLE_COMMAND}")


__all__ = ["install", "render_unit", "service"]
