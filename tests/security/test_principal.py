"""Attacks on who-is-asking, straight at the services over real gRPC (past the gateway), against a
running suite: naming someone else in request fields, and forged, expired, foreign and replayed signed
principals. Each is refused; the normal path through the gateway keeps working.

The identity fields are written on the wire by hand (they are gone from RequestContext), as a caller
with an old or hostile client would send them: protobuf keeps unknown fields, so only the servers'
refusal to read identity from the message protects the admin."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from goblin.v1 import auth_pb2, common_pb2, router_pb2
from goblin_tools.suite import GOBLIN, Suite
from services.common.principal import PRINCIPAL_METADATA_KEY, Principal, PrincipalSigner
from tests.integration.principals import as_caller, suite_signer

pytestmark = pytest.mark.integration


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: bytes) -> bytes:
    """A length-delimited protobuf field (strings and embedded messages)."""
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def forged_context(user_id: str = "", tenant_id: str = "", scopes: tuple[str, ...] = ()) -> bytes:
    """Today's RequestContext identity fields: user_id = 2, tenant_id = 3, scopes = 5."""
    body = _field(2, user_id.encode()) + _field(3, tenant_id.encode())
    return body + b"".join(_field(5, s.encode()) for s in scopes)


@pytest.fixture(scope="module")
def admin(suite: Suite) -> Iterator[dict]:
    """The suite admin's account (``/auth/me`` with the admin key)."""
    with suite.admin_client() as client:
        me = client.get("/auth/me")
        assert me.status_code == 200, me.text
        yield me.json()


@pytest.fixture(scope="module")
def channels(suite: Suite) -> Iterator[dict[str, grpc.Channel]]:
    opened = {name: suite.grpc_channel(name) for name in ("auth", "router")}
    yield opened
    for channel in opened.values():
        channel.close()


def raw_call(channel: grpc.Channel, method: str, payload: bytes, reply: type, metadata: tuple = ()) -> object:
    """``method`` with a hand-written request body."""
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=reply.FromString)
    return call(payload, metadata=metadata, timeout=30)


def refused(
    error: pytest.ExceptionInfo[grpc.RpcError], code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED
) -> bool:
    return error.value.code() == code


def test_minting_a_key_for_the_admin_by_naming_them_is_refused(
    suite: Suite, admin: dict, channels: dict[str, grpc.Channel]
) -> None:
    request = auth_pb2.CreateApiKeyRequest(name="stolen").SerializeToString()
    attack = request + _field(1, forged_context(admin["user_id"], admin["tenant_id"], ("*",)))
    with pytest.raises(grpc.RpcError) as error:
        raw_call(channels["auth"], "/goblin.v1.Auth/CreateApiKey", attack, auth_pb2.CreatedApiKey)
    assert refused(error), error.value.details()


