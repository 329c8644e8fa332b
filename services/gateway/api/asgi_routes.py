"""The hot routes without FastAPI's per-request machinery: ``POST /v1/chat/completions`` and
``POST /v1/completions`` (and their aliases) answered by one pure-ASGI middleware ahead of the router.

FastAPI between the edge and the route cost about 0.5 ms of the gateway's CPU per request (routing, the
dependency solver, its exception middleware and send wrappers; bench/RESULTS.md, "Gateway CPU
profile"). Here each step FastAPI takes for these routes is taken directly, with the same pieces:

1. the body is read, and parsed as JSON as FastAPI parses it (:func:`parse_body`: only a JSON content
   type is parsed; malformed JSON is a 400 before anything else, as there);
2. the caller: :data:`services.gateway.deps.chat_principal`, the dependency the FastAPI route declares
   (the principal cache, the scope, the requests/day quota, the signed principal for backend calls);
3. the body validated by the declared route's own body field (the same pydantic model and error list);
4. the answer: the function the FastAPI route calls (``chat_answer``, ``completion_answer``);
5. a failure answered by the app's own handlers (:func:`services.gateway.errors.handled_error`).

The FastAPI routes stay declared: they give the OpenAPI schema, and with ``asgi_routes=False``
(:func:`services.gateway.main.create_app`) they answer, which the tests use to compare both paths.
Every edge behaviour (body limit, timeout, rate limits, headers, access log, metrics) is the
edge middleware's, outside this one, for both.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi._compat import get_missing_field_error
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.telemetry._api import _route_selected
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goblin.v1 import auth_pb2
from services.gateway.api.routes import completions, openai
from services.gateway.deps import chat_principal, gateway_state
from services.gateway.errors import handled_error
from services.gateway.state import GatewayState

Answer = Callable[[Any, auth_pb2.Principal, GatewayState, Request], Awaitable[Response]]

# The FastAPI endpoint each answer stands in for: its route gives the body field and the path template.
ANSWERS: dict[Callable[..., Any], Answer] = {
    openai.chat_completions: openai.chat_answer,
    completions.completions: completions.completion_answer,
}

_UNDEFINED = object()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One declared route answered here: the route (its body field; routing's ``scope["route"]``) and
    the answer its endpoint calls."""

    route: APIRoute
    answer: Answer


def endpoints(app: FastAPI) -> dict[str, Endpoint]:
    """The POST routes of ``app`` whose endpoint has an answer in :data:`ANSWERS`, by path."""
    found: dict[str, Endpoint] = {}
    # Included routers are flattened as FastAPI's own router and schema see them; the route a match
    # puts in scope["route"] is the original one, whose body field is the declared model's.
    for context in iter_route_contexts(app.router.routes):
        route = context.original_route
        answer = ANSWERS.get(context.endpoint)  # type: ignore[arg-type]
        if answer is not None and isinstance(route, APIRoute) and "POST" in (context.methods or ()):
            found.setdefault(context.path or route.path, Endpoint(route, answer))
    return found


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client went away before sending it."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body  # one message (the edge hands a chunked body on whole)
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_body(body: bytes, content_type: str | None) -> Any:
    """The body as FastAPI hands it to validation (fastapi.routing.get_request_handler, strict content
    type): nothing when empty; parsed JSON for ``application/json`` or ``application/*+json``; else the
    bytes, which the model then refuses. Malformed JSON raises the same RequestValidationError, and
    undecodable bytes the same HTTPException, as FastAPI does."""
    if not body:
        return _UNDEFINED
    if not content_type:
        return body
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return body
    subtype = message.get_content_subtype()
    if subtype != "json" and not subtype.endswith("+json"):
        return body
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", error.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": error.msg},
                }
            ],
            body=error.doc,
        ) from error
    except Exception as error:
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from error


def validate_body(route: APIRoute, body: Any) -> Any:
    """``body`` validated by the route's own body field, as FastAPI's dependency solver does for a
    single, not embedded, body parameter; RequestValidationError with its error list otherwise."""
    field = route.body_field
    assert field is not None
    if body is _UNDEFINED:
        raise RequestValidationError([get_missing_field_error(loc=("body",))])
    value, errors = field.validate(body, {}, loc=("body",))
    if errors:
        raise RequestValidationError(errors, body=body)
    return value


class AsgiRoutes:
    """Answers the routes of :func:`endpoints` (POST only: other methods, and every other path, go on
    to ``app``); see the module's docstring for the steps."""

    def __init__(self, app: ASGIApp, *, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._endpoints: dict[str, Endpoint] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            if self._endpoints is None:
                self._endpoints = endpoints(self.fastapi_app)  # the routes are all declared by now
            endpoint = self._endpoints.get(scope["path"])
            if endpoint is not None:
                await self.answer(endpoint, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def answer(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        """One request to ``endpoint``: parsed, authorized, validated, answered; a failure before the
        answer starts is answered by the app's handler for it, as Starlette's exception layer does."""
        scope["route"] = endpoint.route  # as routing sets it: the edge labels metrics and logs by it
        # As FastAPI's router does on a match: the request's server span is named by the route template
        # ("POST /v1/chat/completions") and carries http.route (a no-op when nothing is traced).
        _route_selected(scope=scope, path=endpoint.route.path_format)
        scope.setdefault("path_params", {})
        request = Request(scope, receive)
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            raw = await read_body(receive)
            if raw is None:
                # The client went away mid-body. FastAPI turns the read's failure into this 400 (that
                # nobody receives); the same here, so the access log and metrics say the same.
                raise HTTPException(status_code=400, detail="There was an error parsing the body")
            body = parse_body(raw, request.headers.get("content-type"))
            principal = await chat_principal(request)
            value = validate_body(endpoint.route, body)
            response = await endpoint.answer(value, principal, gateway_state(request), request)
            await response(scope, receive, send_started)
        except Exception as exc:
            if started:
                raise  # the answer is under way: the edge and the server cut the connection
            refusal = await handled_error(request, exc)
            if refusal is None:
                raise  # the edge's net answers it with the 500 envelope
            await refusal(scope, receive, send)
