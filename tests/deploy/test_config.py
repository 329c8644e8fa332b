"""Settings on Kubernetes: every variable the chart sets is one a service reads, every secret a service
needs comes from a Secret (as a file where the service reads ``NAME_FILE``), no secret value in a
ConfigMap, the mutual-TLS certificates and principal keys mounted where the settings point."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from services.auth.config import AuthSettings
from services.common.principal import PrincipalSettings
from services.common.settings import env_name
from services.common.topology import GRPC_PORTS
from services.executor.config import ExecutorSettings
from services.gateway.config import GatewaySettings
from services.inference.config import InferenceSettings
from services.rag.config import RagSettings
from services.router.config import RouterSettings
from tests.deploy.manifests import PROFILES, SENTINELS, component, of_kind, pod_spec

SETTINGS = {
    "gateway": GatewaySettings,
    "router": RouterSettings,
    "inference": InferenceSettings,
    "rag": RagSettings,
    "auth": AuthSettings,
    "executor": ExecutorSettings,
}
# What production refuses to start without, beyond the fields that have no default (their validators:
# GatewaySettings._tls_pair, RagSettings._default_path, AuthPolicySettings._policy, tls.load_grpc_tls,
# principal._key_pem).
PRODUCTION_REQUIRED = {
    "gateway": {"GOBLIN_TLS_CERT_FILE", "GOBLIN_TLS_KEY_FILE", "GOBLIN_PRINCIPAL_SIGNING_KEY"},
    "rag": {"CHROMA_URL"},
    "auth": {"GOBLIN_AUTH_KEY_ENCRYPTION_KEY", "GOBLIN_WEBAUTHN_RP_ID"},
}
EVERY_SERVICE_REQUIRES = {
    "GOBLIN_GRPC_TLS_CA_FILE",
    "GOBLIN_GRPC_TLS_CERT_FILE",
    "GOBLIN_GRPC_TLS_KEY_FILE",
    "GOBLIN_PRINCIPAL_VERIFY_KEY",
}


def _env_names(cls: type) -> set[str]:
    return {env_name(name, field) for name, field in cls.model_fields.items()}


def _secret_names(cls: type) -> set[str]:
    return {
        env_name(name, field)
        for name, field in cls.model_fields.items()
        if SecretStr in (getattr(field.annotation, "__args__", None) or (field.annotation,))
    }


ALL_SECRETS = set().union(*(_secret_names(c) for c in (*SETTINGS.values(), PrincipalSettings)))


def _configmap(objects: list[dict]) -> dict[str, str]:
    return next(c for name, c in of_kind(objects, "ConfigMap").items() if name.endswith("-config"))["data"]


def _container_env(objects: list[dict], service: str) -> dict[str, dict]:
    deployment = next(d for d in of_kind(objects, "Deployment").values() if component(d) == service)
    return {e["name"]: e for e in pod_spec(deployment)["containers"][0]["env"]}


def _mounts(objects: list[dict], service: str) -> dict[str, dict]:
    """mount path -> the volume mounted there, for the service's container."""
    deployment = next(d for d in of_kind(objects, "Deployment").values() if component(d) == service)
    spec = pod_spec(deployment)
    volumes = {v["name"]: v for v in spec["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in spec["containers"][0]["volumeMounts"]}


def _file_in_secret(objects: list[dict], service: str, path: str) -> tuple[str, str] | None:
    """(Secret name, key) behind a file path in the service's container, if a Secret provides it."""
    for mount_path, volume in _mounts(objects, service).items():
        if path.startswith(mount_path + "/") and "secret" in volume:
            item = next(i for i in volume["secret"]["items"] if i["path"] == path.removeprefix(mount_path + "/"))
            return volume["secret"]["secretName"], item["key"]
    return None


def test_production_mode_by_default(rendered: dict) -> None:
    config = _configmap(rendered["default"])
    assert config["GOBLIN_ENV"] == "production"
    assert config["GOBLIN_BIND_HOST"] == "0.0.0.0"
    for service, port in GRPC_PORTS.items():
        assert config[f"GOBLIN_{service.upper()}_ADDR"] == f"goblin-{service}:{port}"
    assert _configmap(rendered["certmanager"])["GOBLIN_ENV"] == "development"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_variable_the_chart_sets_is_read_by_the_service(rendered: dict, profile: str) -> None:
    objects = rendered[profile]
    known_everywhere = set().union(*(_env_names(c) for c in (*SETTINGS.values(), PrincipalSettings)))
    for name in _configmap(objects):
        assert name in known_everywhere or name.removesuffix("_FILE") in known_everywhere, (
            f"ConfigMap sets {name}, which no service reads"
        )
    for service, cls in SETTINGS.items():
        reads = _env_names(cls) | _env_names(PrincipalSettings)
        for name in _container_env(objects, service):
            assert name in reads or name.removesuffix("_FILE") in reads, (
                f"{service} is given {name}, which it does not read"
            )


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_required_setting_is_provided(rendered: dict, profile: str) -> None:
    objects = rendered[profile]
    config = _configmap(objects)
    for service, cls in SETTINGS.items():
        env = _container_env(objects, service)
        required = {env_name(n, f) for n, f in cls.model_fields.items() if f.is_required()}
        required |= EVERY_SERVICE_REQUIRES | PRODUCTION_REQUIRED.get(service, set())
        if profile == "default":
            required.discard("GOBLIN_WEBAUTHN_RP_ID")  # publicHost is the operator's; NOTES.txt says so
        for name in required:
            given = name in config or name in env or f"{name}_FILE" in env or f"{name}_FILE" in config
            assert given, f"{profile}: {service} needs {name}"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_secrets_come_from_secrets_as_files(rendered: dict, profile: str) -> None:
    objects = rendered[profile]
    config = _configmap(objects)
    assert not ALL_SECRETS & set(config), "a secret setting is in the ConfigMap"
    for service in SETTINGS:
        env = _container_env(objects, service)
        for name, entry in env.items():
            assert name not in ALL_SECRETS or "valueFrom" in entry, f"{service}: {name} has a literal value"
            if name.endswith("_FILE"):
                source = _file_in_secret(objects, service, entry["value"])
                assert source is not None, f"{service}: {name} points at {entry['value']}, not a mounted Secret"
        for name in ("GOBLIN_GRPC_TLS_CA_FILE", "GOBLIN_GRPC_TLS_CERT_FILE", "GOBLIN_GRPC_TLS_KEY_FILE"):
            assert _file_in_secret(objects, service, config[name]) is not None, (service, name)
        assert _file_in_secret(objects, service, config["GOBLIN_PRINCIPAL_VERIFY_KEY_FILE"]) is not None


def test_no_secret_value_outside_a_secret(rendered: dict) -> None:
    """The trial profile creates the Secret from sentinel values: none may appear anywhere else."""
    import yaml

    objects = rendered["trial"]
    for obj in objects:
        if obj["kind"] != "Secret":
            assert "SENTINEL" not in yaml.safe_dump(obj), f"{obj['kind']}/{obj['metadata']['name']} holds a secret"
    secrets = of_kind(objects, "Secret")
    decoded = {
        key: base64.b64decode(value).decode()
        for secret in secrets.values()
        for key, value in (secret.get("data") or {}).items()
    }
    # the check above is meaningful: the values really were rendered, into Secrets
    assert decoded["OPENAI_API_KEY"] == SENTINELS["OPENAI_API_KEY"]
    assert decoded["DATABASE_URL"] == "postgresql://goblin:SENTINEL-pg-password@goblin-postgresql:5432/goblin"
    assert decoded["REDIS_URL"] == SENTINELS["REDIS_URL"]


def test_principal_signing_key_only_on_the_gateway(rendered: dict) -> None:
    for profile, objects in rendered.items():
        for service in SETTINGS:
            principal = _mounts(objects, service)["/etc/goblin/principal"]["secret"]
            paths = {i["path"] for i in principal["items"]}
            assert paths == ({"verify.pem", "signing.pem"} if service == "gateway" else {"verify.pem"}), service
            expected = "my-principal" if profile == "locked" else "goblin-principal"
            assert principal["secretName"] == expected


def test_each_service_has_its_own_mtls_certificate(rendered: dict) -> None:
    for profile, objects in rendered.items():
        names = set()
        for service in SETTINGS:
            secret = _mounts(objects, service)["/etc/goblin/mtls"]["secret"]
            assert {i["key"] for i in secret["items"]} == {"ca.crt", "tls.crt", "tls.key"}
            names.add(secret["secretName"])
            if profile == "locked" and service == "router":
                assert secret["secretName"] == "my-router-mtls"
        assert len(names) == len(SETTINGS)  # no certificate shared between services
        gateway = _mounts(objects, "gateway")["/etc/goblin/https"]["secret"]
        assert gateway["secretName"] == ("my-https" if profile == "locked" else "goblin-https")
        env = _container_env(objects, "gateway")
        assert env["GOBLIN_TLS_CERT_FILE"]["value"] == "/etc/goblin/https/tls.crt"


def test_cert_manager_issues_what_the_services_verify(rendered: dict) -> None:
    assert not of_kind(rendered["default"], "Certificate")
    objects = rendered["certmanager"]
    certificates = of_kind(objects, "Certificate")
    by_secret = {c["spec"]["secretName"]: c for c in certificates.values()}
    for service in SETTINGS:
        secret = _mounts(objects, service)["/etc/goblin/mtls"]["secret"]["secretName"]
        certificate = by_secret[secret]["spec"]
        # gRPC clients check the bare service name (grpc.ssl_target_name_override), whatever they dial.
        assert service in certificate["dnsNames"]
        assert {"server auth", "client auth"} <= set(certificate["usages"])
        assert certificate["issuerRef"]["name"] == "goblin-suite-ca"
    https = by_secret["goblin-https"]["spec"]
    assert {"goblin.test.example", "goblin-gateway"} <= set(https["dnsNames"])
    assert https["issuerRef"]["name"] == "letsencrypt"


def test_extra_config_lands_in_the_configmap(rendered: dict) -> None:
    assert _configmap(rendered["trial"])["GOBLIN_RATE_LIMIT_CHAT"] == "60/minute"
    assert _configmap(rendered["trial"])["GOBLIN_WEBAUTHN_RP_ID"] == "goblin.test.example"
