"""What a chat request may carry beyond text and sampling: content parts (images), tools and the calls
a model makes of them, and the shape its answer must take (``response_format``); with the one check of
each and their protobuf translation. :mod:`services.common.chat` builds its messages from these.

Every hop works with these types; each provider adapter translates them to its wire format in one
place (OpenAI-compatible: as they are; Anthropic: ``tool_use``/``tool_result`` blocks; Gemini:
``functionCall``/``functionResponse`` parts), and the local engine enforces a schema by grammar.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from goblin.v1 import common_pb2
from services.common.errors import InvalidArgument

# What a model must be able to do for a request, as the catalog names it (ModelInfo.capabilities).
CAP_TOOLS = "tools"
CAP_JSON = "json"  # response_format json_object
CAP_JSON_SCHEMA = "json_schema"  # response_format json_schema
CAP_VISION = "vision"  # image content parts
CAP_LOGPROBS = "logprobs"
REQUEST_CAPABILITIES = (CAP_TOOLS, CAP_JSON, CAP_JSON_SCHEMA, CAP_VISION, CAP_LOGPROBS)

# OpenAI's own limits where it has them; ours where it does not.
MAX_TOOLS = 128
MAX_SCHEMA_BYTES = 64 * 1024
MAX_TOOL_ARGUMENTS_BYTES = 256 * 1024
MAX_IMAGE_PARTS = 16
# Decoded bytes of one data: URL image: Anthropic's limit, the smallest of the vision providers', so
# an image accepted here is one every vision model takes (a fallback never fails on it).
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGE_URL_CHARS = 8192  # an https URL
MAX_TOP_LOGPROBS = 20
MAX_USER_CHARS = 256
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
IMAGE_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
DATA_URL = re.compile(r"^data:(?P<type>[a-z]+/[a-z0-9.+-]+);base64,(?P<data>.*)$", re.DOTALL)
TOOL_CHOICE_MODES = frozenset({"auto", "none", "required", "function"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})


@dataclass(frozen=True)
class ContentPart:
    """``text``, or an ``image_url`` (https or a base64 ``data:`` URL)."""

    type: str
    text: str = ""
    image_url: str = ""
    detail: str = ""

    @property
    def is_image(self) -> bool:
        return self.type == "image_url"


@dataclass(frozen=True)
class ImageData:
    """A ``data:`` URL image, decoded (providers that take bytes get these, never a fetched URL)."""

    media_type: str
    data: bytes

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: ``arguments`` is JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A streamed piece of a tool call (OpenAI's ``delta.tool_calls[]``)."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, eq=False)
class Tool:
    """A function the model may call, with its parameters' JSON Schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False


@dataclass(frozen=True)
class ToolChoice:
    mode: str = "auto"  # auto | none | required | function
    function: str = ""


@dataclass(frozen=True, eq=False)
class ResponseFormat:
    type: str = "text"  # text | json_object | json_schema
    name: str = ""
    schema: Mapping[str, Any] | None = None
    strict: bool = False


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, eq=False)
class ChatOptions:
    """What a chat request asks of the model beyond its messages and sampling."""

    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    # The client's own end-user id (OpenAI's ``user``), passed on to providers that take one.
    user: str = ""

    @property
    def wants_tools(self) -> bool:
        return bool(self.tools) and (self.tool_choice is None or self.tool_choice.mode != "none")

    @property
    def json_schema(self) -> Mapping[str, Any] | None:
        """The schema the answer must validate against, if the request set one."""
        fmt = self.response_format
        return fmt.schema if fmt is not None and fmt.type == "json_schema" else None


NO_OPTIONS = ChatOptions()


# -- checks -------------------------------------------------------------------------------------


def check_json_schema(schema: Any, where: str) -> Mapping[str, Any]:
    """``schema``, if it is a JSON Schema (draft 2020-12) object of bounded size; else InvalidArgument."""
    if not isinstance(schema, Mapping):
        raise InvalidArgument(f"{where}: a JSON Schema must be an object")
    if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise InvalidArgument(f"{where}: a JSON Schema of at most {MAX_SCHEMA_BYTES // 1024} KiB")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.path)
        at = f" at {path}" if path else ""
        raise InvalidArgument(f"{where}: not a valid JSON Schema ({exc.message[:200]}{at})") from None
    return schema


def decode_data_url(url: str, where: str = "image_url") -> ImageData:
    """The image of a ``data:`` URL; InvalidArgument for another type, bad base64 or too many bytes."""
    match = DATA_URL.match(url)
    if not match:
        raise InvalidArgument(f"{where}: a data: URL must be data:<image type>;base64,<data>")
    media_type = match["type"]
    if media_type not in IMAGE_MEDIA_TYPES:
        raise InvalidArgument(f"{where}: image type {media_type!r} is not one of {sorted(IMAGE_MEDIA_TYPES)}")
    encoded = match["data"]
    if len(encoded) > (MAX_IMAGE_BYTES * 4) // 3 + 4:
        raise InvalidArgument(f"{where}: an image of at most {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{where}: the data: URL is not valid base64") from None
    if not data:
        raise InvalidArgument(f"{where}: the image is empty")
    return ImageData(media_type, data)


