"""The container image, checked without a container engine: the Containerfile's
instructions, its agreement with the Kubernetes manifests, and PID 1 signal
handling played with a PID namespace."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_support import CONTAINERFILE, K8S, REPO, Bundle, ClaudeAgent, wait_for


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "dangling line continuation"
    return out


INSTRUCTIONS = parse(CONTAINERFILE.read_text())
FINAL = max(i.stage for i in INSTRUCTIONS)


def final(keyword: str) -> list[str]:
    return [i.args for i in INSTRUCTIONS if i.keyword == keyword and i.stage == FINAL]


def env_of_final() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in final("ENV"):
        for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
            env[key] = value.strip('"')
    return env


class TestBase:
    def test_every_stage_starts_from_python_311_slim_pinned_by_tag(self) -> None:
        """FROM names a Python 3.11 slim image by its patch-level tag, never latest or no tag."""
        froms = [i.args.split()[0] for i in INSTRUCTIONS if i.keyword == "FROM"]
        assert froms
        for image in froms:
            name, _, tag = image.rpartition(":")
            assert name.endswith("/python") or name == "python", image
            assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?", tag), image


class TestRuntime:
    def test_runs_as_a_numeric_non_root_user_that_the_pod_shares(self) -> None:
        """USER is numeric (so runAsNonRoot can check it), not 0, and equals the Pod's runAsUser."""
        users = final("USER")
        assert len(users) == 1
        uid, _, gid = users[0].partition(":")
        assert uid.isdigit() and int(uid) != 0
        pod = Bundle.load(K8S).pod()["securityContext"]
        assert pod["runAsUser"] == int(uid)
        assert pod["runAsGroup"] == int(gid or uid)

    def test_entrypoint_is_relayburnd_in_exec_form_and_runs_the_daemon_by_default(self) -> None:
        """Exec form (no shell between the runtime and relayburnd); the default command is `run`."""
        (entrypoint,) = final("ENTRYPOINT")
        (cmd,) = final("CMD")
        entry, default = json.loads(entrypoint), json.loads(cmd)
        assert Path(entry[0]).name == "relayburnd" and len(entry) == 1
        assert default == ["run"]
        assert final("STOPSIGNAL") in ([], ["SIGTERM"])

    def test_no_healthcheck(self) -> None:
        """Kubernetes probes /livez and /readyz; a HEALTHCHECK would only duplicate them."""
        assert not [i for i in INSTRUCTIONS if i.keyword == "HEALTHCHECK"]

    def test_read_only_root_filesystem_is_possible(self) -> None:
        """No bytecode written at run time, and state under RELAYBURN_HOME, which the Pod
        mounts as an emptyDir at the same path."""
        env = env_of_final()
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"
        bundle = Bundle.load(K8S)
        sidecar = bundle.sidecar()
        home = bundle.env_of(sidecar)["RELAYBURN_HOME"]
        assert env["RELAYBURN_HOME"] == home
        assert home in bundle.mounts_of(sidecar)

    def test_installs_the_server_extra(self) -> None:
        """The same image can run `relayburnd serve`."""
        runs = " ".join(i.args for i in INSTRUCTIONS if i.keyword == "RUN")
        assert re.search(r"pip install [^&]*\"\.\[server\]\"", runs), runs

    def test_labels_carry_the_package_version(self) -> None:
        """OCI labels name the image, and the version argument matches pyproject.toml."""
        labels = " ".join(final("LABEL"))
        for key in ("title", "description", "version", "licenses"):
            assert f"org.opencontainers.image.{key}=" in labels
        version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
        assert f"VERSION={version}" in final("ARG")


class TestNoSecrets:
    def test_no_credentials_in_env_arg_or_copied_files(self) -> None:
        """No DSN, token or password is baked into the image; only the repository's package
        sources are copied."""
        from relayburnd.config import SETTINGS

        secret_envs = {s.env for s in SETTINGS if s.secret} | {"DATABASE_URL"}
        for inst in INSTRUCTIONS:
            if inst.keyword in ("ENV", "ARG", "LABEL"):
                assert not secret_envs & set(re.findall(r"(\w+)=", inst.args)), inst
                assert not re.search(r"(?i)(password|token|secret|dsn)\w*=", inst.args), inst
        copied = {src for i in INSTRUCTIONS if i.keyword == "COPY" and "--from" not in i.args
                  for src in i.args.split()[:-1]}
        assert copied == {"pyproject.toml", "README.md", "relayburnd"}

    def test_containerignore_lets_only_the_copied_sources_in(self) -> None:
        """The build context is the package sources: no .git, no tests, no local env files."""
        rules = [ln.strip() for ln in (REPO / ".containerignore").read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
        assert rules[0] == "*"
        allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
        assert allowed == {"pyproject.toml", "README.md", "relayburnd"}


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed")
def test_hadolint_finds_nothing() -> None:
    """hadolint's rules (pinning, exec form, pip cache, user) pass without exceptions."""
    proc = subprocess.run(["hadolint", "--no-color", str(CONTAINERFILE)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                          capture_output=True, timeout=10)
    return proc.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare --pid (root or user namespaces)")
def test_relayburnd_as_pid_1_drains_on_sigterm(tmp_path: Path) -> None:
    """Why no init is needed: as PID 1 of its own PID namespace (as in the container) the
    daemon still gets SIGTERM from outside, delivers what the agent wrote, and exits 0."""
    home = tmp_path / "agent"
    agent = ClaudeAgent(home / ".claude" / "projects")
    agent.run(sessions=1, exchanges=5)
    relayburn = tmp_path / "relayburn"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBURN_")}
    env.update(PYTHONPATH=str(REPO), RELAYBURN_HOME=str(relayburn),
               CLAUDE_CONFIG_DIR=str(home / ".claude"), CODEX_HOME=str(tmp_path / "none"),
               OPENCODE_DATA_DIR=str(tmp_path / "none"), RELAYBURN_LOG_FORMAT="json")
    outer = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         sys.executable, "-m", "relayburnd", "run", "--source", "claude"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def daemon_pid() -> int | None:
            children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            return int(pids[0]) if pids else None

        pid = wait_for(daemon_pid, 10, "the daemon under unshare")
        status = Path(f"/proc/{pid}/status").read_text()
        assert re.search(r"^NSpid:\s+\d+\s+1$", status, re.M), "not PID 1 in its namespace"
        wait_for(lambda: (relayburn / "cursors.json").exists(), 20, "the first checkpoint")
        time.sleep(0.5)
        os.kill(pid, signal.SIGTERM)
        code = outer.wait(30)
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait()
    output = outer.stdout.read().decode(errors="replace") if outer.stdout else ""
    assert code == 0, output
    assert "daemon.stopped" in output
    records = [json.loads(ln) for ln in (relayburn / "ledger.jsonl").read_text().splitlines()
               if ln.strip()]
    turns = {r["message_id"] for r in records if r["kind"] == "turn"}
    assert turns == set(agent.turns)
