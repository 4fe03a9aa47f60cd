"""The Pod lifecycle played on this machine with the manifests' own settings.

The sidecar runs as ``relayburnd run`` with exactly the environment Kubernetes
would give it from k8s/ (ConfigMap, Secret, volume paths mapped to directories
standing in for the emptyDirs, the DSN of a scratch database instead of the
placeholder). An agent writes Claude Code sessions into the shared volume, as
the agent container would. Then the Pod ends the way the kubelet ends it: the
agent stops, the sidecar gets SIGTERM, and SIGKILL would follow when
``terminationGracePeriodSeconds`` from the manifest runs out.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from deploy_support import (
    K8S,
    K8S_JOB,
    REPO,
    Bundle,
    ClaudeAgent,
    DaemonProcess,
    PgDatabase,
    PodPaths,
    TcpProxy,
    free_port,
    grace_seconds,
    relayburnd_env,
    running,
    sidecar_env,
    wait_for,
)
from psycopg.conninfo import conninfo_to_dict, make_conninfo

pytestmark = pytest.mark.postgres


def probe_paths(bundle: Bundle) -> tuple[str, str]:
    sidecar = bundle.sidecar()
    return (sidecar["readinessProbe"]["httpGet"]["path"],
            sidecar["livenessProbe"]["httpGet"]["path"])


def agent_projects(bundle: Bundle, paths: PodPaths) -> Path:
    """Where the agent container's Claude Code writes: $HOME/.claude/projects on its volume."""
    agent = bundle.agent()
    return paths.host(agent, bundle.env_of(agent)["HOME"]) / ".claude" / "projects"


class TestDeploymentPod:
    def test_agent_stops_then_the_sidecar_stores_everything_before_the_grace_period_ends(
            self, tmp_path: Path, pg_db: PgDatabase) -> None:
        """Sidecar first and ready, agent writing sessions, agent stops, SIGTERM: exit 0 within
        the grace period and every record the agent wrote is in PostgreSQL."""
        bundle = Bundle.load(K8S)
        paths = PodPaths(bundle, tmp_path / "pod")
        readyz, livez = probe_paths(bundle)
        env = sidecar_env(bundle, paths, RELAYBURN_PG_DSN=pg_db.dsn)
        agent = ClaudeAgent(agent_projects(bundle, paths), name="deploy")
        with running(env, tmp_path / "sidecar.log") as sidecar:
            sidecar.wait_ready(readyz)  # the kubelet starts the agent after the sidecar
            writer = threading.Thread(target=agent.run,
                                      kwargs={"sessions": 3, "exchanges": 60, "pause": 0.02})
            writer.start()
            assert sidecar.get(livez)[0] == 200
            writer.join()  # the agent container exits
            # The last writes land just before termination, so the sidecar must still
            # pick them up while draining.
            agent.run(sessions=2, exchanges=4)
            terminated = time.monotonic()
            code, _ = sidecar.terminate(grace_seconds(bundle))
            took = time.monotonic() - terminated
        assert code == 0, sidecar.output()
        assert took < grace_seconds(bundle), took
        want, got = agent.expected(), pg_db.stored()
        assert got == want, want.missing_from(got)

    def test_probes_pass_while_the_store_is_unreachable(self, tmp_path: Path) -> None:
        """Readiness and liveness stay 200 while the store refuses connections and batches
        are failing (/healthz shows the outage), so a store outage neither unreadies nor
        restarts agent Pods."""
        bundle = Bundle.load(K8S)
        paths = PodPaths(bundle, tmp_path / "pod")
        readyz, livez = probe_paths(bundle)
        nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/relayburn?connect_timeout=1"
        env = sidecar_env(bundle, paths, RELAYBURN_PG_DSN=nowhere)
        ClaudeAgent(agent_projects(bundle, paths)).run(sessions=1, exchanges=3)
        with running(env, tmp_path / "sidecar.log") as sidecar:
            sidecar.wait_ready(readyz)
            wait_for(lambda: sidecar.get("/healthz")[0] == 503, 15, "/healthz to show the outage")
            for _ in range(3):  # across several turns of the daemon's loop
                assert sidecar.get(readyz)[0] == 200
                assert sidecar.get(livez)[0] == 200
                time.sleep(1)
        # How the sidecar ends with the store down is the slow test below.

    @pytest.mark.slow
    def test_store_lost_at_termination_still_exits_before_sigkill_with_75(
            self, tmp_path: Path, pg_db: PgDatabase) -> None:
        """The store goes away just before the Pod ends: the sidecar gives up at its drain
        deadline, inside the grace period, exits 75 and names what it could not deliver."""
        bundle = Bundle.load(K8S)
        paths = PodPaths(bundle, tmp_path / "pod")
        readyz, _ = probe_paths(bundle)
        params = conninfo_to_dict(pg_db.dsn)
        proxy = TcpProxy(str(params.get("host", "127.0.0.1")), int(str(params.get("port", 5432))))
        dsn = make_conninfo(pg_db.dsn, host="127.0.0.1", port=str(proxy.port))
        env = sidecar_env(bundle, paths, RELAYBURN_PG_DSN=dsn)
        agent = ClaudeAgent(agent_projects(bundle, paths), name="cut")
        with running(env, tmp_path / "sidecar.log") as sidecar:
            sidecar.wait_ready(readyz)
            agent.run(sessions=1, exchanges=5)
            wait_for(sidecar.caught_up, 30, "the first records to be stored")
            proxy.cut()
            agent.run(sessions=1, exchanges=5)
            code, took = sidecar.terminate(grace_seconds(bundle))
        drain = float(env["RELAYBURN_DRAIN_TIMEOUT"])
        assert code == 75, sidecar.output()
        assert took <= drain + 2 < grace_seconds(bundle), took
        assert "not delivered" in sidecar.output()


