"""The rag service as the gateway uses it: collections, documents, queries.

Who is asking travels as the signed principal every call of the request carries (services.gateway.deps
sets it once per request, services.common.grpc_client sends it), as with the router client; the
request messages carry only the RequestContext's client address.
"""

from __future__ import annotations

import grpc

from goblin.v1 import common_pb2, rag_pb2, rag_pb2_grpc
from services.gateway.clients.base import ServiceClient

# Ingesting a large document embeds hundreds of chunks on a shared CPU: minutes, not seconds.
INGEST_DEADLINE_S = 600.0
DEADLINE_S = 30.0


class RagClient(ServiceClient):
    """Typed calls to ``goblin.v1.Rag``."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__("rag", channel)
        self._stub = rag_pb2_grpc.RagStub(channel)

    async def create_collection(
        self, context: common_pb2.RequestContext, name: str, description: str
    ) -> rag_pb2.Collection:
        request = rag_pb2.CreateCollectionRequest(context=context, name=name, description=description)
        return await self.call(self._stub.CreateCollection, request, DEADLINE_S)

    async def get_collection(self, context: common_pb2.RequestContext, name: str) -> rag_pb2.Collection:
        request = rag_pb2.GetCollectionRequest(context=context, name=name)
        return await self.call(self._stub.GetCollection, request, DEADLINE_S)

    async def list_collections(self, context: common_pb2.RequestContext) -> list[rag_pb2.Collection]:
        reply = await self.call(self._stub.ListCollections, rag_pb2.ListCollectionsRequest(context=context), DEADLINE_S)
        return list(reply.collections)

    async def delete_collection(self, context: common_pb2.RequestContext, name: str) -> None:
        request = rag_pb2.DeleteCollectionRequest(context=context, name=name)
        await self.call(self._stub.DeleteCollection, request, DEADLINE_S)

    async def add_document(self, request: rag_pb2.AddDocumentRequest) -> rag_pb2.Document:
        """Index one document (``request`` as the route built it)."""
        return await self.call(self._stub.AddDocument, request, INGEST_DEADLINE_S)

    async def get_document(
        self, context: common_pb2.RequestContext, collection: str, document_id: str
    ) -> rag_pb2.Document:
        request = rag_pb2.GetDocumentRequest(context=context, collection=collection, document_id=document_id)
        return await self.call(self._stub.GetDocument, request, DEADLINE_S)

    async def list_documents(
        self, context: common_pb2.RequestContext, collection: str, limit: int, offset: int
    ) -> rag_pb2.ListDocumentsResponse:
        request = rag_pb2.ListDocumentsRequest(context=context, collection=collection, limit=limit, offset=offset)
        return await self.call(self._stub.ListDocuments, request, DEADLINE_S)

    async def delete_document(self, context: common_pb2.RequestContext, collection: str, document_id: str) -> None:
        request = rag_pb2.DeleteDocumentRequest(context=context, collection=collection, document_id=document_id)
        await self.call(self._stub.DeleteDocument, request, DEADLINE_S)

    async def query(self, request: rag_pb2.QueryRequest) -> rag_pb2.QueryResponse:
        """Hybrid retrieval over one collection."""
        return await self.call(self._stub.Query, request, DEADLINE_S)
