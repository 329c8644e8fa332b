"""The signed principal: what verifies, what does not, the replay guard, the gate's allow-list, the keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.principal import (
    PRINCIPAL_METADATA_KEY,
    InvalidPrincipal,
    Principal,
    PrincipalGate,
    PrincipalSigner,
    ReplayGuard,
    ensure_principal_keys,
    principal_required,
    suite_principal_env,
)

NOW = 1_800_000_000.0
CALLER = Principal(
    user_id="u1",
    tenant_id="acme",
    role="admin",
    scopes=("chat", "admin"),
    api_key_id="k1",
    session_id="s1",
    tenant_daily_budget_usd=2.5,
    key_tokens_per_day=1000,
    requests_per_day=50,
)


@pytest.fixture
def signer() -> PrincipalSigner:
    return PrincipalSigner(Ed25519PrivateKey.generate(), ttl_s=60)


def test_a_signed_principal_verifies_with_every_claim(signer: PrincipalSigner) -> None:
    verified = signer.verifier().verify(signer.sign(CALLER, now=NOW), now=NOW + 1)
    assert (verified.user_id, verified.tenant_id, verified.role, verified.scopes) == (
        "u1",
        "acme",
        "admin",
        CALLER.scopes,
    )
    assert (verified.api_key_id, verified.session_id, verified.requests_per_day) == ("k1", "s1", 50)
    assert (verified.tenant_daily_budget_usd, verified.key_tokens_per_day) == (2.5, 1000)
    assert verified.expires_at == NOW + 60 and verified.is_admin and len(verified.jti) == 32
    unlimited = signer.verifier().verify(signer.sign(Principal(user_id="u", tenant_id="t"), now=NOW), now=NOW)
    assert unlimited.tenant_daily_budget_usd is None and unlimited.key_tokens_per_day is None


def test_each_signature_has_its_own_jti(signer: PrincipalSigner) -> None:
    verifier = signer.verifier()
    first, second = (verifier.verify(signer.sign(CALLER, now=NOW), now=NOW) for _ in range(2))
    assert first.jti != second.jti


def test_admin_needs_the_role_and_the_scope() -> None:
    assert not Principal(user_id="u", tenant_id="t", role="user", scopes=("*",)).is_admin
    assert not Principal(user_id="u", tenant_id="t", role="admin", scopes=("chat",)).is_admin
    assert Principal(user_id="u", tenant_id="t", role="admin", scopes=("*",)).is_admin


def _tampered(assertion: str) -> str:
    body, _, signature = assertion.partition(".")
    return f"{body[:-1]}{'A' if body[-1] != 'A' else 'B'}.{signature}"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s: PrincipalSigner(Ed25519PrivateKey.generate(), 60).sign(CALLER, now=NOW), id="other-key"),
        pytest.param(lambda s: s.sign(CALLER, now=NOW - 120), id="expired"),
        pytest.param(lambda s: s.sign(CALLER, now=NOW + 120), id="from-the-future"),
        pytest.param(lambda s: s.sign(Principal(user_id="u", tenant_id="t", audience="elsewhere"), now=NOW), id="aud"),
        pytest.param(lambda s: s.sign(Principal(user_id="u", tenant_id="t", issuer="someone"), now=NOW), id="iss"),
        pytest.param(lambda s: _tampered(s.sign(CALLER, now=NOW)), id="tampered"),
        pytest.param(lambda s: s.sign(CALLER, now=NOW).split(".")[0], id="unsigned"),
        pytest.param(lambda s: "x" * 10_000, id="oversized"),
        pytest.param(lambda s: "!!.!!", id="garbage"),
        pytest.param(lambda s: "", id="empty"),
    ],
)
def test_what_does_not_verify(signer: PrincipalSigner, make) -> None:  # noqa: ANN001
    with pytest.raises(InvalidPrincipal):
        signer.verifier().verify(make(signer), now=NOW)


def test_the_replay_guard_refuses_a_second_use_and_stays_bounded() -> None:
    guard = ReplayGuard(capacity=3)
    first = Principal(user_id="u", tenant_id="t", jti="a", expires_at=NOW + 60)
    guard.admit(first, now=NOW)
    with pytest.raises(InvalidPrincipal, match="replayed"):
        guard.admit(first, now=NOW)
    for jti in "bcde":
        guard.admit(Principal(user_id="u", tenant_id="t", jti=jti, expires_at=NOW + 60), now=NOW)
    assert len(guard._seen) <= 3
    # Expired entries go first, so a long-lived process keeps only what could still be replayed.
    guard.admit(Principal(user_id="u", tenant_id="t", jti="late", expires_at=NOW + 400), now=NOW + 300)
    assert list(guard._seen) == ["late"]


def test_the_gate_allows_only_the_listed_methods_without_a_principal(signer: PrincipalSigner) -> None:
    gate = PrincipalGate(signer.verifier(), ReplayGuard())
    assert gate.check("/goblin.v1.Auth/Login", ()) is None
    assert gate.check("/goblin.v1.Inference/Chat", ()) is None
    for method in ("/goblin.v1.Auth/CreateApiKey", "/goblin.v1.Router/Chat", "/goblin.v1.Router/GetUsage"):
        assert principal_required(method)
        with pytest.raises(InvalidPrincipal):
            gate.check(method, ())
    assertion = signer.sign(CALLER)
    assert gate.check("/goblin.v1.Router/Chat", ((PRINCIPAL_METADATA_KEY, assertion),)) == (
        signer.verifier().verify(assertion)
    )
    with pytest.raises(InvalidPrincipal, match="replayed"):
        gate.check("/goblin.v1.Auth/ListApiKeys", ((PRINCIPAL_METADATA_KEY, assertion),))
    # A principal sent to a public method is checked too: a forged one is refused there as well.
    with pytest.raises(InvalidPrincipal):
        gate.check("/goblin.v1.Auth/Login", ((PRINCIPAL_METADATA_KEY, "forged.sig"),))


def test_without_a_verify_key_every_principal_is_refused() -> None:
    gate = PrincipalGate(None, ReplayGuard())
    signed = PrincipalSigner(Ed25519PrivateKey.generate(), 60).sign(CALLER)
    with pytest.raises(InvalidPrincipal):
        gate.check("/goblin.v1.Router/Chat", ((PRINCIPAL_METADATA_KEY, signed),))
    assert gate.check("/goblin.v1.Auth/GetJwks", ()) is None


def test_goblin_up_makes_the_pair_once_with_a_private_key_only_the_owner_reads(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    private, public = ensure_principal_keys(tls)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert ensure_principal_keys(tls) == (private, public) and private.read_bytes() == private.read_bytes()
    signer = PrincipalSigner.from_pem(private.read_bytes())
    assert signer.verifier().verify(signer.sign(CALLER)).user_id == "u1"
    env = suite_principal_env({"GOBLIN_PRINCIPAL_SIGNING_KEY_FILE": "/elsewhere", "PATH": "/bin"}, tls)
    assert env == {"PATH": "/bin", "GOBLIN_PRINCIPAL_VERIFY_KEY_FILE": str(public)}, "no child learns the signing key"


def test_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    target = tmp_path / "elsewhere"
    os.symlink(target, tls / "principal-signing.pem")
    (tls / "principal-verify.pem").write_text("stale")
    # The half pair is replaced: the link itself is removed, never written through.
    ensure_principal_keys(tls)
    assert not target.exists() and not (tls / "principal-signing.pem").is_symlink()


def test_production_without_a_key_refuses_to_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from services.common import principal

    monkeypatch.setenv("GOBLIN_ENV", "production")
    monkeypatch.setenv("GOBLIN_HOME", str(tmp_path))
    for name in ("GOBLIN_PRINCIPAL_VERIFY_KEY", "GOBLIN_PRINCIPAL_VERIFY_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    principal.load_verifier.cache_clear()
    principal.load_signer.cache_clear()
    try:
        with pytest.raises(SystemExit, match="GOBLIN_PRINCIPAL_VERIFY_KEY"):
            principal.load_verifier()
        with pytest.raises(SystemExit, match="GOBLIN_PRINCIPAL_SIGNING_KEY"):
            principal.load_signer()
    finally:
        principal.load_verifier.cache_clear()
        principal.load_signer.cache_clear()
