"""Workloads: HPAs exactly on the stateless tiers, inference pinned to one replica, probes on every
container, graceful stops, least privilege everywhere."""

from __future__ import annotations

import pytest

from services.common.topology import BACKEND_SERVICES, GATEWAY_PORT, GRPC_PORTS, PROBE_PORT_OFFSET
from tests.deploy.manifests import PROFILES, component, of_kind, pod_spec

STATELESS = {"gateway", "router", "rag", "auth", "executor"}
SERVICES = {"gateway", *BACKEND_SERVICES}
CHART_VALUES_PATH = "deploy/helm/goblin/values.yaml"


def test_one_deployment_per_service(rendered: dict) -> None:
    for objects in rendered.values():
        deployments = of_kind(objects, "Deployment")
        assert {component(d) for d in deployments.values()} == SERVICES
        services = of_kind(objects, "Service")
        assert SERVICES <= {component(s) for s in services.values()}


def test_hpas_and_pdbs_exactly_on_the_stateless_tiers(rendered: dict) -> None:
    for profile, objects in rendered.items():
        router_off = profile == "certmanager"
        expected = STATELESS - {"router"} if router_off else STATELESS
        hpas = of_kind(objects, "HorizontalPodAutoscaler")
        pdbs = of_kind(objects, "PodDisruptionBudget")
        assert {component(h) for h in hpas.values()} == expected, profile
        assert {component(p) for p in pdbs.values()} == expected, profile
        deployments = {component(d): d for d in of_kind(objects, "Deployment").values()}
        for hpa in hpas.values():
            assert hpa["apiVersion"] == "autoscaling/v2"
            target = hpa["spec"]["scaleTargetRef"]
            assert target["kind"] == "Deployment"
            assert target["name"] == deployments[component(hpa)]["metadata"]["name"]
            assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
            assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
            assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
            # The HPA owns the replica count: the Deployment must not fight it.
            assert "replicas" not in deployments[component(hpa)]["spec"]
        for pdb in pdbs.values():
            assert pdb["spec"]["maxUnavailable"] == 1
            assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component(pdb)
        if router_off:
            assert deployments["router"]["spec"]["replicas"] == 3


