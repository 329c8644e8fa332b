"""The value sets the chart is rendered with, and helpers over the rendered objects.

Profiles:
- ``default``: values.yaml as shipped (what deploy/k8s/ holds);
- ``trial``: the chart creates the Secret (sentinel values) and runs its own stores, Ingress re-encrypting,
  monitoring flags on;
- ``certmanager``: certificates from cert-manager, Ingress in passthrough, development mode, router without
  an HPA;
- ``locked``: explicit NetworkPolicy peers for every external flow, an image digest, existing Secret names,
  an existing model claim.
"""

from __future__ import annotations

from typing import Any

import yaml

# Sentinels: if one shows up anywhere but a Secret, a secret leaked.
SENTINELS = {
    "DATABASE_URL": "postgresql://goblin:SENTINEL-db-password@db.example:5432/goblin",
    "REDIS_URL": "redis://:SENTINEL-redis-password@redis.example:6379/0",
    "CHROMA_URL": "http://chroma.example:8000/SENTINEL-chroma",
    "GOBLIN_AUTH_KEY_ENCRYPTION_KEY": "SENTINEL-kek-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "GOBLIN_ADMIN_PASSWORD": "SENTINEL-admin-password",
    "OPENAI_API_KEY": "sk-SENTINEL-openai",
    "GOBLIN_SMOKE_API_KEY": "SENTINEL-smoke-key",
}

PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "trial": {
        "publicHost": "goblin.test.example",
        "secrets": {"create": True, "values": {k: v for k, v in SENTINELS.items() if k != "DATABASE_URL"}},
        "postgresql": {"enabled": True, "auth": {"password": "SENTINEL-pg-password"}},
        "redis": {"enabled": True},
        "chroma": {"enabled": True},
        "ingress": {"enabled": True, "mode": "reencrypt"},
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboards": {"enabled": True},
        },
        "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
        "config": {"GOBLIN_RATE_LIMIT_CHAT": "60/minute"},
    },
    "certmanager": {
        "environment": "development",
        "publicHost": "goblin.test.example",
        "tls": {
            "certManager": {
                "enabled": True,
                "httpsIssuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            }
        },
        "ingress": {"enabled": True, "mode": "passthrough"},
        "services": {"router": {"autoscaling": {"enabled": False}, "replicas": 3}},
    },
    "locked": {
        "publicHost": "goblin.test.example",
        "image": {"digest": "sha256:" + "a" * 64},
        "secrets": {"existingSecret": "my-goblin"},
        "principal": {"existingSecret": "my-principal"},
        "tls": {"httpsSecret": "my-https", "mtlsSecrets": {"router": "my-router-mtls"}},
        "services": {
            "inference": {
                "persistence": {"existingClaim": "models"},
                "model": {"path": "/models/qwen.gguf", "id": "qwen"},
            }
        },
        "networkPolicy": {
            "gatewayFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}],
            "postgres": {"to": [{"ipBlock": {"cidr": "10.10.0.0/24"}}]},
            "redis": {"to": [{"ipBlock": {"cidr": "10.10.1.0/24"}}]},
            "chroma": {"to": [{"ipBlock": {"cidr": "10.10.2.0/24"}}]},
            "providers": {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]},
        },
    },
}


def parse(stream: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(stream) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template's spec of a workload (or the Pod's own spec)."""
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        return obj["spec"]["template"]["spec"]
    return None
