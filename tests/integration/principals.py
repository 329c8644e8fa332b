"""Signed principals for tests that call a service directly, past the gateway: signed with the key the
suite's gateway holds, as the gateway would sign them (services.common.principal)."""

from __future__ import annotations

from goblin_tools.suite import Suite
from services.common.principal import PRINCIPAL_METADATA_KEY, SIGNING_KEY_NAME, Principal, PrincipalSigner


def suite_signer(suite: Suite) -> PrincipalSigner:
    """The suite gateway's signer."""
    return PrincipalSigner.from_pem((suite.home / "tls" / SIGNING_KEY_NAME).read_bytes())


def as_caller(suite: Suite, user_id: str = "", tenant_id: str = "default", **claims: object) -> tuple[tuple[str, str]]:
    """Call metadata carrying a fresh signed principal (each call needs its own: a second use is a replay)."""
    principal = Principal(user_id=user_id, tenant_id=tenant_id, **claims)  # type: ignore[arg-type]
    return ((PRINCIPAL_METADATA_KEY, suite_signer(suite).sign(principal)),)
