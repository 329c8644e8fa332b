"""The canary release of docs/operations.md: a second release of the chart beside the stable one, with
one pod per tier that the stable Services send a share of the traffic, and nothing shared of its own."""

from __future__ import annotations

import tempfile
from typing import Any

import kubernetes_validate
import pytest
import yaml

from goblin_tools import deploy_tools
from tests.deploy import test_workloads
from tests.deploy.manifests import PROFILES, component, of_kind, parse, pod_spec

STABLE = deploy_tools.RENDER_RELEASE
CANARY_RELEASE = f"{STABLE}-canary"
CANARY = {"canary": {"enabled": True, "stableRelease": STABLE}}
OWN_KINDS = {"Deployment", "Service", "Pod", "Job"}  # Pods: helm test; Job: the migrations hook


@pytest.fixture(scope="module")
def stable(helm_bin: str) -> list[dict[str, Any]]:
    values = {**PROFILES["trial"], "metrics": {"serviceMonitor": {"enabled": True}}}
    return parse(deploy_tools.template(values))


@pytest.fixture(scope="module")
def canary(helm_bin: str) -> list[dict[str, Any]]:
    return parse(deploy_tools.template({**PROFILES["trial"], **CANARY}, release=CANARY_RELEASE))


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_a_canary_renders_one_deployment_per_tier_and_nothing_shared(canary: list) -> None:
    assert {o["kind"] for o in canary} <= OWN_KINDS
    deployments = of_kind(canary, "Deployment")
    assert {component(d) for d in deployments.values()} == {"gateway", "router", "rag", "auth", "executor"}
    for name, deployment in deployments.items():
        assert name.startswith(f"{STABLE}-canary-"), name
        assert deployment["spec"]["replicas"] == 1
        assert pod_labels(deployment)["goblin.dev/track"] == "canary"
    assert set(of_kind(canary, "Service")) == {f"{STABLE}-canary-gateway"}
    assert set(of_kind(canary, "Job")) == {f"{STABLE}-canary-migrations"}


def test_stable_services_and_policies_select_canary_pods_but_stable_deployments_do_not(
    stable: list, canary: list
) -> None:
    services = {component(s): s for s in of_kind(stable, "Service").values() if "selector" in s["spec"]}
    policies = of_kind(stable, "NetworkPolicy")
    stable_deployments = {component(d): d for d in of_kind(stable, "Deployment").values()}
    for deployment in of_kind(canary, "Deployment").values():
        tier, labels = component(deployment), pod_labels(deployment)
        # the stable Service sends this pod its share of the traffic ...
        assert matches(services[tier]["spec"]["selector"], labels), tier
        # ... the stable release's default deny and the tier's allowed flows govern it ...
        assert matches(policies[f"{STABLE}-default-deny"]["spec"]["podSelector"]["matchLabels"], labels)
        assert matches(policies[f"{STABLE}-{tier}"]["spec"]["podSelector"]["matchLabels"], labels)
        # ... and neither Deployment claims the other's pods.
        stable_deployment = stable_deployments[tier]
        assert not matches(stable_deployment["spec"]["selector"]["matchLabels"], labels), tier
        assert not matches(deployment["spec"]["selector"]["matchLabels"], pod_labels(stable_deployment)), tier
        assert pod_labels(stable_deployment)["goblin.dev/track"] == "stable"


def references(workload: dict[str, Any]) -> set[tuple[str, str]]:
    """The ServiceAccount, Secrets and ConfigMaps a workload's pods use."""
    spec = pod_spec(workload)
    found = {("ServiceAccount", spec.get("serviceAccountName", "default"))}
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            found.add(("Secret", volume["secret"]["secretName"]))
        if "configMap" in volume:
            found.add(("ConfigMap", volume["configMap"]["name"]))
    for container in spec["containers"]:
        found |= {("ConfigMap", s["configMapRef"]["name"]) for s in container.get("envFrom", [])}
        for env in container.get("env", []):
            if ref := env.get("valueFrom", {}).get("secretKeyRef"):
                found.add(("Secret", ref["name"]))
    return found


def test_canary_pods_use_exactly_the_stable_release_objects(stable: list, canary: list) -> None:
    stable_by_tier = {component(d): d for d in of_kind(stable, "Deployment").values()}
    stable_made = {(o["kind"], o["metadata"]["name"]) for o in stable}
    for deployment in of_kind(canary, "Deployment").values():
        assert references(deployment) == references(stable_by_tier[component(deployment)])
    for workload in [*of_kind(canary, "Pod").values(), *of_kind(canary, "Job").values()]:
        # hooks and test pods: the goblin Secret and ConfigMap the stable release made (or was given)
        for kind, name in references(workload):
            if kind == "ConfigMap":
                assert (kind, name) in stable_made
            if kind == "Secret" and name.endswith("-secrets"):
                assert (kind, name) in stable_made


def test_the_canary_gateway_service_and_its_helm_test_reach_only_canary_pods(canary: list) -> None:
    service = of_kind(canary, "Service")[f"{STABLE}-canary-gateway"]
    gateways = [d for d in of_kind(canary, "Deployment").values() if component(d) == "gateway"]
    assert matches(service["spec"]["selector"], pod_labels(gateways[0]))
    assert service["spec"]["selector"]["goblin.dev/track"] == "canary"
    for pod in of_kind(canary, "Pod").values():
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["GOBLIN_SMOKE_URL"].startswith(f"https://{STABLE}-canary-gateway:")


def test_cert_manager_https_certificate_names_the_canary_gateway(helm_bin: str) -> None:
    objects = parse(deploy_tools.template(PROFILES["certmanager"]))
    https = of_kind(objects, "Certificate")[f"{STABLE}-https"]
    assert f"{STABLE}-canary-gateway" in https["spec"]["dnsNames"]


def test_the_track_reaches_prometheus(stable: list) -> None:
    monitor = next(iter(of_kind(stable, "ServiceMonitor").values()))
    assert monitor["spec"]["podTargetLabels"] == ["goblin.dev/track"]


def test_canary_objects_pass_every_workload_check(canary: list) -> None:
    for obj in canary:
        kubernetes_validate.validate(obj, deploy_tools.KUBERNETES_VERSION, strict=True)
    test_workloads.test_probes_on_every_container({"canary": canary}, "canary")
    test_workloads.test_graceful_stop({"canary": canary}, "canary")
    test_workloads.test_least_privilege_everywhere({"canary": canary}, "canary")


def test_helm_lint_strict_as_a_canary(helm_bin: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(CANARY, f)
        f.flush()
        result = deploy_tools.helm("lint", "--strict", str(deploy_tools.CHART_DIR), "-f", f.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "release", "message"),
    [
        ({"canary": {"enabled": True, "services": ["gateway", "inference"]}}, CANARY_RELEASE, "/canary/services/1"),
        ({"canary": {"enabled": True, "stableRelease": STABLE}}, STABLE, "release of its own"),
    ],
)
def test_bad_canary_values_are_refused(helm_bin: str, values: dict, release: str, message: str) -> None:
    with pytest.raises(deploy_tools.ToolError) as excinfo:
        deploy_tools.template(values, release=release)
    assert message in str(excinfo.value)
