"""How credentials are made and checked, as the auth areas read it (built from the settings once)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.auth.config import AuthPolicySettings
from services.auth.passwords import LockoutPolicy
from services.auth.webauthn_ceremonies import WebAuthnConfig


@dataclass(frozen=True)
class AuthPolicy:
    access_token_ttl_s: int = 900
    jwt_leeway_s: int = 30
    session_ttl_s: int = 7 * 86400
    admin_session_ttl_s: int = 3600
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    self_registration: bool = False
    self_registration_tenant: str = "default"
    webauthn: WebAuthnConfig = field(
        default_factory=lambda: WebAuthnConfig("localhost", "Goblin", ["https://localhost:8443"])
    )

    @classmethod
    def from_settings(cls, settings: AuthPolicySettings) -> AuthPolicy:
        return cls(
            access_token_ttl_s=settings.access_token_ttl_s,
            jwt_leeway_s=settings.jwt_leeway_s,
            session_ttl_s=settings.session_ttl_s,
            admin_session_ttl_s=settings.admin_session_ttl_s,
            lockout=LockoutPolicy(
                max_failures=settings.login_max_failures,
                base_s=settings.login_lockout_base_s,
                max_s=settings.login_lockout_max_s,
                window_s=settings.login_failure_window_s,
            ),
            self_registration=settings.self_registration,
            self_registration_tenant=settings.self_registration_tenant,
            webauthn=WebAuthnConfig(
                rp_id=settings.webauthn_rp_id,
                rp_name=settings.webauthn_rp_name,
                origins=settings.webauthn_origin_list,
                require_user_verification=settings.webauthn_require_user_verification,
            ),
        )

    @property
    def access_token_lifetime_s(self) -> int:
        """How long an access token issued now may still be accepted: a revocation must outlast it."""
        return self.access_token_ttl_s + self.jwt_leeway_s
