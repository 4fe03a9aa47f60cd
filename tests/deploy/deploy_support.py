"""Helpers for the deployment tests: the shipped manifests, unit and image files,
an agent that writes Claude Code sessions, the daemon as a subprocess, and the
PostgreSQL store read back independently of relayburnd's code."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import make_conninfo

from tests.support import free_port, json_events, wait_for

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
K8S_JOB = K8S / "job"
UNIT_FILE = REPO / "systemd" / "relayburnd.service"
CONTAINERFILE = REPO / "Containerfile"
CI_DOC = REPO / "docs" / "ci.md"
SIDECAR = "relayburnd"
TICKS = os.sysconf("SC_CLK_TCK")

PG_ADMIN = os.environ.get(
    "RELAYBURN_TEST_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)






# ------------------------------------------------------------------ manifests


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@dataclass
class Bundle:
    """The resources a kustomization directory builds (plain resources only)."""

    root: Path
    docs: list[dict[str, Any]]
    kustomization: dict[str, Any]

    @classmethod
    def load(cls, root: Path) -> Bundle:
        kust = yaml.safe_load((root / "kustomization.yaml").read_text())
        unsupported = set(kust) - {"apiVersion", "kind", "resources", "images", "labels"}
        assert not unsupported, f"{root}: this loader does not handle {sorted(unsupported)}"
        docs: list[dict[str, Any]] = []
        for entry in kust.get("resources", []):
            target = (root / entry).resolve()
            if target.is_dir():
                docs.extend(cls.load(target).docs)
            else:
                docs.extend(load_yaml_docs(target))
        for doc in docs:
            _set_images(doc, kust.get("images", []))
        return cls(root, docs, kust)

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.docs if d["kind"] == kind
                 and (name is None or d["metadata"]["name"] == name)]
        assert len(found) == 1, f"expected one {kind} {name or ''} in {self.root}, got {found}"
        return found[0]

    def config_data(self, kind: str, name: str) -> dict[str, str]:
        doc = self.one(kind, name)
        data = {k: str(v) for k, v in (doc.get("data") or {}).items()}
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
            data.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
        return data

    def workload(self) -> dict[str, Any]:
        found = [d for d in self.docs if d["kind"] in ("Deployment", "Job")]
        assert len(found) == 1, f"{self.root}: expected one Deployment or Job"
        return found[0]

    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.workload()["spec"]["template"]["spec"]
        return spec

    def sidecar(self) -> dict[str, Any]:
        found: list[dict[str, Any]] = [
            c for c in self.pod().get("initContainers", []) if c["name"] == SIDECAR]
        assert len(found) == 1, f"{self.root}: no initContainer named {SIDECAR}"
        return found[0]

    def agent(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = self.pod()["containers"]
        assert len(containers) == 1, f"{self.root}: expected one agent container"
        return containers[0]

    def env_of(self, container: Mapping[str, Any]) -> dict[str, str]:
        """The environment Kubernetes gives ``container``: envFrom, then env (env wins)."""
        env: dict[str, str] = {}
        for src in container.get("envFrom", []):
            if "configMapRef" in src:
                env.update(self.config_data("ConfigMap", src["configMapRef"]["name"]))
            elif "secretRef" in src:
                env.update(self.config_data("Secret", src["secretRef"]["name"]))
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = item["valueFrom"]
            if "configMapKeyRef" in ref:
                key = ref["configMapKeyRef"]
                env[item["name"]] = self.config_data("ConfigMap", key["name"])[key["key"]]
            elif "secretKeyRef" in ref:
                key = ref["secretKeyRef"]
                env[item["name"]] = self.config_data("Secret", key["name"])[key["key"]]
        return env

    def mounts_of(self, container: Mapping[str, Any]) -> dict[str, str]:
        """mountPath -> volume name."""
        return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


def _set_images(doc: dict[str, Any], images: list[dict[str, str]]) -> None:
    spec = doc.get("spec", {}).get("template", {}).get("spec")
    if not spec:
        return
    for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        name, _, tag = c["image"].partition(":")
        for img in images:
            if img["name"] == name:
                c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag)}"


class PodPaths:
    """Maps paths inside the Pod's containers to directories standing in for its volumes."""

    def __init__(self, bundle: Bundle, root: Path, *, create: bool = True) -> None:
        self.bundle = bundle
        self.root = root
        for vol in bundle.pod()["volumes"]:
            assert "emptyDir" in vol, f"volume {vol['name']} is not an emptyDir"
            if create:
                (root / vol["name"]).mkdir(parents=True, exist_ok=True)

    def host(self, container: Mapping[str, Any], path: str) -> Path:
        p = PurePosixPath(path)
        for mount, volume in sorted(self.bundle.mounts_of(container).items(),
                                    key=lambda kv: -len(kv[0])):
            if p == PurePosixPath(mount) or PurePosixPath(mount) in p.parents:
                return self.root / volume / p.relative_to(mount)
        raise AssertionError(f"{path} is on no volume of container {container['name']}")

    def env(self, container: Mapping[str, Any], raw: Mapping[str, str]) -> dict[str, str]:
        """``raw`` with every absolute path (also in comma lists) mapped to the stand-ins."""
        out = {}
        for key, value in raw.items():
            if value.startswith("/"):
                value = ",".join(str(self.host(container, v)) for v in value.split(","))
            out[key] = value
        return out


