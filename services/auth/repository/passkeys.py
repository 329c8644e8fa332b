"""Passkeys (WebAuthn credentials) in Postgres: public keys and signature counters, several per user."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.auth.repository.base import AuditEvent, PostgresRepository, insert_audit_event
from services.common.errors import AlreadyExists


@dataclass(frozen=True)
class PasskeyRecord:
    id: str
    user_id: str
    credential_id: bytes
    public_key: bytes
    sign_count: int
    transports: list[str]
    name: str
    backed_up: bool
    last_used_at: datetime | None
    created_at: datetime


_PASSKEY_COLUMNS = (
    "id, user_id, credential_id, public_key, sign_count, transports, name, backed_up, last_used_at, created_at"
)


class PasskeyRepository(PostgresRepository):
    async def list_passkeys(self, user_id: str) -> list[PasskeyRecord]:
        rows = await self.pool.fetch(
            f"SELECT {_PASSKEY_COLUMNS} FROM webauthn_credentials WHERE user_id = $1 ORDER BY created_at, id",
            user_id,
        )
        return [PasskeyRecord(**dict(r)) for r in rows]

    async def find_passkey(self, credential_id: bytes) -> PasskeyRecord | None:
        row = await self.pool.fetchrow(
            f"SELECT {_PASSKEY_COLUMNS} FROM webauthn_credentials WHERE credential_id = $1", credential_id
        )
        return PasskeyRecord(**dict(row)) if row else None

    async def add_passkey(
        self,
        *,
        passkey_id: str,
        user_id: str,
        credential_id: bytes,
        public_key: bytes,
        sign_count: int,
        transports: list[str],
        name: str,
        backed_up: bool,
        audit: AuditEvent | None = None,
    ) -> PasskeyRecord:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    f"""INSERT INTO webauthn_credentials
                            (id, user_id, credential_id, public_key, sign_count, transports, name, backed_up)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_PASSKEY_COLUMNS}""",
                    passkey_id,
                    user_id,
                    credential_id,
                    public_key,
                    sign_count,
                    transports,
                    name,
                    backed_up,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists("this passkey is already registered", code="passkey_exists") from None
            await insert_audit_event(conn, audit)
        return PasskeyRecord(**dict(row))

    async def record_passkey_use(self, passkey_id: str, seen_count: int, new_count: int, backed_up: bool) -> bool:
        """Store the new sign count only if nobody used the passkey since we read ``seen_count``
        (compare-and-set): two assertions with one counter value cannot both succeed."""
        done = await self.pool.fetchval(
            """UPDATE webauthn_credentials
                  SET sign_count = $3, backed_up = $4, last_used_at = now()
                WHERE id = $1 AND sign_count = $2
            RETURNING id""",
            passkey_id,
            seen_count,
            new_count,
            backed_up,
        )
        return done is not None

    async def delete_passkey(self, passkey_id: str, user_id: str, audit: AuditEvent | None = None) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "DELETE FROM webauthn_credentials WHERE id = $1 AND user_id = $2 RETURNING id",
                passkey_id,
                user_id,
            )
            if done:
                await insert_audit_event(conn, audit)
        return done is not None
