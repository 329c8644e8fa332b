"""OpenAI's chat wire format <-> Goblin's chat types, once, for the chat and text completion routes.

A request body becomes the shared chat types (:mod:`services.common.chat`, :mod:`.chat_content`),
which the one check of each refuses when malformed (a 400 before anything is forwarded), then the
``ChatRequest`` the router takes. Answers go the other way: a ``ChatResponse`` becomes a choice with
``tool_calls`` and ``logprobs``, a ``ChatChunk`` a ``delta`` with tool-call fragments as OpenAI streams
them (the first fragment of a call has its index, id, type, name and ``""`` arguments; later ones only
argument pieces), so the SDKs' stream helpers reassemble them.

Legacy ``functions`` / ``function_call`` are tools under another name: they become tools and a tool
choice, ``function`` messages tool messages answering the assistant's last call of that name, and the
answer of such a request has ``function_call`` (and finish_reason ``function_call``) again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from goblin.v1 import common_pb2
from services.common.chat import Message, SamplingParams, check_messages, messages_to_proto, params_to_proto
from services.common.chat_content import (
    ChatOptions,
    ContentPart,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
    check_options,
    options_to_proto,
)
from services.common.errors import InvalidArgument
from services.gateway.api.schemas.openai import (
    ChatCompletionRequest,
    ChatMessageIn,
    FunctionDef,
    NamedFunction,
    NamedToolChoice,
)

NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _parts(message: ChatMessageIn) -> tuple[ContentPart, ...]:
    if not isinstance(message.content, list):
        return ()
    return tuple(
        ContentPart("text", text=p.text or "")
        if p.type == "text"
        else ContentPart(
            "image_url",
            image_url=p.image_url.url if p.image_url else "",
            detail=(p.image_url.detail or "") if p.image_url else "",
        )
        for p in message.content
    )


def chat_messages(body_messages: Sequence[ChatMessageIn]) -> list[Message]:
    """The conversation as Goblin's messages (``developer`` is a system turn; legacy ``function_call``
    and ``function`` messages become a tool call and its answer, with an id made up for them)."""
    messages: list[Message] = []
    legacy_ids: dict[str, str] = {}  # function name -> id of the assistant's last call of it
    for i, m in enumerate(body_messages):
        role = {"developer": "system", "function": "tool"}.get(m.role, m.role)
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
        if m.function_call is not None:
            call_id = f"call_fn_{i}"
            legacy_ids[m.function_call.name] = call_id
            calls += (ToolCall(call_id, m.function_call.name, m.function_call.arguments),)
        tool_call_id = m.tool_call_id or ""
        if m.role == "function":
            tool_call_id = legacy_ids.get(m.name or "", "")
            if not tool_call_id:
                raise InvalidArgument(
                    f"messages[{i}]: a function message answers no earlier function_call of {m.name!r}"
                )
        parts = _parts(m)
        # Text-only parts carry nothing the joined text does not: sent as plain content.
        keep_parts = parts if any(p.is_image for p in parts) else ()
        name = "" if m.role == "function" else m.name or ""
        messages.append(Message(role, m.text(), name, keep_parts, calls, tool_call_id))
    check_messages(messages)
    return messages


def _tool(function: FunctionDef) -> Tool:
    return Tool(
        name=function.name,
        description=function.description or "",
        parameters=function.parameters if function.parameters is not None else NO_PARAMETERS,
        strict=bool(function.strict),
    )


def _choice(choice: str | NamedToolChoice | NamedFunction | None) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, NamedToolChoice):
        return ToolChoice("function", choice.function.name)
    if isinstance(choice, NamedFunction):
        return ToolChoice("function", choice.name)
    return ToolChoice(choice)


def chat_options(body: ChatCompletionRequest) -> ChatOptions:
    """Tools (or legacy functions), the tool choice and the response format, checked."""
    if body.tools and body.functions:
        raise InvalidArgument("send tools or the legacy functions, not both")
    tools = tuple(_tool(t.function) for t in body.tools or ()) or tuple(_tool(f) for f in body.functions or ())
    choice = _choice(body.tool_choice) if body.tool_choice is not None else _choice(body.function_call)
    fmt = None
    if body.response_format is not None and body.response_format.type != "text":
        spec = body.response_format.json_schema
        if body.response_format.type == "json_schema":
            if spec is None:
                raise InvalidArgument("response_format.json_schema is required with type json_schema")
            fmt = ResponseFormat("json_schema", spec.name, spec.schema_ or NO_PARAMETERS, bool(spec.strict))
        else:
            fmt = ResponseFormat(body.response_format.type)
    options = ChatOptions(
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=fmt,
        user=body.user or "",
    )
    check_options(options)
    return options


def logit_bias(values: dict[str, float] | None) -> dict[int, float]:
    """``logit_bias`` keys are token ids written as strings."""
    out = {}
    for key, bias in (values or {}).items():
        if not key.isdigit():
            raise InvalidArgument(f"logit_bias: {key[:20]!r} is not a token id")
        out[int(key)] = bias
    return out


def sampling(body: Any, *, max_tokens: int | None, logprobs: bool, top_logprobs: int | None) -> SamplingParams:
    """The sampling parameters a chat or a text completion body shares."""
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=tuple(body.stop or ()),
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias=logit_bias(body.logit_bias),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def chat_request(
    messages: list[Message], params: SamplingParams, options: ChatOptions, model: str, body: Any
) -> common_pb2.ChatRequest:
    """The router's request (without the caller's context, which the route adds)."""
    request = common_pb2.ChatRequest(model=model, messages=messages_to_proto(messages), params=params_to_proto(params))
    options_to_proto(options, request)
    if body.goblin is not None:
        request.routing.policy = body.goblin.policy or ""
        request.routing.fallbacks.extend(body.goblin.fallbacks)
        if body.goblin.rag is not None:
            request.rag.collection = body.goblin.rag.collection
            request.rag.top_k = body.goblin.rag.top_k
    return request


# -- answers --------------------------------------------------------------------------------------


def _token(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def logprobs_json(logprobs: Sequence[common_pb2.TokenLogprob]) -> dict[str, Any]:
    """``choice.logprobs`` as OpenAI writes it."""
    return {
        "content": [
            {**_token(lp.token, lp.logprob), "top_logprobs": [_token(t.token, t.logprob) for t in lp.top]}
            for lp in logprobs
        ],
        "refusal": None,
    }


def tool_calls_json(calls: Sequence[common_pb2.ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def finish_reason(reason: str, legacy: bool) -> str:
    reason = reason or "stop"
    return "function_call" if legacy and reason == "tool_calls" else reason


def message_json(reply: common_pb2.ChatResponse, legacy: bool) -> dict[str, Any]:
    """The answer's message: ``content`` null when the model only called tools."""
    calls = reply.message.tool_calls
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.message.content if reply.message.content or not calls else None,
        "refusal": None,
    }
    if calls and legacy:
        message["function_call"] = {"name": calls[0].name, "arguments": calls[0].arguments}
    elif calls:
        message["tool_calls"] = tool_calls_json(calls)
    return message


