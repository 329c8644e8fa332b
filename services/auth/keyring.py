"""Token-signing keys: generated here, sealed with the key-encryption key, kept in Postgres.

States: ``current`` signs; ``standby`` is published in the JWKS before it ever signs, so verifiers
already know it when a rotation promotes it; ``retired`` signs nothing and stays verifiable until
every token it signed has expired. A rotation retires the current key, promotes the standby and makes
a new standby, in one transaction, so no replica ever sees a moment without a current key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.auth.config import KEK_BYTES, AuthPolicySettings, decode_key_encryption_key
from services.common.errors import FailedPrecondition

if TYPE_CHECKING:  # the repository imports this module: a runtime import would be circular
    from services.auth.repository import AuditEvent

log = logging.getLogger(__name__)

NONCE_BYTES = 12
# A token naming an unknown kid makes us reread the keys, at most this often (a flood of forged kids
# must not turn into a flood of queries).
UNKNOWN_KID_RELOAD_S = 1.0


class SealError(Exception):
    """A sealed private key cannot be opened with this key-encryption key."""


def load_key_encryption_key(settings: AuthPolicySettings) -> bytes:
    """The configured key-encryption key; in development, the one in GOBLIN_HOME, made on first use."""
    if settings.key_encryption_key is not None:
        return decode_key_encryption_key(settings.key_encryption_key.get_secret_value())
    if settings.production:  # the settings validator refuses this already; never fall through to a file
        raise FailedPrecondition("GOBLIN_AUTH_KEY_ENCRYPTION_KEY: required in production")
    return _dev_key_file(settings.key_encryption_key_file)


def _dev_key_file(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, base64.urlsafe_b64encode(secrets.token_bytes(KEK_BYTES)) + b"\n")
        finally:
            os.close(fd)
        try:
            # link() fails if another process won the race; then its key is the one everybody uses.
            os.link(tmp, path)
            log.info("generated a development key-encryption key", extra={"path": str(path)})
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return decode_key_encryption_key(path.read_text())


class KeyCipher:
    """AES-256-GCM with the key-encryption key; the kid is authenticated data, so a sealed key cannot
    be moved to another row."""

    def __init__(self, kek: bytes) -> None:
        self._aead = AESGCM(kek)
        self.kek_id = hashlib.sha256(b"goblin-kek:" + kek).hexdigest()[:16]

    def seal(self, kid: str, plaintext: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, kid.encode())

    def open(self, kid: str, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], kid.encode())
        except InvalidTag:
            raise SealError(f"signing key {kid} does not open with this key-encryption key") from None


@dataclass(frozen=True)
class NewSigningKey:
    kid: str
    algorithm: str
    sealed_private_key: bytes
    kek_id: str
    public_jwk: dict[str, str]


@dataclass(frozen=True)
class SigningKeyRecord:
    kid: str
    algorithm: str
    state: str  # current | standby | retired
    private_key: bytes  # sealed
    kek_id: str
    public_jwk: dict[str, Any]
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    verify_until: datetime | None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint: the kid, so a key names itself and two keys never share a kid."""
    required = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("crv", "kty", "x")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def generate_signing_key(algorithm: str, cipher: KeyCipher) -> NewSigningKey:
    """A fresh key pair for ``algorithm`` (ES256: P-256; EdDSA: Ed25519), its private half sealed."""
    private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        public_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    else:
        raise ValueError(f"unsupported signing algorithm {algorithm!r}")
    kid = jwk_thumbprint(public_jwk)
    public_jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return NewSigningKey(kid, algorithm, cipher.seal(kid, der), cipher.kek_id, public_jwk)


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    algorithm: str
    state: str
    public_key: Any
    public_jwk: dict[str, Any]


@dataclass(frozen=True)
class ActiveSigningKey:
    kid: str
    algorithm: str
    private_key: Any


@dataclass(frozen=True)
class Rotation:
    retired_kid: str | None
    current_kid: str
    standby_kid: str


class SigningKeyStore(Protocol):
    async def load_signing_keys(self) -> list[SigningKeyRecord]: ...
    async def ensure_signing_keys(self, make_key: Any) -> list[str]: ...
    async def rotate_signing_keys(self, make_key: Any, verify_for_s: float, audit: AuditEvent) -> Rotation: ...


@dataclass
class _Loaded:
    keys: dict[str, VerificationKey] = field(default_factory=dict)
    current: SigningKeyRecord | None = None
    standby_kid: str = ""
    loaded_at: float = 0.0


