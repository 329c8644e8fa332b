"""Attacks on the RAG routes and the rag service, against a running suite: another tenant's collections
by name and by id, credentials with narrower scopes, hostile names, metadata and filters, and calls
straight to the rag service without (or with someone else's) signed principal. Each is refused with a
clear 4xx (gRPC: UNAUTHENTICATED / NOT_FOUND), never a 500, and nothing is stored."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from goblin.v1 import rag_pb2, rag_pb2_grpc
from goblin_tools.suite import Suite
from tests.integration.auth_support import admin_token, auth_suite_fixture
from tests.integration.principals import as_caller
from tests.integration.rag_support import api_key, db_rows, other_tenant_token

pytestmark = pytest.mark.integration

auth_suite = auth_suite_fixture()


@pytest.fixture(scope="module")
def suite(auth_suite: Suite) -> Suite:
    """The attacks run on the auth tests' shared suite: it has an admin password, so an admin session
    can make a second tenant's user (an API key cannot make accounts)."""
    return auth_suite


@pytest.fixture(scope="module")
def victim(suite: Suite) -> Iterator[dict]:
    """A collection of the admin's tenant with one document in it."""
    name = f"victim{uuid.uuid4().hex[:8]}"
    with suite.admin_client() as client:
        created = client.post("/v1/collections", json={"name": name})
        assert created.status_code == 201, created.text
        reply = client.post(
            f"/v1/collections/{name}/documents",
            json={"text": "The vault combination is kept by the night guard.", "document_id": "vault"},
        )
        assert reply.status_code == 201, reply.text
        tenant = client.get("/auth/me").json()["tenant_id"]
    yield {"name": name, "id": created.json()["id"], "tenant": tenant}


@pytest.fixture(scope="module")
def intruder(suite: Suite) -> dict:
    """A signed-in user of another tenant (session tokens hold scope '*')."""
    with suite.client() as client:
        tenant, token = other_tenant_token(client, admin_token(client))
    return {"tenant": tenant, "headers": {"Authorization": f"Bearer {token}"}}


def routes(collection: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", f"/v1/collections/{collection}", None),
        ("DELETE", f"/v1/collections/{collection}", None),
        ("GET", f"/v1/collections/{collection}/documents", None),
        ("GET", f"/v1/collections/{collection}/documents/vault", None),
        ("DELETE", f"/v1/collections/{collection}/documents/vault", None),
        ("POST", f"/v1/collections/{collection}/documents", {"text": "planted by the intruder"}),
        ("POST", f"/v1/collections/{collection}/query", {"query": "vault combination"}),
    ]


@pytest.mark.parametrize("by", ["name", "id"])
def test_another_tenants_collection_is_not_found(suite: Suite, victim: dict, intruder: dict, by: str) -> None:
    with suite.client(headers=intruder["headers"]) as client:
        for method, path, body in routes(victim[by]):
            reply = client.request(method, path, json=body)
            assert reply.status_code == 404, (method, path, reply.text)
            assert reply.json()["error"] in ("collection_not_found", "not_found")
        listed = client.get("/v1/collections").json()["data"]
        assert victim["id"] not in {c["id"] for c in listed}
        # The intruder may use the same name in their own tenant: a different collection.
        own = client.post("/v1/collections", json={"name": victim["name"]})
        assert own.status_code == 201 and own.json()["id"] != victim["id"]
        assert client.post(f"/v1/collections/{victim['name']}/query", json={"query": "vault"}).json()["hits"] == []
        client.delete(f"/v1/collections/{victim['name']}")
    with suite.admin_client() as client:
        assert client.get(f"/v1/collections/{victim['name']}/documents").json()["total"] == 1
    rows = db_rows(suite, "SELECT id FROM rag.search_documents WHERE collection_id = $1", victim["id"])
    assert [r["id"] for r in rows] == ["vault"]


def test_an_admin_sees_only_their_own_tenant(suite: Suite, intruder: dict) -> None:
    name = f"theirs{uuid.uuid4().hex[:8]}"
    with suite.client(headers=intruder["headers"]) as client:
        theirs = client.post("/v1/collections", json={"name": name}).json()
    with suite.admin_client() as client:
        assert client.get(f"/v1/collections/{theirs['id']}").status_code == 404
        assert client.get(f"/v1/collections/{name}").status_code == 404
        assert theirs["id"] not in {c["id"] for c in client.get("/v1/collections").json()["data"]}


