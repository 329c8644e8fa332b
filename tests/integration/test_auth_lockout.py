"""Password lockout that a stranger cannot turn against a known user: failures lock the (email, client
address) they came from; only a much larger number of failures from anywhere locks the email for all."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest

from goblin.v1 import auth_pb2, common_pb2
from goblin_tools.suite import Suite
from services.auth.sessions import GLOBAL_LOCKOUT_FACTOR
from tests.integration.auth_support import (
    LOCK_AFTER,
    PASSWORD,
    auth_stub,
    auth_suite_fixture,
    create_user,
    unique_email,
)

auth_suite = auth_suite_fixture()


@pytest.fixture
def client(auth_suite: Suite) -> Iterator[httpx.Client]:
    with auth_suite.client() as c:
        yield c


def sign_in_from(auth_suite: Suite, ip: str, email: str, password: str) -> grpc.StatusCode:
    """Sign in as a gateway does for a client at ``ip``: the auth service's answer, as a status."""
    channel, stub = auth_stub(auth_suite)
    with channel:
        try:
            stub.Login(
                auth_pb2.LoginRequest(context=common_pb2.RequestContext(client_ip=ip), email=email, password=password)
            )
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


@pytest.mark.parametrize("known", [True, False])
def test_a_stranger_cannot_lock_a_user_out_from_another_address(
    client: httpx.Client, auth_suite: Suite, known: bool
) -> None:
    email = create_user(client)[0] if known else unique_email("ghost")
    attacker, owner = "203.0.113.7", "198.51.100.9"
    for _ in range(LOCK_AFTER):
        assert sign_in_from(auth_suite, attacker, email, "wrong password!") == grpc.StatusCode.UNAUTHENTICATED
    assert sign_in_from(auth_suite, attacker, email, PASSWORD) == grpc.StatusCode.RESOURCE_EXHAUSTED
    expected = grpc.StatusCode.OK if known else grpc.StatusCode.UNAUTHENTICATED
    assert sign_in_from(auth_suite, owner, email, PASSWORD) == expected, "the owner's address is not locked"
    if known:
        assert client.post("/auth/login", json={"email": email, "password": PASSWORD}).status_code == 200


def test_failures_from_many_addresses_reach_a_global_ceiling(client: httpx.Client, auth_suite: Suite) -> None:
    email, _ = create_user(client)
    ceiling = LOCK_AFTER * GLOBAL_LOCKOUT_FACTOR
    for i in range(ceiling):  # never enough from one address to lock it
        code = sign_in_from(auth_suite, f"192.0.2.{i // (LOCK_AFTER - 1) + 1}", email, "wrong password!")
        assert code == grpc.StatusCode.UNAUTHENTICATED, i
    assert sign_in_from(auth_suite, "198.51.100.200", email, PASSWORD) == grpc.StatusCode.RESOURCE_EXHAUSTED
