"""Shared test setup: every test gets its own RELAYBURN_HOME and HOME, and no agent
directory of the machine it runs on is ever read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# Read at import: ``isolated_env`` clears RELAYBURN_* for each test.
IN_CI = bool(os.environ.get("CI"))
RUN_SLOW = IN_CI or bool(os.environ.get("RELAYBURN_SLOW_TESTS"))
PG_ADMIN = os.environ.get(
    "RELAYBURN_TEST_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
SYNTHETIC = FIXTURES / "synthetic"
PUBLIC = FIXTURES / "public"

_CLEARED_PREFIXES = ("RELAYBURN_",)
_CLEARED = ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "OPENCODE_DATA_DIR", "DATABASE_URL",
            "XDG_CONFIG_HOME", "XDG_DATA_HOME", "NOTIFY_SOCKET", "WATCHDOG_USEC")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private HOME and RELAYBURN_HOME; agent dirs point at empty folders."""
    for key in list(os.environ):
        if key.startswith(_CLEARED_PREFIXES) or key in _CLEARED:
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    empty = tmp_path / "empty-agent-dir"
    empty.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RELAYBURN_HOME", str(tmp_path / "relayburn"))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(empty))
    monkeypatch.setenv("CODEX_HOME", str(empty))
    monkeypatch.setenv("OPENCODE_DATA_DIR", str(empty))
    from relayburnd import faults

    faults.reset()
    yield tmp_path
    faults.reset()


@pytest.fixture(autouse=True)
def _slow_gate(request: pytest.FixtureRequest) -> None:
    """Keep the default run fast: slow tests need CI, RELAYBURN_SLOW_TESTS=1 or ``-m slow``."""
    if request.node.get_closest_marker("slow") is None:
        return
    wanted = "slow" in (request.config.getoption("markexpr") or "")
    if not (wanted or RUN_SLOW):
        pytest.skip("slow: set RELAYBURN_SLOW_TESTS=1 or CI=1, or select with -m slow")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """The local PostgreSQL server, handing out scratch databases it drops at the end.

    Unreachable: a skip on a developer machine, a failure in CI.
    """
    import psycopg

    from tests.storage.storage_support import PgServer

    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable at {PG_ADMIN!r}: {exc}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    server = PgServer(PG_ADMIN)
    try:
        yield server
    finally:
        server.drop_all()


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m relayburnd`` as a real subprocess with the test's environment."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "relayburnd", *args],
        capture_output=True, text=True, env=full_env, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"relayburnd {' '.join(args)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
