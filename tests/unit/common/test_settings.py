from __future__ import annotations

from pathlib import Path

import pytest

from services.auth.config import AuthSettings
from services.common.settings import ConfigError, load_settings
from services.gateway.config import GatewaySettings
from services.rag.config import RagSettings
from services.router.config import RouterSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "GOBLIN_ENV", "GOBLIN_TLS_CERT_FILE", "GOBLIN_TLS_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    monkeypatch.setenv("GOBLIN_HOME", str(tmp_path))
    # Present unless a test removes it: most tests here are about other variables.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def stores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/goblin")


def test_defaults_follow_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/goblin")
    settings = load_settings(RouterSettings)
    assert settings.grpc_port == 50051
    assert settings.metrics_port == 9101
    assert settings.bind_host == "127.0.0.1"
    assert settings.peer_addresses()["auth"] == "127.0.0.1:50054"


def test_missing_required_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(RouterSettings)
    assert str(info.value) == "DATABASE_URL: Field required"


def test_bad_port_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/goblin")
    monkeypatch.setenv("GOBLIN_ROUTER_PORT", "eighty")
    with pytest.raises(ConfigError) as info:
        load_settings(RouterSettings)
    message = str(info.value)
    assert message.startswith("GOBLIN_ROUTER_PORT: ")
    assert "'eighty'" in message
    assert "\n" not in message


def test_secret_values_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://user:hunter2@db/goblin")
    with pytest.raises(ConfigError) as info:
        load_settings(RouterSettings)
    assert "DATABASE_URL" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_secret_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("postgresql://from-file/goblin\n")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    password = tmp_path / "admin-password"
    password.write_text("s3cret-from-vault")
    monkeypatch.setenv("GOBLIN_ADMIN_PASSWORD_FILE", str(password))
    settings = load_settings(AuthSettings)
    assert settings.database_url.get_secret_value() == "postgresql://from-file/goblin"
    assert settings.admin_password is not None
    assert settings.admin_password.get_secret_value() == "s3cret-from-vault"
    assert "s3cret" not in repr(settings)


def test_environment_beats_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("postgresql://from-file/goblin")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env/goblin")
    assert load_settings(RouterSettings).database_url.get_secret_value() == "postgresql://from-env/goblin"


def test_unreadable_secret_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="DATABASE_URL_FILE: cannot read"):
        load_settings(RouterSettings)


def test_unknown_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/goblin")
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        load_settings(RouterSettings)


def test_production_refuses_dev_certificates(stores: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOBLIN_ENV", "production")
    with pytest.raises(ConfigError, match="GOBLIN_TLS_CERT_FILE: required in production"):
        load_settings(GatewaySettings)


def test_tls_files_must_come_in_pairs_and_exist(stores: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOBLIN_TLS_CERT_FILE", str(tmp_path / "cert.pem"))
    with pytest.raises(ConfigError, match="set both or neither"):
        load_settings(GatewaySettings)
    monkeypatch.setenv("GOBLIN_TLS_KEY_FILE", str(tmp_path / "key.pem"))
    with pytest.raises(ConfigError, match="GOBLIN_TLS_CERT_FILE: no such file"):
        load_settings(GatewaySettings)


def test_cors_origins_are_validated(stores: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example.com, http://localhost:5173")
    assert load_settings(GatewaySettings).cors_origin_list == [
        "https://app.example.com",
        "http://localhost:5173",
    ]
    monkeypatch.setenv("CORS_ORIGINS", "app.example.com")
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        load_settings(GatewaySettings)


def test_chroma_defaults_to_embedded_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/goblin")
    assert load_settings(RagSettings).chroma_path == tmp_path / "chroma"
    monkeypatch.setenv("CHROMA_URL", "chroma:8000")
    with pytest.raises(ConfigError, match="CHROMA_URL"):
        load_settings(RagSettings)


def test_service_main_exits_2_with_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_URL_FILE")}
    env["GOBLIN_ROUTER_PORT"] = "not-a-port"
    env["DATABASE_URL"] = "postgresql://db/goblin"
    result = subprocess.run(
        [sys.executable, "-m", "services.router"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("goblin: configuration error: GOBLIN_ROUTER_PORT:")
