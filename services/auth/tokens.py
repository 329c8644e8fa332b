"""Access tokens (JWT, signed by the key ring) and refresh tokens (opaque, stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from services.auth.keyring import KeyRing
from services.common.errors import Unauthenticated

# RFC 9068: the header type of a JWT access token; an ID token or any other JWT is refused.
ACCESS_TOKEN_TYPE = "at+jwt"
ACCEPTED_TYPES = {"at+jwt", "application/at+jwt"}
REFRESH_TOKEN_PREFIX = "grt_"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "tid", "role", "scope", "sid", "iat", "nbf", "exp", "jti"]


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and credential.startswith("ey")


def new_refresh_token() -> tuple[str, str]:
    """A refresh token and its stored hash. 256 random bits: one SHA-256 keeps it safe at rest."""
    token = f"{REFRESH_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    tenant_id: str
    email: str
    role: str
    scopes: list[str]
    session_id: str
    expires_at: int
    token_id: str


class TokenCodec:
    """Issues and verifies access tokens. Verification accepts exactly the algorithm of the key the
    token names, so ``alg: none`` and HS256-with-the-public-key forgeries never reach a verifier."""

    def __init__(self, keyring: KeyRing, *, issuer: str, audience: str, ttl_s: int, leeway_s: int) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self.leeway_s = leeway_s

    async def issue(
        self,
        *,
        user_id: str,
        tenant_id: str,
        email: str,
        role: str,
        scopes: list[str],
        session_id: str,
        session_expires_at: int,
        now: int | None = None,
    ) -> tuple[str, int]:
        """A signed access token and its expiry (unix seconds); never outliving its session.

        ``now`` is the issuing instant (default: the clock), so a caller can state ``expires_in`` from the
        same reading as ``iat`` and ``exp``."""
        key = await self.keyring.signing_key()
        now = int(time.time()) if now is None else now
        expires_at = min(now + self.ttl_s, session_expires_at)
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "tid": tenant_id,
            "email": email,
            "role": role,
            "scope": " ".join(scopes),
            "sid": session_id,
            "iat": now,
            "nbf": now,
            "exp": expires_at,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(
            claims,
            key.private_key,
            algorithm=key.algorithm,
            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
        )
        return token, expires_at

    async def verify(self, token: str) -> AccessClaims:
        """The claims of a valid access token, or :class:`Unauthenticated` saying what is wrong."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed token", code="invalid_token") from None
        kid, alg, typ = header.get("kid"), header.get("alg"), header.get("typ")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token names no signing key (kid)", code="invalid_token")
        if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
            raise Unauthenticated("not an access token", code="invalid_token")
        key = await self.keyring.verification_key(kid)
        if key is None:
            raise Unauthenticated("token signed by an unknown key", code="invalid_token")
        if alg != key.algorithm:
            raise Unauthenticated("token algorithm does not match its key", code="invalid_token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired", code="token_expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("token not valid yet", code="invalid_token") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token is for another audience", code="invalid_token") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token from another issuer", code="invalid_token") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token", code="invalid_token") from None
        scope = claims["scope"]
        if not all(isinstance(claims[c], str) for c in ("sub", "tid", "role", "sid", "jti")) or not isinstance(
            scope, str
        ):
            raise Unauthenticated("invalid token", code="invalid_token")
        return AccessClaims(
            user_id=claims["sub"],
            tenant_id=claims["tid"],
            email=str(claims.get("email", "")),
            role=claims["role"],
            scopes=scope.split(),
            session_id=claims["sid"],
            expires_at=int(claims["exp"]),
            token_id=claims["jti"],
        )
