"""The CI recipes in docs/ci.md, run as written: the GitHub Actions steps and the
GitLab CI scripts are taken from the document, not copied into the test."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import CI_DOC, ClaudeAgent, PgDatabase, free_port, relayburnd_env


def yaml_blocks() -> list[dict[str, Any]]:
    text = CI_DOC.read_text()
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def github_workflow() -> dict[str, Any]:
    (doc,) = [d for d in yaml_blocks() if "jobs" in d]
    return doc


def gitlab_pipeline() -> dict[str, Any]:
    (doc,) = [d for d in yaml_blocks() if ".relayburnd-drain" in d]
    return doc


def github_step(name: str) -> dict[str, Any]:
    job = github_workflow()["jobs"]["agent"]
    found: list[dict[str, Any]] = [s for s in job["steps"] if s.get("name") == name]
    assert len(found) == 1, f"expected one step named {name!r} in docs/ci.md"
    return found[0]


def github_env(secrets: dict[str, str]) -> dict[str, str]:
    """The job's env with ``${{ secrets.NAME }}`` filled in; any other expression fails."""
    out = {}
    for key, value in github_workflow()["jobs"]["agent"]["env"].items():
        def fill(m: re.Match[str]) -> str:
            expr = m.group(1).strip()
            assert expr.startswith("secrets."), f"unsupported expression {expr}"
            return secrets[expr.removeprefix("secrets.")]

        out[key] = re.sub(r"\$\{\{(.*?)\}\}", fill, str(value))
    return out