def check_part(part: ContentPart, where: str) -> None:
    if part.type == "text":
        return
    if part.type != "image_url":
        raise InvalidArgument(f"{where}.type: {part.type[:40]!r} is not a content part type (text, image_url)")
    url = part.image_url
    if url.startswith("data:"):
        decode_data_url(url, f"{where}.image_url")
    elif not url.startswith("https://") or len(url) > MAX_IMAGE_URL_CHARS or any(c.isspace() for c in url):
        raise InvalidArgument(
            f"{where}.image_url: an https:// URL (at most {MAX_IMAGE_URL_CHARS} characters) or a data: URL"
        )
    if part.detail not in ("", "auto", "low", "high"):
        raise InvalidArgument(f"{where}.detail: one of auto, low, high")


def check_tool_calls(calls: Sequence[ToolCall], where: str) -> None:
    for j, call in enumerate(calls):
        if not call.id or len(call.id) > 256:
            raise InvalidArgument(f"{where}.tool_calls[{j}].id: required, at most 256 characters")
        if not FUNCTION_NAME.match(call.name):
            raise InvalidArgument(f"{where}.tool_calls[{j}].function.name: 1-64 letters, digits, _ or -")
        if len(call.arguments) > MAX_TOOL_ARGUMENTS_BYTES:
            raise InvalidArgument(f"{where}.tool_calls[{j}].function.arguments: at most 256 KiB")


def check_options(options: ChatOptions) -> None:
    """Raise InvalidArgument for tools, a tool choice or a response format no model could honour."""
    if len(options.tools) > MAX_TOOLS:
        raise InvalidArgument(f"tools: at most {MAX_TOOLS}")
    names = set()
    for i, tool in enumerate(options.tools):
        if not FUNCTION_NAME.match(tool.name):
            raise InvalidArgument(f"tools[{i}].function.name: 1-64 letters, digits, _ or -")
        if tool.name in names:
            raise InvalidArgument(f"tools[{i}].function.name: {tool.name!r} is named twice")
        names.add(tool.name)
        check_json_schema(tool.parameters, f"tools[{i}].function.parameters")
    choice = options.tool_choice
    if choice is not None:
        if choice.mode not in TOOL_CHOICE_MODES:
            raise InvalidArgument("tool_choice: one of auto, none, required, or a named function")
        if choice.mode in ("required", "function") and not options.tools:
            raise InvalidArgument(f"tool_choice: {choice.mode!r} needs tools")
        if choice.mode == "function" and choice.function not in names:
            raise InvalidArgument(f"tool_choice.function.name: {choice.function[:64]!r} is not one of the tools")
    if len(options.user) > MAX_USER_CHARS:
        raise InvalidArgument(f"user: at most {MAX_USER_CHARS} characters")
    fmt = options.response_format
    if fmt is not None:
        if fmt.type not in RESPONSE_FORMATS:
            raise InvalidArgument("response_format.type: one of text, json_object, json_schema")
        if fmt.type == "json_schema":
            if not FUNCTION_NAME.match(fmt.name):
                raise InvalidArgument("response_format.json_schema.name: 1-64 letters, digits, _ or -")
            check_json_schema(fmt.schema, "response_format.json_schema.schema")


def required_capabilities(options: ChatOptions, messages: Sequence[Any], params: Any = None) -> frozenset[str]:
    """What a model must support to serve this request (the router plans only among such models)."""
    needed = set()
    if options.tools or any(m.tool_calls or m.role == "tool" for m in messages):
        needed.add(CAP_TOOLS)
    fmt = options.response_format
    if fmt is not None and fmt.type == "json_object":
        needed.add(CAP_JSON)
    if fmt is not None and fmt.type == "json_schema":
        needed.add(CAP_JSON_SCHEMA)
    if any(part.is_image for m in messages for part in m.parts):
        needed.add(CAP_VISION)
    if params is not None and getattr(params, "logprobs", False):
        needed.add(CAP_LOGPROBS)
    return frozenset(needed)


# -- secret scanning ------------------------------------------------------------------------------

M = TypeVar("M")


def message_texts(messages: Sequence[Any]) -> list[str]:
    """Every text of chat messages (:class:`services.common.chat.Message`) a person or a tool wrote, to be
    scanned for secrets: content, text parts, tool call arguments (image URLs are not text a person
    wrote). In the order :func:`with_message_texts` reads them."""
    texts = []
    for m in messages:
        texts.append(m.content)
        texts.extend(p.text for p in m.parts if p.type == "text")
        texts.extend(c.arguments for c in m.tool_calls)
    return texts


