"""Access tokens: what is accepted, and every forgery the issue names, refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.auth.keyring import KeyCipher, SealError, generate_signing_key, jwk_thumbprint
from services.auth.repository import AuditEvent
from services.auth.tokens import TokenCodec
from services.common.errors import Unauthenticated
from tests.unit.auth.fakes import KEK, FakeStore, make_keyring


@pytest.fixture
async def ring_and_codec() -> tuple[FakeStore, TokenCodec]:
    store = FakeStore()
    keyring = make_keyring(store)
    await keyring.ensure()
    return store, TokenCodec(keyring, issuer="goblin", audience="goblin-api", ttl_s=900, leeway_s=5)


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "goblin",
        "aud": "goblin-api",
        "sub": "u1",
        "tid": "default",
        "email": "a@example.com",
        "role": "user",
        "scope": "*",
        "sid": "s1",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "j1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


async def current_private_key(store: FakeStore) -> tuple[str, ec.EllipticCurvePrivateKey]:
    record = next(k for k in store.signing_keys.values() if k.state == "current")
    der = KeyCipher(KEK).open(record.kid, record.private_key)
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return record.kid, key


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_issued_token_verifies_with_every_claim(ring_and_codec: tuple[FakeStore, TokenCodec]) -> None:
    store, codec = ring_and_codec
    session_end = int(time.time()) + 120
    token, expires = await codec.issue(
        user_id="u1",
        tenant_id="t1",
        email="a@example.com",
        role="admin",
        scopes=["*"],
        session_id="s1",
        session_expires_at=session_end,
    )
    assert expires == session_end, "an access token never outlives its session"
    header = jwt.get_unverified_header(token)
    current = next(k for k in store.signing_keys.values() if k.state == "current")
    assert header == {"alg": "ES256", "kid": current.kid, "typ": "at+jwt"}
    verified = await codec.verify(token)
    assert (verified.user_id, verified.tenant_id, verified.role, verified.scopes, verified.session_id) == (
        "u1",
        "t1",
        "admin",
        ["*"],
        "s1",
    )


async def test_eddsa_keys_work_too() -> None:
    store = FakeStore()
    keyring = make_keyring(store, algorithm="EdDSA")
    await keyring.ensure()
    codec = TokenCodec(keyring, issuer="goblin", audience="goblin-api", ttl_s=900, leeway_s=5)
    token, _ = await codec.issue(
        user_id="u1",
        tenant_id="t",
        email="",
        role="user",
        scopes=["chat"],
        session_id="s",
        session_expires_at=2**31,
    )
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert (await codec.verify(token)).scopes == ["chat"]
    keys, _, _ = await keyring.jwks()
    assert {k["kty"] for k in keys["keys"]} == {"OKP"}


def signed(key: object, kid: str | None = "", **overrides: object) -> str:
    headers = {"typ": "at+jwt"} if kid is None else {"kid": kid, "typ": "at+jwt"}
    return jwt.encode(claims(**overrides), key, "ES256", headers=headers)


def hs256_with_public_key(kid: str, key: ec.EllipticCurvePrivateKey) -> str:
    """The classic confusion: HMAC keyed with the verifier's public key, hoping it is used as a secret."""
    signing_input = f"{b64({'alg': 'HS256', 'kid': kid, 'typ': 'at+jwt'})}.{b64(claims())}"
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def tampered(kid: str, key: object) -> str:
    header, _, signature = signed(key, kid).split(".")
    return ".".join([header, b64(claims(role="admin")), signature])


def stranger() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


