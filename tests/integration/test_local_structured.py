"""Structured output and tool calls on the local model, end to end: openai SDK -> gateway -> router ->
inference, where llama.cpp samples under a grammar (services/inference/engine/grammar.py).

The default model is SmolLM2-135M: its values are whatever it likes, its shapes are not. Every JSON
answer must parse and validate, every forced tool call must validate, whatever the model is.
"""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import jsonschema
import openai
import pydantic
import pytest

from goblin.v1 import common_pb2, inference_pb2_grpc
from goblin_tools.suite import Suite

MODEL_ID = "local/smollm2-135m-instruct"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer"},
        "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo", "Lima"]},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}
AS_PERSON = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
ASK_PERSON = [{"role": "user", "content": "Describe a person who lives in a city."}]
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 24}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_PARAMETERS = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 20}},
    "required": ["timezone"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_PARAMETERS},
    },
    {"type": "function", "function": {"name": "get_time", "parameters": TIME_PARAMETERS}},
]
SCHEMAS = {"get_weather": WEATHER_PARAMETERS, "get_time": TIME_PARAMETERS}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=16)
    age: int
    city: str


@pytest.fixture(scope="module")
def client(suite: Suite) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{suite.gateway_url}/v1",
        api_key=suite.admin_key,
        http_client=httpx.Client(verify=suite.ssl_context(), timeout=180),
        max_retries=0,
    )


def async_client(suite: Suite) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{suite.gateway_url}/v1",
        api_key=suite.admin_key,
        http_client=httpx.AsyncClient(verify=suite.ssl_context(), timeout=300),
        max_retries=0,
    )


def check_call(name: str, arguments: str) -> None:
    assert name in SCHEMAS
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


def test_the_local_model_lists_what_it_can_do(client: openai.OpenAI) -> None:
    listed = {m.id: m for m in client.models.list().data}
    capabilities = set(listed[MODEL_ID].model_extra["capabilities"])  # type: ignore[index]
    assert {"tools", "json", "json_schema", "logprobs"} <= capabilities
    assert "vision" not in capabilities


# Some 1,100 tokens in all: seconds on an idle machine, minutes on a shared, loaded one.
@pytest.mark.timeout(1200)
async def test_fifty_json_schema_answers_all_validate(suite: Suite) -> None:
    # As many at once as the engine decodes together (4): none waits in its queue or is refused with a
    # 429, and none is in flight long enough on a loaded machine to meet the gRPC GOAWAY seen at ~120 s.
    room = asyncio.Semaphore(4)

    async def ask(api: openai.AsyncOpenAI, i: int) -> tuple[str, str]:
        async with room:
            reply = await api.chat.completions.create(
                model="local",
                messages=ASK_PERSON,  # type: ignore[arg-type]
                response_format=AS_PERSON,  # type: ignore[arg-type]
                max_tokens=48,
                temperature=(0.0, 0.7, 1.0)[i % 3],
                seed=i,
            )
        return reply.choices[0].finish_reason, reply.choices[0].message.content or ""

    async with async_client(suite) as api:
        answers = await asyncio.gather(*(ask(api, i) for i in range(50)))
    for finish_reason, text in answers:
        assert finish_reason == "stop", (finish_reason, text)
        jsonschema.validate(json.loads(text), PERSON)


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=MODEL_ID, messages=ASK_PERSON, response_format=Person, max_tokens=48, temperature=0.5, seed=3
    )  # type: ignore[arg-type]
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person) and len(person.name) <= 16