def with_message_texts(messages: Sequence[M], texts: Sequence[str]) -> list[M]:
    """``messages`` with the texts of :func:`message_texts` replaced by ``texts`` (scanned); a message
    none of whose texts changed is returned as it was."""
    out, at = [], 0
    for m in messages:
        content = texts[at]
        at += 1
        parts = []
        for p in m.parts:
            if p.type == "text":
                parts.append(replace(p, text=texts[at]) if texts[at] is not p.text else p)
                at += 1
            else:
                parts.append(p)
        calls = []
        for c in m.tool_calls:
            calls.append(replace(c, arguments=texts[at]) if texts[at] is not c.arguments else c)
            at += 1
        changed = content is not m.content or any(a is not b for a, b in zip(parts, m.parts, strict=True))
        changed = changed or any(a is not b for a, b in zip(calls, m.tool_calls, strict=True))
        out.append(replace(m, content=content, parts=tuple(parts), tool_calls=tuple(calls)) if changed else m)
    return out


# -- protobuf -----------------------------------------------------------------------------------


def parts_to_proto(parts: Sequence[ContentPart]) -> list[common_pb2.ContentPart]:
    return [common_pb2.ContentPart(type=p.type, text=p.text, image_url=p.image_url, detail=p.detail) for p in parts]


def parts_from_proto(parts: Sequence[common_pb2.ContentPart]) -> tuple[ContentPart, ...]:
    return tuple(ContentPart(type=p.type, text=p.text, image_url=p.image_url, detail=p.detail) for p in parts)


def tool_calls_to_proto(calls: Sequence[ToolCall]) -> list[common_pb2.ToolCall]:
    return [common_pb2.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in calls]


def tool_calls_from_proto(calls: Sequence[common_pb2.ToolCall]) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in calls)


def tool_call_deltas_to_proto(deltas: Sequence[ToolCallDelta]) -> list[common_pb2.ToolCallDelta]:
    return [common_pb2.ToolCallDelta(index=d.index, id=d.id, name=d.name, arguments=d.arguments) for d in deltas]


def tool_call_deltas_from_proto(deltas: Sequence[common_pb2.ToolCallDelta]) -> tuple[ToolCallDelta, ...]:
    return tuple(ToolCallDelta(index=d.index, id=d.id, name=d.name, arguments=d.arguments) for d in deltas)


def logprobs_to_proto(logprobs: Sequence[TokenLogprob]) -> list[common_pb2.TokenLogprob]:
    return [
        common_pb2.TokenLogprob(
            token=lp.token, logprob=lp.logprob, top=[common_pb2.TopLogprob(token=t, logprob=v) for t, v in lp.top]
        )
        for lp in logprobs
    ]


def logprobs_from_proto(logprobs: Sequence[common_pb2.TokenLogprob]) -> tuple[TokenLogprob, ...]:
    return tuple(
        TokenLogprob(token=lp.token, logprob=lp.logprob, top=tuple((t.token, t.logprob) for t in lp.top))
        for lp in logprobs
    )


def _schema_from_json(text: str, where: str) -> Mapping[str, Any]:
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidArgument(f"{where}: not JSON") from None


def options_from_proto(request: common_pb2.ChatRequest) -> ChatOptions:
    """A chat request's tools, tool choice and response format, checked (InvalidArgument when bad)."""
    tools = tuple(
        Tool(
            name=t.name,
            description=t.description,
            parameters=_schema_from_json(t.parameters_json, f"tools[{i}].function.parameters")
            if t.parameters_json
            else {"type": "object", "properties": {}},
            strict=t.strict,
        )
        for i, t in enumerate(request.tools)
    )
    choice = (
        ToolChoice(request.tool_choice.mode, request.tool_choice.function) if request.HasField("tool_choice") else None
    )
    fmt = None
    if request.HasField("response_format") and request.response_format.type:
        rf = request.response_format
        schema = _schema_from_json(rf.schema_json, "response_format.json_schema.schema") if rf.schema_json else None
        fmt = ResponseFormat(type=rf.type, name=rf.name, schema=schema, strict=rf.strict)
    options = ChatOptions(
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=request.parallel_tool_calls if request.HasField("parallel_tool_calls") else None,
        response_format=fmt,
        user=request.user,
    )
    check_options(options)
    return options


def options_to_proto(options: ChatOptions, request: common_pb2.ChatRequest) -> None:
    """Write ``options`` into ``request`` (a hop forwarding a request it checked)."""
    for tool in options.tools:
        request.tools.add(
            name=tool.name,
            description=tool.description,
            parameters_json=json.dumps(tool.parameters),
            strict=tool.strict,
        )
    if options.tool_choice is not None:
        request.tool_choice.mode = options.tool_choice.mode
        request.tool_choice.function = options.tool_choice.function
    if options.parallel_tool_calls is not None:
        request.parallel_tool_calls = options.parallel_tool_calls
    fmt = options.response_format
    if fmt is not None:
        request.response_format.type = fmt.type
        request.response_format.name = fmt.name
        request.response_format.schema_json = json.dumps(fmt.schema) if fmt.schema is not None else ""
        request.response_format.strict = fmt.strict
    request.user = options.user
