"""Production refuses what is only for one developer's machine: embedded stores, a localhost passkey
relying party, an http or loopback passkey origin (SPEC)."""

from __future__ import annotations

import base64

import pytest

from goblin_tools.supervisor import SuiteSettings
from services.auth.config import AuthPolicySettings
from services.common.settings import ConfigError, load_settings
from services.rag.config import RagSettings

KEK = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("DATABASE_URL", "REDIS_URL", "CHROMA_URL", "GOBLIN_WEBAUTHN_RP_ID", "GOBLIN_WEBAUTHN_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOBLIN_ENV", "production")
    monkeypatch.setenv("GOBLIN_AUTH_KEY_ENCRYPTION_KEY", KEK)
    return monkeypatch


def test_goblin_up_refuses_embedded_stores(production: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL, REDIS_URL, CHROMA_URL: required in production"):
        load_settings(SuiteSettings)
    production.setenv("DATABASE_URL", "postgresql://db/goblin")
    production.setenv("REDIS_URL", "redis://redis:6379/0")
    with pytest.raises(ConfigError, match="^CHROMA_URL: required in production"):
        load_settings(SuiteSettings)
    production.setenv("CHROMA_URL", "http://chroma:8000")
    assert load_settings(SuiteSettings).production


def test_rag_refuses_the_embedded_chroma(production: pytest.MonkeyPatch) -> None:
    production.setenv("DATABASE_URL", "postgresql://db/goblin")
    with pytest.raises(ConfigError, match="CHROMA_URL: required in production"):
        load_settings(RagSettings)
    production.setenv("CHROMA_URL", "http://chroma:8000")
    assert load_settings(RagSettings).chroma_url == "http://chroma:8000"


@pytest.mark.parametrize("rp_id", ["localhost", "app.localhost", "127.0.0.1", "::1"])
def test_auth_refuses_a_local_relying_party(production: pytest.MonkeyPatch, rp_id: str) -> None:
    production.setenv("GOBLIN_WEBAUTHN_ORIGINS", "https://goblin.example.com")
    production.setenv("GOBLIN_WEBAUTHN_RP_ID", rp_id)
    with pytest.raises(ConfigError, match="GOBLIN_WEBAUTHN_RP_ID: .* refused in production"):
        load_settings(AuthPolicySettings)


@pytest.mark.parametrize("origin", ["", "http://localhost:8443", "https://127.0.0.1:8443"])
def test_auth_refuses_local_or_http_origins(production: pytest.MonkeyPatch, origin: str) -> None:
    # "" is the default: the localhost origins of the gateway's port.
    production.setenv("GOBLIN_WEBAUTHN_RP_ID", "goblin.example.com")
    production.setenv("GOBLIN_WEBAUTHN_ORIGINS", origin)
    with pytest.raises(ConfigError, match="GOBLIN_WEBAUTHN_ORIGINS: .* refused in production"):
        load_settings(AuthPolicySettings)


def test_auth_accepts_a_public_https_site(production: pytest.MonkeyPatch) -> None:
    production.setenv("GOBLIN_WEBAUTHN_RP_ID", "goblin.example.com")
    production.setenv("GOBLIN_WEBAUTHN_ORIGINS", "https://goblin.example.com")
    assert load_settings(AuthPolicySettings).webauthn_rp_id == "goblin.example.com"