def test_json_cut_by_max_tokens_is_honest(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="local", messages=ASK_PERSON, response_format=AS_PERSON, max_tokens=3, temperature=0
    )  # type: ignore[arg-type]
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("tool_choice", "names"),
    [("required", {"get_weather", "get_time"}), ({"type": "function", "function": {"name": "get_time"}}, {"get_time"})],
)
def test_forced_tool_calls_unary_and_streamed(client: openai.OpenAI, tool_choice: object, names: set[str]) -> None:
    body = {"model": "local", "messages": ASK_WEATHER, "tools": TOOLS, "tool_choice": tool_choice, "max_tokens": 48}
    reply = client.chat.completions.create(**body, temperature=0.7, seed=1)  # type: ignore[arg-type]
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    (call,) = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.function.name in names
    check_call(call.function.name, call.function.arguments)

    chunks = list(client.chat.completions.create(**body, temperature=0.7, seed=2, stream=True))  # type: ignore[arg-type]
    pieces = [piece for chunk in chunks if chunk.choices for piece in chunk.choices[0].delta.tool_calls or []]
    assert pieces[0].id and pieces[0].function.name in names  # type: ignore[union-attr]
    assert all(p.index == 0 and not p.id for p in pieces[1:])
    check_call(pieces[0].function.name, "".join(p.function.arguments or "" for p in pieces))  # type: ignore[union-attr,arg-type]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_a_two_turn_tool_conversation(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="local", messages=ASK_WEATHER, tools=TOOLS, tool_choice="required", max_tokens=48, temperature=0
    )  # type: ignore[arg-type]
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    messages = [
        *ASK_WEATHER,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "unit": "c"}'},
    ]
    # auto on the local model: it answers in text (services/inference/README.md).
    second = client.chat.completions.create(model="local", messages=messages, tools=TOOLS, max_tokens=16, temperature=0)  # type: ignore[arg-type]
    assert second.choices[0].finish_reason in ("stop", "length")
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


def test_logprobs_from_the_local_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="local", messages=ASK_PERSON, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2
    )  # type: ignore[arg-type]
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert len(content) == reply.usage.completion_tokens  # type: ignore[union-attr]
    assert all(lp.logprob <= 0 and len(lp.top_logprobs) == 2 for lp in content)


def test_a_schema_the_grammar_cannot_enforce_is_a_400(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="local",
            messages=ASK_PERSON,
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
            max_tokens=8,
        )  # type: ignore[arg-type]
    assert "'minimum'" in refused.value.response.json()["message"]


async def test_grammar_and_free_requests_run_together_on_inference(suite: Suite) -> None:
    """Straight to the inference service: one JSON-schema stream, one forced tool call and two free
    streams at once, each as it must be."""
    person = common_pb2.ResponseFormat(type="json_schema", name="person", schema_json=json.dumps(PERSON))
    weather = common_pb2.Tool(name="get_weather", parameters_json=json.dumps(WEATHER_PARAMETERS))

    def request(content: str, **fields: object) -> common_pb2.ChatRequest:
        return common_pb2.ChatRequest(
            model="local",
            messages=[common_pb2.ChatMessage(role="user", content=content)],
            params=common_pb2.SamplingParams(max_tokens=40, temperature=0.7, seed=11),
            **fields,  # type: ignore[arg-type]
        )

    requests = {
        "json": request("Describe a person.", response_format=person),
        "tool": request("Weather in Oslo?", tools=[weather], tool_choice=common_pb2.ToolChoice(mode="required")),
        "free1": request("Tell me about goblins."),
        "free2": request("Tell me about trolls."),
    }
    async with suite.grpc_aio_channel("inference") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)

        async def run(name: str) -> list[common_pb2.ChatChunk]:
            return [chunk async for chunk in stub.ChatStream(requests[name], timeout=240)]

        results = dict(zip(requests, await asyncio.gather(*(run(name) for name in requests)), strict=True))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            bad = common_pb2.ResponseFormat(type="json_schema", name="x", schema_json='{"type": "object", "not": {}}')
            await stub.Chat(request("x", response_format=bad), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert results["json"][-1].finish_reason == "stop"
    jsonschema.validate(json.loads("".join(c.delta for c in results["json"])), PERSON)
    pieces = [p for c in results["tool"] for p in c.tool_calls]
    assert results["tool"][-1].finish_reason == "tool_calls" and pieces[0].name == "get_weather"
    check_call("get_weather", "".join(p.arguments for p in pieces))
    for name in ("free1", "free2"):
        assert results[name][-1].finish_reason in ("stop", "length")
        assert "".join(c.delta for c in results[name]) and not any(c.tool_calls for c in results[name])
