"""The pure-ASGI chat route (services/gateway/api/asgi_routes.py) in the running suite, over HTTPS with
HTTP/1.1 and HTTP/2: its answers, its refusals and the attacks on it (another tenant's collection,
narrower scopes, hostile text, an oversized body, malformed JSON, the wrong content type). Each refusal
is a clear 4xx with the error envelope and the edge's headers, never a 500. The answers of the FastAPI
route and this one are compared byte for byte in tests/unit/gateway/test_chat_asgi.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from goblin_tools.suite import Suite
from tests.integration.auth_support import admin_token, auth_suite_fixture
from tests.integration.rag_support import api_key, other_tenant_token

pytestmark = pytest.mark.integration

auth_suite = auth_suite_fixture()
MODEL = "local"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}
# A GitHub token shape the request-side scanner redacts (services.common.secret_detectors).
SECRET = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


@pytest.fixture(scope="module")
def suite(auth_suite: Suite) -> Suite:
    """The auth tests' shared suite: its admin password lets a second tenant's user be made."""
    return auth_suite


@pytest.fixture(scope="module", params=[False, True], ids=["http1.1", "h2"])
def admin(suite: Suite, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    with suite.client(http2=request.param, timeout=120, headers={"Authorization": f"Bearer {suite.admin_key}"}) as c:
        yield c


def assert_refused(reply: httpx.Response, status: int, error: str) -> None:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["error"] == error and body["correlation_id"] == reply.headers["x-correlation-id"]
    assert reply.headers["x-content-type-options"] == "nosniff"


def test_answers_unary_and_streamed(admin: httpx.Client) -> None:
    reply = admin.post("/v1/chat/completions", json={**CHAT, "zzz_vendor": 1})
    assert reply.status_code == 200, reply.text
    assert reply.json()["object"] == "chat.completion" and reply.json()["usage"]["completion_tokens"] >= 1
    assert reply.headers["x-goblin-ignored-params"] == "zzz_vendor"
    assert reply.headers["strict-transport-security"] and reply.headers["x-trace-id"]
    with admin.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        events = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"
    reply = admin.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2})
    assert reply.status_code == 200 and reply.json()["object"] == "text_completion", reply.text


def test_bad_bodies_are_clear_400s(admin: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    for content, want in (
        (b'{"model": "local", "messages": [', "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"", "Field required"),
        (b'{"model": "local", "messages": []}', "messages"),
        (b'{"model": "local", "messages": [{"role": "user", "content": "\\ud800"}]}', "not valid Unicode"),
    ):
        reply = admin.post("/v1/chat/completions", content=content, headers=headers)
        assert_refused(reply, 400, "invalid_request")
        assert want in reply.json()["message"]
    # The wrong content type: the body is not read as JSON.
    reply = admin.post("/v1/chat/completions", content=json.dumps(CHAT), headers={"Content-Type": "text/plain"})
    assert_refused(reply, 400, "invalid_request")
    assert "must be a JSON object" in reply.json()["message"]


def test_an_oversized_body_is_413(admin: httpx.Client, suite: Suite) -> None:
    huge = {**CHAT, "messages": [{"role": "user", "content": "x" * (16 * 1024 * 1024)}]}
    assert_refused(admin.post("/v1/chat/completions", json=huge), 413, "payload_too_large")


def test_no_or_an_unknown_credential_is_401(suite: Suite) -> None:
    with suite.client() as client:
        reply = client.post("/v1/chat/completions", json=CHAT)
        assert_refused(reply, 401, "unauthorized")
        assert reply.headers["www-authenticate"] == "Bearer"
        reply = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer gbl_nope"})
        assert_refused(reply, 401, "unauthorized")
        assert "invalid_token" in reply.headers["www-authenticate"]


def test_a_narrower_scope_is_403(suite: Suite, admin: httpx.Client) -> None:
    keys_only = api_key(admin, ["keys"])
    chat_only = api_key(admin, ["chat"])
    with suite.client(headers={"Authorization": f"Bearer {keys_only}"}) as client:
        for stream in (False, True):
            reply = client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            assert_refused(reply, 403, "insufficient_scope")
        # Before the body is looked at, as the FastAPI route: a bad body does not tell a stranger more.
        assert_refused(client.post("/v1/chat/completions", json={}), 403, "insufficient_scope")
    with suite.client(headers={"Authorization": f"Bearer {chat_only}"}) as client:
        rag = {**CHAT, "goblin": {"rag": {"collection": "anything"}}}
        assert_refused(client.post("/v1/chat/completions", json=rag), 403, "insufficient_scope")


@pytest.fixture(scope="module")
def victim(suite: Suite) -> dict:
    """A collection of the admin's tenant."""
    name = f"asgi{uuid.uuid4().hex[:8]}"
    with suite.admin_client() as client:
        created = client.post("/v1/collections", json={"name": name})
        assert created.status_code == 201, created.text
        reply = client.post(
            f"/v1/collections/{name}/documents",
            json={"text": "The vault combination is kept by the night guard.", "document_id": "vault"},
        )
        assert reply.status_code == 201, reply.text
    return {"name": name, "id": created.json()["id"]}


def test_another_tenants_collection_is_not_found(suite: Suite, victim: dict) -> None:
    with suite.client() as client:
        _, token = other_tenant_token(client, admin_token(client))
    with suite.client(timeout=120, headers={"Authorization": f"Bearer {token}"}) as client:
        for ref in (victim["name"], victim["id"]):
            for stream in (False, True):
                body = {**CHAT, "stream": stream, "goblin": {"rag": {"collection": ref}}}
                reply = client.post("/v1/chat/completions", json=body)
                assert_refused(reply, 404, "collection_not_found")
                assert "vault" not in reply.text


def test_hostile_text_is_text_and_secrets_do_not_leave(admin: httpx.Client) -> None:
    hostile = f"<script>alert(1)</script>\u202e\x00 {SECRET} '; DROP TABLE users; --"
    body = {**CHAT, "messages": [{"role": "user", "content": hostile}], "user": "<img src=x onerror=alert(1)>"}
    reply = admin.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["content-security-policy"].startswith("default-src 'none'")
    assert SECRET not in reply.text
