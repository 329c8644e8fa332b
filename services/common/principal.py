"""The signed principal: who is asking, as a short-lived Ed25519-signed assertion the gateway makes once
per request and every service verifies.

Format: ``base64url(claims JSON) "." base64url(Ed25519 signature of the first part)``. Not a JWT: the
claims are ours alone, and a bare Ed25519 signature over the encoded claims is the cheapest thing that
gives the same guarantee (bench/RESULTS.md, "Signed principal", measured both).

Keys: the gateway signs with ``GOBLIN_PRINCIPAL_SIGNING_KEY`` (PEM, Ed25519 private key; or
``GOBLIN_PRINCIPAL_SIGNING_KEY_FILE``), every service verifies with ``GOBLIN_PRINCIPAL_VERIFY_KEY``
(PEM public key; or ``..._FILE``). In development both default to the pair ``goblin up`` generates
under ``GOBLIN_HOME/tls/`` (:func:`ensure_principal_keys`); in production a missing key stops start-up.

What a verified assertion guarantees: the gateway (holder of the signing key) vouched for these claims,
for this audience, less than ``GOBLIN_PRINCIPAL_TTL_S`` ago; and, through :class:`ReplayGuard`, that this
process has not accepted the same assertion before.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from pydantic import Field, SecretStr

from services.common import scopes
from services.common.settings import GoblinSettings, load_settings
from services.common.tls import private_dir, write_private

log = logging.getLogger(__name__)

PRINCIPAL_METADATA_KEY = "x-goblin-principal"
ISSUER = "goblin-gateway"
AUDIENCE = "goblin-services"
SIGNING_KEY_NAME = "principal-signing.pem"
VERIFY_KEY_NAME = "principal-verify.pem"
# An assertion is a few hundred bytes; anything far larger is not one of ours and is not parsed.
MAX_ASSERTION_BYTES = 8192


class InvalidPrincipal(Exception):
    """The assertion is missing, malformed, forged, expired, for someone else, or replayed."""


@dataclass(frozen=True)
class Principal:
    """The verified caller. ``None`` budgets mean unlimited, as in auth's Principal."""

    user_id: str
    tenant_id: str
    role: str = ""
    scopes: tuple[str, ...] = ()
    api_key_id: str = ""
    session_id: str = ""
    tenant_daily_budget_usd: float | None = None
    key_tokens_per_day: int | None = None
    requests_per_day: int = 0
    issuer: str = ISSUER
    audience: str = AUDIENCE
    issued_at: float = 0.0
    expires_at: float = 0.0
    jti: str = field(default_factory=lambda: uuid.uuid4().hex)

    def has_scope(self, scope: str) -> bool:
        """Whether the credential holds ``scope`` (``"*"`` holds every scope)."""
        return scopes.has_scope(self.scopes, scope)

    @property
    def is_admin(self) -> bool:
        """Admin powers need the role and a credential holding the ``admin`` scope."""
        return scopes.is_admin(self.role, self.scopes)


# The assertion the gateway signed for the request being served: its gRPC client interceptor sends it.
outgoing_principal_var: ContextVar[str] = ContextVar("outgoing_principal", default="")
# The principal a service verified for the call being served (set by the server interceptor).
verified_principal_var: ContextVar[Principal | None] = ContextVar("verified_principal", default=None)


