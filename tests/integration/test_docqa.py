"""DocQA end to end: documents ingested through the gateway into the real rag service (embedded Chroma,
real MiniLM embeddings), then answered by the real local model and by a fake remote provider, through
``POST /api/query`` and ``/v1/chat/completions`` with ``goblin.rag`` (unary and streamed).

The local model is tiny: these tests assert on citations, hits and what reached the model, never on the
wording of its answers.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.suite import Suite
from tests.integration.docqa_support import (
    HANDBOOK,
    REMOTE_MODEL,
    REMOTE_REPLY,
    docqa_fake,
    docqa_suite,
    ingest,
    sent_messages,
)

__all__ = ["docqa_fake", "docqa_suite"]  # session fixtures, shared with tests/security/test_docqa_attacks.py

COLLECTION = "handbook"
BACKUP_QUESTION = "How often do the Postgres database backups run?"
ABSENT_QUESTION = "What is the capital city of Mongolia?"


@pytest.fixture(scope="module")
def http(docqa_suite: Suite) -> httpx.Client:
    client = docqa_suite.admin_client()
    client.timeout = httpx.Timeout(300)
    ingest(client, COLLECTION, HANDBOOK)
    return client


def chat_body(question: str, model: str = "local", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 24,
        "temperature": 0,
        "goblin": {"rag": {"collection": COLLECTION, "top_k": 3}},
        **extra,
    }


def sse_events(reply: httpx.Response) -> list[dict[str, Any]]:
    lines = [line.removeprefix("data: ") for line in reply.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_api_query_answers_with_citations_that_point_at_the_right_document(http: httpx.Client) -> None:
    reply = http.post("/api/query", json={"query": BACKUP_QUESTION, "collection": COLLECTION, "max_tokens": 24})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["hit"] is True and body["answer"].strip()
    assert body["model"] == "local/smollm2-135m-instruct"
    assert body["usage"]["prompt_tokens"] > 50, "the passages went into the prompt"
    citations = body["citations"]
    assert [c["marker"] for c in citations] == list(range(1, len(citations) + 1))
    top = citations[0]
    assert (top["document_id"], top["title"], top["collection"]) == ("backups", "Database backups", COLLECTION)
    assert top["chunk_id"] and top["score"] > 0.35 and "nightly" in top["snippet"]
    assert all(isinstance(c["cited"], bool) for c in citations)


def test_api_query_without_a_collection_answers_from_every_collection_of_the_caller(http: httpx.Client) -> None:
    # SPEC: ``collection`` is optional on POST /api/query; without it every collection of the caller's
    # tenant is searched, and each citation names the collection its passage came from.
    ingest(http, "ops-notes", {"pager": ("On-call pager", "The on-call engineer carries the pager for one week.")})
    for question, collection, document in (
        (BACKUP_QUESTION, COLLECTION, "backups"),
        ("Who carries the on-call pager, and for how long?", "ops-notes", "pager"),
    ):
        reply = http.post("/api/query", json={"query": question, "max_tokens": 24})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["hit"] is True, body
        top = body["citations"][0]
        assert (top["collection"], top["document_id"]) == (collection, document), body["citations"]
    absent = http.post("/api/query", json={"query": ABSENT_QUESTION, "collection": None})
    assert absent.status_code == 200 and absent.json()["hit"] is False, absent.text
    assert absent.json()["answer"] == "I don't know: none of your documents answer this."


def test_a_question_the_documents_do_not_answer_gets_i_dont_know_without_a_model(http: httpx.Client) -> None:
    reply = http.post("/api/query", json={"query": ABSENT_QUESTION, "collection": COLLECTION})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["hit"] is False and body["citations"] == []
    assert "don't know" in body["answer"] and COLLECTION in body["answer"]
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_chat_completions_with_goblin_rag_returns_citations(http: httpx.Client) -> None:
    reply = http.post("/v1/chat/completions", json=chat_body(BACKUP_QUESTION))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "chat.completion" and body["rag_hit"] is True
    assert body["citations"][0]["document_id"] == "backups"
    assert body["choices"][0]["message"]["content"].strip()


def test_streamed_chat_with_goblin_rag_carries_citations_on_the_last_chunk(http: httpx.Client) -> None:
    reply = http.post("/v1/chat/completions", json=chat_body(BACKUP_QUESTION, stream=True))
    assert reply.status_code == 200, reply.text
    events = sse_events(reply)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events).strip()
    finishing = [e for e in events if e["choices"][0]["finish_reason"]]
    assert len(finishing) == 1 and finishing[0] is events[-1]
    assert finishing[0]["rag_hit"] is True and finishing[0]["citations"][0]["document_id"] == "backups"
    assert all("citations" not in e for e in events[:-1])


def test_streamed_no_hit_is_the_fixed_answer(http: httpx.Client) -> None:
    reply = http.post("/v1/chat/completions", json=chat_body(ABSENT_QUESTION, stream=True))
    assert reply.status_code == 200, reply.text
    events = sse_events(reply)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert "don't know" in text
    assert events[-1]["rag_hit"] is False and events[-1]["citations"] == []


def test_a_remote_provider_receives_the_passages_and_its_markers_are_mapped(
    http: httpx.Client, docqa_fake: FakeProviders
) -> None:
    docqa_fake.reset("acme")
    reply = http.post("/api/query", json={"query": BACKUP_QUESTION, "collection": COLLECTION, "model": REMOTE_MODEL})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["answer"] == REMOTE_REPLY and body["model"] == REMOTE_MODEL
    [system, user] = sent_messages(docqa_fake)
    assert system["role"] == "system" and user == {"role": "user", "content": BACKUP_QUESTION}
    assert "[1] Database backups" in system["content"] and "run nightly at 02:00 UTC" in system["content"]
    assert "do not know" in system["content"]
    citations = body["citations"]
    assert citations[0]["document_id"] == "backups" and citations[0]["cited"] is True
    assert all(c["cited"] is False for c in citations[1:]), "the answer cites [1] only"

    docqa_fake.reset("acme")
    streamed = http.post("/v1/chat/completions", json=chat_body(BACKUP_QUESTION, model=REMOTE_MODEL, stream=True))
    assert streamed.status_code == 200, streamed.text
    last = sse_events(streamed)[-1]
    assert last["citations"][0]["cited"] is True and "[1] Database backups" in sent_messages(docqa_fake)[0]["content"]


def test_the_context_field_reaches_the_model_as_the_callers_instructions(
    http: httpx.Client, docqa_fake: FakeProviders
) -> None:
    docqa_fake.reset("acme")
    reply = http.post(
        "/api/query",
        json={
            "query": BACKUP_QUESTION,
            "collection": COLLECTION,
            "model": REMOTE_MODEL,
            "context": "Answer in one sentence.",
        },
    )
    assert reply.status_code == 200, reply.text
    messages = sent_messages(docqa_fake)
    assert messages[0] == {"role": "system", "content": "Answer in one sentence."}
    assert messages[1]["role"] == "system" and "[1] Database backups" in messages[1]["content"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "q", "collection": COLLECTION, "top_k": 21}, "top_k"),
        ({"query": "q", "collection": COLLECTION, "top_k": 1_000_000}, "top_k"),
        ({"query": "", "collection": COLLECTION}, "query"),
        ({"query": "q", "collection": "   "}, "collection"),  # blanks are not "all collections"
        ({"query": "q", "collection": ""}, "collection"),
        ({"query": "q", "collection": COLLECTION, "temperature": 9}, "temperature"),
    ],
)
def test_bad_docqa_requests_are_400_naming_the_field(http: httpx.Client, body: dict[str, Any], field: str) -> None:
    reply = http.post("/api/query", json=body)
    assert reply.status_code == 400, reply.text
    assert field in reply.json()["message"]


def test_goblin_rag_top_k_over_the_bound_is_400_naming_the_field(http: httpx.Client) -> None:
    body = chat_body(BACKUP_QUESTION)
    body["goblin"]["rag"]["top_k"] = 21
    reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400 and "top_k" in reply.json()["message"], reply.text


def test_an_unknown_collection_is_404_collection_not_found(http: httpx.Client) -> None:
    for path, body in (
        ("/api/query", {"query": BACKUP_QUESTION, "collection": "no-such-collection"}),
        ("/v1/chat/completions", {**chat_body(BACKUP_QUESTION), "goblin": {"rag": {"collection": "no-such"}}}),
    ):
        reply = http.post(path, json=body)
        assert reply.status_code == 404, reply.text
        assert reply.json()["error"] == "collection_not_found"
