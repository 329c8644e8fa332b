"""Grammar-constrained answers, tool calls and the sampling extras on the real default model
(SmolLM2-135M) and real llama.cpp.

The model's wording is unreliable; its shape is not: every JSON answer must parse and validate, every
forced tool call must name an offered tool with arguments that validate, whatever the model is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import jsonschema
import pytest

from services.common.chat import ChatDelta, Message, SamplingParams
from services.common.chat_content import ChatOptions, ContentPart, ResponseFormat, Tool, ToolCall, ToolChoice
from services.common.errors import InvalidArgument
from services.inference.engine import ChatEngine
from services.inference.models import chat_model_path

pytestmark = pytest.mark.unit

MODEL = chat_model_path()
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "city": {"enum": ["Paris", "Rome", "Oslo"]},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}
AS_PERSON = ChatOptions(response_format=ResponseFormat(type="json_schema", name="person", schema=PERSON))
ASK_PERSON = [Message("user", "Describe a person who lives in a city.")]
WEATHER = Tool(
    name="get_weather",
    description="The weather in a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
CLOCK = Tool(
    name="get_time",
    description="The time in a timezone",
    parameters={"type": "object", "properties": {"tz": {"type": "string", "maxLength": 20}}, "required": ["tz"]},
)
ASK_WEATHER = [Message("user", "What is the weather in Paris?")]
SCHEMAS = {tool.name: tool.parameters for tool in (WEATHER, CLOCK)}


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[ChatEngine]:
    engine = ChatEngine(MODEL, n_threads=2)
    await engine.start()
    yield engine
    await engine.close()


def check_call(call: ToolCall, allowed: set[str]) -> None:
    assert call.id.startswith("call_") and call.name in allowed
    jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


@pytest.mark.parametrize(("temperature", "seed"), [(0.0, None), (1.0, 3)])
async def test_json_schema_answers_validate(engine: ChatEngine, temperature: float, seed: int | None) -> None:
    params = SamplingParams(max_tokens=40, temperature=temperature, seed=seed)
    result = await engine.chat(ASK_PERSON, params, AS_PERSON)
    assert result.finish_reason == "stop", result
    jsonschema.validate(json.loads(result.text), PERSON)


async def test_json_object_answers_are_objects(engine: ChatEngine) -> None:
    options = ChatOptions(response_format=ResponseFormat(type="json_object"))
    result = await engine.chat(ASK_PERSON, SamplingParams(max_tokens=40, temperature=0.7, seed=5), options)
    if result.finish_reason == "stop":
        assert isinstance(json.loads(result.text), dict)
    else:  # an object may be long; cut, it is honest about it
        assert result.finish_reason == "length" and result.text.startswith("{")


async def test_json_cut_by_max_tokens_says_length(engine: ChatEngine) -> None:
    result = await engine.chat(ASK_PERSON, SamplingParams(max_tokens=4, temperature=0), AS_PERSON)
    assert result.finish_reason == "length" and result.usage.completion_tokens == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.text)


async def test_required_tool_choice_calls_an_offered_tool(engine: ChatEngine) -> None:
    options = ChatOptions(tools=(WEATHER, CLOCK), tool_choice=ToolChoice("required"))
    for seed in (1, 2):
        result = await engine.chat(ASK_WEATHER, SamplingParams(max_tokens=40, temperature=0.8, seed=seed), options)
        assert result.finish_reason == "tool_calls" and result.text == ""
        assert len(result.tool_calls) == 1
        check_call(result.tool_calls[0], {"get_weather", "get_time"})


async def test_named_tool_choice_calls_that_tool_streamed_as_deltas(engine: ChatEngine) -> None:
    options = ChatOptions(tools=(WEATHER, CLOCK), tool_choice=ToolChoice("function", "get_time"))
    params = SamplingParams(max_tokens=40, temperature=0.7, seed=4, stop=("}",))
    events = [event async for event in engine.stream_chat(ASK_WEATHER, params, options)]
    final = events[-1]
    assert final.finish_reason == "tool_calls" and final.usage is not None
    assert all(event.text == "" for event in events)
    pieces = [piece for event in events for piece in event.tool_calls]
    # OpenAI's shape: the first piece has index, id and name; the others only arguments.
    assert pieces[0].id.startswith("call_") and pieces[0].name == "get_time"
    assert all(p.index == 0 and not p.id and not p.name for p in pieces[1:])
    # Stop strings shape content, never a forced call: "}" did not cut it.
    check_call(ToolCall(pieces[0].id, "get_time", "".join(p.arguments for p in pieces)), {"get_time"})
    # Unary gives the same call (same seed), under a new id.
    result = await engine.chat(ASK_WEATHER, params, options)
    assert result.tool_calls[0].name == "get_time"
    assert result.tool_calls[0].arguments == "".join(p.arguments for p in pieces)


async def test_tool_call_cut_by_max_tokens_says_length(engine: ChatEngine) -> None:
    options = ChatOptions(tools=(WEATHER,), tool_choice=ToolChoice("required"))
    result = await engine.chat(ASK_WEATHER, SamplingParams(max_tokens=14, temperature=0), options)
    assert result.finish_reason == "length"
    assert [call.name for call in result.tool_calls] in ([], ["get_weather"])


async def test_a_tool_conversation_renders_and_answers(engine: ChatEngine) -> None:
    call = ToolCall(id="call_abc", name="get_weather", arguments='{"city": "Paris", "unit": "c"}')
    messages = [
        *ASK_WEATHER,
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "21 C", tool_call_id="call_abc"),
    ]
    prompt = engine.render_chat(messages)
    assert '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}' in prompt
    assert "Result of get_weather (call call_abc):\n21 C" in prompt
    result = await engine.chat(messages, SamplingParams(max_tokens=8, temperature=0))
    assert result.finish_reason in ("stop", "length") and not result.tool_calls


async def test_grammar_and_free_sequences_share_a_batch(engine: ChatEngine) -> None:
    """One sequence under a JSON grammar, one under a tool grammar, two free: decoded side by side, the
    free ones exactly as when alone, the constrained ones valid."""
    free = SamplingParams(max_tokens=16, temperature=0)
    counting = [Message("user", "Count from 1 to 20.")]
    alone = await engine.chat(counting, free)
    arrivals: list[tuple[str, ChatDelta]] = []
    tool_options = ChatOptions(tools=(WEATHER, CLOCK), tool_choice=ToolChoice("required"))
    jobs = {
        "free1": (counting, free, ChatOptions()),
        "json": (ASK_PERSON, SamplingParams(max_tokens=40, temperature=0.7, seed=7), AS_PERSON),
        "free2": (counting, free, ChatOptions()),
        "tool": (ASK_WEATHER, SamplingParams(max_tokens=40, temperature=0.7, seed=8), tool_options),
    }

    async def consume(name: str) -> None:
        messages, params, options = jobs[name]
        async for event in engine.stream_chat(messages, params, options):
            arrivals.append((name, event))

    await asyncio.gather(*(consume(name) for name in jobs))
    first_final = next(i for i, (_, event) in enumerate(arrivals) if event.finish_reason)
    assert {name for name, _ in arrivals[:first_final]} == set(jobs)  # all were running together
    by_name = {name: [event for n, event in arrivals if n == name] for name in jobs}
    for name in ("free1", "free2"):
        assert "".join(event.text for event in by_name[name]) == alone.text
        assert by_name[name][-1].usage == alone.usage
    assert by_name["json"][-1].finish_reason == "stop"
    jsonschema.validate(json.loads("".join(event.text for event in by_name["json"])), PERSON)
    pieces = [piece for event in by_name["tool"] for piece in event.tool_calls]
    assert by_name["tool"][-1].finish_reason == "tool_calls"
    check_call(ToolCall(pieces[0].id, pieces[0].name, "".join(p.arguments for p in pieces)), set(SCHEMAS))
    assert engine.stats().active_sequences == 0


async def test_logprobs_are_the_models_own(engine: ChatEngine) -> None:
    params = SamplingParams(max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    result = await engine.chat(ASK_PERSON, params)
    assert len(result.logprobs) == result.usage.completion_tokens
    assert "".join(lp.token for lp in result.logprobs) == result.text
    for lp in result.logprobs:
        assert lp.logprob <= 0 and len(lp.top) == 3
        assert lp.top[0] == (lp.token, lp.logprob)  # greedy: the chosen token is the likeliest
        assert [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
    only = await engine.chat(ASK_PERSON, SamplingParams(max_tokens=3, temperature=0, logprobs=True))
    assert [lp.top for lp in only.logprobs] == [(), (), ()]
    plain = await engine.chat(ASK_PERSON, SamplingParams(max_tokens=3, temperature=0))
    assert plain.logprobs == ()


async def test_logit_bias_and_penalties_change_the_choice(engine: ChatEngine) -> None:
    forced = (await engine.tokenize(" banana"))[0]
    piece = engine._worker._text_of(forced)  # type: ignore[union-attr]
    plain = await engine.chat(ASK_PERSON, SamplingParams(max_tokens=3, temperature=0))
    biased = await engine.chat(ASK_PERSON, SamplingParams(max_tokens=3, temperature=0, logit_bias={forced: 100}))
    assert plain.text != piece * 3
    assert biased.text == piece * 3
    counting = [Message("user", "Write 1, 2, 3, 4, 5, 6, 7, 8, 9, 10")]
    free = await engine.chat(counting, SamplingParams(max_tokens=16, temperature=0))
    frequent = await engine.chat(counting, SamplingParams(max_tokens=16, temperature=0, frequency_penalty=2.0))
    assert frequent.text != free.text  # the arithmetic of both penalties: test_grammar.py


async def test_what_the_local_model_cannot_do_is_refused(engine: ChatEngine) -> None:
    with pytest.raises(InvalidArgument, match="vocabulary"):
        await engine.chat(ASK_PERSON, SamplingParams(max_tokens=2, logit_bias={10_000_000: 1.0}))
    minimum = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    with pytest.raises(InvalidArgument, match="minimum"):
        options = ChatOptions(response_format=ResponseFormat("json_schema", "n", minimum))
        await engine.chat(ASK_PERSON, SamplingParams(max_tokens=2), options)
    image = ContentPart(type="image_url", image_url="data:image/png;base64,iVBORw0KGgo=")
    with pytest.raises(InvalidArgument, match="images"):
        await engine.chat([Message("user", "What is this?", parts=(image,))], SamplingParams(max_tokens=2))
    assert engine.stats().queue_length == 0
