"""Request-scoped values that follow a request across tasks and hops."""

from __future__ import annotations

import hashlib
import uuid
from contextvars import ContextVar

CORRELATION_HEADER = "X-Correlation-ID"
CORRELATION_METADATA_KEY = "x-correlation-id"

correlation_id_var: ContextVar[str] = ContextVar("correlation_id", default="")


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def current_correlation_id() -> str:
    return correlation_id_var.get()


def hash_user_id(user_id: str) -> str:
    """What telemetry may carry instead of a user id: a short one-way digest."""
    if not user_id:
        return ""
    return hashlib.sha256(f"goblin-user:{user_id}".encode()).hexdigest()[:16]
