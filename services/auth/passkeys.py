"""Passkeys: enrolling them, signing in with them, listing and removing them.

The WebAuthn ceremonies themselves are :mod:`services.auth.webauthn_ceremonies`; this module keeps
their challenges (Redis, single use), the credentials (Postgres) and the signature counters, and opens
a session through :class:`~services.auth.sessions.Sessions` when a sign-in verifies.
"""

from __future__ import annotations

import base64
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from services.auth import webauthn_ceremonies as ceremonies
from services.auth.accounts import has_control_characters, normalise_email, valid_id, valid_name
from services.auth.context import Context
from services.auth.metrics import PASSKEY_CHANGES, SECURITY_EVENTS, SIGN_INS
from services.auth.permissions import Permissions
from services.auth.repository import AuditEvent, PasskeyRecord, UserRecord
from services.auth.sessions import TokenPair
from services.common.context import hash_user_id
from services.common.errors import InvalidArgument, NotFound, Unauthenticated

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PasskeyChallenge:
    options_json: str
    challenge_id: str


class PasskeyStore(Protocol):
    async def audit(self, event: AuditEvent) -> None: ...
    async def get_user(self, user_id: str) -> UserRecord | None: ...
    async def find_user_by_email(self, email: str) -> UserRecord | None: ...
    async def list_passkeys(self, user_id: str) -> list[PasskeyRecord]: ...
    async def find_passkey(self, credential_id: bytes) -> PasskeyRecord | None: ...
    async def add_passkey(self, **fields: Any) -> PasskeyRecord: ...
    async def record_passkey_use(self, passkey_id: str, seen_count: int, new_count: int, backed_up: bool) -> bool: ...
    async def delete_passkey(self, passkey_id: str, user_id: str, audit: AuditEvent | None = None) -> bool: ...


class ChallengeStore(Protocol):
    async def put_challenge(self, challenge_id: str, value: dict[str, str], ttl_s: int) -> None: ...
    async def take_challenge(self, challenge_id: str) -> dict[str, str] | None: ...


class SessionOpener(Protocol):
    async def open(self, ctx: Context, user: UserRecord, *, method: str) -> TokenPair: ...


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


