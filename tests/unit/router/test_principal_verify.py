"""The router's side of the signed principal, verified through libsodium: the forms of signature that
buffer-joining verification could be fooled by are refused, and what OpenSSL accepts, it accepts."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.principal import InvalidPrincipal, Principal, PrincipalSigner, static_claims

NOW = 1_800_000_000.0
CALLER = Principal(user_id="u1", tenant_id="acme", role="user", scopes=("chat",), api_key_id="k1")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def signed(key: Ed25519PrivateKey, claims: str) -> str:
    """An assertion over arbitrary claims text, signed with ``key`` (what only the gateway can make)."""
    body = b64(claims.encode())
    return f"{body}.{b64(key.sign(body.encode('ascii')))}"


def test_the_verifier_agrees_with_openssl_on_a_good_assertion(key: Ed25519PrivateKey) -> None:
    signer = PrincipalSigner(key, ttl_s=60)
    assertion = signer.sign(CALLER, now=NOW)
    body, _, signature = assertion.partition(".")
    key.public_key().verify(unb64(signature), body.encode("ascii"))  # OpenSSL says yes too
    verified = signer.verifier().verify(assertion, now=NOW)
    assert (verified.user_id, verified.tenant_id, verified.scopes) == ("u1", "acme", ("chat",))


def test_a_signature_moved_across_the_dot_is_refused(key: Ed25519PrivateKey) -> None:
    """libsodium checks signature||message as one buffer: a 63-byte signature plus a body starting with
    the missing byte must not line up into something that verifies."""
    signer = PrincipalSigner(key, ttl_s=60)
    body, _, signature = signer.sign(CALLER, now=NOW).partition(".")
    raw = unb64(signature)
    for forged in (b64(raw[:-1]), b64(raw + b"\0"), b64(raw[:32]), b64(raw * 2), ""):
        with pytest.raises(InvalidPrincipal):
            signer.verifier().verify(f"{body}.{forged}", now=NOW)


def test_a_changed_byte_anywhere_is_refused(key: Ed25519PrivateKey) -> None:
    signer = PrincipalSigner(key, ttl_s=60)
    assertion = signer.sign(CALLER, now=NOW)
    body, _, signature = assertion.partition(".")
    raw_body = bytearray(unb64(body))
    raw_body[raw_body.index(b"acme")] = ord("b")  # another tenant, same signature
    raw_sig = bytearray(unb64(signature))
    raw_sig[-1] ^= 1
    for changed in (f"{b64(bytes(raw_body))}.{signature}", f"{body}.{b64(bytes(raw_sig))}"):
        with pytest.raises(InvalidPrincipal):
            signer.verifier().verify(changed, now=NOW)


def test_another_signers_assertion_is_refused_even_for_the_same_claims(key: Ed25519PrivateKey) -> None:
    ours, theirs = PrincipalSigner(key, ttl_s=60), PrincipalSigner(Ed25519PrivateKey.generate(), ttl_s=60)
    with pytest.raises(InvalidPrincipal):
        ours.verifier().verify(theirs.sign(CALLER, now=NOW), now=NOW)


def test_signed_claims_that_are_not_an_object_or_not_json_are_refused(key: Ed25519PrivateKey) -> None:
    verifier = PrincipalSigner(key, ttl_s=60).verifier()
    for claims in ("[1, 2]", '"acme"', "{not json", ""):
        with pytest.raises(InvalidPrincipal):
            verifier.verify(signed(key, claims), now=NOW)


def test_an_expired_assertion_is_refused_however_it_was_signed(key: Ed25519PrivateKey) -> None:
    signer = PrincipalSigner(key, ttl_s=60)
    with pytest.raises(InvalidPrincipal, match="expired"):
        signer.verifier().verify(signer.sign(CALLER, now=NOW), now=NOW + 60 + signer.verifier().leeway_s + 1)


def test_a_budget_only_json_can_write_still_verifies(key: Ed25519PrivateKey) -> None:
    """json.dumps writes an infinite budget as Infinity, which orjson does not read: the standard
    library reads it after the signature has verified."""
    claims = json.loads(static_claims(CALLER) + "}")
    claims.update(bud=float("inf"), iat=NOW, exp=NOW + 60, jti="j" * 32)
    verified = PrincipalSigner(key, ttl_s=60).verifier().verify(signed(key, json.dumps(claims)), now=NOW)
    assert verified.tenant_daily_budget_usd == float("inf") and verified.tenant_id == "acme"
