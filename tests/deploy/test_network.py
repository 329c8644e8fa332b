"""NetworkPolicies and the Ingress: default deny, only the gateway reachable from outside, each service
only from its callers, the stores only from the services that use them, executor without egress."""

from __future__ import annotations

import pytest

from services.common.topology import GRPC_PORTS
from tests.deploy.manifests import PROFILES, component, of_kind

# Who calls whom over gRPC (the supervisor's topology as deployed): written out here, independently of
# the chart's own table, so a chart change that opens a path fails this test.
CALLERS = {
    "router": {"gateway"},
    "auth": {"gateway"},
    "rag": {"gateway", "router"},
    "executor": {"gateway"},
    # the gateway: health only, for /health/ready (services/gateway/clients/health.py checks every backend)
    "inference": {"gateway", "router", "rag"},
}
STORE_USERS = {
    5432: {"gateway", "router", "rag", "auth", "executor", "migrations"},
    6379: {"gateway", "router", "auth"},
    8000: {"rag"},
}
POLICED = {"gateway", "router", "inference", "rag", "auth", "executor", "migrations", "helm-test"}


def _policies(objects: list[dict]) -> dict[str, dict]:
    return {
        component(p): p
        for p in of_kind(objects, "NetworkPolicy").values()
        if "-default-deny" not in p["metadata"]["name"]
    }


def _peer_components(peers: list[dict]) -> set[str]:
    return {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in peers
        if "podSelector" in p and "namespaceSelector" not in p
    }


def _ports(rule: dict) -> set:
    return {p["port"] for p in rule.get("ports", [])}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_default_deny_covers_every_pod_of_the_release(rendered: dict, profile: str) -> None:
    deny = next(
        p
        for p in of_kind(rendered[profile], "NetworkPolicy").values()
        if p["metadata"]["name"].endswith("-default-deny")
    )
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    selector = deny["spec"]["podSelector"]["matchLabels"]
    for workload in rendered[profile]:
        if workload["kind"] in ("Deployment", "StatefulSet", "Job"):
            labels = workload["spec"]["template"]["metadata"]["labels"]
        elif workload["kind"] == "Pod":
            labels = workload["metadata"]["labels"]
        else:
            continue
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
        # and a policy of its own lets through exactly what it needs
        assert labels["app.kubernetes.io/component"] in _policies(rendered[profile]) | {
            "postgres": 1,
            "redis": 1,
            "chroma": 1,
        }


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_service_is_reachable_only_from_its_callers(rendered: dict, profile: str) -> None:
    policies = _policies(rendered[profile])
    assert POLICED <= set(policies)
    for service, callers in CALLERS.items():
        ingress = policies[service]["spec"]["ingress"]
        grpc_rules = [r for r in ingress if _ports(r) == {"grpc"}]
        assert len(grpc_rules) == 1
        assert _peer_components(grpc_rules[0]["from"]) == callers, service
        assert len(grpc_rules[0]["from"]) == len(callers)  # no namespace or address peer beside them
        for rule in ingress:
            assert rule in grpc_rules or _ports(rule) == {"metrics"}, (service, rule)
    for name in ("migrations", "helm-test"):
        assert not policies[name]["spec"].get("ingress")  # nothing may connect to a Job or a test pod