class Passkeys:
    def __init__(
        self,
        store: PasskeyStore,
        challenges: ChallengeStore,
        *,
        sessions: SessionOpener,
        permissions: Permissions,
        webauthn: ceremonies.WebAuthnConfig,
    ) -> None:
        self.store = store
        self.challenges = challenges
        self.sessions = sessions
        self.permissions = permissions
        self.webauthn = webauthn

    async def _put_challenge(self, ceremony: str, challenge: bytes, user_id: str) -> str:
        challenge_id = secrets.token_urlsafe(24)
        await self.challenges.put_challenge(
            challenge_id,
            {"ceremony": ceremony, "challenge": _b64(challenge), "user_id": user_id},
            ceremonies.CHALLENGE_TTL_S,
        )
        return challenge_id

    async def _take_challenge(self, ceremony: str, challenge_id: str) -> tuple[bytes, str] | None:
        stored = await self.challenges.take_challenge(challenge_id) if challenge_id else None
        if stored is None or stored.get("ceremony") != ceremony:
            return None
        return base64.urlsafe_b64decode(stored["challenge"]), stored.get("user_id", "")

    # -- enrolment --------------------------------------------------------------------------------
    async def registration_options(self, ctx: Context) -> PasskeyChallenge:
        """Options for enrolling a passkey for the caller, who must be signed in with a session: a passkey
        signs in to one, so anything narrower enrolling it would climb; the browser is told which it has."""
        user = await self.permissions.full_session(ctx, "adding a passkey")
        existing = await self.store.list_passkeys(user.id)
        options_json, challenge = ceremonies.registration_options(
            self.webauthn,
            user_handle=user.id.encode(),
            user_name=user.email,
            existing=[ceremonies.KnownCredential(p.credential_id, list(p.transports)) for p in existing],
        )
        return PasskeyChallenge(options_json, await self._put_challenge("register", challenge, user.id))

    async def registration_verify(
        self, ctx: Context, *, challenge_id: str, credential_json: str, name: str
    ) -> PasskeyRecord:
        """Store the passkey the browser made for a challenge this caller was given."""
        user = await self.permissions.full_session(ctx, "adding a passkey")
        taken = await self._take_challenge("register", challenge_id)
        if taken is None or taken[1] != user.id:
            raise InvalidArgument("unknown, expired or already used challenge", code="challenge_invalid")
        registered = ceremonies.verify_registration(self.webauthn, credential_json, taken[0])
        passkey_id = uuid.uuid4().hex
        stored = await self.store.add_passkey(
            passkey_id=passkey_id,
            user_id=user.id,
            credential_id=registered.credential_id,
            public_key=registered.public_key,
            sign_count=registered.sign_count,
            transports=registered.transports,
            name=valid_name(name or "passkey"),
            backed_up=registered.backed_up,
            audit=ctx.audit_event(
                "passkey_registered",
                tenant_id=user.tenant_id,
                user_id=user.id,
                passkey_id=passkey_id,
                backed_up=registered.backed_up,
            ),
        )
        PASSKEY_CHANGES.labels("registered").inc()
        return stored

    # -- sign-in ----------------------------------------------------------------------------------
    async def login_options(self, ctx: Context, *, email: str) -> PasskeyChallenge:
        """Options for signing in. They never list the account's passkeys (``allowCredentials``): that
        would tell anyone whether an email has an account, and whether it has passkeys. The browser offers
        the discoverable passkeys it holds for this site; an email of an active account only binds the
        challenge to that account, which the answer does not show. Known and unknown emails cost the
        same one lookup."""
        user_id = ""
        if email.strip() and not has_control_characters(email):
            user = await self.store.find_user_by_email(normalise_email(email))
            if user is not None and user.is_active:
                user_id = user.id
        options_json, challenge = ceremonies.authentication_options(self.webauthn, allowed=[])
        return PasskeyChallenge(options_json, await self._put_challenge("login", challenge, user_id))

    async def login_verify(self, ctx: Context, *, challenge_id: str, credential_json: str) -> TokenPair:
        """Sign in with a passkey assertion: a new session, as a password sign-in opens."""
        try:
            pair = await self._login(ctx, challenge_id, credential_json)
        except (Unauthenticated, InvalidArgument):
            SIGN_INS.labels("passkey", "failure").inc()
            raise
        SIGN_INS.labels("passkey", "success").inc()
        return pair

    async def _login(self, ctx: Context, challenge_id: str, credential_json: str) -> TokenPair:
        taken = await self._take_challenge("login", challenge_id)
        if taken is None:
            raise Unauthenticated("unknown, expired or already used challenge", code="challenge_invalid")
        challenge, expected_user = taken
        assertion = ceremonies.parse_assertion(credential_json)
        passkey = await self.store.find_passkey(assertion.credential_id)
        if passkey is None:
            await self.store.audit(ctx.audit_event("login_failed", method="passkey", reason="unknown_passkey"))
            raise Unauthenticated("unknown passkey", code="passkey_invalid")
        if (expected_user and expected_user != passkey.user_id) or (
            assertion.user_handle is not None and assertion.user_handle != passkey.user_id.encode()
        ):
            await self._failed(ctx, passkey, "wrong_account")
            raise Unauthenticated("this passkey belongs to another account", code="passkey_invalid")
        try:
            verified = ceremonies.verify_assertion(self.webauthn, credential_json, challenge, passkey.public_key)
        except Unauthenticated as exc:
            await self._failed(ctx, passkey, "verification_failed", error=exc.message[:200])
            raise
        if ceremonies.sign_count_regressed(passkey.sign_count, verified.sign_count):
            SECURITY_EVENTS.labels("passkey_clone_suspected").inc()
            log.warning(
                "passkey sign count went backwards: possible cloned authenticator",
                extra={"user_hash": hash_user_id(passkey.user_id), "passkey_id": passkey.id},
            )
            await self._failed(
                ctx, passkey, "sign_count_regressed", stored=passkey.sign_count, presented=verified.sign_count
            )
            raise Unauthenticated(
                "passkey refused: its signature counter went backwards (a cloned authenticator?)",
                code="passkey_cloned",
            )
        if not await self.store.record_passkey_use(
            passkey.id, passkey.sign_count, verified.sign_count, verified.backed_up
        ):
            raise Unauthenticated(
                "this passkey was used at the same moment elsewhere; try again", code="passkey_invalid"
            )
        user = await self.store.get_user(passkey.user_id)
        if user is None or not user.is_active:
            raise Unauthenticated("this account is disabled or gone")
        return await self.sessions.open(ctx, user, method="passkey")

    async def _failed(self, ctx: Context, passkey: PasskeyRecord, reason: str, **details: Any) -> None:
        event = "passkey_clone_suspected" if reason == "sign_count_regressed" else "login_failed"
        await self.store.audit(
            ctx.audit_event(
                event, user_id=passkey.user_id, method="passkey", reason=reason, passkey_id=passkey.id, **details
            )
        )

    # -- management -------------------------------------------------------------------------------
    async def list_own(self, ctx: Context) -> list[PasskeyRecord]:
        """The caller's passkeys."""
        user = await self.permissions.caller_with_scope(ctx, "keys")
        return await self.store.list_passkeys(user.id)

    async def delete(self, ctx: Context, passkey_id: str) -> bool:
        """Remove one of the caller's passkeys (someone else's is :class:`NotFound`, as an unknown one)."""
        user = await self.permissions.caller_with_scope(ctx, "keys")
        if not valid_id(passkey_id):
            raise NotFound("no such passkey")
        deleted = await self.store.delete_passkey(
            passkey_id,
            user.id,
            audit=ctx.audit_event("passkey_deleted", tenant_id=user.tenant_id, user_id=user.id, passkey_id=passkey_id),
        )
        if not deleted:
            raise NotFound("no such passkey")
        PASSKEY_CHANGES.labels("deleted").inc()
        return True
