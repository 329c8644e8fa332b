"""Auth settings: the key-encryption key, production refusals, passkey origins, argon2 parameters."""

from __future__ import annotations

import base64
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.auth.config import AuthPolicySettings, AuthSettings
from services.auth.keyring import load_key_encryption_key
from services.auth.server import make_passwords
from services.common.settings import ConfigError, load_settings

STORES = {"DATABASE_URL": "postgresql://u@h/db", "REDIS_URL": "redis://localhost:6379/0"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "GOBLIN_AUTH_KEY_ENCRYPTION_KEY",
        "GOBLIN_AUTH_KEY_ENCRYPTION_KEY_FILE",
        "GOBLIN_ENV",
        "GOBLIN_WEBAUTHN_ORIGINS",
        "GOBLIN_GATEWAY_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOBLIN_HOME", str(tmp_path / "home"))
    for name, value in STORES.items():
        monkeypatch.setenv(name, value)


def test_development_makes_one_key_encryption_key_owner_only_and_keeps_it(tmp_path: Path) -> None:
    settings = load_settings(AuthPolicySettings)
    with ThreadPoolExecutor(4) as pool:  # replicas and the CLI starting together agree on one key
        keys = set(pool.map(lambda _: load_key_encryption_key(settings), range(8)))
    assert len(keys) == 1 and len(next(iter(keys))) == 32
    path = settings.key_encryption_key_file
    assert path.parent == tmp_path / "home" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_encryption_key(settings) in keys


def test_production_refuses_to_start_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOBLIN_ENV", "production")
    with pytest.raises(ConfigError, match="GOBLIN_AUTH_KEY_ENCRYPTION_KEY: required in production"):
        load_settings(AuthSettings)


def test_the_key_is_read_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    raw = bytes(range(32))
    secret = tmp_path / "kek"
    secret.write_text(base64.b64encode(raw).decode() + "\n")
    monkeypatch.setenv("GOBLIN_ENV", "production")
    monkeypatch.setenv("GOBLIN_WEBAUTHN_RP_ID", "goblin.example.com")
    monkeypatch.setenv("GOBLIN_WEBAUTHN_ORIGINS", "https://goblin.example.com")
    monkeypatch.setenv("GOBLIN_AUTH_KEY_ENCRYPTION_KEY_FILE", str(secret))
    assert load_key_encryption_key(load_settings(AuthSettings)) == raw


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_key_is_named_without_showing_it(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GOBLIN_AUTH_KEY_ENCRYPTION_KEY", value)
    with pytest.raises(ConfigError) as caught:
        load_settings(AuthSettings)
    assert str(caught.value).startswith("GOBLIN_AUTH_KEY_ENCRYPTION_KEY:") and value not in str(caught.value)


def test_passkey_origins_follow_the_gateway_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(AuthPolicySettings).webauthn_origin_list == [
        "https://localhost:8443",
        "https://127.0.0.1:8443",
    ]
    monkeypatch.setenv("GOBLIN_GATEWAY_PORT", "9443")
    assert load_settings(AuthPolicySettings).webauthn_origin_list[0] == "https://localhost:9443"
    monkeypatch.setenv("GOBLIN_WEBAUTHN_ORIGINS", "https://goblin.example.com/, https://app.example.com")
    assert load_settings(AuthPolicySettings).webauthn_origin_list == [
        "https://goblin.example.com",
        "https://app.example.com",
    ]


@pytest.mark.parametrize("origin", ["http://goblin.example.com", "https://goblin.example.com/login", "goblin"])
def test_passkey_origins_must_be_secure_origins(monkeypatch: pytest.MonkeyPatch, origin: str) -> None:
    monkeypatch.setenv("GOBLIN_WEBAUTHN_ORIGINS", origin)
    with pytest.raises(ConfigError, match="GOBLIN_WEBAUTHN_ORIGINS"):
        load_settings(AuthPolicySettings)


def test_session_defaults_follow_the_design_notes() -> None:
    settings = load_settings(AuthPolicySettings)
    assert (settings.session_ttl_s, settings.admin_session_ttl_s, settings.access_token_ttl_s) == (
        7 * 86400,
        3600,
        900,
    )


def test_argon2id_with_owasp_parameters_and_a_bounded_cost() -> None:
    passwords = make_passwords(load_settings(AuthPolicySettings))
    encoded = passwords.hasher.hash("a password")
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    started = time.perf_counter()
    passwords.hasher.verify(encoded, "a password")
    assert time.perf_counter() - started < 0.5, "a login must stay well under the 500 ms p95 target"