def test_only_the_gateway_is_reachable_from_outside(rendered: dict) -> None:
    default = _policies(rendered["default"])["gateway"]["spec"]["ingress"]
    assert default == [{"ports": [{"port": "https", "protocol": "TCP"}]}]  # anyone, HTTPS only
    locked = _policies(rendered["locked"])["gateway"]["spec"]["ingress"]
    assert len(locked) == 1
    peers = locked[0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}} in peers
    assert _peer_components(peers) == {"helm-test"}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_egress_only_to_callees_and_needed_stores(rendered: dict, profile: str) -> None:
    policies = _policies(rendered[profile])
    for service in POLICED:
        egress = policies[service]["spec"]["egress"]
        dns = egress[0]
        assert _ports(dns) == {53}
        callees = set()
        store_ports = set()
        other = []
        for rule in egress[1:]:
            peers = _peer_components(rule.get("to", []))
            if peers and peers <= {*CALLERS, "gateway"}:
                callees |= peers
                for peer in peers:
                    assert _ports(rule) == ({8443} if peer == "gateway" else {GRPC_PORTS[peer]})
            elif _ports(rule) <= set(STORE_USERS):
                store_ports |= _ports(rule)
            else:
                other.append(rule)
        expected_callees = {callee for callee, callers in CALLERS.items() if service in callers}
        if service == "helm-test":
            expected_callees = {"gateway"}
        assert callees == expected_callees, (profile, service)
        assert store_ports == {port for port, users in STORE_USERS.items() if service in users}, (profile, service)
        if service == "router":
            assert [_ports(r) for r in other] == [{443}]  # the remote LLM providers
        elif service not in ("executor", "migrations", "helm-test"):
            assert other == []
        else:
            assert other == [], (profile, service)


def test_executor_reaches_nothing_but_postgres_and_dns(rendered: dict) -> None:
    for profile, objects in rendered.items():
        egress = _policies(objects)["executor"]["spec"]["egress"]
        assert [_ports(r) for r in egress] == [{53}, {5432}], profile


def test_store_peers_follow_the_deployment(rendered: dict) -> None:
    locked = _policies(rendered["locked"])
    for service, port, cidr in (
        ("router", 5432, "10.10.0.0/24"),
        ("auth", 6379, "10.10.1.0/24"),
        ("rag", 8000, "10.10.2.0/24"),
    ):
        rule = next(r for r in locked[service]["spec"]["egress"] if _ports(r) == {port})
        assert rule["to"] == [{"ipBlock": {"cidr": cidr}}]
    trial_objects = rendered["trial"]
    trial = _policies(trial_objects)
    for service, port, store in (("router", 5432, "postgres"), ("auth", 6379, "redis"), ("rag", 8000, "chroma")):
        rule = next(r for r in trial[service]["spec"]["egress"] if _ports(r) == {port})
        assert _peer_components(rule["to"]) == {store}
    for store, port in (("postgres", 5432), ("redis", 6379), ("chroma", 8000)):
        policy = trial[store]["spec"]
        assert policy["egress"] == []
        assert _peer_components(policy["ingress"][0]["from"]) == STORE_USERS[port]


def test_metrics_ports_only_for_the_configured_scrapers(rendered: dict) -> None:
    for service in ("gateway", *CALLERS):
        default = _policies(rendered["default"])[service]["spec"]["ingress"]
        assert all(_ports(r) != {"metrics"} for r in default)
        trial = _policies(rendered["trial"])[service]["spec"]["ingress"]
        metrics = next(r for r in trial if _ports(r) == {"metrics"})
        assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]


def test_ingress_reencrypts_or_passes_tls_through(rendered: dict) -> None:
    assert not of_kind(rendered["default"], "Ingress")
    reencrypt = next(iter(of_kind(rendered["trial"], "Ingress").values()))
    assert reencrypt["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert reencrypt["spec"]["tls"] == [{"hosts": ["goblin.test.example"], "secretName": "goblin-https"}]
    passthrough = next(iter(of_kind(rendered["certmanager"], "Ingress").values()))
    assert passthrough["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-passthrough"] == "true"
    assert "tls" not in passthrough["spec"]
    for ingress in (reencrypt, passthrough):
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": "goblin-gateway", "port": {"name": "https"}}


def test_the_gateway_reaches_every_backend_it_opens_a_channel_to(rendered: dict) -> None:
    """GatewayClients opens one mTLS channel per backend service and /health/ready asks each one: a
    policy that left one out would keep every gateway pod unready."""
    import inspect

    from services.common.topology import BACKEND_SERVICES
    from services.gateway.clients import GatewayClients

    assert "BACKEND_SERVICES" in inspect.getsource(GatewayClients.__init__)
    egress = _policies(rendered["default"])["gateway"]["spec"]["egress"]
    reached = set().union(*(_peer_components(rule.get("to", [])) for rule in egress))
    assert set(BACKEND_SERVICES) <= reached
