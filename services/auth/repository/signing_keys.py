"""Token-signing keys in Postgres (private halves sealed); the key ring's store."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import asyncpg

from services.auth.keyring import NewSigningKey, Rotation, SigningKeyRecord
from services.auth.repository.base import AuditEvent, PostgresRepository, insert_audit_event

_SIGNING_KEY_COLUMNS = (
    "kid, algorithm, state, private_key, kek_id, public_jwk, created_at, activated_at, retired_at, verify_until"
)
# Serialises every change of the key states, across replicas and `goblin keys rotate`.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('goblin-signing-keys'))"


def _signing_key(row: asyncpg.Record) -> SigningKeyRecord:
    values = dict(row)
    values["public_jwk"] = json.loads(values["public_jwk"])
    return SigningKeyRecord(**values)


async def _insert_signing_key(conn: asyncpg.Connection, key: NewSigningKey, state: str) -> None:
    await conn.execute(
        """INSERT INTO signing_keys (kid, algorithm, state, private_key, kek_id, public_jwk, activated_at)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, CASE WHEN $3 = 'current' THEN now() END)""",
        key.kid,
        key.algorithm,
        state,
        key.sealed_private_key,
        key.kek_id,
        json.dumps(key.public_jwk),
    )


class SigningKeyRepository(PostgresRepository):
    async def load_signing_keys(self) -> list[SigningKeyRecord]:
        rows = await self.pool.fetch(
            f"""SELECT {_SIGNING_KEY_COLUMNS} FROM signing_keys
                 WHERE state <> 'retired' OR verify_until > now()
                 ORDER BY created_at"""
        )
        return [_signing_key(r) for r in rows]

    async def ensure_signing_keys(self, make_key: Callable[[], NewSigningKey]) -> list[str]:
        """Make a current and a standby key where missing; kids created. Replicas starting together
        take turns on an advisory lock, so they agree on one pair."""
        created: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_LOCK)
            states = {
                r["state"]: r["kid"]
                for r in await conn.fetch("SELECT kid, state FROM signing_keys WHERE state <> 'retired'")
            }
            if "current" not in states:
                if "standby" in states:
                    await conn.execute(
                        "UPDATE signing_keys SET state = 'current', activated_at = now() WHERE kid = $1",
                        states.pop("standby"),
                    )
                else:
                    key = make_key()
                    await _insert_signing_key(conn, key, "current")
                    created.append(key.kid)
            if "standby" not in states:
                key = make_key()
                await _insert_signing_key(conn, key, "standby")
                created.append(key.kid)
        return created

    async def rotate_signing_keys(
        self, make_key: Callable[[], NewSigningKey], verify_for_s: float, audit: AuditEvent
    ) -> Rotation:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_LOCK)
            retired = await conn.fetchval(
                """UPDATE signing_keys
                      SET state = 'retired', retired_at = now(),
                          verify_until = now() + make_interval(secs => $1)
                    WHERE state = 'current' RETURNING kid""",
                float(verify_for_s),
            )
            current = await conn.fetchval(
                """UPDATE signing_keys SET state = 'current', activated_at = now()
                    WHERE state = 'standby' RETURNING kid"""
            )
            if current is None:  # no standby (deleted by hand): a fresh key signs from now on
                key = make_key()
                await _insert_signing_key(conn, key, "current")
                current = key.kid
            standby = make_key()
            await _insert_signing_key(conn, standby, "standby")
            # Keys whose every token has expired are of no use to anyone: destroy them.
            await conn.execute("DELETE FROM signing_keys WHERE state = 'retired' AND verify_until <= now()")
            rotation = Rotation(retired_kid=retired, current_kid=current, standby_kid=standby.kid)
            details = {"retired_kid": retired, "current_kid": current, "standby_kid": standby.kid}
            await insert_audit_event(conn, replace(audit, details={**audit.details, **details}))
        return rotation
