"""A request needing tools, a response format, images or logprobs goes only to models that have them:
a model named explicitly that lacks one is refused (400 naming the parameter and the model) before any
provider is called; policies and fallbacks skip models that lack one; the options reach the provider."""

from __future__ import annotations

import copy

import pytest

from services.common.chat import Message, SamplingParams
from services.common.chat_content import ChatOptions, ContentPart, ResponseFormat, Tool, ToolChoice
from services.common.errors import InvalidArgument
from services.router.cache import cache_key
from services.router.service import ChatCall
from tests.unit.router.conftest import TEST_CATALOG, ScriptedProvider, catalog_from
from tests.unit.router.test_service import CTX, HI, make

TOOLS = ChatOptions(tools=(Tool("lookup", parameters={"type": "object", "properties": {}}),))
SCHEMA = ChatOptions(response_format=ResponseFormat("json_schema", "answer", {"type": "object"}))
PNG = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture
def catalog():  # noqa: ANN201
    data = copy.deepcopy(TEST_CATALOG)
    data["models"]["alpha/big"]["capabilities"] = ["chat", "streaming", "tools"]
    data["models"]["beta/small"]["capabilities"] = ["chat", "streaming", "tools", "json", "json_schema", "vision"]
    return catalog_from(data)


def providers() -> tuple[ScriptedProvider, ScriptedProvider, ScriptedProvider]:
    return ScriptedProvider("alpha"), ScriptedProvider("beta"), ScriptedProvider("gamma")


async def test_an_explicit_model_without_the_capability_is_refused_before_any_provider(catalog) -> None:  # noqa: ANN001
    alpha, beta, gamma = providers()
    service, ledger = make(catalog, alpha, beta, gamma)
    with pytest.raises(InvalidArgument) as err:
        await service.chat(ChatCall("gamma/mid", HI, SamplingParams(), CTX, options=TOOLS))
    assert "gamma/mid" in err.value.message and "tools" in err.value.message
    assert err.value.code == "unsupported_parameter"
    with pytest.raises(InvalidArgument, match=r"response_format \(json_schema\)"):
        await service.chat(ChatCall("alpha/big", HI, SamplingParams(), CTX, options=SCHEMA))
    with pytest.raises(InvalidArgument, match="logprobs"):
        await service.chat(ChatCall("beta/small", HI, SamplingParams(logprobs=True), CTX))
    image = [
        Message("user", "what?", parts=(ContentPart("text", text="what?"), ContentPart("image_url", image_url=PNG)))
    ]
    with pytest.raises(InvalidArgument, match="image_url"):
        await service.chat(ChatCall("alpha/big", image, SamplingParams(), CTX))
    assert not alpha.calls and not beta.calls and not gamma.calls
    assert [r.outcome for r in ledger.rows] == ["error"] * 4


async def test_policies_aliases_and_fallbacks_skip_models_without_the_capability(catalog) -> None:  # noqa: ANN001
    alpha, beta, gamma = providers()
    service, _ = make(catalog, alpha, beta, gamma)
    # "cheap" orders gamma/mid before alpha/big by price; gamma has no tools, so it is not a candidate.
    routed = await service.chat(ChatCall("cheap", HI, SamplingParams(), CTX, options=SCHEMA))
    assert routed.result.model == "beta/small"
    # The alias "smart" is alpha/big and beta/small: only beta serves a JSON schema.
    assert (await service.chat(ChatCall("smart", HI, SamplingParams(), CTX, options=SCHEMA))).result.provider == "beta"
    # A fallback that cannot serve the request is skipped, not tried.
    call = ChatCall("alpha/big", HI, SamplingParams(), CTX, fallbacks=("gamma/mid", "beta/small"), options=TOOLS)
    plan = await service.planner.plan(call)
    assert [c.model.id for c in plan.candidates] == ["alpha/big", "beta/small"]
    assert not gamma.calls


async def test_the_options_reach_the_provider_unary_and_streamed(catalog) -> None:  # noqa: ANN001
    alpha, beta, gamma = providers()
    service, _ = make(catalog, alpha, beta, gamma)
    options = ChatOptions(tools=TOOLS.tools, tool_choice=ToolChoice("required"))
    await service.chat(ChatCall("alpha/big", HI, SamplingParams(), CTX, options=options))
    async for _ in service.stream(ChatCall("alpha/big", HI, SamplingParams(), CTX, options=options)):
        pass
    assert alpha.options == [options, options]
    # A plain request still goes anywhere, with no options.
    await service.chat(ChatCall("gamma/mid", HI, SamplingParams(), CTX))
    assert gamma.options == [ChatOptions()] or gamma.options[0].tools == ()


def test_the_cache_key_covers_tools_formats_and_images() -> None:
    plain = cache_key("t", ["m"], HI, SamplingParams(temperature=0))
    assert plain != cache_key("t", ["m"], HI, SamplingParams(temperature=0), TOOLS)
    assert plain != cache_key("t", ["m"], HI, SamplingParams(temperature=0), SCHEMA)
    image = [Message("user", "hello there", parts=(ContentPart("image_url", image_url=PNG),))]
    assert plain != cache_key("t", ["m"], image, SamplingParams(temperature=0))
