"""Each provider adapter against its wire format: the request it sends (URL, auth, body) and how it
reads answers, streams and failures. The network is an httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from services.common.chat import ChatDelta, Message, SamplingParams, Usage
from services.common.chat_content import ToolCall
from services.common.errors import InvalidArgument
from services.router.models import ModelInfo
from services.router.providers.anthropic import AnthropicProvider
from services.router.providers.base import CallContext
from services.router.providers.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderModelNotFound,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    failure_policy,
)
from services.router.providers.gemini import GeminiProvider
from services.router.providers.http import HttpOptions
from services.router.providers.openai import OpenAICompatibleProvider

CTX = CallContext(correlation_id="c-1", tenant_id="t")
MESSAGES = [
    Message("system", "Be brief."),
    Message("user", "Hi"),
    Message("assistant", "Hello!"),
    Message("user", "Tell me a joke."),
]
GPT = ModelInfo(id="openai/gpt-4o-mini", provider="openai", owned_by="openai", max_output_tokens=16384)
O4 = ModelInfo(id="openai/o4-mini", provider="openai", owned_by="openai", drop_params=("temperature", "top_p"))
CLAUDE = ModelInfo(id="anthropic/claude-haiku-4-5", provider="anthropic", owned_by="anthropic", max_output_tokens=64000)
GEMINI = ModelInfo(id="gemini/gemini-2.5-flash", provider="gemini", owned_by="gemini")

Handler = Callable[[httpx.Request], httpx.Response]


class Capture:
    """A MockTransport handler that records requests and replays one canned response."""

    def __init__(self, response: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.response = response
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response(request) if callable(self.response) else self.response

    @property
    def body(self) -> dict:
        return json.loads(self.requests[-1].content)


def sse(*events: str, sep: str = "\n\n") -> httpx.Response:
    return httpx.Response(
        200, content="".join(e + sep for e in events).encode(), headers={"content-type": "text/event-stream"}
    )


def data(payload: object) -> str:
    return f"data: {json.dumps(payload)}"


def openai(handler: Handler, *, field: str = "max_completion_tokens") -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        "openai",
        "https://api.openai.com/v1",
        "sk-test",
        HttpOptions(),
        max_tokens_field=field,
        transport=httpx.MockTransport(handler),
    )


def anthropic(handler: Handler) -> AnthropicProvider:
    return AnthropicProvider(
        "anthropic",
        "https://api.anthropic.com",
        "ak-test",
        HttpOptions(),
        transport=httpx.MockTransport(handler),
    )


def gemini(handler: Handler) -> GeminiProvider:
    return GeminiProvider(
        "gemini",
        "https://generativelanguage.googleapis.com",
        "gk-test",
        HttpOptions(),
        transport=httpx.MockTransport(handler),
    )


async def collect(stream) -> list[ChatDelta]:  # noqa: ANN001
    return [d async for d in stream]


# -- OpenAI and compatible ------------------------------------------------------------------------------

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Why did..."}, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25},
}


async def test_openai_request_has_bearer_auth_and_the_chat_completions_body() -> None:
    capture = Capture(httpx.Response(200, json=COMPLETION))
    provider = openai(capture)
    params = SamplingParams(max_tokens=4, temperature=0.2, top_p=0.9, stop=("\n",), seed=7)
    result = await provider.chat(GPT, MESSAGES, params, CTX)
    request = capture.requests[0]
    assert request.method == "POST"
    assert str(request.url) == "https://api.openai.com/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["content-type"] == "application/json"
    assert capture.body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell me a joke."},
        ],
        "max_completion_tokens": 4,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 7,
    }
    assert result.text == "Why did..."
    assert result.finish_reason == "length"
    assert result.usage == Usage(prompt_tokens=21, completion_tokens=4)
    assert result.model == "openai/gpt-4o-mini" and result.provider == "openai"
    await provider.aclose()


async def test_compatible_providers_use_max_tokens_and_reasoning_models_drop_sampling() -> None:
    capture = Capture(httpx.Response(200, json=COMPLETION))
    provider = openai(capture, field="max_tokens")
    call = ToolCall("call_1", "answer", "{}")
    messages = [
        Message("user", "hi"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "42", tool_call_id="call_1"),
    ]
    await provider.chat(O4, messages, SamplingParams(max_tokens=9, temperature=1.5), CTX)
    body = capture.body
    assert body["max_tokens"] == 9 and "max_completion_tokens" not in body
    assert "temperature" not in body and "top_p" not in body
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "answer", "arguments": "{}"}}],
    }
    assert body["messages"][2] == {"role": "tool", "content": "42", "tool_call_id": "call_1"}


async def test_openai_stream_yields_pieces_then_finish_with_usage() -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}
    capture = Capture(
        sse(
            data(
                {
                    **chunk,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                }
            ),
            ": keep-alive comment",
            data({**chunk, "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}),
            data({**chunk, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]}),
            data({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            data(
                {
                    **chunk,
                    "choices": [],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
                }
            ),
            "data: [DONE]",
        )
    )
    deltas = await collect(openai(capture).stream(GPT, MESSAGES, SamplingParams(), CTX))
    assert [d.text for d in deltas] == ["Hel", "lo", ""]
    assert deltas[-1] == ChatDelta(finish_reason="stop", usage=Usage(9, 2))
    assert capture.body["stream"] is True
    assert capture.body["stream_options"] == {"include_usage": True}
    assert capture.requests[0].headers["accept"] == "text/event-stream"


async def test_moonshot_style_usage_inside_the_finishing_choice() -> None:
    capture = Capture(
        sse(
            data({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
            data(
                {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {},
                            "finish_reason": "length",
                            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
                        }
                    ]
                }
            ),
            "data: [DONE]",
        )
    )
    deltas = await collect(openai(capture, field="max_tokens").stream(GPT, MESSAGES, SamplingParams(), CTX))
    assert deltas[-1] == ChatDelta(finish_reason="length", usage=Usage(3, 1))


async def test_a_stream_without_usage_is_estimated_and_one_cut_short_is_an_error() -> None:
    capture = Capture(
        sse(data({"choices": [{"delta": {"content": "abcdefgh"}, "finish_reason": "stop"}]}), "data: [DONE]")
    )
    deltas = await collect(openai(capture).stream(GPT, [Message("user", "12345678")], SamplingParams(), CTX))
    assert deltas[-1].usage == Usage(prompt_tokens=6, completion_tokens=2)
    cut = Capture(sse(data({"choices": [{"delta": {"content": "abc"}}]})))
    with pytest.raises(ProviderUnavailable, match="ended before"):
        await collect(openai(cut).stream(GPT, MESSAGES, SamplingParams(), CTX))


async def test_an_error_object_in_the_stream_is_a_typed_error() -> None:
    capture = Capture(sse(data({"choices": [{"delta": {"content": "a"}}]}), data({"error": {"message": "overloaded"}})))
    with pytest.raises(ProviderUnavailable, match="overloaded"):
        await collect(openai(capture).stream(GPT, MESSAGES, SamplingParams(), CTX))


@pytest.mark.parametrize(
    ("response", "error", "retryable", "fallback"),
    [
        (
            httpx.Response(
                401,
                json={
                    "error": {
                        "message": "Incorrect API key provided: sk-tes***",
                        "type": "invalid_request_error",
                    }
                },
            ),
            ProviderAuthError,
            False,
            True,
        ),
        (
            httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"retry-after": "7"}),
            ProviderRateLimited,
            True,
            True,
        ),
        (httpx.Response(500, json={"error": {"message": "boom"}}), ProviderUnavailable, True, True),
        (httpx.Response(503, text="<html>upstream</html>"), ProviderUnavailable, True, True),
        (httpx.Response(400, json={"error": {"message": "bad 'messages'"}}), ProviderRejected, False, False),
        (
            httpx.Response(404, json={"error": {"message": "The model does not exist"}}),
            ProviderModelNotFound,
            False,
            True,
        ),
        (httpx.Response(200, text="<html>proxy page</html>"), ProviderBadResponse, False, True),
        (httpx.Response(200, json={"choices": []}), ProviderBadResponse, False, True),
    ],
)
async def test_http_failures_become_typed_errors(
    response: httpx.Response, error: type, retryable: bool, fallback: bool
) -> None:
    with pytest.raises(error) as info:
        await openai(Capture(response)).chat(GPT, MESSAGES, SamplingParams(), CTX)
    policy = failure_policy(info.value)
    assert (policy.retryable, policy.fallback) == (retryable, fallback)
    assert "sk-tes" not in info.value.message  # what a provider says about our key is never relayed
    if error is ProviderRateLimited:
        assert info.value.retry_after == 7


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ReadTimeout("slow"), ProviderTimeout),
        (httpx.ConnectTimeout("slow"), ProviderTimeout),
        (httpx.ConnectError("refused"), ProviderUnavailable),
        (httpx.RemoteProtocolError("reset"), ProviderUnavailable),
    ],
)
async def test_transport_failures_become_typed_errors(exc: Exception, error: type) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(error):
        await openai(fail).chat(GPT, MESSAGES, SamplingParams(), CTX)
    with pytest.raises(error):
        await collect(openai(fail).stream(GPT, MESSAGES, SamplingParams(), CTX))


async def test_retry_after_ms_and_http_dates() -> None:
    capture = Capture(httpx.Response(429, headers={"retry-after-ms": "1500"}))
    with pytest.raises(ProviderRateLimited) as info:
        await openai(capture).chat(GPT, MESSAGES, SamplingParams(), CTX)
    assert info.value.retry_after == 1.5


async def test_openai_embeddings() -> None:
    embed_model = ModelInfo(id="openai/text-embedding-3-small", provider="openai", owned_by="openai")
    capture = Capture(
        httpx.Response(
            200,
            json={
                "object": "list",
                "data": [{"index": 1, "embedding": [0.3, 0.4]}, {"index": 0, "embedding": [0.1, 0.2]}],
                "usage": {"prompt_tokens": 5, "total_tokens": 5},
            },
        )
    )
    result = await openai(capture).embed(embed_model, ["a", "b"], CTX)
    assert capture.requests[0].url.path == "/v1/embeddings"
    assert capture.body == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "float",
    }
    assert result.vectors == [[0.1, 0.2], [0.3, 0.4]] and result.prompt_tokens == 5 and result.dimensions == 2


# -- Anthropic -----------------------------------------------------------------------------------------

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [
        {"type": "text", "text": "Why "},
        {"type": "tool_use", "id": "t"},
        {"type": "text", "text": "did"},
    ],
    "stop_reason": "max_tokens",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 2},
}


async def test_anthropic_request_puts_system_on_top_and_always_sends_max_tokens() -> None:
    capture = Capture(httpx.Response(200, json=MESSAGE))
    params = SamplingParams(temperature=1.7, top_p=0.5, stop=("END",))
    result = await anthropic(capture).chat(CLAUDE, [*MESSAGES, Message("assistant", "")], params, CTX)
    request = capture.requests[0]
    assert str(request.url) == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == "ak-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert capture.body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 64000,  # the catalog's limit when the request sets none
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell me a joke."},
        ],
        "system": "Be brief.",
        "temperature": 1.0,  # Anthropic's range is 0..1, and temperature excludes top_p
        "stop_sequences": ["END"],
    }
    assert result.text == "Why did"
    assert result.finish_reason == "length"
    assert result.usage == Usage(prompt_tokens=15, completion_tokens=2)


async def test_anthropic_needs_a_non_system_message() -> None:
    with pytest.raises(InvalidArgument):
        await anthropic(Capture(httpx.Response(200, json=MESSAGE))).chat(
            CLAUDE, [Message("system", "only")], SamplingParams(), CTX
        )


def anthropic_event(name: str, payload: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(payload)}"


ANTHROPIC_STREAM = [
    anthropic_event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "content": [],
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
    ),
    anthropic_event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    anthropic_event("ping", {"type": "ping"}),
    anthropic_event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    ),
    anthropic_event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    ),
    anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
    anthropic_event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    ),
    anthropic_event("message_stop", {"type": "message_stop"}),
]


async def test_anthropic_stream_events() -> None:
    capture = Capture(sse(*ANTHROPIC_STREAM))
    deltas = await collect(anthropic(capture).stream(CLAUDE, MESSAGES, SamplingParams(max_tokens=50), CTX))
    assert [d.text for d in deltas] == ["Hello", "!", ""]
    assert deltas[-1] == ChatDelta(finish_reason="stop", usage=Usage(prompt_tokens=25, completion_tokens=15))
    assert capture.body["stream"] is True and capture.body["max_tokens"] == 50


async def test_anthropic_error_event_and_cut_stream() -> None:
    overloaded = anthropic_event(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    with pytest.raises(ProviderUnavailable, match="Overloaded"):
        await collect(
            anthropic(Capture(sse(*ANTHROPIC_STREAM[:4], overloaded))).stream(CLAUDE, MESSAGES, SamplingParams(), CTX)
        )
    with pytest.raises(ProviderUnavailable, match="message_stop"):
        await collect(anthropic(Capture(sse(*ANTHROPIC_STREAM[:5]))).stream(CLAUDE, MESSAGES, SamplingParams(), CTX))


async def test_anthropic_overloaded_529_and_auth_errors() -> None:
    overloaded = httpx.Response(
        529, json={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    with pytest.raises(ProviderUnavailable):
        await anthropic(Capture(overloaded)).chat(CLAUDE, MESSAGES, SamplingParams(), CTX)
    denied = httpx.Response(
        401, json={"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    )
    with pytest.raises(ProviderAuthError):
        await anthropic(Capture(denied)).chat(CLAUDE, MESSAGES, SamplingParams(), CTX)


# -- Gemini --------------------------------------------------------------------------------------------

GENERATED = {
    "candidates": [
        {
            "content": {
                "parts": [{"text": "thinking...", "thought": True}, {"text": "Why did"}],
                "role": "model",
            },
            "finishReason": "MAX_TOKENS",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 12,
        "candidatesTokenCount": 3,
        "thoughtsTokenCount": 4,
        "totalTokenCount": 19,
    },
    "modelVersion": "gemini-2.5-flash",
}


async def test_gemini_request_has_contents_roles_system_instruction_and_generation_config() -> None:
    capture = Capture(httpx.Response(200, json=GENERATED))
    params = SamplingParams(max_tokens=5, temperature=0.3, top_p=0.8, stop=("x",), seed=3)
    result = await gemini(capture).chat(GEMINI, MESSAGES, params, CTX)
    request = capture.requests[0]
    assert (
        str(request.url) == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert request.headers["x-goog-api-key"] == "gk-test"
    assert capture.body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "Tell me a joke."}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "maxOutputTokens": 5,
            "temperature": 0.3,
            "topP": 0.8,
            "stopSequences": ["x"],
            "seed": 3,
        },
    }
    assert result.text == "Why did"  # thoughts are not the answer
    assert result.finish_reason == "length"
    assert result.usage == Usage(prompt_tokens=12, completion_tokens=7)  # thinking is billed as output


async def test_gemini_stream_uses_alt_sse_and_crlf_events() -> None:
    def part(text: str, **extra: object) -> dict:
        return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0, **extra}]}

    capture = Capture(
        sse(
            data(part("Hel")),
            data(
                {
                    **part("lo", finishReason="STOP"),
                    "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2},
                }
            ),
            sep="\r\n\r\n",
        )
    )
    deltas = await collect(gemini(capture).stream(GEMINI, MESSAGES, SamplingParams(), CTX))
    assert [d.text for d in deltas] == ["Hel", "lo", ""]
    assert deltas[-1] == ChatDelta(finish_reason="stop", usage=Usage(4, 2))
    request = capture.requests[0]
    assert request.url.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert request.url.params["alt"] == "sse"


async def test_gemini_blocked_prompt_bad_key_and_embeddings() -> None:
    blocked = Capture(httpx.Response(200, json={"promptFeedback": {"blockReason": "SAFETY"}}))
    result = await gemini(blocked).chat(GEMINI, MESSAGES, SamplingParams(), CTX)
    assert result.text == "" and result.finish_reason == "content_filter"
    bad_key = Capture(
        httpx.Response(
            400,
            json={
                "error": {
                    "code": 400,
                    "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                }
            },
        )
    )
    with pytest.raises(ProviderAuthError):
        await gemini(bad_key).chat(GEMINI, MESSAGES, SamplingParams(), CTX)
    embed_model = ModelInfo(id="gemini/gemini-embedding-001", provider="gemini", owned_by="gemini")
    capture = Capture(httpx.Response(200, json={"embeddings": [{"values": [1, 2]}, {"values": [3, 4]}]}))
    embedded = await gemini(capture).embed(embed_model, ["one", "two"], CTX)
    assert capture.requests[0].url.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert capture.body["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "one"}]},
    }
    assert embedded.vectors == [[1.0, 2.0], [3.0, 4.0]]


async def test_unconfigured_provider_refuses_without_calling() -> None:
    capture = Capture(httpx.Response(200, json=COMPLETION))
    provider = OpenAICompatibleProvider(
        "deepseek", "https://api.deepseek.com", None, HttpOptions(), transport=httpx.MockTransport(capture)
    )
    assert not provider.configured
    with pytest.raises(Exception, match="no API key"):
        await provider.chat(GPT, MESSAGES, SamplingParams(), CTX)
    assert capture.requests == []
