"""One running suite for the DocQA tests (tests/integration/test_docqa.py and
tests/security/test_docqa_attacks.py): the real rag service (embedded Chroma, real MiniLM embeddings),
the real local model, and a fake OpenAI-compatible provider (``acme``) whose requests the tests read, to
see exactly which passages reached a third party.

The fixtures are session-scoped and imported by both modules, so the suite starts once for both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.suite import Suite, catalog_suite
from tests.integration.auth_support import ADMIN_EMAIL, ADMIN_PASSWORD

REMOTE_MODEL = "acme/acme-chat"
# The fake answers with this text, so marker parsing is checked against a known answer.
REMOTE_REPLY = "Backups run nightly [1]."
PASSWORD = "a long enough password for docqa"

HANDBOOK = {
    "keys": (
        "Key rotation",
        "To rotate the principal signing keys, run goblin keys rotate. The old key stays valid for one hour.",
    ),
    "backups": (
        "Database backups",
        "Backups of the Postgres database run nightly at 02:00 UTC and are kept for thirty days.",
    ),
    "plants": (
        "Office plants",
        "The ficus in the office lobby is watered every Tuesday morning by the facilities team.",
    ),
}


@pytest.fixture(scope="session")
def docqa_fake() -> Iterator[FakeProviders]:
    with FakeProviders(reply=REMOTE_REPLY) as server:
        yield server


@pytest.fixture(scope="session")
def docqa_suite(
    tmp_path_factory: pytest.TempPathFactory,
    new_database: Callable[[], str],
    redis_url: str,
    docqa_fake: FakeProviders,
) -> Iterator[Suite]:
    with catalog_suite(
        tmp_path_factory.mktemp("docqa"),
        f"""
providers:
  acme:
    kind: openai_compatible
    base_url: http://127.0.0.1:{docqa_fake.port}/acme/v1
models:
  {REMOTE_MODEL}:
    context_length: 8000
""",
        DATABASE_URL=new_database(),
        REDIS_URL=redis_url,
        ACME_API_KEY=docqa_fake.key("acme"),
        GOBLIN_ADMIN_PASSWORD=ADMIN_PASSWORD,  # registering a user takes a signed-in admin session
        **docqa_fake.env(),
    ) as suite:
        yield suite


def client_with(suite: Suite, credential: str) -> httpx.Client:
    return suite.client(headers={"Authorization": f"Bearer {credential}"}, timeout=300)


def ingest(http: httpx.Client, collection: str, documents: dict[str, tuple[str, str]]) -> None:
    """``collection`` made (if new) with ``documents`` ({id: (title, text)}), each checked indexed."""
    made = http.post("/v1/collections", json={"name": collection})
    assert made.status_code in (201, 409), made.text
    for document_id, (title, text) in documents.items():
        added = http.post(
            f"/v1/collections/{collection}/documents",
            json={"document_id": document_id, "title": title, "text": text},
        )
        assert added.status_code in (200, 201), added.text


def new_key(http: httpx.Client, scopes: list[str]) -> str:
    reply = http.post("/auth/api-keys", json={"name": f"docqa-{'-'.join(scopes)}", "scopes": scopes})
    assert reply.status_code == 201, reply.text
    return reply.json()["key"]


def other_tenant(suite: Suite) -> str:
    """An access token of a user in a tenant of its own (scopes "*"), made by the admin."""
    tenant = f"rival-{uuid.uuid4().hex[:8]}"
    email = f"{tenant}@example.com"
    with suite.client() as http:
        admin = {"Authorization": f"Bearer {login(http, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
        made = http.post("/auth/tenants", json={"id": tenant, "name": tenant}, headers=admin)
        assert made.status_code == 201, made.text
        registered = http.post(
            "/auth/register",
            json={"email": email, "password": PASSWORD, "tenant_id": tenant, "role": "user"},
            headers=admin,
        )
        assert registered.status_code == 201, registered.text
        return login(http, email, PASSWORD)


def login(http: httpx.Client, email: str, password: str) -> str:
    reply = http.post("/auth/login", json={"email": email, "password": password})
    assert reply.status_code == 200, reply.text
    return reply.json()["access_token"]


def sent_messages(fake: FakeProviders) -> list[dict[str, Any]]:
    """The messages of every chat request the fake provider received, in order."""
    return [m for r in fake.requests("acme") if r.path.endswith("/chat/completions") for m in r.body["messages"]]
