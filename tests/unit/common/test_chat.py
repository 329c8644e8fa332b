"""The shared chat domain: the one check of sampling parameters and messages, and the protobuf
translations every servicer and the router's local provider use."""

from __future__ import annotations

from dataclasses import replace

import pytest

from goblin.v1 import common_pb2
from services.common.chat import (
    MAX_STOP_SEQUENCES,
    MAX_TOKENS_LIMIT,
    SEED_MAX,
    SEED_MIN,
    TEMPERATURE_MAX,
    ChatDelta,
    ChatResult,
    ChunkHeader,
    Message,
    SamplingParams,
    Usage,
    check_messages,
    completion_to_proto,
    delta_from_proto,
    delta_to_proto,
    messages_from_proto,
    messages_to_proto,
    model_info_from_proto,
    model_info_to_proto,
    new_completion_id,
    params_from_proto,
    params_to_proto,
    result_from_proto,
    result_to_proto,
    template_messages,
    usage_from_proto,
    usage_to_proto,
)
from services.common.errors import InvalidArgument
from services.inference.service import LocalModel
from services.router.models import ModelInfo

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be at least 1"),
        ({"max_tokens": MAX_TOKENS_LIMIT + 1}, f"max_tokens must be at most {MAX_TOKENS_LIMIT}"),
        ({"temperature": -0.1}, "temperature must be between 0 and 2"),
        ({"temperature": 2.5}, "temperature must be between 0 and 2"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.01}, r"top_p must be in \(0, 1\]"),
        ({"stop": ("a", "b", "c", "d", "e")}, "at most 4 stop sequences"),
        ({"stop": ("",)}, "stop must be a list of non-empty strings"),
        ({"stop": "END"}, "stop must be a list of non-empty strings"),
        ({"seed": SEED_MAX + 1}, "seed must be a 64-bit integer"),
        ({"seed": SEED_MIN - 1}, "seed must be a 64-bit integer"),
    ],
)
def test_out_of_bounds_parameters_are_refused_when_made(values: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as refused:
        SamplingParams(**values)
    assert refused.value.code == "invalid_request"


def test_parameters_at_their_bounds_are_accepted() -> None:
    SamplingParams(max_tokens=1, temperature=0.0, top_p=1.0, stop=("x",) * MAX_STOP_SEQUENCES, seed=SEED_MIN)
    SamplingParams(max_tokens=MAX_TOKENS_LIMIT, temperature=TEMPERATURE_MAX, top_p=1e-6, seed=SEED_MAX)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")  # any sequence, kept as a tuple


def test_replacing_a_value_checks_it_again() -> None:
    with pytest.raises(InvalidArgument, match="temperature"):
        replace(SamplingParams(), temperature=9.0)


def test_a_request_with_bad_parameters_is_refused_on_entry() -> None:
    with pytest.raises(InvalidArgument, match="temperature"):
        params_from_proto(common_pb2.SamplingParams(temperature=3.0))
    with pytest.raises(InvalidArgument, match="max_tokens"):
        params_from_proto(common_pb2.SamplingParams(max_tokens=0))


def test_parameters_round_trip_and_unset_stays_unset() -> None:
    params = SamplingParams(max_tokens=7, temperature=0.5, top_p=0.25, stop=("\n",), seed=-3)
    assert params_from_proto(params_to_proto(params)) == params
    assert params_from_proto(params_to_proto(SamplingParams())) == SamplingParams()
    assert not params_to_proto(SamplingParams()).HasField("temperature")


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages must not be empty"),
        ([Message("user", "hi"), Message("wizard", "hi")], r"messages\[1\]\.role must be one of"),
        ([Message("user", None)], r"messages\[0\]\.content must be a string"),  # type: ignore[arg-type]
    ],
)
def test_bad_conversations_are_refused(messages: list[Message], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_messages(messages)
    with pytest.raises(InvalidArgument, match=message):
        template_messages(messages)


def test_template_form_has_role_and_content() -> None:
    messages = [Message("system", "be brief"), Message("user", "hi", name="ann")]
    assert template_messages(messages) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_messages_and_usage_round_trip() -> None:
    messages = [Message("system", "be brief"), Message("user", "hi", name="ann")]
    assert messages_from_proto(messages_to_proto(messages)) == messages
    usage = Usage(prompt_tokens=3, completion_tokens=4)
    assert usage_to_proto(usage).total_tokens == 7
    assert usage_from_proto(usage_to_proto(usage)) == usage


def test_results_round_trip_and_completions_keep_their_id() -> None:
    result = ChatResult(text="hi", finish_reason="stop", usage=Usage(2, 1), model="local/m", provider="local")
    assert result.id.startswith("chatcmpl-")
    assert result_from_proto(result_to_proto(result)) == result
    assert result_to_proto(result).message.role == "assistant"

    completion = replace(result, id=new_completion_id("cmpl"))
    message = completion_to_proto(completion)
    assert message.id.startswith("cmpl-") and message.id == completion.id
    assert (message.text, message.model, message.usage.total_tokens) == ("hi", "local/m", 3)


def test_deltas_become_chunks_with_the_role_on_the_first_only() -> None:
    header = ChunkHeader(model="local/m", provider="local", id="chatcmpl-x", created=5)
    first = delta_to_proto(ChatDelta(text="He"), header, first=True)
    last = delta_to_proto(ChatDelta(finish_reason="stop", usage=Usage(2, 1)), header, first=False)

    assert (first.role, first.delta, first.model, first.provider, first.id, first.created) == (
        "assistant",
        "He",
        "local/m",
        "local",
        "chatcmpl-x",
        5,
    )
    assert not first.HasField("usage")
    assert (last.role, last.finish_reason, last.usage.total_tokens) == ("", "stop", 3)
    assert delta_from_proto(first) == ChatDelta(text="He")
    assert delta_from_proto(last) == ChatDelta(finish_reason="stop", usage=Usage(2, 1))


def test_one_model_info_translation_serves_the_router_and_the_inference_service() -> None:
    local = LocalModel("smollm2", ("chat", "streaming"), 2048)
    message = model_info_to_proto(local)
    assert (message.id, message.provider, message.owned_by, message.context_length) == (
        "local/smollm2",
        "local",
        "goblin",
        2048,
    )
    assert list(message.aliases) == ["local"]

    routed = model_info_from_proto(message, ModelInfo)
    assert routed == ModelInfo(
        id="local/smollm2",
        provider="local",
        owned_by="goblin",
        context_length=2048,
        capabilities=("chat", "streaming"),
        aliases=("local",),
    )
    assert model_info_to_proto(routed) == message
