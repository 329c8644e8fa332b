"""Auth metrics: sign-ins, credential checks and the security events an alert would watch.

The auth dashboard reads: logins and failures (``sign_ins_total`` by outcome), lockouts
(``outcome="locked"`` and ``security_events_total{event="account_locked"}``), passkey sign-ins
(``method="passkey"``) and passkeys registered or removed (``passkeys_total``)."""

from __future__ import annotations

from prometheus_client import Counter

SIGN_INS = Counter(
    "goblin_auth_sign_ins_total",
    "Sign-in attempts by method (password, passkey) and outcome (success, failure, locked).",
    ["method", "outcome"],
)
AUTHENTICATIONS = Counter(
    "goblin_auth_authentications_total",
    "Bearer credentials checked (gateway cache misses) by kind (api_key, access_token, other) and outcome.",
    ["kind", "outcome"],
)
SECURITY_EVENTS = Counter(
    "goblin_auth_security_events_total",
    "Events worth an alert: refresh_token_reused, passkey_clone_suspected, account_locked, quota_exhausted.",
    ["event"],
)
KEY_ROTATIONS = Counter("goblin_auth_signing_key_rotations_total", "Signing-key rotations done by this process.")
PASSKEY_CHANGES = Counter("goblin_auth_passkeys_total", "Passkeys registered or deleted, by change.", ["change"])
