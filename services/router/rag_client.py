"""The rag service as the router uses it: ``Rag.Query`` on behalf of the caller.

The rag service decides whose collections are visible from the signed principal
(services.common.principal). The router holds no signing key and must not make one up: it forwards the
assertion the gateway signed for this request, which it received in its own call's metadata, on this
one call only (the channel's interceptor forwards nothing: the router's calls to inference carry no
principal).
"""

from __future__ import annotations

import grpc

from goblin.v1 import rag_pb2, rag_pb2_grpc
from services.common.errors import NotFound, Unavailable, error_from_rpc
from services.common.principal import PRINCIPAL_METADATA_KEY
from services.router.rag import Passage, Retrieval

# The statuses that mean the rag service could not answer, whatever it said: the caller gets a 503.
_DOWN = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    }
)


def incoming_assertion(metadata: object) -> str:
    """The signed principal of the call being served, from its invocation metadata ("" if none)."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == PRINCIPAL_METADATA_KEY and isinstance(value, str):
            return value
    return ""


def passage_from_proto(hit: rag_pb2.QueryHit, collection: str) -> Passage:
    """One hit as a passage: the cosine is its score (the rag service's threshold is on it too)."""
    citation = hit.citation
    return Passage(
        document_id=hit.document_id,
        chunk_id=hit.chunk_id,
        text=hit.text,
        score=hit.score,
        collection=citation.collection or collection,
        source=citation.source,
        title=hit.title or citation.title,
        heading=" > ".join(hit.heading_path) or citation.heading,
    )


class RagClient:
    """Typed ``Rag.Query`` calls over the router's mutual-TLS channel to the rag service."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self.stub = rag_pb2_grpc.RagStub(channel)
        self.timeout_s = timeout_s

    def as_caller(self, assertion: str) -> CallerRetriever:
        """A retriever that asks with ``assertion``, the caller's signed principal."""
        return CallerRetriever(self, assertion)

    async def query(self, collection: str, query: str, top_k: int, assertion: str) -> Retrieval:
        """The passages of ``collection`` that answer ``query``, best first. An unknown collection (or
        another tenant's) is NotFound ``collection_not_found``; a rag service that cannot answer is
        Unavailable ``rag_unavailable``; its refusals (scope, bad input) pass through as they are."""
        request = rag_pb2.QueryRequest(collection=collection, query=query, top_k=top_k)
        metadata = ((PRINCIPAL_METADATA_KEY, assertion),) if assertion else ()
        try:
            reply = await self.stub.Query(request, timeout=self.timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"collection '{collection}' not found", code="collection_not_found") from None
            if exc.code() in _DOWN:
                raise Unavailable(
                    f"the rag service cannot answer ({exc.code().name})", code="rag_unavailable"
                ) from None
            raise error_from_rpc(exc) from None
        passages = tuple(passage_from_proto(h, collection) for h in reply.hits)
        return Retrieval(hit=reply.hit and bool(passages), passages=passages)


class CallerRetriever:
    """:class:`RagClient` bound to one caller (services.router.rag.Retriever)."""

    def __init__(self, client: RagClient, assertion: str) -> None:
        self.client = client
        self.assertion = assertion

    async def query(self, collection: str, query: str, top_k: int) -> Retrieval:
        return await self.client.query(collection, query, top_k, self.assertion)
