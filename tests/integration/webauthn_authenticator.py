"""A software WebAuthn authenticator: what a browser plus a platform authenticator hand the relying
party, built by hand (EC P-256 keys, CBOR, attestation "none"), so the tests drive the real gateway
routes the way a browser would.

Each credential keeps its own signature counter; :meth:`SoftAuthenticator.clone` copies the keys and
counters, as an attacker who extracted a credential would, to exercise cloned-credential detection.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

FLAG_UP = 0x01  # user present
FLAG_UV = 0x04  # user verified
FLAG_AT = 0x40  # attested credential data follows
COSE_ES256 = -7
AAGUID = bytes(16)  # "none" attestation: an all-zero AAGUID, as privacy-preserving authenticators send


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftCredential:
    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0


class SoftAuthenticator:
    def __init__(self, origin: str, *, counter_step: int = 1) -> None:
        self.origin = origin
        self.counter_step = counter_step  # 0: an authenticator that keeps no counter
        self.credentials: dict[bytes, SoftCredential] = {}

    def clone(self) -> SoftAuthenticator:
        twin = SoftAuthenticator(self.origin, counter_step=self.counter_step)
        twin.credentials = copy.deepcopy(self.credentials)
        return twin

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": origin or self.origin, "crossOrigin": False},
            separators=(",", ":"),
        ).encode()

    @staticmethod
    def _cose_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        numbers = key.public_key().public_numbers()
        return cbor2.dumps(
            {1: 2, 3: COSE_ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
        )

    def create(self, options: dict[str, Any], *, origin: str | None = None, rp_id: str | None = None) -> dict[str, Any]:
        """navigator.credentials.create(): a new credential for the options' RP and user, as the
        PublicKeyCredential JSON a browser posts (attestation "none")."""
        rp_id = rp_id or options["rp"]["id"]
        credential = SoftCredential(
            credential_id=os.urandom(32),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            rp_id=rp_id,
            user_handle=from_b64url(options["user"]["id"]),
        )
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([FLAG_UP | FLAG_UV | FLAG_AT])
            + struct.pack(">I", credential.sign_count)
            + AAGUID
            + struct.pack(">H", len(credential.credential_id))
            + credential.credential_id
            + self._cose_public_key(credential.private_key)
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        self.credentials[credential.credential_id] = credential
        return {
            "id": b64url(credential.credential_id),
            "rawId": b64url(credential.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(self._client_data("webauthn.create", options["challenge"], origin)),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        credential_id: bytes | None = None,
        origin: str | None = None,
        user_verified: bool = True,
    ) -> dict[str, Any]:
        """navigator.credentials.get(): an assertion by ``credential_id`` (default: the first of ours
        the options allow, or any of ours for a discoverable request)."""
        if credential_id is None:
            allowed = [from_b64url(c["id"]) for c in options.get("allowCredentials") or []]
            candidates = [c for c in self.credentials if not allowed or c in allowed]
            if not candidates:
                raise LookupError("no credential for these options")
            credential_id = candidates[0]
        credential = self.credentials[credential_id]
        credential.sign_count += self.counter_step
        flags = FLAG_UP | (FLAG_UV if user_verified else 0)
        auth_data = (
            hashlib.sha256(credential.rp_id.encode()).digest()
            + bytes([flags])
            + struct.pack(">I", credential.sign_count)
        )
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = credential.private_key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64url(credential_id),
            "rawId": b64url(credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(credential.user_handle),
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        }
