"""The systemd user unit: what it declares, that systemd accepts it, and that the
daemon keeps the notify protocol the unit relies on."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from deploy_support import (
    REPO,
    UNIT_FILE,
    ClaudeAgent,
    DaemonProcess,
    wait_for,
)

from relayburnd.commands.service import current_command, exec_start_for, render_unit
from relayburnd.config import load_settings


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values in order (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=value: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|min)?", value)
    assert m, f"unsupported time span {value!r}"
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "min": 60}[m.group(2)]


def unit_environment(service: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in service.get("Environment", []):
        for word in shlex.split(value):
            key, _, val = word.partition("=")
            env[key] = val
    return env


SHIPPED = parse_unit(UNIT_FILE.read_text())
SERVICE = SHIPPED["Service"]


def one(key: str) -> str:
    values = SERVICE.get(key, [])
    assert len(values) == 1, f"[Service] {key}: expected one value, got {values}"
    return values[0]


class TestShippedUnit:
    def test_is_the_template_that_service_install_renders(self) -> None:
        """systemd/relayburnd.service is the installer's template for ~/.local/bin, byte for
        byte."""
        assert UNIT_FILE.read_text() == render_unit(), (
            "regenerate it: python -c 'from relayburnd.commands.service import render_unit; "
            "print(render_unit(), end=\"\")' > systemd/relayburnd.service")

    def test_declares_the_notify_watchdog_and_restart_contract(self) -> None:
        """Type=notify from the main process, a 30 s watchdog, and exponential restarts."""
        assert one("Type") == "notify"
        assert one("NotifyAccess") == "main"
        assert one("WatchdogSec") == "30s"
        assert one("Restart") == "on-failure"
        assert one("RestartSec") == "2s"
        assert one("RestartSteps") == "5"
        assert one("RestartMaxDelaySec") == "60s"
        assert one("KillSignal") == "SIGTERM"
        assert SHIPPED["Install"]["WantedBy"] == ["default.target"]

    def test_runs_relayburnd_run_with_settings_from_the_env_file(self) -> None:
        """ExecStart is `relayburnd run`; settings and secrets come from an optional env file."""
        assert one("ExecStart") == "%h/.local/bin/relayburnd run"
        assert one("EnvironmentFile") == "-%h/.config/relayburnd/env"

    def test_drain_deadline_ends_before_the_stop_timeout(self) -> None:
        """RELAYBURN_DRAIN_TIMEOUT as the daemon reads it, plus 5 s, fits in TimeoutStopSec."""
        settings = load_settings(env=unit_environment(SERVICE))
        stop = seconds(one("TimeoutStopSec"))
        assert stop == 30
        assert settings.drain_timeout + 5 <= stop, (settings.drain_timeout, stop)

    def test_invalid_settings_are_not_restarted_in_a_loop(self) -> None:
        """Exit 2 (invalid setting) is excluded from restarts: retrying cannot fix it."""
        from relayburnd.cli import EXIT_USAGE

        assert one("RestartPreventExitStatus") == str(EXIT_USAGE)


def systemd_version() -> int:
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True)
    m = re.search(r"systemd (\d+)", out.stdout)
    return int(m.group(1)) if m else 0


def verify(unit: Path) -> tuple[int, list[str]]:
    """``systemd-analyze verify``: exit code and its complaints, minus the keys this
    systemd is too old to know (RestartSteps and RestartMaxDelaySec need 254)."""
    env = dict(os.environ, SYSTEMD_LOG_COLOR="0")
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, env=env, timeout=60)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    if systemd_version() < 254:
        lines = [ln for ln in lines
                 if not re.search(r"Unknown key '?(RestartSteps|RestartMaxDelaySec)'? ", ln)]
    return proc.returncode, lines


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


@needs_systemd_analyze
class TestSystemdAccepts:
    def test_the_unit_for_this_installation(self, tmp_path: Path) -> None:
        """systemd-analyze verify finds nothing wrong with the unit `service install` writes."""
        unit = tmp_path / "relayburnd.service"
        unit.write_text(render_unit(exec_start_for(current_command())))
        code, complaints = verify(unit)
        assert code == 0 and not complaints, complaints

    def test_a_broken_unit_is_reported(self, tmp_path: Path) -> None:
        """The check above can fail: a wrong Type= and a missing executable are reported."""
        unit = tmp_path / "relayburnd.service"
        text = render_unit(exec_start_for([str(tmp_path / "missing" / "relayburnd")]))
        unit.write_text(text.replace("Type=notify", "Type=notifyy"))
        code, complaints = verify(unit)
        assert code != 0 or complaints
        joined = "\n".join(complaints)
        assert "notifyy" in joined or "Type" in joined, joined
        assert "missing" in joined, joined

    def test_paths_with_spaces_and_percent_signs_are_escaped(self, tmp_path: Path) -> None:
        """An executable under a directory named `my tools 100%` still resolves."""
        odd = tmp_path / "my tools 100%"
        odd.mkdir()
        exe = odd / "relayburnd"
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
        unit = tmp_path / "relayburnd.service"
        unit.write_text(render_unit(exec_start_for([str(exe)])))
        code, complaints = verify(unit)
        assert code == 0 and not complaints, complaints
        broken = tmp_path / "unescaped.service"
        broken.write_text(render_unit(str(exe)))
        assert verify(broken) != (0, [])


class TestExecStart:
    def test_the_installed_command_starts_this_relayburnd(self) -> None:
        """The command `service install` puts in ExecStart runs and is this version."""
        from relayburnd import __version__

        command = current_command()
        assert os.path.isabs(command[0])
        proc = subprocess.run([*command, "--version"], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert proc.returncode == 0, proc.stderr
        assert __version__ in proc.stdout


class TestNotifyLifecycle:
    def test_ready_watchdog_stopping_and_exit_0_within_the_stop_timeout(
            self, tmp_path: Path) -> None:
        """Under the unit's environment: READY=1 once state is loaded, WATCHDOG=1 at half the
        watchdog period, STOPPING=1 on SIGTERM (KillSignal), exit 0 well inside TimeoutStopSec,
        with every record of the session delivered."""
        sock_path = tmp_path / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(sock_path))
        sock.settimeout(0.1)
        messages: list[tuple[float, list[str]]] = []

        def received(field: str) -> int:
            while True:
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    break
                messages.append((time.monotonic(), data.decode().splitlines()))
            return sum(field in fields for _, fields in messages)

        home = tmp_path / "home"
        agent = ClaudeAgent(home / ".claude" / "projects", name="laptop")
        agent.run(sessions=2, exchanges=10)
        env = {
            **unit_environment(SERVICE),
            "HOME": str(home),
            "RELAYBURN_HOME": str(tmp_path / "relayburn"),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "CODEX_HOME": str(tmp_path / "none"),
            "OPENCODE_DATA_DIR": str(tmp_path / "none"),
            "NOTIFY_SOCKET": str(sock_path),
            # WatchdogSec=30s means a ping every 15 s; a 2 s watchdog shows the rule quickly.
            "WATCHDOG_USEC": "2000000",
            "RELAYBURN_LOG_FORMAT": "json",
        }
        stop_timeout = seconds(one("TimeoutStopSec"))
        daemon = DaemonProcess(env, tmp_path / "daemon.log").start()
        try:
            wait_for(lambda: received("READY=1"), 20, "READY=1")
            wait_for(lambda: received("WATCHDOG=1") >= 3, 10, "three WATCHDOG=1 pings")
            code, took = daemon.terminate(stop_timeout)
        finally:
            daemon.kill()
        received("STOPPING=1")
        sock.close()
        pings = [t for t, fields in messages if "WATCHDOG=1" in fields]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 1.6, gaps  # half of 2 s, plus scheduling slack
        order = [f for _, fields in messages for f in fields if f in ("READY=1", "STOPPING=1")]
        assert order == ["READY=1", "STOPPING=1"], order
        assert code == 0, daemon.output()
        assert took < stop_timeout - 5, took
        stored = _stored_turns(tmp_path / "relayburn")
        assert stored == set(agent.turns), (len(stored), len(agent.turns))


def _stored_turns(home: Path) -> set[str]:
    """Message ids of the turns in the default file store (ledger.jsonl)."""
    ledger = home / "ledger.jsonl"
    if not ledger.exists():
        return set()
    out = set()
    for line in ledger.read_bytes().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("kind") == "turn":
                out.add(rec["message_id"])
    return out