def test_a_signed_caller_naming_the_admin_in_fields_acts_as_themselves(
    suite: Suite, admin: dict, channels: dict[str, grpc.Channel]
) -> None:
    # An ordinary account, made as an operator makes one (an admin's API key may not open accounts).
    email = f"mallory-{uuid.uuid4().hex[:8]}@example.com"
    made = subprocess.run(
        [str(GOBLIN), "users", "create", email, "--no-password"], env=suite.env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    mallory = made.stdout.strip().splitlines()[-1]
    request = auth_pb2.CreateApiKeyRequest(name="mine", user_id=admin["user_id"]).SerializeToString()
    attack = request + _field(1, forged_context(admin["user_id"], admin["tenant_id"], ("*",)))
    caller = as_caller(suite, mallory, scopes=("keys", "chat"), role="user")
    with pytest.raises(grpc.RpcError) as error:
        raw_call(channels["auth"], "/goblin.v1.Auth/CreateApiKey", attack, auth_pb2.CreatedApiKey, caller)
    assert refused(error, grpc.StatusCode.PERMISSION_DENIED), error.value.details()
    own = auth_pb2.CreateApiKeyRequest(name="mine", scopes=["chat"]).SerializeToString()
    created = raw_call(
        channels["auth"],
        "/goblin.v1.Auth/CreateApiKey",
        own + _field(1, forged_context(admin["user_id"], admin["tenant_id"], ("*",))),
        auth_pb2.CreatedApiKey,
        as_caller(suite, mallory, scopes=("keys", "chat"), role="user"),
    )
    assert created.key.user_id == mallory, "the key is the signed caller's, not the one the fields name"


def test_spending_or_reading_as_another_tenant_by_naming_it_is_refused(channels: dict[str, grpc.Channel]) -> None:
    chat = common_pb2.ChatRequest(
        model="local",
        messages=[common_pb2.ChatMessage(role="user", content="hi")],
        params=common_pb2.SamplingParams(max_tokens=1),
    ).SerializeToString()
    with pytest.raises(grpc.RpcError) as error:
        raw_call(
            channels["router"],
            "/goblin.v1.Router/Chat",
            chat + _field(6, forged_context("victim-user", "victim", ("*",))),
            common_pb2.ChatResponse,
        )
    assert refused(error), error.value.details()
    usage = router_pb2.UsageRequest(tenant_id="*").SerializeToString()
    with pytest.raises(grpc.RpcError) as error:
        raw_call(
            channels["router"],
            "/goblin.v1.Router/GetUsage",
            usage + _field(1, forged_context("u", "default", ("*",))),
            router_pb2.UsageReport,
        )
    assert refused(error), error.value.details()


def test_a_key_with_every_scope_is_not_an_admin_of_the_router(suite: Suite, channels: dict[str, grpc.Channel]) -> None:
    usage = router_pb2.UsageRequest(tenant_id="*").SerializeToString()
    with pytest.raises(grpc.RpcError) as error:
        raw_call(
            channels["router"],
            "/goblin.v1.Router/GetUsage",
            usage,
            router_pb2.UsageReport,
            as_caller(suite, "u", "default", scopes=("*",), role="user"),
        )
    assert refused(error, grpc.StatusCode.PERMISSION_DENIED), error.value.details()


def bad_assertions(suite: Suite) -> dict[str, str]:
    caller = Principal(user_id="u", tenant_id="default", role="admin", scopes=("*",))
    return {
        "forged (another key)": PrincipalSigner(Ed25519PrivateKey.generate(), 60).sign(caller),
        "expired": suite_signer(suite).sign(caller, now=time.time() - 600),
        "another audience": suite_signer(suite).sign(
            Principal(user_id="u", tenant_id="default", role="admin", scopes=("*",), audience="someone-else")
        ),
        "tampered": _tamper(suite_signer(suite).sign(caller)),
        "garbage": "not-a-principal",
    }


def _tamper(assertion: str) -> str:
    body, _, signature = assertion.partition(".")
    return f"{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{signature}"


@pytest.mark.parametrize("service", ["auth", "router"])
def test_forged_expired_foreign_and_tampered_principals_are_refused(
    suite: Suite, channels: dict[str, grpc.Channel], service: str
) -> None:
    for name, assertion in bad_assertions(suite).items():
        metadata = ((PRINCIPAL_METADATA_KEY, assertion),)
        with pytest.raises(grpc.RpcError) as error:
            if service == "auth":
                raw_call(
                    channels["auth"],
                    "/goblin.v1.Auth/ListTenants",
                    b"",
                    auth_pb2.ListTenantsResponse,
                    metadata,
                )
            else:
                raw_call(channels["router"], "/goblin.v1.Router/GetUsage", b"", router_pb2.UsageReport, metadata)
        assert refused(error), f"{service}: {name}: {error.value.code()} {error.value.details()}"


def test_a_replayed_principal_is_refused(suite: Suite, admin: dict, channels: dict[str, grpc.Channel]) -> None:
    # Signed as the gateway signs a real request of the admin's.
    captured = suite_signer(suite).sign(
        Principal(user_id=admin["user_id"], tenant_id=admin["tenant_id"], role="admin", scopes=("*",))
    )
    metadata = ((PRINCIPAL_METADATA_KEY, captured),)
    first = raw_call(channels["auth"], "/goblin.v1.Auth/ListTenants", b"", auth_pb2.ListTenantsResponse, metadata)
    assert first.tenants, "the first use is the real request"
    with pytest.raises(grpc.RpcError) as error:
        raw_call(channels["auth"], "/goblin.v1.Auth/ListTenants", b"", auth_pb2.ListTenantsResponse, metadata)
    assert refused(error), error.value.details()


def test_public_methods_need_no_principal_and_the_gateway_path_works(suite: Suite) -> None:
    channel = suite.grpc_channel("auth")
    with channel:
        jwks = raw_call(channel, "/goblin.v1.Auth/GetJwks", b"", auth_pb2.Jwks)
        assert jwks.current_kid
    with suite.admin_client() as client:
        assert client.get("/auth/api-keys").status_code == 200
        assert client.get("/v1/models").status_code == 200
    with httpx.Client(verify=suite.ssl_context(), base_url=suite.gateway_url) as anonymous:
        assert anonymous.get("/auth/api-keys").status_code == 401