class KeyRing:
    """The signing keys as this process knows them: reread every ``refresh_s``, and at once (at most
    once a second) when a token names a kid we do not know, so a rotation by another replica or by
    ``goblin keys rotate`` is picked up without a restart."""

    def __init__(
        self,
        store: SigningKeyStore,
        cipher: KeyCipher,
        *,
        algorithm: str,
        refresh_s: float,
        access_token_ttl_s: int,
        leeway_s: int,
    ) -> None:
        self.store = store
        self.cipher = cipher
        self.algorithm = algorithm
        self.refresh_s = refresh_s
        # A replica that has not reread the keys yet may sign with a just-retired key for up to
        # refresh_s; its tokens must stay verifiable for their whole life.
        self.retired_verify_s = access_token_ttl_s + leeway_s + 2 * refresh_s
        self._loaded = _Loaded()
        self._private: dict[str, ActiveSigningKey] = {}
        self._lock = asyncio.Lock()
        self._last_unknown_reload = 0.0

    def _make_key(self) -> NewSigningKey:
        return generate_signing_key(self.algorithm, self.cipher)

    async def ensure(self) -> None:
        """Make the current and standby keys if they do not exist yet (first start), then load."""
        created = await self.store.ensure_signing_keys(self._make_key)
        if created:
            log.info("signing keys created", extra={"kids": created})
        await self.reload()
        await self.signing_key()  # fail start-up now, clearly, if the key-encryption key is wrong

    async def reload(self) -> None:
        records = await self.store.load_signing_keys()
        loaded = _Loaded(loaded_at=time.monotonic())
        for record in records:
            jwk = dict(record.public_jwk)
            public_key = jwt.PyJWK(jwk, record.algorithm).key
            loaded.keys[record.kid] = VerificationKey(record.kid, record.algorithm, record.state, public_key, jwk)
            if record.state == "current":
                loaded.current = record
            elif record.state == "standby":
                loaded.standby_kid = record.kid
        self._loaded = loaded

    async def _fresh(self) -> _Loaded:
        if time.monotonic() - self._loaded.loaded_at >= self.refresh_s:
            async with self._lock:
                if time.monotonic() - self._loaded.loaded_at >= self.refresh_s:
                    await self.reload()
        return self._loaded

    async def signing_key(self) -> ActiveSigningKey:
        """The current key with its private half opened."""
        loaded = await self._fresh()
        record = loaded.current
        if record is None:
            raise FailedPrecondition("no current signing key; the auth service creates one at start-up")
        active = self._private.get(record.kid)
        if active is None:
            if record.kek_id != self.cipher.kek_id:
                raise SealError(
                    f"signing key {record.kid} was sealed with key-encryption key {record.kek_id}, "
                    f"but GOBLIN_AUTH_KEY_ENCRYPTION_KEY is {self.cipher.kek_id}"
                )
            der = self.cipher.open(record.kid, record.private_key)
            active = ActiveSigningKey(
                record.kid, record.algorithm, serialization.load_der_private_key(der, password=None)
            )
            self._private = {record.kid: active}
        return active

    async def verification_key(self, kid: str) -> VerificationKey | None:
        """The published key named ``kid`` (current, standby or retired-but-unexpired), or None."""
        loaded = await self._fresh()
        key = loaded.keys.get(kid)
        if key is None and time.monotonic() - self._last_unknown_reload >= UNKNOWN_KID_RELOAD_S:
            self._last_unknown_reload = time.monotonic()
            async with self._lock:
                await self.reload()
            key = self._loaded.keys.get(kid)
        return key

    async def jwks(self) -> tuple[dict[str, Any], str, str]:
        """The JSON Web Key Set (current, standby, then retired keys still verifying), current kid,
        standby kid."""
        loaded = await self._fresh()
        order = {"current": 0, "standby": 1, "retired": 2}
        keys = sorted(loaded.keys.values(), key=lambda k: order.get(k.state, 3))
        current_kid = loaded.current.kid if loaded.current else ""
        return {"keys": [k.public_jwk for k in keys]}, current_kid, loaded.standby_kid

    async def rotate(self, audit: AuditEvent) -> Rotation:
        """Retire the current key, promote the standby, make a new standby; then reload."""
        rotation = await self.store.rotate_signing_keys(self._make_key, self.retired_verify_s, audit)
        await self.reload()
        return rotation