def sidecar_env(bundle: Bundle, paths: PodPaths, **overrides: str) -> dict[str, str]:
    """The sidecar's environment from the manifests, on this machine: volume paths
    mapped to the stand-in directories, the metrics port moved to a free one (the
    address stays), ``overrides`` last (the store's DSN)."""
    sidecar = bundle.sidecar()
    env = paths.env(sidecar, bundle.env_of(sidecar))
    host, _, _port = env["RELAYBURN_METRICS_ADDR"].rpartition(":")
    env["RELAYBURN_METRICS_ADDR"] = f"{host}:{free_port()}"
    env.update(overrides)
    return env


def grace_seconds(bundle: Bundle) -> int:
    return int(bundle.pod().get("terminationGracePeriodSeconds", 30))


# ------------------------------------------------------------------ the agent


@dataclass
class ClaudeAgent:
    """Writes Claude Code session logs (user line, streamed response, compaction)
    and remembers what a correct store must hold."""

    projects: Path
    name: str = "agent"
    users: set[str] = field(default_factory=set)
    compactions: set[str] = field(default_factory=set)
    turns: dict[str, int] = field(default_factory=dict)  # message id -> final output
    n: int = 0

    def _line(self, obj: dict[str, Any]) -> bytes:
        return (json.dumps(obj, separators=(",", ":")) + "\n").encode()

    def _next(self, session: str) -> tuple[str, str]:
        self.n += 1
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1767607200 + self.n)) + ".000Z"
        return f"{self.name}-{session}-{self.n:07d}", ts

    def _append(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def exchange(self, session: str, project: str = "-work-repo") -> None:
        """One user turn, a response streamed over three lines, and every fifth a compaction."""
        path = self.projects / project / f"{session}.jsonl"
        base = {"sessionId": session, "cwd": "/work/repo", "version": "2.0.14"}
        uid, ts = self._next(session)
        data = self._line({**base, "type": "user", "uuid": uid, "timestamp": ts,
                           "message": {"role": "user", "content": f"step {self.n}"}})
        self.users.add(uid)
        msg = f"msg_{uid}"
        outputs = (1, 17, 40 + self.n % 50)
        for i, out in enumerate(outputs):
            line_id, ts = self._next(session)
            data += self._line({
                **base, "type": "assistant", "uuid": line_id, "timestamp": ts,
                "requestId": f"req_{uid}",
                "message": {"id": msg, "model": "claude-sonnet-4-20250514", "role": "assistant",
                            "content": [{"type": "text", "text": "done"}],
                            "stop_reason": "end_turn" if i == len(outputs) - 1 else None,
                            "usage": {"input_tokens": 12, "output_tokens": out,
                                      "cache_read_input_tokens": 300,
                                      "cache_creation_input_tokens": 20}}})
        self.turns[msg] = outputs[-1]
        if self.n % 5 == 0:
            cid, ts = self._next(session)
            data += self._line({**base, "type": "system", "subtype": "compact_boundary",
                                "uuid": cid, "timestamp": ts,
                                "compactMetadata": {"trigger": "auto", "preTokens": 1000}})
            self.compactions.add(cid)
        self._append(path, data)

    def run(self, sessions: int, exchanges: int, pause: float = 0.0) -> None:
        for i in range(exchanges):
            self.exchange(f"session-{i % sessions:03d}")
            if pause:
                time.sleep(pause)

    def expected(self) -> Stored:
        return Stored(dict(self.turns), set(self.users), set(self.compactions))


# ------------------------------------------------------------------ the store


@dataclass
class Stored:
    turns: dict[str, int]
    users: set[str]
    compactions: set[str]

    def missing_from(self, other: Stored) -> str:
        """A short account of what ``other`` (the store) lacks or has extra."""
        parts = []
        for label, mine, theirs in (("turns", set(self.turns.items()), set(other.turns.items())),
                                    ("user turns", self.users, other.users),
                                    ("compactions", self.compactions, other.compactions)):
            lost, extra = mine - theirs, theirs - mine
            if lost or extra:
                parts.append(f"{label}: {len(lost)} missing {sorted(lost)[:3]}, "
                             f"{len(extra)} unexpected {sorted(extra)[:3]}")
        return "; ".join(parts)


@dataclass
class PgDatabase:
    """A scratch database on the local server, dropped by ``drop``."""

    admin_dsn: str
    name: str

    @classmethod
    def create(cls, admin_dsn: str = PG_ADMIN) -> PgDatabase:
        name = f"relayburn_test_deploy_{secrets.token_hex(6)}"
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return cls(admin_dsn, name)

    @property
    def dsn(self) -> str:
        return make_conninfo(self.admin_dsn, dbname=self.name)

    def stored(self) -> Stored:
        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            if conn.execute("SELECT to_regclass('turns')").fetchone() == (None,):
                return Stored({}, set(), set())
            turns: dict[str, int] = dict(conn.execute(
                "SELECT message_id, output_tokens FROM turns").fetchall())
            users = {r[0] for r in conn.execute("SELECT message_id FROM user_turns")}
            comps = {r[0] for r in conn.execute("SELECT message_id FROM compactions")}
        return Stored(turns, users, comps)

    def drop(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def postgres_reachable(admin_dsn: str = PG_ADMIN) -> str | None:
    """None when the server answers, else why not."""
    try:
        with psycopg.connect(admin_dsn, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"PostgreSQL is not reachable at {admin_dsn!r}: {exc}"


# ------------------------------------------------------------------ the daemon


def relayburnd_env(env: Mapping[str, str]) -> dict[str, str]:
    """The test's environment without relayburnd settings, then ``env``."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("RELAYBURN_") and k not in (
                "CLAUDE_CONFIG_DIR", "CODEX_HOME", "OPENCODE_DATA_DIR", "DATABASE_URL",
                "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    base["PYTHONPATH"] = str(REPO)
    base.update(env)
    return base


class DaemonProcess:
    """``python -m relayburnd <command>`` as a subprocess with exactly ``env``."""

    def __init__(self, env: Mapping[str, str], log: Path, *args: str,
                 prefix: tuple[str, ...] = ()) -> None:
        self.env = relayburnd_env(env)
        self.args = args or ("run",)
        self.prefix = prefix  # a command that execs the rest, keeping the pid
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        port = self.env.get("RELAYBURN_METRICS_ADDR", ":0").rpartition(":")[2]
        self.base_url = f"http://127.0.0.1:{port}"

    def start(self) -> DaemonProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "relayburnd",
                                          *self.args],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=REPO)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, path: str = "/readyz", timeout: float = 20.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"relayburnd exited {self.proc.returncode}:\n"
                                     f"{self.output()}")
            with contextlib.suppress(OSError):
                return self.get(path)[0] == 200
            return False

        wait_for(ready, timeout, f"{path} on {self.base_url}")

    def metrics(self) -> dict[str, float]:
        code, text = self.get("/metrics")
        assert code == 200, text
        out = {}
        for row in text.splitlines():
            if row and not row.startswith("#"):
                key, _, value = row.rpartition(" ")
                out[key.removeprefix("relayburnd_")] = float(value)
        return out

    def caught_up(self) -> bool:
        """Every tracked file acknowledged to its end, nothing read and unacknowledged."""
        m = self.metrics()
        lags = [v for k, v in m.items() if k.startswith("lag_bytes{")]
        tracked = sum(v for k, v in m.items() if k.startswith("files_tracked{"))
        return bool(tracked) and not any(lags) and m.get("oldest_unacked_age_seconds") == 0

    def terminate(self, timeout: float) -> tuple[int, float]:
        """SIGTERM, then the exit code and the seconds it took (SIGKILL after ``timeout``,
        as the kubelet and systemd do)."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"no exit within {timeout}s of SIGTERM:\n{self.output()}") from None
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        return json_events(self.output())


@contextlib.contextmanager
def running(env: Mapping[str, str], log: Path) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(env, log).start()
    try:
        yield daemon
    finally:
        daemon.kill()


# ------------------------------------------------------------------ /proc


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as fh:
        for row in fh:
            if row.startswith(key + ":"):
                return int(row.split()[1])
    raise KeyError(key)


# ------------------------------------------------------------------ quantities


_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEM = re.compile(r"^(\d+)(Ki|Mi|Gi)?$")


def cpu_cores(q: str | int | float) -> float:
    m = _CPU.match(str(q))
    assert m, f"unsupported CPU quantity {q!r}"
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def mem_mib(q: str | int) -> float:
    m = _MEM.match(str(q))
    assert m, f"unsupported memory quantity {q!r}"
    return int(m.group(1)) * {None: 1 / 2**20, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024}[m.group(2)]


# ------------------------------------------------------------------ a store that goes away


class TcpProxy:
    """Forwards a local port to ``target``; ``cut()`` drops every connection and refuses
    new ones, as a store that became unreachable."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._socks.clear()
