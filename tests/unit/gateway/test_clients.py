"""The gateway's typed clients over real gRPC channels: results, failures as ApiError (at the first
chunk and mid-stream), and health checks of services that are up, down or absent."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from goblin.v1 import common_pb2, router_pb2_grpc
from services.common.errors import ERROR_CODE_KEY, RETRY_AFTER_KEY
from services.gateway.clients import GatewayClients
from services.gateway.errors import ApiError
from tests.unit.gateway.backends import abort, every_service_at, grpc_server, scripted_tls


class ScriptedRouter(router_pb2_grpc.RouterServicer):
    """Chat answers per model id: ``ok`` answers, ``full`` refuses, ``broken`` fails after two chunks."""

    async def Chat(self, request: common_pb2.ChatRequest, context: Any) -> common_pb2.ChatResponse:
        if request.model == "full":
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "queue full",
                ((ERROR_CODE_KEY, "inference_queue_full"), (RETRY_AFTER_KEY, "1.500")),
            )
        return common_pb2.ChatResponse(model=request.model, message=common_pb2.ChatMessage(content="hi"))

    async def ChatStream(self, request: common_pb2.ChatRequest, context: Any) -> Any:
        if request.model == "full":
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        for delta in ("a", "b"):
            yield common_pb2.ChatChunk(model=request.model, delta=delta)
        if request.model == "broken":
            await abort(context, grpc.StatusCode.INTERNAL, "the model crashed")

    async def ListModels(self, request: common_pb2.ListModelsRequest, context: Any) -> common_pb2.ListModelsResponse:
        model = common_pb2.ModelInfo(id="local/m", provider="local", aliases=["local"], capabilities=["chat"])
        return common_pb2.ListModelsResponse(models=[model])

    async def Embed(self, request: common_pb2.EmbedRequest, context: Any) -> common_pb2.EmbedResponse:
        return common_pb2.EmbedResponse(
            model=request.model,
            embeddings=[common_pb2.Embedding(values=[float(len(text))]) for text in request.inputs],
            usage=common_pb2.Usage(prompt_tokens=len(request.inputs)),
        )


async def test_router_calls_answer_and_refusals_are_api_errors() -> None:
    async with grpc_server(router=ScriptedRouter()) as address:
        clients = GatewayClients(every_service_at(address), scripted_tls())
        try:
            reply = await clients.router.chat(common_pb2.ChatRequest(model="ok"), deadline_s=5)
            assert reply.message.content == "hi"
            with pytest.raises(ApiError) as refusal:
                await clients.router.chat(common_pb2.ChatRequest(model="full"), deadline_s=5)
            assert (refusal.value.status_code, refusal.value.error) == (429, "inference_queue_full")
            assert refusal.value.headers["Retry-After"] == "2"
            models = await clients.router.list_models(common_pb2.RequestContext())
            assert [(m.id, m.aliases, m.capabilities) for m in models] == [("local/m", ("local",), ("chat",))]
            embeddings = await clients.router.embed("local", ["ab", "abc"], common_pb2.RequestContext(), deadline_s=5)
            assert [list(v) for v in embeddings.vectors] == [[2.0], [3.0]] and embeddings.prompt_tokens == 2
        finally:
            await clients.close()


async def test_streams_end_with_none_and_fail_with_api_errors_at_any_point() -> None:
    async with grpc_server(router=ScriptedRouter()) as address:
        clients = GatewayClients(every_service_at(address), scripted_tls())
        try:
            stream = clients.router.chat_stream(common_pb2.ChatRequest(model="ok"), deadline_s=5)
            deltas = []
            while (chunk := await stream.read()) is not None:
                deltas.append(chunk.delta)
            assert deltas == ["a", "b"]

            refused = clients.router.chat_stream(common_pb2.ChatRequest(model="full"), deadline_s=5)
            with pytest.raises(ApiError) as refusal:
                await refused.read()
            assert refusal.value.status_code == 429

            broken = clients.router.chat_stream(common_pb2.ChatRequest(model="broken"), deadline_s=5)
            assert (await broken.read()).delta == "a" and (await broken.read()).delta == "b"
            with pytest.raises(ApiError) as failure:
                await broken.read()
            assert (failure.value.status_code, failure.value.error) == (502, "upstream_error")
            # A backend's raw failure text stays in the gateway's log.
            assert failure.value.message == "router failed; quote the correlation id to report it"
            broken.cancel()
        finally:
            await clients.close()


async def test_health_reports_serving_and_unreachable_services() -> None:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", scripted_tls().server_credentials())
    await server.start()
    addresses = every_service_at("127.0.0.1:1")
    addresses["router"] = f"127.0.0.1:{port}"
    clients = GatewayClients(addresses, scripted_tls())
    try:
        results = {r.name: r for r in await clients.health.check_all(timeout_s=1.0)}
        assert list(results) == ["router", "inference", "rag", "auth", "executor"]
        assert results["router"].serving and results["router"].address == f"127.0.0.1:{port}"
        assert results["auth"].status == "UNREACHABLE" and results["auth"].error.startswith("UNAVAILABLE")
        assert "error" not in results["router"].as_dict() and "name" not in results["auth"].as_dict()
    finally:
        await clients.close()
        await server.stop(grace=None)