NOW = int(time.time())
ATTACKS: dict[str, Callable[[str, ec.EllipticCurvePrivateKey], str]] = {
    "alg none": lambda kid, key: f"{b64({'alg': 'none', 'kid': kid, 'typ': 'at+jwt'})}.{b64(claims())}.",
    "HS256 with the public key as secret": hs256_with_public_key,
    "expired": lambda kid, key: signed(key, kid, exp=int(time.time()) - 60, iat=NOW - 960, nbf=NOW - 960),
    "not yet valid": lambda kid, key: signed(key, kid, nbf=int(time.time()) + 300),
    "issued in the future": lambda kid, key: signed(key, kid, iat=int(time.time()) + 300),
    "wrong audience": lambda kid, key: signed(key, kid, aud="someone-else"),
    "wrong issuer": lambda kid, key: signed(key, kid, iss="https://evil.example"),
    "unknown kid": lambda kid, key: signed(stranger(), "nope"),
    "our kid, another key": lambda kid, key: signed(stranger(), kid),
    "no kid": lambda kid, key: signed(key, None),
    "not an access token (typ)": lambda kid, key: jwt.encode(claims(), key, "ES256", headers={"kid": kid}),
    "missing session claim": lambda kid, key: signed(key, kid, sid=None),
    "tampered payload": tampered,
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_forgeries_are_refused(ring_and_codec: tuple[FakeStore, TokenCodec], attack: str) -> None:
    store, codec = ring_and_codec
    kid, key = await current_private_key(store)
    token = ATTACKS[attack](kid, key)
    with pytest.raises(Unauthenticated):
        await codec.verify(token)


async def test_a_sane_token_signed_by_the_real_key_passes(
    ring_and_codec: tuple[FakeStore, TokenCodec],
) -> None:
    """The control for the forgeries above: the same construction with nothing wrong is accepted."""
    store, codec = ring_and_codec
    kid, key = await current_private_key(store)
    assert (await codec.verify(signed(key, kid))).user_id == "u1"


async def test_rotation_keeps_old_tokens_valid_until_the_retired_key_expires(
    ring_and_codec: tuple[FakeStore, TokenCodec],
) -> None:
    store, codec = ring_and_codec
    keyring = codec.keyring
    jwks_before, current_before, standby_before = await keyring.jwks()
    assert [k["kid"] for k in jwks_before["keys"]] == [current_before, standby_before]
    old, _ = await codec.issue(
        user_id="u",
        tenant_id="t",
        email="",
        role="user",
        scopes=["*"],
        session_id="s",
        session_expires_at=2**31,
    )
    rotation = await keyring.rotate(AuditEvent("signing_keys_rotated"))
    assert (rotation.retired_kid, rotation.current_kid) == (current_before, standby_before)
    new, _ = await codec.issue(
        user_id="u",
        tenant_id="t",
        email="",
        role="user",
        scopes=["*"],
        session_id="s",
        session_expires_at=2**31,
    )
    assert jwt.get_unverified_header(new)["kid"] == standby_before, "the published standby signs next"
    assert (await codec.verify(old)).user_id == "u"
    jwks_after, _, _ = await keyring.jwks()
    assert [k["kid"] for k in jwks_after["keys"]] == [standby_before, rotation.standby_kid, current_before]
    # Once every token of the retired key has expired, it is gone and its tokens with it.
    store.signing_keys[current_before] = replace(
        store.signing_keys[current_before], verify_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    await keyring.reload()
    with pytest.raises(Unauthenticated, match="unknown key"):
        await codec.verify(old)
    assert current_before not in [k["kid"] for k in (await keyring.jwks())[0]["keys"]]


async def test_unknown_kid_rereads_the_keys_another_replica_rotated() -> None:
    store = FakeStore()
    ours, theirs = make_keyring(store), make_keyring(store)
    await ours.ensure()
    await theirs.ensure()
    await theirs.rotate(AuditEvent("signing_keys_rotated"))
    await theirs.rotate(AuditEvent("signing_keys_rotated"))
    codec = TokenCodec(theirs, issuer="goblin", audience="goblin-api", ttl_s=900, leeway_s=5)
    token, _ = await codec.issue(
        user_id="u",
        tenant_id="t",
        email="",
        role="user",
        scopes=["*"],
        session_id="s",
        session_expires_at=2**31,
    )
    ours_codec = TokenCodec(ours, issuer="goblin", audience="goblin-api", ttl_s=900, leeway_s=5)
    assert (await ours_codec.verify(token)).user_id == "u"


def test_sealed_keys_open_only_with_their_kek_and_their_kid() -> None:
    cipher = KeyCipher(KEK)
    key = generate_signing_key("ES256", cipher)
    assert key.kid == jwk_thumbprint(key.public_jwk) and key.public_jwk["alg"] == "ES256"
    assert b"PRIVATE" not in key.sealed_private_key
    assert cipher.open(key.kid, key.sealed_private_key)
    with pytest.raises(SealError):
        KeyCipher(bytes(32)).open(key.kid, key.sealed_private_key)
    with pytest.raises(SealError):
        cipher.open("another-kid", key.sealed_private_key)


async def test_a_wrong_kek_fails_start_up_naming_both_keys() -> None:
    store = FakeStore()
    await make_keyring(store).ensure()
    with pytest.raises(SealError, match="sealed with key-encryption key"):
        await make_keyring(store, kek=bytes(32)).ensure()
