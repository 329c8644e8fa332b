"""Embeddings are asked of the inference service in batches of GOBLIN_RAG_EMBED_BATCH, in order."""

from __future__ import annotations

import grpc
import pytest

from goblin.v1 import common_pb2
from services.common.errors import Unavailable
from services.rag.embedder import InferenceEmbedder


class FakeInference:
    """Answers Embed with one vector per input: [its length, its position in the call]."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    async def Embed(self, request: common_pb2.EmbedRequest, **options: object) -> common_pb2.EmbedResponse:  # noqa: N802
        self.calls.append(list(request.inputs))
        if self.fail:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")
        return common_pb2.EmbedResponse(
            embeddings=[common_pb2.Embedding(values=[len(t), i]) for i, t in enumerate(request.inputs)]
        )


async def test_texts_go_in_batches_and_vectors_come_back_in_order() -> None:
    embedder = InferenceEmbedder(grpc.aio.insecure_channel("127.0.0.1:1"), batch=2)
    embedder.stub = FakeInference()  # type: ignore[assignment]
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    vectors = await embedder.embed(texts)
    assert embedder.stub.calls == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]
    assert [v[0] for v in vectors] == [1, 2, 3, 4, 5]
    assert await embedder.embed([]) == []


async def test_an_inference_failure_is_a_domain_error() -> None:
    embedder = InferenceEmbedder(grpc.aio.insecure_channel("127.0.0.1:1"), batch=64)
    embedder.stub = FakeInference(fail=True)  # type: ignore[assignment]
    with pytest.raises(Unavailable):
        await embedder.embed(["x"])