def current_principal() -> Principal | None:
    """The verified caller of the gRPC call being served, or None when the method needs none."""
    return verified_principal_var.get()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PrincipalSigner:
    """Signs principals (the gateway's side)."""

    def __init__(self, key: Ed25519PrivateKey, ttl_s: float) -> None:
        self._key = key
        self.ttl_s = ttl_s

    @classmethod
    def from_pem(cls, pem: bytes, ttl_s: float = 60.0) -> PrincipalSigner:
        """A signer for an Ed25519 private key in PEM (what the gateway holds)."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return cls(key, ttl_s)

    def verifier(self) -> PrincipalVerifier:
        """A verifier for what this signer signs (tests, benchmarks, a gateway checking itself)."""
        return PrincipalVerifier(self._key.public_key())

    def sign(self, principal: Principal, *, now: float | None = None) -> str:
        """The assertion for ``principal``: fresh jti, issued now, valid for the TTL."""
        return self.sign_static(static_claims(principal), now=now)

    def sign_static(self, static: str, *, now: float | None = None) -> str:
        """The assertion for a principal's :func:`static_claims` (kept by a caller that signs the same
        principal often, so its JSON is made once): fresh jti, issued now, valid for the TTL."""
        issued = time.time() if now is None else now
        # The same JSON json.dumps would write (floats by repr); the jti 128 random bits, as a uuid4's hex.
        claims = f'{static},"iat":{issued!r},"exp":{issued + self.ttl_s!r},"jti":"{os.urandom(16).hex()}"}}'
        body = _b64(claims.encode())
        return f"{body}.{_b64(self._key.sign(body.encode('ascii')))}"


def static_claims(principal: Principal) -> str:
    """The claims of ``principal`` that do not change from one assertion to the next, as the start of a
    JSON object (no closing brace): :meth:`PrincipalSigner.sign_static` adds issue time, expiry and jti."""
    claims = {
        "sub": principal.user_id,
        "ten": principal.tenant_id,
        "rol": principal.role,
        "scp": list(principal.scopes),
        "key": principal.api_key_id,
        "sid": principal.session_id,
        "bud": principal.tenant_daily_budget_usd,
        "tpd": principal.key_tokens_per_day,
        "rpd": principal.requests_per_day,
        "iss": principal.issuer,
        "aud": principal.audience,
    }
    return json.dumps(claims, separators=(",", ":"))[:-1]


class PrincipalVerifier:
    """Checks assertions (every service's side): signature, issuer, audience, expiry.

    The signature is checked by libsodium (PyNaCl) rather than OpenSSL: the same Ed25519, for about half
    the CPU per verification, which every call to every service pays (bench/RESULTS.md, "Router CPU
    profile"). The key object is made once, with the verifier."""

    def __init__(self, key: Ed25519PublicKey, *, leeway_s: float = 5.0) -> None:
        self._key = key
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._verify_key = VerifyKey(raw)
        self.leeway_s = leeway_s

    def _claims(self, body: str, signature: str) -> dict[str, Any]:
        """The signed claims of ``body``; :class:`InvalidPrincipal` unless ``signature`` is ours over it."""
        try:
            signed = body.encode("ascii")
            sig = _unb64(signature)
            if len(sig) != 64:  # libsodium takes signature and message as one buffer: no ambiguity allowed
                raise ValueError("not an Ed25519 signature")
            self._verify_key.verify(signed, sig)
            raw = _unb64(body)
        except (BadSignatureError, ValueError, UnicodeEncodeError):
            raise InvalidPrincipal("principal signature does not verify") from None
        try:
            claims = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # Signed by us, so ours: only json's extensions (a budget of Infinity) get here.
            try:
                claims = json.loads(raw)
            except ValueError:
                raise InvalidPrincipal("principal claims are not JSON") from None
        if not isinstance(claims, dict):
            raise InvalidPrincipal("principal claims are not an object")
        return claims

    def verify(self, assertion: str, *, now: float | None = None) -> Principal:
        """The principal in ``assertion``; :class:`InvalidPrincipal` if it is not a current one of ours."""
        if not assertion or len(assertion) > MAX_ASSERTION_BYTES:
            raise InvalidPrincipal("missing or oversized principal")
        body, dot, signature = assertion.partition(".")
        if not dot:
            raise InvalidPrincipal("malformed principal")
        claims = self._claims(body, signature)
        if claims.get("iss") != ISSUER or claims.get("aud") != AUDIENCE:
            raise InvalidPrincipal("principal issued by or for someone else")
        current = time.time() if now is None else now
        expires, issued = float(claims.get("exp", 0)), float(claims.get("iat", 0))
        if current > expires + self.leeway_s or issued > current + self.leeway_s:
            raise InvalidPrincipal("principal expired")
        return Principal(
            user_id=str(claims.get("sub", "")),
            tenant_id=str(claims.get("ten", "")),
            role=str(claims.get("rol", "")),
            scopes=tuple(str(s) for s in claims.get("scp", ())),
            api_key_id=str(claims.get("key", "")),
            session_id=str(claims.get("sid", "")),
            tenant_daily_budget_usd=claims.get("bud"),
            key_tokens_per_day=claims.get("tpd"),
            requests_per_day=int(claims.get("rpd") or 0),
            issuer=claims["iss"],
            audience=claims["aud"],
            issued_at=issued,
            expires_at=expires,
            jti=str(claims.get("jti", "")),
        )


class ReplayGuard:
    """The jtis this process accepted and that have not expired yet: a second use is a replay.

    Bounded: at ``capacity`` the oldest entry goes. An evicted jti could be replayed until it expires,
    so the capacity must exceed the requests one process accepts within a TTL (100 000 at 60 s is
    1 600 requests a second)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def admit(self, principal: Principal, *, now: float | None = None) -> None:
        """Record ``principal``'s jti; :class:`InvalidPrincipal` if it was admitted before."""
        current = time.time() if now is None else now
        seen = self._seen
        while seen:
            oldest_jti, oldest_expiry = next(iter(seen.items()))
            if oldest_expiry >= current - 60 and len(seen) < self.capacity:
                break
            del seen[oldest_jti]
        if not principal.jti or principal.jti in seen:
            raise InvalidPrincipal("principal replayed")
        seen[principal.jti] = principal.expires_at


class PrincipalSettings(GoblinSettings):
    """Where the keys are and how long an assertion lives."""

    principal_signing_key: SecretStr | None = Field(None, alias="GOBLIN_PRINCIPAL_SIGNING_KEY")
    principal_verify_key: str | None = Field(None, alias="GOBLIN_PRINCIPAL_VERIFY_KEY")
    principal_ttl_s: float = Field(60.0, alias="GOBLIN_PRINCIPAL_TTL_S", gt=0, le=3600)
    principal_replay_capacity: int = Field(100_000, alias="GOBLIN_PRINCIPAL_REPLAY_CAPACITY", ge=1000)


def _key_pem(value: str | None, default: Path, production: bool, name: str) -> bytes | None:
    """The PEM of a key: the setting, else (development only) the file ``goblin up`` made; None if
    neither exists in development. Production without the setting stops start-up."""
    if value:
        return value.encode()
    if production:
        raise SystemExit(f"goblin: {name} (or {name}_FILE) is required in production")
    try:
        return default.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SystemExit(f"goblin: {name} is not set and {default} cannot be read: {exc.strerror}") from None


@lru_cache(maxsize=1)
def load_verifier() -> PrincipalVerifier | None:
    """This process's verifier, built once (the key is read once and cached); None in development when
    there is no key at all, in which case every call that carries or needs a principal is refused."""
    settings = load_settings(PrincipalSettings)
    pem = _key_pem(
        settings.principal_verify_key,
        settings.goblin_home / "tls" / VERIFY_KEY_NAME,
        settings.production,
        "GOBLIN_PRINCIPAL_VERIFY_KEY",
    )
    if pem is None:
        log.warning("no principal verify key (GOBLIN_PRINCIPAL_VERIFY_KEY_FILE): calls that need a caller are refused")
        return None
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise SystemExit("goblin: GOBLIN_PRINCIPAL_VERIFY_KEY is not an Ed25519 public key")
    return PrincipalVerifier(key)


@lru_cache(maxsize=1)
def load_signer() -> PrincipalSigner:
    """The gateway's signer, built once. In development without a key, the gateway makes the pair
    ``goblin up`` would (GOBLIN_HOME/tls/), so services on the same home verify it; production needs
    GOBLIN_PRINCIPAL_SIGNING_KEY."""
    settings = load_settings(PrincipalSettings)
    secret = settings.principal_signing_key.get_secret_value() if settings.principal_signing_key else None
    name = "GOBLIN_PRINCIPAL_SIGNING_KEY"
    tls_dir = settings.goblin_home / "tls"
    pem = _key_pem(secret, tls_dir / SIGNING_KEY_NAME, settings.production, name)
    if pem is None:
        signing_path, _ = ensure_principal_keys(tls_dir)
        pem = signing_path.read_bytes()
    try:
        return PrincipalSigner.from_pem(pem, settings.principal_ttl_s)
    except ValueError:
        raise SystemExit(f"goblin: {name} is not an Ed25519 private key") from None


def replay_capacity() -> int:
    """The replay cache's size for this process (GOBLIN_PRINCIPAL_REPLAY_CAPACITY)."""
    return load_settings(PrincipalSettings).principal_replay_capacity


def ensure_principal_keys(tls_dir: Path) -> tuple[Path, Path]:
    """The principal key pair under ``tls_dir`` (``goblin up``), made on first use: the private key is
    created with O_EXCL|O_NOFOLLOW and mode 0600, so it never exists with looser rights and a planted
    symlink is refused. Returns (signing key path, verify key path)."""
    private_dir(tls_dir)
    private_path, public_path = tls_dir / SIGNING_KEY_NAME, tls_dir / VERIFY_KEY_NAME
    if private_path.exists() and public_path.exists():
        return private_path, public_path
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # A half-made pair (crash between the two writes) is replaced as a whole.
    for path in (private_path, public_path):
        path.unlink(missing_ok=True)
    write_private(private_path, private_pem)
    write_private(public_path, public_pem, mode=0o644)
    return private_path, public_path


def suite_principal_env(env: dict[str, str], tls_dir: Path) -> dict[str, str]:
    """``env`` for the children of ``goblin up``: the pair under ``tls_dir`` exists, every child is told
    where the verify key is, and no child is told where the signing key is (the gateway finds it at its
    development default, ``GOBLIN_HOME/tls/``). A signing key the operator named is dropped: the suite
    verifies with the pair it made, so a different signing key could not be verified anyway."""
    _, public_path = ensure_principal_keys(tls_dir)
    env = {k: v for k, v in env.items() if not k.startswith(("GOBLIN_PRINCIPAL_SIGNING", "GOBLIN_PRINCIPAL_VERIFY"))}
    env["GOBLIN_PRINCIPAL_VERIFY_KEY_FILE"] = str(public_path)
    return env


# Services whose methods need a verified caller, and the methods of theirs that do not: the ones a
# caller uses to become someone (Authenticate, Login, Refresh, the passkey login ceremony), to register
# (self-registration; an admin registering someone else sends a principal), to sign out with a refresh
# token, and the public JWKS. Everything else in these services refuses a call without a principal.
# Rag and the executor keep each tenant's collections and tasks apart by the principal's tenant (and
# the executor allows scripts to admins only), so every call to them needs one. Inference takes no
# identity decision from the caller and needs none; health and reflection are never checked.
PRINCIPAL_REQUIRED_SERVICES = frozenset({"goblin.v1.Auth", "goblin.v1.Executor", "goblin.v1.Rag", "goblin.v1.Router"})
PUBLIC_METHODS = frozenset(
    {
        "/goblin.v1.Auth/Authenticate",
        "/goblin.v1.Auth/Register",
        "/goblin.v1.Auth/Login",
        "/goblin.v1.Auth/Refresh",
        "/goblin.v1.Auth/Logout",
        "/goblin.v1.Auth/GetJwks",
        "/goblin.v1.Auth/PasskeyLoginOptions",
        "/goblin.v1.Auth/PasskeyLoginVerify",
    }
)


def principal_required(full_method: str) -> bool:
    """Whether ``/package.Service/Method`` refuses a call that carries no principal."""
    service = full_method.split("/", 2)[1] if full_method.count("/") >= 2 else ""
    return service in PRINCIPAL_REQUIRED_SERVICES and full_method not in PUBLIC_METHODS


class PrincipalGate:
    """The server side of a call: the assertion in its metadata, verified once and admitted once.

    :meth:`check` returns the principal for the call (None when the method needs none and none was sent)
    or raises :class:`InvalidPrincipal`. A principal that is sent is always checked, even to a method
    that needs none: a forged or replayed one is refused everywhere."""

    def __init__(self, verifier: PrincipalVerifier | None, replay: ReplayGuard) -> None:
        self.verifier = verifier
        self.replay = replay

    @classmethod
    def for_this_process(cls) -> PrincipalGate:
        """The gate with this process's verify key, loaded now: in production a missing key stops
        start-up here, before the server listens."""
        return cls(load_verifier(), ReplayGuard(replay_capacity()))

    def check(self, full_method: str, metadata: object) -> Principal | None:
        """The verified principal of a call to ``full_method`` with invocation ``metadata``."""
        assertion = ""
        for key, value in metadata or ():  # type: ignore[attr-defined]
            if key == PRINCIPAL_METADATA_KEY:
                assertion = value if isinstance(value, str) else ""
                break
        if not assertion:
            if principal_required(full_method):
                raise InvalidPrincipal("this method needs a signed principal (x-goblin-principal)")
            return None
        if self.verifier is None:
            raise InvalidPrincipal("this service has no principal verify key")
        principal = self.verifier.verify(assertion)
        self.replay.admit(principal)
        return principal
