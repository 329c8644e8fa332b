"""Embeddings from the inference service's Embed RPC (MiniLM, L2-normalised), in batches."""

from __future__ import annotations

import grpc

from goblin.v1 import common_pb2, inference_pb2_grpc
from services.common.errors import error_from_rpc

# Chunks per Embed call: the inference service takes up to 2048 inputs, but a call that large holds its
# one embedding thread for seconds; 64 chunks of 256 tokens is about one of its padded token batches.
DEFAULT_BATCH = 64


class InferenceEmbedder:
    """Vectors for texts, asked of the inference service over its mutual-TLS channel."""

    def __init__(self, channel: grpc.aio.Channel, *, batch: int = DEFAULT_BATCH, timeout_s: float = 120.0) -> None:
        self.stub = inference_pb2_grpc.InferenceStub(channel)
        self.batch = batch
        self.timeout_s = timeout_s

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order; the inference service's failure raised as a domain error."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch):
            request = common_pb2.EmbedRequest(inputs=texts[start : start + self.batch])
            try:
                reply = await self.stub.Embed(request, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from None
            vectors.extend(list(e.values) for e in reply.embeddings)
        return vectors
