"""Who is asking, as the gateway's backend calls carry it: the signed principal, made when a call is
made (lazily: a request that calls no backend signs nothing), a fresh assertion per call (a backend
admits each once, so a request's several calls each need their own).

:func:`act_as` names the verified caller of the request being served (deps.authenticate); every call
of a typed client (:func:`metadata`) then carries an assertion of it. A principal signed beforehand and
set in ``outgoing_principal_var`` (a task acting for someone else, kpi_sources) is sent as it is.
"""

from __future__ import annotations

from contextvars import ContextVar

from goblin.v1 import auth_pb2
from services.common.grpc_client import call_metadata
from services.common.principal import Principal, load_signer, outgoing_principal_var, static_claims

# The verified caller of the request being served, not signed yet.
caller_var: ContextVar[auth_pb2.Principal | None] = ContextVar("gateway_caller", default=None)

# The static claims' JSON of recent principals, by their serialized auth Principal (every field the
# claims come from, so a changed budget or scope is a new entry); bounded like the principal cache.
_STATIC_CLAIMS: dict[bytes, str] = {}
_STATIC_CLAIMS_MAX = 10_000


def act_as(principal: auth_pb2.Principal) -> None:
    """From here on in this context, backend calls carry assertions of ``principal``."""
    caller_var.set(principal)


def metadata() -> tuple[tuple[str, str], ...]:
    """The metadata of a backend call made now: the correlation id, and who is asking, signed."""
    assertion = outgoing_principal_var.get()
    if not assertion:
        caller = caller_var.get()
        if caller is not None:
            assertion = sign_principal(caller)
    return call_metadata(assertion)


def sign_principal(principal: auth_pb2.Principal) -> str:
    """The signed assertion of ``principal`` the backends believe (services.common.principal): the only
    way who-is-asking reaches them. The claims' JSON is made once per principal; each assertion adds
    only its times and jti, and the signature."""
    key = principal.SerializeToString(deterministic=True)
    static = _STATIC_CLAIMS.get(key)
    if static is None:
        if len(_STATIC_CLAIMS) >= _STATIC_CLAIMS_MAX:
            _STATIC_CLAIMS.clear()  # a burst of distinct callers: start over rather than grow
        static = _STATIC_CLAIMS[key] = static_claims(
            Principal(
                user_id=principal.user_id,
                tenant_id=principal.tenant_id,
                role=principal.role,
                scopes=tuple(principal.scopes),
                api_key_id=principal.api_key_id,
                session_id=principal.session_id,
                tenant_daily_budget_usd=(
                    principal.tenant_daily_budget_usd if principal.HasField("tenant_daily_budget_usd") else None
                ),
                key_tokens_per_day=principal.key_tokens_per_day if principal.HasField("key_tokens_per_day") else None,
                requests_per_day=principal.requests_per_day,
            )
        )
    return load_signer().sign_static(static)
