"""WebAuthn ceremonies with py_webauthn: options out, responses verified against our RP ID and origins.

Pure functions: where challenges are kept and which credentials a user has is :mod:`services.auth.passkeys`'s
business.
Every failure of the library becomes a domain error with a message safe to show the client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import webauthn
from webauthn.helpers import parse_authentication_credential_json, parse_registration_credential_json
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from services.common.errors import InvalidArgument, Unauthenticated

CHALLENGE_TTL_S = 300
CEREMONY_TIMEOUT_MS = CHALLENGE_TTL_S * 1000
SUPPORTED_ALGORITHMS = [COSEAlgorithmIdentifier.ECDSA_SHA_256, COSEAlgorithmIdentifier.EDDSA]
MAX_CREDENTIAL_JSON = 64 * 1024


@dataclass(frozen=True)
class WebAuthnConfig:
    rp_id: str
    rp_name: str
    origins: list[str]
    require_user_verification: bool = True

    @property
    def user_verification(self) -> UserVerificationRequirement:
        return (
            UserVerificationRequirement.REQUIRED
            if self.require_user_verification
            else UserVerificationRequirement.PREFERRED
        )


@dataclass(frozen=True)
class KnownCredential:
    credential_id: bytes
    transports: list[str]


@dataclass(frozen=True)
class RegisteredPasskey:
    credential_id: bytes
    public_key: bytes
    sign_count: int
    backed_up: bool
    transports: list[str]


@dataclass(frozen=True)
class Assertion:
    credential_id: bytes
    user_handle: bytes | None


@dataclass(frozen=True)
class VerifiedAssertion:
    sign_count: int
    backed_up: bool


def _descriptors(credentials: list[KnownCredential]) -> list[PublicKeyCredentialDescriptor]:
    known = {t.value for t in AuthenticatorTransport}
    return [
        PublicKeyCredentialDescriptor(
            id=c.credential_id, transports=[AuthenticatorTransport(t) for t in c.transports if t in known]
        )
        for c in credentials
    ]


def registration_options(
    config: WebAuthnConfig, *, user_handle: bytes, user_name: str, existing: list[KnownCredential]
) -> tuple[str, bytes]:
    """PublicKeyCredentialCreationOptions as JSON, and the challenge in them. The passkey must be
    discoverable: sign-in never names an account's credentials (that would reveal the account)."""
    options = webauthn.generate_registration_options(
        rp_id=config.rp_id,
        rp_name=config.rp_name,
        user_id=user_handle,
        user_name=user_name,
        timeout=CEREMONY_TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED, user_verification=config.user_verification
        ),
        exclude_credentials=_descriptors(existing),
        supported_pub_key_algs=SUPPORTED_ALGORITHMS,
    )
    return webauthn.options_to_json(options), options.challenge


def authentication_options(config: WebAuthnConfig, *, allowed: list[KnownCredential]) -> tuple[str, bytes]:
    """PublicKeyCredentialRequestOptions as JSON, and the challenge in them. An empty ``allowed`` asks
    the browser for any discoverable credential of this RP."""
    options = webauthn.generate_authentication_options(
        rp_id=config.rp_id,
        timeout=CEREMONY_TIMEOUT_MS,
        allow_credentials=_descriptors(allowed),
        user_verification=config.user_verification,
    )
    return webauthn.options_to_json(options), options.challenge


def _parse_json(credential_json: str) -> dict[str, Any]:
    if len(credential_json) > MAX_CREDENTIAL_JSON:
        raise InvalidArgument("credential: too large")
    try:
        value = json.loads(credential_json)
    except ValueError:
        raise InvalidArgument("credential: not JSON") from None
    if not isinstance(value, dict):
        raise InvalidArgument("credential: must be a JSON object (the browser's PublicKeyCredential)")
    return value


def verify_registration(config: WebAuthnConfig, credential_json: str, challenge: bytes) -> RegisteredPasskey:
    credential = _parse_json(credential_json)
    try:
        parsed = parse_registration_credential_json(credential)
        verified = webauthn.verify_registration_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=config.rp_id,
            expected_origin=config.origins,
            require_user_verification=config.require_user_verification,
            supported_pub_key_algs=SUPPORTED_ALGORITHMS,
        )
    except WebAuthnException as exc:
        raise InvalidArgument(f"passkey registration refused: {exc}", code="passkey_invalid") from None
    except (ValueError, TypeError, KeyError):
        raise InvalidArgument("passkey registration refused: malformed credential", code="passkey_invalid") from None
    transports = [t.value for t in parsed.response.transports or []]
    return RegisteredPasskey(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        backed_up=verified.credential_backed_up,
        transports=transports,
    )


def parse_assertion(credential_json: str) -> Assertion:
    """Which credential (and, for discoverable ones, which user handle) an assertion claims to be."""
    credential = _parse_json(credential_json)
    try:
        parsed = parse_authentication_credential_json(credential)
    except (WebAuthnException, ValueError, TypeError):
        raise InvalidArgument("credential: not a WebAuthn assertion", code="passkey_invalid") from None
    return Assertion(credential_id=parsed.raw_id, user_handle=parsed.response.user_handle)


def verify_assertion(
    config: WebAuthnConfig, credential_json: str, challenge: bytes, public_key: bytes
) -> VerifiedAssertion:
    """Challenge, origin, RP ID, flags and signature. The sign counter is the caller's to judge
    (against a count it holds under a lock), so the library is told the stored count is 0."""
    try:
        verified = webauthn.verify_authentication_response(
            credential=_parse_json(credential_json),
            expected_challenge=challenge,
            expected_rp_id=config.rp_id,
            expected_origin=config.origins,
            credential_public_key=public_key,
            credential_current_sign_count=0,
            require_user_verification=config.require_user_verification,
        )
    except WebAuthnException as exc:
        raise Unauthenticated(f"passkey sign-in refused: {exc}", code="passkey_invalid") from None
    except (ValueError, TypeError, KeyError):
        raise Unauthenticated("passkey sign-in refused: malformed assertion", code="passkey_invalid") from None
    return VerifiedAssertion(sign_count=verified.new_sign_count, backed_up=verified.credential_backed_up)


def sign_count_regressed(stored: int, presented: int) -> bool:
    """WebAuthn §6.1.1: a counter that does not grow (unless both are 0, for authenticators that keep
    none) means the credential may have been cloned."""
    return (presented > 0 or stored > 0) and presented <= stored
