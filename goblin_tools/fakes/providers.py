"""A fake of the LLM providers' HTTP APIs, for tests and benchmarks: OpenAI Chat Completions and
Embeddings (also what DeepSeek, Grok, Moonshot and SiliconFlow speak), Anthropic Messages, and Gemini
generateContent / streamGenerateContent / batchEmbedContents, each with its real streaming format.

Every provider lives under its own path prefix (the *tag*), so one server stands in for all of them:
``OPENAI_BASE_URL=http://127.0.0.1:<port>/openai/v1``, ``ANTHROPIC_BASE_URL=.../anthropic``,
``GEMINI_BASE_URL=.../gemini``, ``DEEPSEEK_BASE_URL=.../deepseek``... (:meth:`FakeProviders.env`).

It checks what real providers check (auth header style and key, required fields, roles, the shape of
the body) and answers bad requests the way they do, records every request for assertions, and can be
told to fail (any status, with Retry-After), slow down, answer garbage, break a stream midway or reset
the connection without answering; a fault may be limited to one model.

In tests: ``with FakeProviders() as fake: ...`` runs it in a thread. For benchmarks:
``python -m goblin_tools.fakes.providers --port 8999`` runs it in its own process (``--certfile``/``--keyfile``:
over HTTPS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from goblin_tools.fakes import anthropic, gemini, openai_chat

OPENAI_COMPATIBLE = ("openai", "deepseek", "grok", "moonshot", "siliconflow")
ANTHROPIC_VERSION = "2023-06-01"
OPENAI_FIELDS = openai_chat.CHAT_FIELDS
EMBEDDING_DIMENSIONS = 8


@dataclass
class Fault:
    """What to do to the next ``times`` requests (None: every request until reset) for ``model`` (None:
    any model of the tag)."""

    status: int = 0
    retry_after: str | None = None
    delay_s: float = 0.0
    token_delay_s: float = 0.0
    malformed: bool = False
    break_after: int | None = None
    reset: bool = False  # close the connection with a TCP reset, no response at all
    times: int | None = 1
    model: str | None = None


@dataclass
class Recorded:
    tag: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float = 0.0  # time.monotonic() when it arrived
    fault: Fault | None = None  # what was done to it


@dataclass
class Behaviour:
    faults: list[Fault] = field(default_factory=list)

    def next(self, model: str | None = None) -> Fault | None:
        """The first fault for ``model``, used up once its ``times`` are."""
        for index, fault in enumerate(self.faults):
            if fault.model is not None and fault.model != model:
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.pop(index)
            return fault
        return None


class ConnectionReset(Exception):
    """A handler reset its connection on purpose (:meth:`FakeProviders.reset_connection`)."""


class BadRequest(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def words(text: str) -> int:
    return len(text.split())


def split_words(text: str) -> list[str]:
    """``text`` as stream pieces, a word each (the fake's tokens)."""
    return [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]


class FakeProviders:
    def __init__(
        self, keys: dict[str, str] | None = None, *, reply: str = "Hello from the fake {tag} model {model}"
    ) -> None:
        self.keys = keys or {}
        self.reply = reply
        self._lock = threading.Lock()
        self._behaviours: dict[str, Behaviour] = {}
        self._requests: list[Recorded] = []
        self.app = Starlette(
            routes=[
                Route("/{tag}/chat/completions", self._openai_chat, methods=["POST"]),
                Route("/{tag}/v1/chat/completions", self._openai_chat, methods=["POST"]),
                Route("/{tag}/embeddings", self._openai_embeddings, methods=["POST"]),
                Route("/{tag}/v1/embeddings", self._openai_embeddings, methods=["POST"]),
                Route("/{tag}/v1/messages", self._anthropic_messages, methods=["POST"]),
                Route("/{tag}/v1beta/models/{call}", self._gemini, methods=["POST"]),
            ]
        )
        self.asgi = self._with_reset(self.app)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- control (thread-safe) --------------------------------------------------------------------
    def key(self, tag: str) -> str:
        return self.keys.get(tag, f"test-key-{tag}")

    def add_fault(self, tag: str, fault: Fault) -> None:
        with self._lock:
            self._behaviours.setdefault(tag, Behaviour()).faults.append(fault)

    def fail(
        self,
        tag: str,
        status: int = 500,
        *,
        times: int | None = 1,
        retry_after: str | None = None,
        model: str | None = None,
    ) -> None:
        self.add_fault(tag, Fault(status=status, times=times, retry_after=retry_after, model=model))

    def slow(
        self, tag: str, seconds: float, *, times: int | None = None, per_token: float = 0.0, model: str | None = None
    ) -> None:
        self.add_fault(tag, Fault(delay_s=seconds, token_delay_s=per_token, times=times, model=model))

    def malformed(self, tag: str, *, times: int | None = 1, model: str | None = None) -> None:
        self.add_fault(tag, Fault(malformed=True, times=times, model=model))

    def break_stream(self, tag: str, after_tokens: int, *, times: int | None = 1, model: str | None = None) -> None:
        self.add_fault(tag, Fault(break_after=after_tokens, times=times, model=model))

    def reset_connection(self, tag: str, *, times: int | None = 1, model: str | None = None) -> None:
        """Read the request, then drop the connection with a TCP reset and no response."""
        self.add_fault(tag, Fault(reset=True, times=times, model=model))

    def clear_faults(self, tag: str | None = None) -> None:
        """Answer normally again (``tag``'s requests, or every tag's), keeping the recorded requests."""
        with self._lock:
            if tag is None:
                self._behaviours.clear()
            else:
                self._behaviours.pop(tag, None)

    def reset(self, tag: str | None = None) -> None:
        with self._lock:
            if tag is None:
                self._behaviours.clear()
                self._requests.clear()
            else:
                self._behaviours.pop(tag, None)
                self._requests = [r for r in self._requests if r.tag != tag]

    def requests(self, tag: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self._requests if tag is None or r.tag == tag]

    def env(self, host: str = "127.0.0.1") -> dict[str, str]:
        """The environment that points Goblin's providers at this server."""
        base = f"http://{host}:{self.port}"
        paths = {
            "openai": "/openai/v1",
            "anthropic": "/anthropic",
            "gemini": "/gemini",
            "deepseek": "/deepseek",
            "grok": "/grok/v1",
            "moonshot": "/moonshot/v1",
            "siliconflow": "/siliconflow/v1",
        }
        env = {}
        for tag, path in paths.items():
            env[f"{tag.upper()}_API_KEY"] = self.key(tag)
            env[f"{tag.upper()}_BASE_URL"] = base + path
        return env

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, port: int = 0) -> FakeProviders:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.asgi, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="fake-providers"
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake provider server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeProviders:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- shared -----------------------------------------------------------------------------------
    @staticmethod
    def _with_reset(app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """``app`` with a way for a handler to reset its connection (``scope["fake.reset"]``).

        ASGI gives an application no socket; uvicorn's ``send`` is a method of its request cycle, which
        holds the connection's transport. SO_LINGER 0 makes the close a TCP reset (RST), as a crashed
        peer or a middlebox dropping the connection would, rather than an orderly FIN."""

        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":

                def reset() -> None:
                    transport = getattr(getattr(send, "__self__", None), "transport", None)
                    if transport is None:
                        raise RuntimeError("this server gives no transport to reset")
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    transport.abort()

                scope["fake.reset"] = reset
            try:
                await app(scope, receive, send)
            except ConnectionReset:
                pass  # on purpose: nothing to answer, nothing to log

        return asgi

    async def _begin(self, request: Request) -> tuple[str, Any, Fault | None]:
        tag = request.path_params["tag"]
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        model = body.get("model") if isinstance(body, dict) else None
        if "call" in request.path_params:  # Gemini names the model in the path
            model = request.path_params["call"].partition(":")[0]
        with self._lock:
            fault = self._behaviours[tag].next(model) if tag in self._behaviours else None
            self._requests.append(
                Recorded(
                    tag=tag,
                    method=request.method,
                    path=request.url.path,
                    query=dict(request.query_params),
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    at=time.monotonic(),
                    fault=fault,
                )
            )
        if fault is not None and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.reset:
            request.scope["fake.reset"]()
            raise ConnectionReset()
        return tag, body, fault

    def _text(self, tag: str, model: str, max_tokens: int | None) -> tuple[list[str], str]:
        """The answer's pieces (one a token) and whether it stopped or hit max_tokens."""
        pieces = self.reply.format(tag=tag, model=model).split(" ")
        pieces = [p if i == 0 else " " + p for i, p in enumerate(pieces)]
        if max_tokens is not None and max_tokens < len(pieces):
            return pieces[:max_tokens], "length"
        return pieces, "stop"

    @staticmethod
    def _sse(events: AsyncIterator[str]) -> StreamingResponse:
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @staticmethod
    async def _pace(fault: Fault | None, index: int) -> None:
        if fault is not None and fault.token_delay_s:
            await asyncio.sleep(fault.token_delay_s)
        if fault is not None and fault.break_after is not None and index >= fault.break_after:
            raise ConnectionAbortedError("fake provider: stream broken on purpose")

    # -- OpenAI -----------------------------------------------------------------------------------
    @staticmethod
    def _openai_error(status: int, message: str, kind: str, code: str | None = None, headers=None) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": message, "type": kind, "param": None, "code": code}},
            status,
            headers=headers,
        )

    def _openai_fault(self, fault: Fault | None) -> Response | None:
        if fault is None:
            return None
        if fault.status:
            headers = {"retry-after": fault.retry_after} if fault.retry_after else None
            kind = "rate_limit_exceeded" if fault.status == 429 else "server_error"
            return self._openai_error(fault.status, f"fake failure {fault.status}", kind, headers=headers)
        if fault.malformed:
            return Response(b"<html>502 Bad Gateway</html>", 200, media_type="application/json")
        return None

    def _openai_check(self, tag: str, request: Request, body: Any) -> dict[str, Any]:
        if request.headers.get("authorization") != f"Bearer {self.key(tag)}":
            raise BadRequest(401, "Incorrect API key provided.", "invalid_request_error")
        if not isinstance(body, dict):
            raise BadRequest(400, "We could not parse the JSON body of your request.")
        unknown = set(body) - OPENAI_FIELDS
        if unknown:
            raise BadRequest(400, f"Unrecognized request argument supplied: {sorted(unknown)[0]}")
        if not isinstance(body.get("model"), str):
            raise BadRequest(400, "you must provide a model parameter")
        try:
            openai_chat.check_chat(body)
        except openai_chat.Refused as exc:
            raise BadRequest(400, exc.message) from None
        if "stream_options" in body and not body.get("stream"):
            raise BadRequest(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
        if "max_tokens" in body and "max_completion_tokens" in body:
            raise BadRequest(400, "max_tokens and max_completion_tokens cannot both be set")
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 2:
            raise BadRequest(400, "Invalid 'temperature': decimal above maximum value.")
        return body

    async def _openai_chat(self, request: Request) -> Response:
        tag, body, fault = await self._begin(request)
        if failed := self._openai_fault(fault):
            return failed
        try:
            body = self._openai_check(tag, request, body)
        except BadRequest as exc:
            code = "invalid_api_key" if exc.status == 401 else None
            return self._openai_error(exc.status, exc.message, exc.kind, code)
        model = body["model"]
        pieces, finish = self._text(tag, model, body.get("max_completion_tokens") or body.get("max_tokens"))
        planned = openai_chat.answer(body, pieces, finish)
        pieces, finish, calls = planned.pieces, planned.finish, planned.tool_calls
        prompt = sum(words(json.dumps(m.get("content"))) for m in body["messages"])
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(pieces),
            "total_tokens": prompt + len(pieces),
        }
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "".join(pieces) if not calls else None,
                                "refusal": None,
                                **({"tool_calls": calls} if calls else {}),
                            },
                            "logprobs": {"content": planned.logprob_items(pieces), "refusal": None}
                            if planned.logprobs
                            else None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                    "system_fingerprint": None,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": None if calls else ""})
            for i, fragment in enumerate(openai_chat.tool_call_fragments(calls)):
                await self._pace(fault, i)
                yield chunk({"tool_calls": [fragment]})
            for i, piece in enumerate(pieces if not calls else []):
                await self._pace(fault, i)
                items = planned.logprob_items([piece]) if planned.logprobs else None
                yield chunk({"content": piece}, logprobs={"content": items, "refusal": None} if items else None)
            yield chunk({}, finish)
            if include_usage:
                payload = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                yield f"data: {json.dumps(payload)}\n\n"
            yield "data: [DONE]\n\n"

        return self._sse(events())

    async def _openai_embeddings(self, request: Request) -> Response:
        tag, body, fault = await self._begin(request)
        if failed := self._openai_fault(fault):
            return failed
        if request.headers.get("authorization") != f"Bearer {self.key(tag)}":
            return self._openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        inputs = body.get("input") if isinstance(body, dict) else None
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not isinstance(body.get("model"), str):
            return self._openai_error(400, "'input' and 'model' are required", "invalid_request_error")
        data = [{"object": "embedding", "index": i, "embedding": vector(text)} for i, text in enumerate(inputs)]
        tokens = sum(words(t) for t in inputs)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # -- Anthropic --------------------------------------------------------------------------------
    @staticmethod
    def _anthropic_error(status: int, kind: str, message: str, headers=None) -> JSONResponse:
        return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status, headers=headers)

    def _anthropic_check(self, tag: str, request: Request, body: Any) -> dict[str, Any]:
        if request.headers.get("x-api-key") != self.key(tag):
            raise BadRequest(401, "invalid x-api-key", "authentication_error")
        if request.headers.get("authorization"):
            raise BadRequest(401, "use x-api-key, not Authorization", "authentication_error")
        if request.headers.get("anthropic-version") != ANTHROPIC_VERSION:
            raise BadRequest(400, "anthropic-version: header is required")
        try:
            return anthropic.check_body(body)
        except anthropic.WireError as exc:
            raise BadRequest(exc.status, exc.message, exc.kind) from None

    async def _anthropic_messages(self, request: Request) -> Response:
        tag, body, fault = await self._begin(request)
        if fault is not None and fault.status:
            kind = {429: "rate_limit_error", 529: "overloaded_error", 401: "authentication_error"}.get(
                fault.status, "api_error"
            )
            headers = {"retry-after": fault.retry_after} if fault.retry_after else None
            return self._anthropic_error(fault.status, kind, f"fake failure {fault.status}", headers)
        if fault is not None and fault.malformed:
            return Response(b'{"type": "message", "content": ', 200, media_type="application/json")
        try:
            body = self._anthropic_check(tag, request, body)
        except BadRequest as exc:
            return self._anthropic_error(exc.status, exc.kind, exc.message)
        model = body["model"]
        pieces, finish = self._text(tag, model, body["max_tokens"])
        plan = anthropic.plan(body, "".join(pieces))
        if not plan.calls and plan.text != "".join(pieces):
            pieces, finish = split_words(plan.text), "stop"
        stop_reason = plan.stop_reason if finish != "length" else "max_tokens"
        prompt = anthropic.prompt_words(body)
        output_tokens = len(pieces) if not plan.calls else sum(len(json.dumps(c[2]).split()) for c in plan.calls)
        message_id = f"msg_{uuid.uuid4().hex[:20]}"
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": anthropic.content(plan, pieces),
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": prompt, "output_tokens": output_tokens},
                }
            )

        def event(name: str, payload: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": prompt, "output_tokens": 1},
                    },
                },
            )
            sent = 0
            for index, (start, deltas) in enumerate(anthropic.stream_blocks(plan, pieces)):
                yield event(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
                )
                if index == 0:
                    yield event("ping", {"type": "ping"})
                for delta in deltas:
                    await self._pace(fault, sent)
                    sent += 1
                    yield event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                yield event("content_block_stop", {"type": "content_block_stop", "index": index})
            yield event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
            )
            yield event("message_stop", {"type": "message_stop"})

        return self._sse(events())

    # -- Gemini -----------------------------------------------------------------------------------
    @staticmethod
    def _gemini_error(status: int, message: str, state: str, headers=None) -> JSONResponse:
        return JSONResponse({"error": {"code": status, "message": message, "status": state}}, status, headers=headers)

    def _gemini_check(self, tag: str, request: Request, body: Any) -> dict[str, Any]:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if key != self.key(tag):
            raise BadRequest(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT")
        try:
            return gemini.check_body(body)
        except gemini.WireError as exc:
            raise BadRequest(400, exc.message, "INVALID_ARGUMENT") from None

    async def _gemini(self, request: Request) -> Response:
        tag, body, fault = await self._begin(request)
        if fault is not None and fault.status:
            state = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}.get(fault.status, "INTERNAL")
            headers = {"retry-after": fault.retry_after} if fault.retry_after else None
            return self._gemini_error(fault.status, f"fake failure {fault.status}", state, headers)
        if fault is not None and fault.malformed:
            return Response(b"[{]", 200, media_type="application/json")
        model, _, method = request.path_params["call"].partition(":")
        if method == "batchEmbedContents":
            return self._gemini_embed(tag, request, body, model)
        if method not in ("generateContent", "streamGenerateContent"):
            return self._gemini_error(404, f"Method {method} not found", "NOT_FOUND")
        try:
            body = self._gemini_check(tag, request, body)
        except BadRequest as exc:
            return self._gemini_error(exc.status, exc.message, exc.kind)
        config = body.get("generationConfig") or {}
        pieces, finish = self._text(tag, model, config.get("maxOutputTokens"))
        plan = gemini.plan(body, "".join(pieces))
        if not plan.calls and plan.text != "".join(pieces):
            pieces, finish = split_words(plan.text), "stop"
        reason = "MAX_TOKENS" if finish == "length" else "STOP"
        prompt = gemini.prompt_words(body)
        calls = [{"functionCall": {"name": name, "args": args}} for name, args in plan.calls]
        output = len(pieces) if not calls else sum(len(json.dumps(c).split()) for c in calls)

        def response(parts: list[dict[str, Any]], finish_reason: str | None, with_usage: bool) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if finish_reason:
                candidate["finishReason"] = finish_reason
            payload: dict[str, Any] = {"candidates": [candidate], "modelVersion": model}
            if with_usage:
                payload["usageMetadata"] = {
                    "promptTokenCount": prompt,
                    "candidatesTokenCount": output,
                    "totalTokenCount": prompt + output,
                }
            return payload

        if method == "generateContent":
            return JSONResponse(response(calls or [{"text": "".join(pieces)}], reason, True))
        if request.query_params.get("alt") != "sse":
            return self._gemini_error(400, "this fake only streams with alt=sse", "INVALID_ARGUMENT")
        # The real API streams text in pieces and each function call whole, in its own event.
        chunks = [[call] for call in calls] or [[{"text": piece}] for piece in pieces]

        async def events() -> AsyncIterator[str]:
            for i, parts in enumerate(chunks):
                await self._pace(fault, i)
                last = i == len(chunks) - 1
                yield f"data: {json.dumps(response(parts, reason if last else None, last))}\r\n\r\n"

        return self._sse(events())

    def _gemini_embed(self, tag: str, request: Request, body: Any, model: str) -> Response:
        if request.headers.get("x-goog-api-key") != self.key(tag):
            return self._gemini_error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT")
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return self._gemini_error(400, "requests is required", "INVALID_ARGUMENT")
        vectors = []
        for item in requests:
            if item.get("model") != f"models/{model}":
                return self._gemini_error(400, "model of each request must match the URL", "INVALID_ARGUMENT")
            vectors.append({"values": vector(" ".join(p["text"] for p in item["content"]["parts"]))})
        return JSONResponse({"embeddings": vectors})


def vector(text: str) -> list[float]:
    """A deterministic little embedding of ``text``."""
    seed = sum(ord(c) for c in text)
    return [((seed * (i + 7)) % 97) / 97 for i in range(EMBEDDING_DIMENSIONS)]


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake LLM provider APIs (OpenAI, Anthropic, Gemini).")
    parser.add_argument("--port", type=int, default=8999)
    parser.add_argument("--key-prefix", default="test-key-")
    parser.add_argument("--certfile", help="serve HTTPS (HTTP/1.1) with this certificate")
    parser.add_argument("--keyfile", help="the certificate's private key")
    args = parser.parse_args()
    fake = FakeProviders(keys={tag: f"{args.key_prefix}{tag}" for tag in (*OPENAI_COMPATIBLE, "anthropic", "gemini")})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    scheme = "https" if args.certfile else "http"
    print(f"fake providers listening on {scheme}://127.0.0.1:{args.port}", flush=True)
    config = uvicorn.Config(
        fake.asgi,
        log_level="warning",
        lifespan="off",
        access_log=False,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