def test_scopes_rag_reads_and_rag_write_writes(suite: Suite, victim: dict) -> None:
    with suite.admin_client() as admin:
        chat_only = api_key(admin, ["chat"])
        read_only = api_key(admin, ["rag"])
        writer = api_key(admin, ["rag:write"])
    with suite.client(headers={"Authorization": f"Bearer {chat_only}"}) as client:
        for method, path, body in [*routes(victim["name"]), ("GET", "/v1/collections", None)]:
            reply = client.request(method, path, json=body)
            assert reply.status_code == 403, (method, path, reply.text)
        assert client.post("/v1/collections", json={"name": "nope"}).status_code == 403
    with suite.client(headers={"Authorization": f"Bearer {read_only}"}) as client:
        assert client.get(f"/v1/collections/{victim['name']}/documents").status_code == 200
        assert client.post(f"/v1/collections/{victim['name']}/query", json={"query": "vault"}).status_code == 200
        assert client.post("/v1/collections", json={"name": "nope"}).status_code == 403
        assert client.post(f"/v1/collections/{victim['name']}/documents", json={"text": "x"}).status_code == 403
        assert client.delete(f"/v1/collections/{victim['name']}/documents/vault").status_code == 403
        assert client.delete(f"/v1/collections/{victim['name']}").status_code == 403
    with suite.client(headers={"Authorization": f"Bearer {writer}"}) as client:
        # Writing without reading: documents go in, queries need 'rag'.
        assert client.post(f"/v1/collections/{victim['name']}/query", json={"query": "vault"}).status_code == 403
    with suite.admin_client() as client:
        assert client.get(f"/v1/collections/{victim['name']}/documents").json()["total"] == 1


HOSTILE_NAMES = [
    "../../etc",
    "..",
    "a" * 65,
    "name with spaces",
    "%00",
    "x%2F..%2Fy",
    "drop';--",
    "ünïcode",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_collection_names(suite: Suite, name: str) -> None:
    with suite.admin_client() as client:
        created = client.post("/v1/collections", json={"name": name})
        assert created.status_code in (400, 422), created.text
        for method, path, body in routes(name):
            reply = client.request(method, path, json=body)
            assert 400 <= reply.status_code < 500, (method, path, reply.status_code, reply.text)


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "x", "metadata": {"$where": "1"}},
        {"text": "x", "metadata": {"a": {"nested": "object"}}},
        {"text": "x", "metadata": {f"k{i}": "v" for i in range(100)}},
        {"text": "x", "metadata": {"k": "v" * 5000}},
        {"text": "x", "document_id": "../../escape"},
        {"text": "x", "document_id": "has:colon"},
        {"text": "x", "title": "t" * 10_000},
        {"text": 42},
        ["not", "an", "object"],
    ],
)
def test_hostile_documents_are_refused_and_nothing_is_stored(suite: Suite, victim: dict, payload: object) -> None:
    with suite.admin_client() as client:
        reply = client.post(f"/v1/collections/{victim['name']}/documents", json=payload)
        assert reply.status_code in (400, 422), reply.text
        assert client.get(f"/v1/collections/{victim['name']}/documents").json()["total"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"query": "vault", "filter": {"$ne": "x"}},
        {"query": "vault", "filter": {"document_id": {"$in": ["vault"]}}},
        {"query": "vault", "filter": {"$or": [{"a": "b"}]}},
        {"query": "vault", "top_k": 0},
        {"query": "vault", "top_k": -1},
        {"query": "vault", "min_score": 5},
        {"query": "v" * 5000},
    ],
)
def test_hostile_queries_are_refused(suite: Suite, victim: dict, body: dict) -> None:
    with suite.admin_client() as client:
        reply = client.post(f"/v1/collections/{victim['name']}/query", json=body)
    assert reply.status_code in (400, 422), reply.text


