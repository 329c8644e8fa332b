from __future__ import annotations

import pytest

from goblin.v1 import auth_pb2
from services.common.context import hash_user_id
from services.gateway.ratelimit import (
    Client,
    RouteClass,
    TrustedProxies,
    bearer_token,
    classify,
    client_for,
    parse_limits,
)


@pytest.mark.parametrize(
    ("path", "route_class"),
    [
        ("/auth/login", RouteClass.auth),
        ("/.well-known/jwks.json", RouteClass.jwks),
        ("/v1/chat/completions", RouteClass.chat),
        ("/chat/completions", RouteClass.chat),
        ("/invoke", RouteClass.chat),
        ("/v1/collections/docs/query", RouteClass.chat),
        ("/health", RouteClass.health),
        ("/health/ready", RouteClass.health),
        ("/api/health", RouteClass.health),
        ("/v1/models", RouteClass.default),
        ("/v1/tasks", RouteClass.default),
    ],
)
def test_route_classes(path: str, route_class: RouteClass) -> None:
    assert classify(path) is route_class


def test_limits_notation() -> None:
    assert [str(i) for i in parse_limits("5/second;100/minute")] == ["5 per 1 second", "100 per 1 minute"]
    with pytest.raises(ValueError, match="limits notation"):
        parse_limits("ten per minute")


def test_only_a_verified_credential_is_a_client_of_its_own() -> None:
    verified = auth_pb2.Principal(user_id="u1", api_key_id="k1")
    # The user is kept in Redis as its telemetry hash, never the raw id.
    user = f"user:{hash_user_id('u1')}"
    assert client_for(RouteClass.chat, verified, "gk_abc_secret", "10.0.0.1") == Client("key:k1", user=user)
    assert client_for(RouteClass.chat, verified, "gk_abc_secret", "10.0.0.2") == Client("key:k1", user=user)
    assert "u1" not in user
    # An access token has no key id: its hash stands in, never the token itself.
    by_token = client_for(RouteClass.chat, auth_pb2.Principal(user_id="u1"), "eyJ.secret", "10.0.0.1")
    assert by_token.key.startswith("key:") and "secret" not in by_token.key and by_token.user == user
    # Not verified (made up, or not seen yet): the IP, whatever was sent.
    assert client_for(RouteClass.chat, None, "made-up", "10.0.0.1") == Client("ip:10.0.0.1")
    assert client_for(RouteClass.chat, None, None, "10.0.0.1") == Client("ip:10.0.0.1")
    # Auth routes: the IP even for a verified credential, so guessing buys no fresh window.
    assert client_for(RouteClass.auth, verified, "gk_abc_secret", "10.0.0.1") == Client("ip:10.0.0.1")


def test_bearer_token() -> None:
    assert bearer_token("Bearer  abc ") == "abc"
    assert bearer_token("bearer abc") == "abc"
    assert bearer_token("Basic dXNlcg==") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "::1/128"])
    assert proxies.client_ip("203.0.113.9", "198.51.100.7") == "203.0.113.9"  # not a proxy: header ignored
    assert proxies.client_ip("10.1.2.3", "198.51.100.7") == "198.51.100.7"
    # The client can prepend anything; the right-most address our proxy did not add is the client.
    assert proxies.client_ip("10.1.2.3", "1.2.3.4, 198.51.100.7, 10.9.9.9") == "198.51.100.7"
    assert proxies.client_ip("10.1.2.3", "not-an-ip") == "10.1.2.3"
    assert proxies.client_ip("10.1.2.3", None) == "10.1.2.3"
    assert TrustedProxies([]).client_ip("127.0.0.1", "198.51.100.7") == "127.0.0.1"