class TestJobPod:
    def test_agent_completes_then_the_sidecar_drains_and_a_later_drain_finds_nothing(
            self, tmp_path: Path, pg_db: PgDatabase) -> None:
        """The Job's agent writes its run and exits; the kubelet sends the sidecar SIGTERM at
        once: exit 0 within the grace period with everything stored. `relayburnd drain` on
        the same state afterwards exits 0 and stores nothing new (cursors were committed)."""
        bundle = Bundle.load(K8S_JOB)
        paths = PodPaths(bundle, tmp_path / "pod")
        readyz, _ = probe_paths(bundle)
        env = sidecar_env(bundle, paths, RELAYBURN_PG_DSN=pg_db.dsn)
        agent = ClaudeAgent(agent_projects(bundle, paths), name="job")
        with running(env, tmp_path / "sidecar.log") as sidecar:
            sidecar.wait_ready(readyz)
            agent.run(sessions=4, exchanges=80)  # the batch task, start to end
            code, took = sidecar.terminate(grace_seconds(bundle))
        assert code == 0, sidecar.output()
        assert took < grace_seconds(bundle), took
        want = agent.expected()
        assert pg_db.stored() == want, want.missing_from(pg_db.stored())

        after = subprocess.run([sys.executable, "-m", "relayburnd", "drain", "--timeout", "60"],
                               env=relayburnd_env(env), capture_output=True, text=True,
                               timeout=90, cwd=REPO)
        assert after.returncode == 0, after.stderr
        assert "records: 0 new, 0 updated" in after.stdout, after.stdout
        assert pg_db.stored() == want

    def test_sidecar_killed_mid_run_loses_nothing_a_drain_cannot_recover(
            self, tmp_path: Path, pg_db: PgDatabase) -> None:
        """If the kubelet has to SIGKILL the sidecar (grace exhausted), the cursors only cover
        acknowledged records: a drain over the same volume stores the rest, nothing twice."""
        bundle = Bundle.load(K8S_JOB)
        paths = PodPaths(bundle, tmp_path / "pod")
        env = sidecar_env(bundle, paths, RELAYBURN_PG_DSN=pg_db.dsn)
        agent = ClaudeAgent(agent_projects(bundle, paths), name="kill")
        sidecar = DaemonProcess(env, tmp_path / "sidecar.log").start()
        try:
            sidecar.wait_ready()
            agent.run(sessions=2, exchanges=30)
            time.sleep(0.3)
        finally:
            sidecar.kill()
        drained = subprocess.run([sys.executable, "-m", "relayburnd", "drain"],
                                 env=relayburnd_env(env), capture_output=True, text=True,
                                 timeout=90, cwd=REPO)
        assert drained.returncode == 0, drained.stderr
        want = agent.expected()
        assert pg_db.stored() == want, want.missing_from(pg_db.stored())