def test_inference_is_one_replica_recreated_with_a_models_volume_and_a_long_startup(rendered: dict) -> None:
    for profile, objects in rendered.items():
        inference = next(d for d in of_kind(objects, "Deployment").values() if component(d) == "inference")
        assert inference["spec"]["replicas"] == 1
        assert inference["spec"]["strategy"] == {"type": "Recreate"}
        spec = pod_spec(inference)
        claim = next(v["persistentVolumeClaim"] for v in spec["volumes"] if "persistentVolumeClaim" in v)
        if profile == "locked":
            assert claim["claimName"] == "models"
            env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
            assert env["GOBLIN_MODEL_PATH"] == "/models/qwen.gguf"
        else:
            assert claim["claimName"] in of_kind(objects, "PersistentVolumeClaim")
        startup = spec["containers"][0]["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # a model load takes minutes


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_probes_on_every_container(rendered: dict, profile: str) -> None:
    for name, deployment in of_kind(rendered[profile], "Deployment").items():
        service = component(deployment)
        container = pod_spec(deployment)["containers"][0]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, (name, probe)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if service == "gateway":
            assert ports["https"] == GATEWAY_PORT
            assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "https", "scheme": "HTTPS"}
            assert container["readinessProbe"]["httpGet"] == {
                "path": "/health/ready",
                "port": "https",
                "scheme": "HTTPS",
            }
        else:
            # kubelet presents no client certificate: gRPC probes go to the plaintext health-only port.
            probe_port = GRPC_PORTS[service] + PROBE_PORT_OFFSET
            assert ports["grpc"] == GRPC_PORTS[service]
            assert ports["grpc-probe"] == probe_port
            assert container["readinessProbe"]["grpc"]["port"] == probe_port
            assert container["startupProbe"]["grpc"]["port"] == probe_port
            assert container["livenessProbe"]["tcpSocket"]["port"] == probe_port
    for workload in of_kind(rendered[profile], "StatefulSet").values():
        for container in pod_spec(workload)["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_graceful_stop(rendered: dict, profile: str) -> None:
    for deployment in of_kind(rendered[profile], "Deployment").values():
        spec = pod_spec(deployment)
        container = spec["containers"][0]
        sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = spec["terminationGracePeriodSeconds"]
        assert sleep >= 1 and grace > sleep
        env = {e["name"]: e.get("value") for e in container["env"]}
        # gRPC's own drain must end inside the grace period, after preStop.
        assert 0 < float(env["GOBLIN_GRPC_GRACE_S"]) <= grace - sleep


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_least_privilege_everywhere(rendered: dict, profile: str) -> None:
    objects = rendered[profile]
    assert not {o["kind"] for o in objects} & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    for account in of_kind(objects, "ServiceAccount").values():
        assert account["automountServiceAccountToken"] is False
    workloads = [o for o in objects if pod_spec(o) is not None]
    assert len(workloads) >= 6
    for workload in workloads:
        spec = pod_spec(workload)
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["securityContext"].get("runAsUser", 1) != 0, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert "resources" in container and container["resources"].get("limits"), where
            # A read-only root needs somewhere to write: /tmp is always an emptyDir.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            for mount in container.get("volumeMounts", []):
                volume = volumes.get(mount["name"], {})  # none: a StatefulSet's volumeClaimTemplate
                if "secret" in volume or "persistentVolumeClaim" in volume:
                    if component(workload) in SERVICES:
                        assert mount.get("readOnly") is True, (where, mount)


def test_images_follow_the_values(rendered: dict) -> None:
    locked = of_kind(rendered["locked"], "Deployment")
    for deployment in locked.values():
        assert pod_spec(deployment)["containers"][0]["image"] == "ghcr.io/goblin/goblin@sha256:" + "a" * 64
    for deployment in of_kind(rendered["default"], "Deployment").values():
        container = pod_spec(deployment)["containers"][0]
        assert container["image"] == "ghcr.io/goblin/goblin:0.1.0"
        assert container["args"] == [component(deployment)]


def test_migrations_job_is_a_hook_running_goblin_migrate(rendered: dict) -> None:
    for profile, objects in rendered.items():
        job = next(iter(of_kind(objects, "Job").values()))
        hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
        # With the in-chart PostgreSQL (trial) the database only exists after install.
        assert hooks == ({"post-install", "pre-upgrade"} if profile == "trial" else {"pre-install", "pre-upgrade"})
        container = pod_spec(job)["containers"][0]
        assert container["args"] == ["migrate"]
        assert pod_spec(job)["restartPolicy"] == "Never"
        database = next(e for e in container["env"] if e["name"] == "DATABASE_URL")
        assert "secretKeyRef" in database["valueFrom"]


def test_helm_test_pods_call_readiness_and_one_chat(rendered: dict) -> None:
    pods = of_kind(rendered["default"], "Pod")
    assert {tuple(pod_spec(p)["containers"][0]["args"]) for p in pods.values()} == {
        ("smoke", "ready"),
        ("smoke", "chat"),
    }
    for pod in pods.values():
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        env = {e["name"]: e for e in pod_spec(pod)["containers"][0]["env"]}
        assert env["GOBLIN_SMOKE_URL"]["value"] == f"https://goblin-gateway:{GATEWAY_PORT}"
        if pod_spec(pod)["containers"][0]["args"] == ["smoke", "chat"]:
            assert env["GOBLIN_SMOKE_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "GOBLIN_SMOKE_API_KEY"


def test_in_chart_stores_only_for_trials(rendered: dict) -> None:
    assert not of_kind(rendered["default"], "StatefulSet")
    assert {component(s) for s in of_kind(rendered["trial"], "StatefulSet").values()} == {
        "postgres",
        "redis",
        "chroma",
    }


def test_gateway_probes_fit_under_its_health_rate_limit(rendered: dict) -> None:
    """kubelet probes come from the node's address and the gateway's health limit is per address across
    replicas: even every gateway replica on one node must stay under it, or readiness flaps on 429s."""
    from services.gateway.ratelimit import parse_limits

    for profile, objects in rendered.items():
        config = next(c for n, c in of_kind(objects, "ConfigMap").items() if n.endswith("-config"))["data"]
        limit = min(item.amount * 60 / item.get_expiry() for item in parse_limits(config["GOBLIN_RATE_LIMIT_HEALTH"]))
        gateway = next(d for d in of_kind(objects, "Deployment").values() if component(d) == "gateway")
        container = pod_spec(gateway)["containers"][0]
        per_pod = sum(60 / container[p]["periodSeconds"] for p in ("livenessProbe", "readinessProbe"))
        hpa = next((h for h in of_kind(objects, "HorizontalPodAutoscaler").values() if component(h) == "gateway"), None)
        replicas = hpa["spec"]["maxReplicas"] if hpa else gateway["spec"]["replicas"]
        assert per_pod * replicas <= limit, (profile, per_pod, replicas, limit)


@pytest.mark.parametrize(
    ("values", "threads"),
    [
        ({}, "4"),  # values.yaml: limits.cpu "4"
        ({"services": {"inference": {"resources": {"limits": {"cpu": "2500m", "memory": "4Gi"}}}}}, "2"),
        ({"services": {"inference": {"resources": {"limits": {"cpu": "500m", "memory": "4Gi"}}}}}, "1"),
        ({"services": {"inference": {"threads": 3}}}, "3"),
    ],
)
def test_inference_threads_follow_its_cpu_limit(render, values: dict, threads: str) -> None:
    """A CPU limit is a CFS quota, not an affinity: left to itself, llama.cpp would start a thread per core
    of the node and be throttled. The chart sizes its threads to the limit."""
    inference = next(d for d in of_kind(render(values), "Deployment").values() if component(d) == "inference")
    env = {e["name"]: e.get("value") for e in pod_spec(inference)["containers"][0]["env"]}
    assert env["GOBLIN_INFERENCE_THREADS"] == threads
    assert env["GOBLIN_INFERENCE_BATCH_THREADS"] == threads


def test_pre_install_hooks_use_nothing_the_release_creates_later(rendered: dict) -> None:
    """A pre-install hook runs before the release's ordinary objects exist: a Job that named the chart's
    ServiceAccount, ConfigMap or a non-hook Secret would never start, and the install would hang."""
    for profile, objects in rendered.items():
        later = {
            (o["kind"], o["metadata"]["name"])
            for o in objects
            if "helm.sh/hook" not in o["metadata"].get("annotations", {})
        }
        for obj in objects:
            hooks = obj["metadata"].get("annotations", {}).get("helm.sh/hook", "")
            spec = pod_spec(obj)
            if "pre-install" not in hooks or spec is None:
                continue
            assert ("ServiceAccount", spec.get("serviceAccountName", "default")) not in later, profile
            for container in spec["containers"]:
                for source in container.get("envFrom", []):
                    assert ("ConfigMap", source.get("configMapRef", {}).get("name")) not in later, profile
                for entry in container.get("env", []):
                    ref = entry.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ("Secret", ref["name"]) not in later, profile
            for volume in spec.get("volumes", []):
                assert ("Secret", volume.get("secret", {}).get("secretName")) not in later, profile
                assert ("ConfigMap", volume.get("configMap", {}).get("name")) not in later, profile


def test_gateway_readiness_needs_only_what_every_request_needs(rendered: dict) -> None:
    """An inference restart (Recreate, minutes of model load) must not take every gateway out of rotation."""
    for profile, objects in rendered.items():
        gateway = next(d for d in of_kind(objects, "Deployment").values() if component(d) == "gateway")
        env = {e["name"]: e.get("value") for e in pod_spec(gateway)["containers"][0]["env"]}
        assert set(env["GOBLIN_READY_REQUIRES"].split(",")) == {"postgres", "redis", "auth", "router"}, profile