def choice_json(reply: common_pb2.ChatResponse, index: int, *, legacy: bool, logprobs: bool) -> dict[str, Any]:
    return {
        "index": index,
        "message": message_json(reply, legacy),
        "finish_reason": finish_reason(reply.finish_reason, legacy),
        "logprobs": logprobs_json(reply.logprobs) if logprobs else None,
    }


def delta_json(chunk: common_pb2.ChatChunk, legacy: bool) -> dict[str, Any]:
    """A chunk's ``delta``: role on the first, text, and tool-call fragments."""
    delta: dict[str, Any] = {}
    if chunk.role:
        delta["role"] = chunk.role
    if chunk.delta or (chunk.role and not chunk.tool_calls):
        delta["content"] = chunk.delta
    elif chunk.role:
        delta["content"] = None
    if chunk.tool_calls and legacy:
        first = chunk.tool_calls[0]
        function: dict[str, str] = {"arguments": first.arguments}
        if first.name:
            function["name"] = first.name
        delta["function_call"] = function
    elif chunk.tool_calls:
        fragments = []
        for d in chunk.tool_calls:
            fragment: dict[str, Any] = {"index": d.index}
            if d.id:
                fragment["id"] = d.id
                fragment["type"] = "function"
            function = {"name": d.name, "arguments": d.arguments} if d.name else {"arguments": d.arguments}
            fragment["function"] = function
            fragments.append(fragment)
        delta["tool_calls"] = fragments
    return delta