def test_a_name_shaped_like_a_chroma_collection_is_only_a_name(suite: Suite) -> None:
    """Chroma collection names derive from the generated id, so no collection name can reach another's."""
    with suite.admin_client() as client:
        created = client.post("/v1/collections", json={"name": "goblin_col_0000"})
        assert created.status_code == 201, created.text
        assert created.json()["id"] != "goblin_col_0000" and created.json()["id"].startswith("col_")
        assert client.delete("/v1/collections/goblin_col_0000").status_code == 200


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("documents", b'{"text": "x\\udc00 lone"}'),
        ("documents", b'{"text": "x", "metadata": {"k\\udc00": "v"}}'),
        ("documents", b'{"text": "x", "metadata": {"k": "v\\ud800"}}'),
        ("query", b'{"query": "vault", "filter": {"k": "\\udfff"}}'),
        ("query", b'{"query": "vault", "filter": {"k": "nul\\u0000"}}'),
    ],
)
def test_lone_surrogates_and_nul_in_json_are_refused(suite: Suite, victim: dict, path: str, raw: bytes) -> None:
    with suite.admin_client() as client:
        reply = client.post(
            f"/v1/collections/{victim['name']}/{path}", content=raw, headers={"Content-Type": "application/json"}
        )
        assert reply.status_code in (400, 422), reply.text
        assert client.get(f"/v1/collections/{victim['name']}/documents").json()["total"] == 1


def test_lone_surrogates_in_json_are_refused(suite: Suite, victim: dict) -> None:
    with suite.admin_client() as client:
        reply = client.post(
            f"/v1/collections/{victim['name']}/documents",
            content=b'{"text": "x\\udc00 lone"}',
            headers={"Content-Type": "application/json"},
        )
        assert reply.status_code == 400, reply.text
        assert client.get(f"/v1/collections/{victim['name']}/documents").json()["total"] == 1


def test_a_metadata_filter_cannot_reach_the_document_id(suite: Suite, victim: dict) -> None:
    """Filters match user metadata only: naming the chunk metadata Goblin keeps finds nothing."""
    with suite.admin_client() as client:
        reply = client.post(
            f"/v1/collections/{victim['name']}/query", json={"query": "vault", "filter": {"document_id": "vault"}}
        )
    assert reply.status_code == 200 and reply.json()["hits"] == []


def rag_stub(suite: Suite) -> tuple[grpc.Channel, rag_pb2_grpc.RagStub]:
    channel = suite.grpc_channel("rag")
    return channel, rag_pb2_grpc.RagStub(channel)


def test_direct_grpc_without_a_principal_is_refused(suite: Suite, victim: dict) -> None:
    channel, stub = rag_stub(suite)
    with channel:
        calls = [
            (stub.ListCollections, rag_pb2.ListCollectionsRequest()),
            (stub.Query, rag_pb2.QueryRequest(collection=victim["name"], query="vault")),
            (stub.AddDocument, rag_pb2.AddDocumentRequest(collection=victim["name"], text="planted")),
            (stub.DeleteCollection, rag_pb2.DeleteCollectionRequest(name=victim["name"])),
        ]
        for rpc, request in calls:
            with pytest.raises(grpc.RpcError) as failure:
                rpc(request, timeout=10)
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_direct_grpc_as_another_tenant_finds_nothing(suite: Suite, victim: dict) -> None:
    channel, stub = rag_stub(suite)
    with channel:
        for ref in (victim["name"], victim["id"]):
            with pytest.raises(grpc.RpcError) as failure:
                stub.Query(
                    rag_pb2.QueryRequest(collection=ref, query="vault"),
                    metadata=as_caller(suite, "u-other", tenant_id="some-other-tenant"),
                    timeout=10,
                )
            assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        listed = stub.ListCollections(
            rag_pb2.ListCollectionsRequest(),
            metadata=as_caller(suite, "u-other", tenant_id="some-other-tenant"),
            timeout=10,
        )
        assert victim["id"] not in {c.id for c in listed.collections}
        # The victim's own tenant, signed, sees it: the refusal above is the tenant's, not the call's.
        mine = stub.GetCollection(
            rag_pb2.GetCollectionRequest(name=victim["id"]), metadata=as_caller(suite, "u", tenant_id=victim["tenant"])
        )
        assert mine.name == victim["name"]


def test_no_document_body_escapes_the_json_error_model(suite: Suite, victim: dict) -> None:
    with suite.admin_client() as client:
        bad_multipart = client.post(
            f"/v1/collections/{victim['name']}/documents",
            content=b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\nunterminated',
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
        assert 400 <= bad_multipart.status_code < 500 and bad_multipart.json()["error"]
        extra_field = client.post(
            f"/v1/collections/{victim['name']}/documents",
            files={"file": ("a.txt", b"hello", "text/plain")},
            data={"owner_tenant": "someone-else"},
        )
        assert extra_field.status_code == 400