INSIDE = Path("/srv")  # where the volumes appear to the sidecar in its mount namespace


def container_mounts(bundle: Bundle, pod_dir: Path) -> tuple[str, ...]:
    """A command prefix that gives the sidecar the container's file system: everything
    read-only (readOnlyRootFilesystem) except its writable volumes, which appear under
    INSIDE; /tmp is the tmp volume; read-only mounts stay read-only."""
    script = ["set -e", f'mount --bind "{pod_dir}" {INSIDE}']
    # a checkout under /tmp would be hidden by the tmp volume: carry it across
    under_tmp = REPO.is_relative_to("/tmp")
    if under_tmp:
        script += [f"mkdir -p {INSIDE}/.repo", f'mount --bind "{REPO}" {INSIDE}/.repo']
    for mount in bundle.sidecar()["volumeMounts"]:
        source = INSIDE / mount["name"]
        if mount["mountPath"] == "/tmp":
            script.append(f"mount --bind {source} /tmp")
            if under_tmp:
                script += [f'mkdir -p "{REPO}"', f'mount --bind {INSIDE}/.repo "{REPO}"']
        if mount.get("readOnly"):
            script += [f"mount --bind {source} {source}",
                       f"mount -o remount,bind,ro {source}"]
    script += ["mount -o remount,bind,ro /", 'exec "$@"']
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            "\n".join(script), "sh")


def _can_build_container_mounts() -> bool:
    import shutil

    if shutil.which("unshare") is None or not INSIDE.is_dir():
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -o remount,bind,ro / && ! touch /srv/.rw 2>/dev/null"],
                           capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_build_container_mounts(),
                    reason="needs unshare --mount and mount (root)")
class TestReadOnlyRootFilesystem:
    def test_the_sidecar_writes_only_to_its_volumes(
            self, tmp_path: Path, pg_db: PgDatabase) -> None:
        """With the root file system read-only and the agent's home read-only, as in the
        manifest, the sidecar still ships everything and drains to exit 0."""
        bundle = Bundle.load(K8S)
        pod_dir = tmp_path / "pod"
        outside = PodPaths(bundle, pod_dir)
        inside = PodPaths(bundle, INSIDE, create=False)
        env = sidecar_env(bundle, inside, RELAYBURN_PG_DSN=pg_db.dsn,
                          PYTHONDONTWRITEBYTECODE="1")
        agent = ClaudeAgent(agent_projects(bundle, outside), name="ro")
        sidecar = DaemonProcess(env, tmp_path / "sidecar.log",
                                prefix=container_mounts(bundle, pod_dir)).start()
        try:
            sidecar.wait_ready(probe_paths(bundle)[0])
            agent.run(sessions=2, exchanges=20)
            code, _ = sidecar.terminate(grace_seconds(bundle))
        finally:
            sidecar.kill()
        assert code == 0, sidecar.output()
        assert "Read-only file system" not in sidecar.output()
        assert (pod_dir / "relayburnd-state" / "cursors.json").exists()
        want = agent.expected()
        assert pg_db.stored() == want, want.missing_from(pg_db.stored())
