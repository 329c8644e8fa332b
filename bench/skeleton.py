"""The floor under the router benchmark: Goblin's hops with nothing on them.

The same processes and transports as the real path (HTTPS on uvicorn with httptools and uvloop and the
gateway's TLS settings -> grpc.aio ``goblin.v1.Router/Chat`` on uvloop -> aiohttp keep-alive POST to
the provider), each doing only what carrying a chat completion needs: parse the JSON, build the proto,
forward, translate back. No authentication, rate limit, secret scan, validation, policy, budget,
ledger, metric, log or trace. What this path adds over a direct call is what the architecture costs on
this machine before Goblin does any work; the rest of the real path's number is Goblin's own.

Run by bench/router_bench.py, one process per role:
``python -m bench.skeleton router PORT PROVIDER_BASE_URL API_KEY`` and
``python -m bench.skeleton gateway PORT ROUTER_ADDRESS CERT_FILE KEY_FILE``; and, to price the gRPC hop,
``python -m bench.skeleton gateway-in-process PORT PROVIDER_BASE_URL API_KEY CERT_FILE KEY_FILE``: the
same gateway calling the same router code in its own process.
"""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import grpc
import uvicorn
import uvloop

from goblin.v1 import common_pb2, router_pb2_grpc

Chat = Callable[[common_pb2.ChatRequest], Awaitable[common_pb2.ChatResponse]]


class SkeletonRouter(router_pb2_grpc.RouterServicer):
    def __init__(self, base_url: str, api_key: str) -> None:
        self.url = f"{base_url}/chat/completions"
        self.headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
        self.session: aiohttp.ClientSession | None = None

    async def Chat(self, request: common_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> Any:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        body = {
            "model": request.model.partition("/")[2],
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_completion_tokens": request.params.max_tokens,
        }
        async with self.session.post(self.url, data=json.dumps(body), headers=self.headers) as reply:
            answer = json.loads(await reply.read())
        choice = answer["choices"][0]
        usage = answer["usage"]
        return common_pb2.ChatResponse(
            id=answer["id"],
            model=request.model,
            provider=request.model.partition("/")[0],
            message=common_pb2.ChatMessage(role="assistant", content=choice["message"]["content"]),
            finish_reason=choice["finish_reason"],
            usage=common_pb2.Usage(
                prompt_tokens=usage["prompt_tokens"],
                completion_tokens=usage["completion_tokens"],
                total_tokens=usage["total_tokens"],
            ),
            created=answer["created"],
        )


async def serve_router(port: int, base_url: str, api_key: str) -> None:
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServicer_to_server(SkeletonRouter(base_url, api_key), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def gateway_app(chat: Chat) -> Any:
    """The gateway's part: ``chat`` is the router, over gRPC or called in-process."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = json.loads(b"".join(chunks))
        reply = await chat(
            common_pb2.ChatRequest(
                model=body["model"],
                messages=[common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in body["messages"]],
                params=common_pb2.SamplingParams(max_tokens=body["max_tokens"]),
            )
        )
        answer = json.dumps(
            {
                "id": reply.id,
                "object": "chat.completion",
                "created": reply.created,
                "model": reply.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": reply.message.role, "content": reply.message.content},
                        "finish_reason": reply.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": reply.usage.prompt_tokens,
                    "completion_tokens": reply.usage.completion_tokens,
                    "total_tokens": reply.usage.total_tokens,
                },
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def over_grpc(router_address: str) -> Chat:
    stubs: list[router_pb2_grpc.RouterStub] = []

    async def chat(request: common_pb2.ChatRequest) -> common_pb2.ChatResponse:
        if not stubs:  # the channel belongs to the server's event loop
            stubs.append(router_pb2_grpc.RouterStub(grpc.aio.insecure_channel(router_address)))
        return await stubs[0].Chat(request)

    return chat


def in_process(base_url: str, api_key: str) -> Chat:
    router = SkeletonRouter(base_url, api_key)

    async def chat(request: common_pb2.ChatRequest) -> common_pb2.ChatResponse:
        return await router.Chat(request, None)  # type: ignore[arg-type]

    return chat


def serve_gateway(app: Any, port: int, cert_file: str, key_file: str) -> None:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=cert_file,
        ssl_keyfile=key_file,
        ssl_ciphers="ECDHE+AESGCM:ECDHE+CHACHA20",
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
    )
    config.load()
    config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    uvicorn.Server(config).run()


def main(argv: list[str]) -> None:
    role, port, *rest = argv
    if role == "router":
        base_url, api_key = rest
        uvloop.run(serve_router(int(port), base_url, api_key))
    elif role == "gateway":
        router_address, cert_file, key_file = rest
        serve_gateway(gateway_app(over_grpc(router_address)), int(port), cert_file, key_file)
    elif role == "gateway-in-process":
        base_url, api_key, cert_file, key_file = rest
        serve_gateway(gateway_app(in_process(base_url, api_key)), int(port), cert_file, key_file)
    else:
        raise SystemExit(f"unknown role {role!r}: router, gateway or gateway-in-process")


if __name__ == "__main__":
    main(sys.argv[1:])
