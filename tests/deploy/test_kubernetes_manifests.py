"""The Kubernetes manifests (k8s/ and k8s/job/): valid against the API schemas
offline, and with the properties the sidecar's contract depends on."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml
from deploy_support import K8S, K8S_JOB, Bundle, cpu_cores, grace_seconds, mem_mib

from relayburnd.config import SETTINGS, load_settings, setting_for_env

BUNDLES = {"deployment": K8S, "job": K8S_JOB}
# The first release with native sidecars on by default (beta), and the newest
# schema kubernetes-validate bundles.
OLDEST_SUPPORTED = "1.29.0"
# Between the end of the sidecar's drain and SIGKILL; also covers a slow
# agent shutdown in the Deployment (docs/deployment.md).
MARGIN_S = 10


@pytest.fixture(params=sorted(BUNDLES), ids=sorted(BUNDLES))
def bundle(request: pytest.FixtureRequest) -> Bundle:
    return Bundle.load(BUNDLES[request.param])


def settings_of(bundle: Bundle) -> Any:
    return load_settings(env=bundle.env_of(bundle.sidecar()))


class TestSchemas:
    @pytest.mark.parametrize("version", [OLDEST_SUPPORTED, "latest"])
    def test_every_resource_validates_strictly(self, bundle: Bundle, version: str) -> None:
        """kubernetes-validate (schemas bundled, no cluster, no network) accepts every
        resource, with unknown fields rejected."""
        kv = pytest.importorskip("kubernetes_validate")
        target = kv.utils.latest_version() if version == "latest" else version
        for doc in bundle.docs:
            kv.validate(doc, target, strict=True)

    def test_the_schema_check_can_fail(self) -> None:
        """A misspelt field in the sidecar is rejected (the check above is not vacuous)."""
        kv = pytest.importorskip("kubernetes_validate")
        doc = Bundle.load(K8S).workload()
        doc["spec"]["template"]["spec"]["initContainers"][0]["restartPolicyy"] = "Always"
        with pytest.raises(kv.ValidationError):
            kv.validate(doc, OLDEST_SUPPORTED, strict=True)

    @pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
    def test_kustomize_builds_what_the_tests_read(self, bundle: Bundle) -> None:
        """`kubectl kustomize` renders the same resources and images as the tests' loader."""
        proc = subprocess.run(["kubectl", "kustomize", str(bundle.root)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
        assert sorted(rendered, key=_key) == sorted(bundle.docs, key=_key)


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


class TestNativeSidecar:
    def test_relayburnd_is_an_init_container_that_restarts_always(self, bundle: Bundle) -> None:
        """A native sidecar: starts before the agent, outlives it, stopped after it."""
        sidecar = bundle.sidecar()
        assert sidecar["restartPolicy"] == "Always"
        assert sidecar["args"] == ["run"]
        assert all(c["name"] != "relayburnd" for c in bundle.pod()["containers"])

    def test_job_pods_never_restart_and_the_job_does_not_retry(self) -> None:
        """A batch run is one attempt; the sidecar does not keep the Job alive."""
        job = Bundle.load(K8S_JOB).workload()
        assert job["kind"] == "Job"
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        assert job["spec"]["backoffLimit"] == 0

    def test_deployment_and_job_run_the_same_sidecar(self) -> None:
        """One sidecar definition in both variants, so they cannot drift apart."""
        dep, job = Bundle.load(K8S), Bundle.load(K8S_JOB)
        assert dep.sidecar() == job.sidecar()
        assert dep.pod()["securityContext"] == job.pod()["securityContext"]
        assert dep.pod()["volumes"] == job.pod()["volumes"]


class TestShutdownBudget:
    def test_grace_period_exceeds_the_drain_deadline_plus_margin(self, bundle: Bundle) -> None:
        """terminationGracePeriodSeconds > RELAYBURN_DRAIN_TIMEOUT (as relayburnd parses it)
        + margin: the sidecar's drain ends before the kubelet's SIGKILL."""
        drain = settings_of(bundle).drain_timeout
        assert grace_seconds(bundle) >= drain + MARGIN_S, (grace_seconds(bundle), drain)

    def test_deployment_leaves_the_agent_time_to_stop_first(self) -> None:
        """The sidecar gets SIGTERM only after the agent exits: the grace period also holds
        the agent's own shutdown (30 s budget documented in deployment.md)."""
        bundle = Bundle.load(K8S)
        assert grace_seconds(bundle) >= settings_of(bundle).drain_timeout + 30 + 5


    def test_the_agent_tells_the_sidecar_when_the_grace_period_began(self) -> None:
        """The agent's preStop hook calls the sidecar's /prestop on the metrics port, and
        RELAYBURN_GRACE_PERIOD is the Pod's grace period: a slow agent shortens the drain
        instead of getting the sidecar killed mid-flush."""
        bundle = Bundle.load(K8S)
        hook = bundle.agent()["lifecycle"]["preStop"]["httpGet"]
        assert hook["path"] == "/prestop"
        assert hook["port"] == int(settings_of(bundle).metrics_addr.rpartition(":")[2])
        assert settings_of(bundle).grace_period == grace_seconds(bundle)


class TestProbes:
    def test_readiness_and_liveness_hit_readyz_and_livez_on_the_metrics_port(
            self, bundle: Bundle) -> None:
        """The probes use the endpoints that never look at the store, on the port that
        RELAYBURN_METRICS_ADDR binds, on every address of the Pod (the kubelet probes the
        Pod IP, not loopback)."""
        sidecar = bundle.sidecar()
        host, _, port = settings_of(bundle).metrics_addr.rpartition(":")
        assert host in ("0.0.0.0", "[::]", "")
        ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
            get = sidecar[probe]["httpGet"]
            assert get["path"] == path
            resolved = ports.get(get["port"], get["port"])
            assert resolved == int(port), (probe, get["port"])

    def test_probes_tolerate_a_long_parse(self, bundle: Bundle) -> None:
        """A 60 MiB line delayed one /livez answer by 2.8 s (measured): a single slow answer
        must neither fail a probe nor, repeated, restart the sidecar within 30 s."""
        for probe in ("readinessProbe", "livenessProbe"):
            spec = bundle.sidecar()[probe]
            assert spec["timeoutSeconds"] >= 5, probe
            assert spec["failureThreshold"] * spec["periodSeconds"] >= 30, probe

    def test_no_probe_uses_the_store_health_endpoint(self, bundle: Bundle) -> None:
        """/healthz reports the store; probing it would restart or unready every agent Pod
        during a store outage."""
        text = yaml.safe_dump(bundle.sidecar())
        assert "/healthz" not in text


class TestSecurity:
    def test_pod_runs_non_root_with_runtime_default_seccomp_and_no_token(
            self, bundle: Bundle) -> None:
        pod = bundle.pod()
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False

    def test_sidecar_is_locked_down(self, bundle: Bundle) -> None:
        """Read-only root filesystem, no privilege escalation, every capability dropped."""
        ctx = bundle.sidecar()["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert ctx.get("capabilities", {}).get("add") is None
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault"

    def test_agent_meets_the_restricted_pod_security_standard_too(self, bundle: Bundle) -> None:
        ctx = bundle.agent()["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]

    def test_the_only_writable_paths_are_emptydirs_for_state_and_tmp(
            self, bundle: Bundle) -> None:
        """RELAYBURN_HOME and /tmp are writable emptyDirs; the agent's home is mounted
        read-only in the sidecar."""
        sidecar = bundle.sidecar()
        volumes = {v["name"]: v for v in bundle.pod()["volumes"]}
        home = str(settings_of(bundle).home)
        writable = {m["mountPath"] for m in sidecar["volumeMounts"] if not m.get("readOnly")}
        assert writable == {home, "/tmp"}
        for mount in sidecar["volumeMounts"]:
            assert "emptyDir" in volumes[mount["name"]], mount
        agent_home = [m for m in sidecar["volumeMounts"] if m["name"] == "agent-home"]
        assert agent_home and agent_home[0]["readOnly"] is True


class TestWiring:
    def test_every_reference_resolves_within_the_kustomization(self, bundle: Bundle) -> None:
        """ConfigMaps, Secrets, keys and volumes named by the containers exist in the build."""
        names = {(d["kind"], d["metadata"]["name"]) for d in bundle.docs}
        pod = bundle.pod()
        volumes = {v["name"] for v in pod["volumes"]}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            for src in container.get("envFrom", []):
                for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if ref in src:
                        assert (kind, src[ref]["name"]) in names, src
            for item in container.get("env", []):
                for ref, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    key = item.get("valueFrom", {}).get(ref)
                    if key:
                        assert key["key"] in bundle.config_data(kind, key["name"]), item
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, mount
        bundle.env_of(bundle.sidecar())  # resolves, or raises naming the missing key

    def test_the_sidecar_reads_where_the_agent_writes(self, bundle: Bundle) -> None:
        """CLAUDE_CONFIG_DIR, CODEX_HOME and OPENCODE_DATA_DIR lie on the volume the agent's
        HOME is on, at the same place relative to it."""
        agent, sidecar = bundle.agent(), bundle.sidecar()
        agent_home = bundle.env_of(agent)["HOME"]
        agent_mounts = bundle.mounts_of(agent)
        sidecar_mounts = {v: k for k, v in bundle.mounts_of(sidecar).items()}
        volume = agent_mounts[agent_home]
        env = bundle.env_of(sidecar)
        expected = {"CLAUDE_CONFIG_DIR": ".claude", "CODEX_HOME": ".codex",
                    "OPENCODE_DATA_DIR": ".local/share/opencode"}
        for key, relative in expected.items():
            first = env[key].split(",")[0]
            assert first == f"{sidecar_mounts[volume]}/{relative}", (key, first)

    def test_settings_are_known_valid_and_secrets_stay_in_the_secret(
            self, bundle: Bundle) -> None:
        """Every ConfigMap key is a relayburnd setting and parses; the DSN and the token
        live only in the Secret."""
        config = bundle.config_data("ConfigMap", "relayburnd")
        for key in config:
            assert setting_for_env(key) is not None, f"unknown setting {key}"
        secret_envs = {s.env for s in SETTINGS if s.secret}
        assert not secret_envs & set(config)
        secret = bundle.config_data("Secret", "relayburnd")
        assert set(secret) <= secret_envs
        settings = settings_of(bundle)
        assert settings.storage == "postgres" and settings.pg_dsn

    def test_images_are_pinned(self, bundle: Bundle) -> None:
        """After the kustomization's image overrides, every image has a tag other than latest."""
        pod = bundle.pod()
        for c in [*pod["initContainers"], *pod["containers"]]:
            _name, sep, tag = c["image"].rpartition(":")
            assert sep and tag and tag != "latest" and "/" not in tag, c["image"]


class TestResources:
    def test_requests_and_limits_are_set_and_ordered(self, bundle: Bundle) -> None:
        res = bundle.sidecar()["resources"]
        assert cpu_cores(res["requests"]["cpu"]) <= cpu_cores(res["limits"]["cpu"])
        assert mem_mib(res["requests"]["memory"]) <= mem_mib(res["limits"]["memory"])

    def test_memory_limit_holds_the_largest_record_relayburnd_accepts(
            self, bundle: Bundle) -> None:
        """Measured: a 60 MiB line peaks at about 260 MiB (about 90 MiB + 3x the line); the
        limit must hold RELAYBURN_MAX_RECORD_BYTES, or the sidecar is OOM-killed on the
        same line after every restart."""
        limit = mem_mib(bundle.sidecar()["resources"]["limits"]["memory"])
        largest = settings_of(bundle).max_record_bytes / 2**20
        assert limit >= 90 + 3 * largest, (limit, largest)
