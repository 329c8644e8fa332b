from __future__ import annotations

import pytest

from services.gateway.ratelimit import RouteClass, TrustedProxies, classify, client_key, parse_limits


@pytest.mark.parametrize(
    ("path", "route_class"),
    [
        ("/auth/login", RouteClass.auth),
        ("/.well-known/jwks.json", RouteClass.auth),
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


def test_clients_are_keyed_by_hashed_credential_else_ip() -> None:
    by_key = client_key(RouteClass.chat, "Bearer gk_abc_secret", "10.0.0.1")
    assert by_key.startswith("key:") and "gk_abc_secret" not in by_key
    assert by_key == client_key(RouteClass.chat, "Bearer gk_abc_secret", "10.0.0.2")
    assert client_key(RouteClass.chat, None, "10.0.0.1") == "ip:10.0.0.1"
    assert client_key(RouteClass.chat, "Basic dXNlcg==", "10.0.0.1") == "ip:10.0.0.1"
    # Made-up bearer tokens must not buy a password guesser fresh windows.
    assert client_key(RouteClass.auth, "Bearer anything", "10.0.0.1") == "ip:10.0.0.1"


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "::1/128"])
    assert proxies.client_ip("203.0.113.9", "198.51.100.7") == "203.0.113.9"  # not a proxy: header ignored
    assert proxies.client_ip("10.1.2.3", "198.51.100.7") == "198.51.100.7"
    # The client can prepend anything; the right-most address our proxy did not add is the client.
    assert proxies.client_ip("10.1.2.3", "1.2.3.4, 198.51.100.7, 10.9.9.9") == "198.51.100.7"
    assert proxies.client_ip("10.1.2.3", "not-an-ip") == "10.1.2.3"
    assert proxies.client_ip("10.1.2.3", None) == "10.1.2.3"
    assert TrustedProxies([]).client_ip("127.0.0.1", "198.51.100.7") == "127.0.0.1"
