"""The chart's configuration, as a pod would see it, is accepted by each service in production mode.

For every service the rendered ConfigMap and container environment are replayed into this process, every
mounted Secret item is written as a real file (real certificates from a suite CA, a real Ed25519 principal
pair, well-formed URLs and keys) at the mount path under a temporary root, and the service's own settings
class, its mTLS loader and the principal loaders must accept them: a missing variable, a wrong path or a
production rule the chart forgets fails here, not in a cluster."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common import principal
from services.common.settings import load_settings
from services.common.tls import cert_pem, key_pem, load_grpc_tls, make_ca, make_leaf
from tests.deploy.manifests import component, of_kind, pod_spec
from tests.deploy.test_config import SETTINGS

SECRET_VALUES = {
    "DATABASE_URL": "postgresql://goblin:pw@db.example:5432/goblin",
    "REDIS_URL": "rediss://:pw@redis.example:6379/0",
    "CHROMA_URL": "https://chroma.example:8000",
    "GOBLIN_AUTH_KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    "GOBLIN_ADMIN_PASSWORD": "a-long-admin-password",
    "OPENAI_API_KEY": "sk-test",
}


@pytest.fixture(scope="module")
def key_material() -> dict[str, bytes]:
    ca, ca_key = make_ca()
    files = {"ca.crt": cert_pem(ca)}
    for service in SETTINGS:
        cert, key = make_leaf(ca, ca_key, service)
        files[f"{service}/tls.crt"], files[f"{service}/tls.key"] = cert_pem(cert), key_pem(key)
    https, https_key = make_leaf(ca, ca_key, "localhost", with_ips=True)
    files["https/tls.crt"], files["https/tls.key"] = cert_pem(https), key_pem(https_key)
    signing = Ed25519PrivateKey.generate()
    files["signing.pem"] = signing.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files["verify.pem"] = signing.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return files


def _item_content(service: str, mount: str, key: str, material: dict[str, bytes]) -> bytes:
    if key in SECRET_VALUES:
        return SECRET_VALUES[key].encode()
    if key == "ca.crt":
        return material["ca.crt"]
    if key in ("signing.pem", "verify.pem"):
        return material[key]
    owner = "https" if mount.endswith("/https") else service
    return material[f"{owner}/{key}"]


def _pod_environment(objects: list[dict], service: str, root: Path, material: dict[str, bytes]) -> dict[str, str]:
    """The service's environment with every mount re-rooted under ``root`` and its Secret files written."""
    deployment = next(d for d in of_kind(objects, "Deployment").values() if component(d) == service)
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    for mount, volume in mounts.items():
        target = root / mount.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for item in volume.get("secret", {}).get("items", []):
            (target / item["path"]).write_bytes(_item_content(service, mount, item["key"], material))

    def reroot(value: str) -> str:
        return str(root / value.lstrip("/")) if any(value.startswith(m + "/") or value == m for m in mounts) else value

    config = next(c for n, c in of_kind(objects, "ConfigMap").items() if n.endswith("-config"))["data"]
    env = {name: reroot(value) for name, value in config.items()}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = reroot(entry["value"])
        elif entry["valueFrom"]["secretKeyRef"]["key"] in SECRET_VALUES:
            env[entry["name"]] = SECRET_VALUES[entry["valueFrom"]["secretKeyRef"]["key"]]
    return env


@pytest.mark.parametrize("profile", ["trial", "locked"])
@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_the_service_accepts_the_charts_configuration_in_production(
    rendered: dict,
    key_material: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    profile: str,
    service: str,
) -> None:
    env = _pod_environment(rendered[profile], service, tmp_path, key_material)
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    principal.load_verifier.cache_clear()
    principal.load_signer.cache_clear()
    try:
        settings = load_settings(SETTINGS[service])
        assert settings.production
        tls = load_grpc_tls(settings, service)
        assert tls.cert == key_material[f"{service}/tls.crt"] and tls.ca == key_material["ca.crt"]
        assert principal.load_verifier() is not None
        if service == "gateway":
            assert principal.load_signer() is not None
            assert settings.tls_cert_file.read_bytes() == key_material["https/tls.crt"]
    finally:
        principal.load_verifier.cache_clear()
        principal.load_signer.cache_clear()


def test_without_public_host_auth_stops_naming_the_setting(
    rendered: dict, key_material: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default values leave publicHost to the operator: auth refuses to start in production with one
    line that says what to set (NOTES.txt warns at install), rather than binding passkeys to localhost."""
    from services.common.settings import ConfigError

    env = _pod_environment(rendered["default"], "auth", tmp_path, key_material)
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="GOBLIN_WEBAUTHN"):
        load_settings(SETTINGS["auth"])
