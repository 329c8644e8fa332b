"""The wire format of "forget these principals": what a gateway replica publishes on Redis when a
change was made through it, and what auth publishes when it ends a session on its own (a sign-out by
refresh token, a reused refresh token). Every gateway replica subscribes (services/gateway/invalidation.py).

Ids only (user, tenant, API key, session), never a credential or a digest of one. A message can only
make a replica forget cached principals; nothing in it is ever believed as identity.
"""

from __future__ import annotations

import json
import re
from typing import Any

CHANNEL = "goblin:gateway:principal-invalidations"
KINDS = ("user_id", "tenant_id", "api_key_id", "session_id")
MAX_MESSAGE_BYTES = 2048
# Ids are compared, never interpreted; bounded and printable so that a log line quoting one stays one line.
ID_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")


def encode(sender: str, ids: dict[str, str]) -> bytes:
    """The message naming ``ids`` (kinds of :data:`KINDS` to one id each; empty ones are left out),
    sent by ``sender`` (a gateway replica's id, or ``auth``)."""
    return json.dumps({"v": 1, "replica": sender, **{k: v for k, v in ids.items() if v}}).encode()


def decode(data: Any) -> tuple[str, dict[str, str]] | None:
    """The sender and the ids of a message; None when it is not one this version can read."""
    if not isinstance(data, bytes | str) or len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("v") != 1 or not isinstance(message.get("replica"), str):
        return None
    ids = {kind: message[kind] for kind in KINDS if kind in message}
    if not ids or not all(isinstance(v, str) and ID_PATTERN.fullmatch(v) for v in ids.values()):
        return None
    return message["replica"], ids
