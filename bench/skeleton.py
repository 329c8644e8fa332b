"""The floor under the router benchmark: Goblin's hops with nothing on them.

The same processes and transports as the real path (HTTPS on uvicorn with httptools and uvloop and the
gateway's TLS settings -> grpc.aio ``goblin.v1.Router/Chat`` on uvloop -> aiohttp keep-alive POST to
the provider), each doing only what carrying a chat completion needs: parse the JSON, build the proto,
forward, translate back. No authentication, rate limit, secret scan, validation, policy, budget,
ledger, metric, log or trace. What this path adds over a direct call is what the architecture costs on
this machine before Goblin does any work; the rest of the real path's number is Goblin's own.

The secure skeleton is the same with what issue 12 made mandatory on the gateway -> router hop, and
nothing more: mutual TLS with the suite's certificates, credentials and channel/server options (the real
``services.common.grpc_client.open_channel`` and ``grpc_server.server_options``, the files
``load_grpc_tls`` reads), and a principal the gateway signs per request with the real signer, which the
router verifies with the servers' own ``PrincipalGate`` (Ed25519, issuer, audience, expiry) and admits
once (``ReplayGuard``) before the servicer answers (bench/secure_principal.py: the check alone, without
the correlation id and call metrics the servers' interceptor also carries). A call without a valid principal is refused
(UNAUTHENTICATED) as the real router refuses it. Secure minus plain skeleton is what the security costs
on the bare hop; gateway minus secure skeleton is Goblin's own work with the security it may not drop.

Run by bench/router_bench.py and bench/throughput.py, one process per role:
``python -m bench.skeleton router PORT PROVIDER_BASE_URL API_KEY`` and
``python -m bench.skeleton gateway PORT ROUTER_ADDRESS CERT_FILE KEY_FILE``; to price the gRPC hop,
``python -m bench.skeleton gateway-in-process PORT PROVIDER_BASE_URL API_KEY CERT_FILE KEY_FILE``: the
same gateway calling the same router code in its own process; and the secure skeleton,
``python -m bench.skeleton router-secure PORT PROVIDER_BASE_URL API_KEY GOBLIN_HOME`` and
``python -m bench.skeleton gateway-secure PORT ROUTER_ADDRESS CERT_FILE KEY_FILE GOBLIN_HOME``, where
``GOBLIN_HOME/tls/`` holds what ``goblin up`` issues (the suite CA, the router's and the gateway's gRPC
certificates, the principal key pair).
"""

from __future__ import annotations

import json
import os
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
# Whom the secure skeleton's gateway vouches for: an API key of the default tenant with the chat scope, as
# the throughput benchmark's goblin target uses (the same claims, so the same assertion size).
SKELETON_CALLER = {
    "user_id": "skeleton",
    "tenant_id": "default",
    "role": "user",
    "scopes": ("chat",),
    "api_key_id": "skeleton",
}


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


async def serve_secure_router(port: int, base_url: str, api_key: str) -> None:
    """The skeleton's router behind what every Goblin gRPC server has for security and nothing else: the
    router's mutual-TLS identity (refusing clients without a suite certificate), the real server options,
    and the real principal interceptor (this process's verify key and replay guard)."""
    # Imported here, not at the top: the plain skeleton's processes stay as they were (no extra modules
    # on their heaps), so the two skeletons differ by the security alone.
    from bench.secure_principal import PrincipalInterceptor
    from services.common.grpc_server import server_options
    from services.common.principal import PrincipalGate
    from services.common.settings import GoblinSettings, load_settings
    from services.common.tls import load_grpc_tls

    tls = load_grpc_tls(load_settings(GoblinSettings), "router")
    interceptor = PrincipalInterceptor(PrincipalGate.for_this_process())
    server = grpc.aio.server(interceptors=[interceptor], options=server_options())
    router_pb2_grpc.add_RouterServicer_to_server(SkeletonRouter(base_url, api_key), server)
    if server.add_secure_port(f"127.0.0.1:{port}", tls.server_credentials()) == 0:
        raise SystemExit(f"skeleton: cannot listen on 127.0.0.1:{port}")
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


def over_secure_grpc(router_address: str) -> Chat:
    """The router over the gateway's own kind of channel (mutual TLS as the gateway, the server's
    certificate checked for the name ``router``, no interceptors: metadata passed per call as the
    gateway's clients pass it), each call carrying a fresh assertion from the real signer."""
    from services.common.grpc_client import call_metadata, open_channel
    from services.common.principal import Principal, load_signer, static_claims
    from services.common.settings import GoblinSettings, load_settings
    from services.common.tls import load_grpc_tls

    tls = load_grpc_tls(load_settings(GoblinSettings), "gateway")
    signer = load_signer()
    # The claims' JSON made once, as the gateway keeps it per principal; each call signs a new assertion.
    static = static_claims(Principal(**SKELETON_CALLER))
    stubs: list[router_pb2_grpc.RouterStub] = []

    async def chat(request: common_pb2.ChatRequest) -> common_pb2.ChatResponse:
        if not stubs:  # the channel belongs to the server's event loop
            stubs.append(router_pb2_grpc.RouterStub(open_channel(router_address, "router", tls, intercept=False)))
        return await stubs[0].Chat(request, metadata=call_metadata(signer.sign_static(static)))

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
    elif role == "router-secure":
        base_url, api_key, home = rest
        os.environ["GOBLIN_HOME"] = home  # where the settings find the certificates and the verify key
        uvloop.run(serve_secure_router(int(port), base_url, api_key))
    elif role == "gateway-secure":
        router_address, cert_file, key_file, home = rest
        os.environ["GOBLIN_HOME"] = home  # where the settings find the certificates and the signing key
        serve_gateway(gateway_app(over_secure_grpc(router_address)), int(port), cert_file, key_file)
    else:
        raise SystemExit(f"unknown role {role!r}: router, gateway, gateway-in-process, router-secure or gateway-secure")


if __name__ == "__main__":
    main(sys.argv[1:])
