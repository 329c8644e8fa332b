"""The chat path end to end: openai SDK -> gateway (HTTPS) -> router -> inference (the real GGUF model).

The default model is tiny and its text unreliable: these tests assert on shape, tokens, streaming and
usage, never on exact answers.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from goblin_tools.suite import Suite

MODEL_ID = "local/smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Say hello in three words."}]


@pytest.fixture(scope="module")
def client(suite: Suite) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{suite.gateway_url}/v1",
        api_key=suite.admin_key,
        http_client=httpx.Client(verify=suite.ssl_context(), timeout=120),
        max_retries=0,
    )


def test_models_lists_the_local_chat_and_embedding_models(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert MODEL_ID in models
    assert "local" in models[MODEL_ID].model_extra["aliases"]
    assert any("embeddings" in m.model_extra["capabilities"] for m in models.values())
    assert all("/" in model_id for model_id in models)


@pytest.mark.parametrize("model", ["local", MODEL_ID])
def test_completion_has_text_and_exact_usage(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=HELLO, max_tokens=8, temperature=0)
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == MODEL_ID
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage is not None
    assert usage.prompt_tokens > 5
    assert 1 <= usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 8


def test_streamed_chunks_assemble_into_a_message_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="local",
        messages=HELLO,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 5 and 1 <= usage.completion_tokens <= 12
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 1, "tokens must arrive as they are made, not in one piece"


def test_stop_sequences_and_the_alias_route(suite: Suite) -> None:
    with suite.admin_client() as http:
        reply = http.post(
            "/chat/completions",
            json={"model": "local", "messages": HELLO, "max_tokens": 24, "stop": ["\n", "."], "seed": 7},
        )
    assert reply.status_code == 200, reply.text
    content = reply.json()["choices"][0]["message"]["content"]
    assert "\n" not in content and "." not in content


async def test_async_client_streams_concurrently(suite: Suite) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{suite.gateway_url}/v1",
        api_key=suite.admin_key,
        http_client=httpx.AsyncClient(verify=suite.ssl_context(), timeout=120),
        max_retries=0,
    )

    async def one(i: int) -> tuple[str, int]:
        stream = await client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": f"Count to {i + 3}."}],
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, completion_tokens = "", 0
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                completion_tokens = chunk.usage.completion_tokens
        return text, completion_tokens

    try:
        results = await asyncio.gather(*(one(i) for i in range(4)))
        single = await client.chat.completions.create(model="local", messages=HELLO, max_tokens=4)
    finally:
        await client.close()
    assert all(text and 1 <= tokens <= 10 for text, tokens in results)
    assert single.usage is not None and single.usage.completion_tokens <= 4


def test_embeddings(client: openai.OpenAI) -> None:
    reply = client.embeddings.create(model="local", input=["the cat sat", "a dog ran"])
    assert [d.index for d in reply.data] == [0, 1]
    assert all(len(d.embedding) == 384 for d in reply.data)
    assert reply.usage.prompt_tokens > 0
    single = client.embeddings.create(model="local", input="the cat sat")
    assert single.data[0].embedding == pytest.approx(reply.data[0].embedding, abs=1e-5)


def test_invoke_for_old_clients(suite: Suite) -> None:
    with suite.admin_client() as http:
        reply = http.post("/invoke", json={"prompt": "Hello", "provider": "local", "max_tokens": 5})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["provider"] == "local" and body["model"] == MODEL_ID
    assert isinstance(body["response"], str)
    assert body["usage"]["completion_tokens"] <= 5


def test_sdk_raises_typed_errors(client: openai.OpenAI, suite: Suite) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="local/no-such-model", messages=HELLO, max_tokens=4)
    assert not_found.value.body["error"] == "model_not_found" if isinstance(not_found.value.body, dict) else True
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nosuchprovider/x", messages=HELLO, max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="local", messages=HELLO, max_tokens=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="local", messages=[], max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="local", messages=HELLO, max_tokens=4, temperature=3)
    with pytest.raises(openai.BadRequestError) as lacking:  # the local model has no vision
        image = {"type": "image_url", "image_url": {"url": "https://images.example/a.png"}}
        client.chat.completions.create(model="local", messages=[{"role": "user", "content": [image]}], max_tokens=4)
    assert "vision" in lacking.value.response.json()["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="local", messages=HELLO, max_tokens=10_000_000)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="local", messages=HELLO, n=9)  # at most 8 choices
    bad_key = openai.OpenAI(
        base_url=f"{suite.gateway_url}/v1",
        api_key="gk_wrong_key",
        http_client=httpx.Client(verify=suite.ssl_context()),
        max_retries=0,
    )
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 400),
        (json.dumps({"model": "local"}).encode(), 400),
        (json.dumps({"model": "local", "messages": [{"role": "wizard", "content": "hi"}]}).encode(), 400),
        (json.dumps({"model": "local", "messages": HELLO, "max_tokens": "many"}).encode(), 400),
        (json.dumps({"model": "", "messages": HELLO}).encode(), 400),
        (
            json.dumps({"model": "local", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).encode(),
            400,
        ),
        (json.dumps({"model": "local", "messages": HELLO, "goblin": {"unknown": 1}}).encode(), 400),
    ],
)
def test_bad_requests_get_json_4xx_never_500(suite: Suite, body: bytes, status: int) -> None:
    with suite.admin_client() as http:
        reply = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == status, reply.text
    payload = reply.json()
    assert payload["error"] == "invalid_request"
    assert payload["message"]
    assert payload["correlation_id"] == reply.headers["X-Correlation-ID"]


def test_a_prompt_longer_than_the_context_is_a_400(client: openai.OpenAI) -> None:
    huge = "word " * 5000
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="local", messages=[{"role": "user", "content": huge}], max_tokens=4)


def test_every_chat_is_in_the_books(suite: Suite, client: openai.OpenAI) -> None:
    import asyncpg

    reply = client.chat.completions.create(
        model="local", messages=HELLO, max_tokens=3, extra_headers={"X-Correlation-ID": "books-check-1"}
    )

    async def rows() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(suite.database_url)
        try:
            for _ in range(50):
                found = await conn.fetch("SELECT * FROM router.routing_requests WHERE correlation_id = 'books-check-1'")
                if found:
                    return found
                await asyncio.sleep(0.1)
            return []
        finally:
            await conn.close()

    found = asyncio.run(rows())
    assert len(found) == 1
    row = found[0]
    assert row["provider"] == "local" and row["model"] == "smollm2-135m-instruct"
    assert row["requested_model"] == "local" and row["outcome"] == "ok"
    assert row["prompt_tokens"] == reply.usage.prompt_tokens
    assert row["completion_tokens"] == reply.usage.completion_tokens
    assert row["latency_ms"] > 0
    assert row["user_hash"] and row["tenant_id"] == "default"
