"""What every refusal must look like to a client, whatever provoked it (shared by the security tests)."""

from __future__ import annotations

import re

import httpx

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
# What an error body must never carry: a traceback, a source path, an address or a URL of ours.
LEAKS = (
    re.compile(r"Traceback|File \""),
    re.compile(r"(?:/work|/tmp|/home|/usr|site-packages)/"),
    re.compile(r"\b(?:127\.0\.0\.1|localhost|0\.0\.0\.0)(?::\d+)?\b"),
    re.compile(r"https?://"),
    re.compile(r"\.py\b"),
)


def assert_error_envelope(reply: httpx.Response) -> dict:
    """``reply`` is a 4xx/5xx with the JSON error body, the correlation id and the security headers,
    and leaks nothing internal; returns the body."""
    assert reply.status_code >= 400, (reply.status_code, reply.text)
    body = reply.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str), body
    assert body.get("correlation_id"), body
    assert reply.headers.get("x-correlation-id") == body["correlation_id"], reply.headers
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers.get(name) == value, (name, reply.headers)
    assert "default-src 'none'" in reply.headers.get("content-security-policy", "")
    for leak in LEAKS:
        assert not leak.search(reply.text), (leak.pattern, reply.text)
    return body