@dataclass
class Runner:
    """A throwaway CI machine: a home, a workspace, `relayburnd` on PATH."""

    root: Path
    env: dict[str, str]

    @classmethod
    def make(cls, root: Path, job_env: dict[str, str]) -> Runner:
        home, work, temp, bin_dir = (root / n for n in ("home", "work", "runner-temp", "bin"))
        for d in (home, work, temp, bin_dir):
            d.mkdir(parents=True)
        exe = bin_dir / "relayburnd"
        exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m relayburnd "$@"\n')
        exe.chmod(0o755)
        env = relayburnd_env({"HOME": str(home), "RUNNER_TEMP": str(temp),
                              "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                              **job_env})
        return cls(root, env)

    @property
    def agent(self) -> ClaudeAgent:
        # Default locations: the recipes set no agent directories.
        return ClaudeAgent(Path(self.env["HOME"]) / ".claude" / "projects", name="ci")

    def step(self, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """One step: a fresh `bash -e` in the workspace (GitHub's default shell)."""
        return subprocess.run(["bash", "-e", "-c", script], env=self.env, cwd=self.root / "work",
                              capture_output=True, text=True, timeout=timeout)

    def pids(self) -> list[int]:
        found = []
        for pid_file in (self.root / "runner-temp" / "relayburnd.pid",
                         self.root / "work" / "relayburnd.pid"):
            with contextlib.suppress(OSError, ValueError):
                found.append(int(pid_file.read_text().strip()))
        return found

    def daemon_alive(self) -> bool:
        for pid in self.pids():
            with contextlib.suppress(OSError):
                state = Path(f"/proc/{pid}/status").read_text()
                if "\nState:\tZ" not in state:
                    return True
        return False

    def kill_leftovers(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def runner(root: Path, job_env: dict[str, str]) -> Iterator[Runner]:
    made = Runner.make(root / "runner", job_env)
    try:
        yield made
    finally:
        made.kill_leftovers()


def shorten(script: str) -> str:
    """The drain step with 60 s of retrying cut to 2 s (only for the store-down tests)."""
    assert "relayburnd drain --timeout 60" in script
    return script.replace("relayburnd drain --timeout 60", "relayburnd drain --timeout 2")


def unreachable_dsn() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/relayburn?connect_timeout=1"


class TestGithubActions:
    def test_drain_step_always_runs_and_drains_with_a_60_s_deadline(self) -> None:
        """`if: always()` on the last step, which ends with `relayburnd drain --timeout 60`."""
        steps = github_workflow()["jobs"]["agent"]["steps"]
        last = steps[-1]
        assert last["name"] == "Drain relayburnd"
        assert last["if"] == "always()"
        assert "relayburnd drain --timeout 60" in last["run"]
        names = [s.get("name") for s in steps]
        assert names.index("Start relayburnd") < names.index("Run the agent")

    @pytest.mark.postgres
    def test_start_agent_drain_stores_everything_and_passes(
            self, tmp_path: Path, pg_db: PgDatabase) -> None:
        """The documented steps, in order: the job passes and the store holds the session."""
        job_env = github_env({"RELAYBURN_PG_DSN": pg_db.dsn})
        with runner(tmp_path, job_env) as ci:
            start = ci.step(github_step("Start relayburnd")["run"])
            assert start.returncode == 0, start.stderr
            assert ci.daemon_alive()
            agent = ci.agent
            agent.run(sessions=2, exchanges=30)
            drain = ci.step(github_step("Drain relayburnd")["run"])
            assert drain.returncode == 0, drain.stdout + drain.stderr
            assert not ci.daemon_alive()
        assert pg_db.stored() == agent.expected(), agent.expected().missing_from(pg_db.stored())

    def test_drain_step_fails_the_job_with_75_when_the_store_is_unreachable(
            self, tmp_path: Path) -> None:
        """Records left undelivered fail the step (exit 75) with an error annotation and the
        daemon's log."""
        job_env = github_env({"RELAYBURN_PG_DSN": unreachable_dsn()})
        job_env["RELAYBURN_DRAIN_TIMEOUT"] = "2"
        with runner(tmp_path, job_env) as ci:
            assert ci.step(github_step("Start relayburnd")["run"]).returncode == 0
            ci.agent.run(sessions=1, exchanges=5)
            drain = ci.step(shorten(github_step("Drain relayburnd")["run"]))
        assert drain.returncode == 75, drain.stdout + drain.stderr
        assert "::error::relayburnd drain exited 75" in drain.stdout
        assert "bytes not delivered" in drain.stderr

    @pytest.mark.postgres
    def test_drain_step_alone_when_the_daemon_never_started(
            self, tmp_path: Path, pg_db: PgDatabase) -> None:
        """A job that failed before the start step still ships its logs in the drain step."""
        with runner(tmp_path, github_env({"RELAYBURN_PG_DSN": pg_db.dsn})) as ci:
            agent = ci.agent
            agent.run(sessions=1, exchanges=10)
            drain = ci.step(github_step("Drain relayburnd")["run"])
        assert drain.returncode == 0, drain.stdout + drain.stderr
        assert pg_db.stored() == agent.expected()


def gitlab_job() -> dict[str, Any]:
    job: dict[str, Any] = gitlab_pipeline()["agent"]
    return job


def gitlab_env(**secrets: str) -> dict[str, str]:
    return {k: str(v) for k, v in gitlab_job()["variables"].items()} | secrets


def gitlab_shell(lines: list[str]) -> str:
    """A list of script lines as GitLab runs them: one shell, stop at the first failure."""
    return "\n".join(lines)


class TestGitlabCI:
    def test_drain_ends_script_and_runs_again_in_after_script(self) -> None:
        """Exit 75 can only fail the job from `script`; `after_script` covers failed jobs."""
        job = gitlab_job()
        assert "relayburnd drain --timeout 60" in job["script"][-1]
        assert job["after_script"] == [job["script"][-1]]
        assert any("relayburnd run" in line and line.rstrip().endswith("&")
                   for line in job["before_script"])

    @pytest.mark.postgres
    def test_before_script_agent_script_and_after_script_store_everything(
            self, tmp_path: Path, pg_db: PgDatabase) -> None:
        job = gitlab_job()
        installs = [ln for ln in job["before_script"] if "pip install" in ln]
        before = [ln for ln in job["before_script"] if ln not in installs]
        with runner(tmp_path, gitlab_env(RELAYBURN_PG_DSN=pg_db.dsn)) as ci:
            assert ci.step(gitlab_shell(before)).returncode == 0
            assert ci.daemon_alive()
            agent = ci.agent
            agent.run(sessions=2, exchanges=20)  # ./run-agent.sh
            script = ci.step(gitlab_shell(job["script"][1:]))
            assert script.returncode == 0, script.stdout + script.stderr
            after = ci.step(gitlab_shell(job["after_script"]))
            assert after.returncode == 0, after.stdout + after.stderr
            assert not ci.daemon_alive()
        assert pg_db.stored() == agent.expected(), agent.expected().missing_from(pg_db.stored())

    def test_script_fails_the_job_with_75_when_the_store_is_unreachable(
            self, tmp_path: Path) -> None:
        job = gitlab_job()
        before = [ln for ln in job["before_script"] if "pip install" not in ln]
        env = gitlab_env(RELAYBURN_PG_DSN=unreachable_dsn(), RELAYBURN_DRAIN_TIMEOUT="2")
        with runner(tmp_path, env) as ci:
            assert ci.step(gitlab_shell(before)).returncode == 0
            ci.agent.run(sessions=1, exchanges=5)
            script = ci.step(shorten(gitlab_shell(job["script"][1:])))
        assert script.returncode == 75, script.stdout + script.stderr
        assert "bytes not delivered" in script.stderr
