"""gRPC translation for the rag service: protobuf in, :class:`RagService` / :class:`Retriever` calls,
protobuf out. The caller is the verified principal only (services.common.principal)."""

from __future__ import annotations

import grpc

from goblin.v1 import common_pb2, rag_pb2, rag_pb2_grpc
from services.common.context import current_correlation_id, hash_user_id
from services.common.principal import current_principal
from services.rag.repository import CollectionRow, DocumentRow
from services.rag.retrieval import QueryParams, Retriever
from services.rag.service import Caller, NewDocument, RagService


def caller() -> Caller:
    """The caller of this RPC: the principal the interceptor verified (the interceptor refuses rag calls
    without one; a servicer called in-process without one gets an empty caller, refused by the service)."""
    principal = current_principal()
    if principal is None:
        return Caller(tenant_id="", correlation_id=current_correlation_id())
    return Caller(
        tenant_id=principal.tenant_id,
        user_hash=hash_user_id(principal.user_id),
        correlation_id=current_correlation_id(),
    )


def collection_to_proto(row: CollectionRow) -> rag_pb2.Collection:
    return rag_pb2.Collection(
        id=row.id,
        name=row.name,
        description=row.description,
        document_count=row.document_count,
        chunk_count=row.chunk_count,
        created=int(row.created_at.timestamp()),
        tenant_id=row.tenant_id,
    )


def document_to_proto(row: DocumentRow, collection: str, *, unchanged: bool = False) -> rag_pb2.Document:
    return rag_pb2.Document(
        id=row.id,
        collection=collection,
        source=row.source,
        chunk_count=row.chunk_count,
        redactions=row.redactions,
        created=int(row.created_at.timestamp()),
        updated=int(row.updated_at.timestamp()),
        metadata=row.metadata,
        title=row.title,
        content_type=row.content_type,
        content_sha256=row.content_sha256,
        unchanged=unchanged,
        size_bytes=row.size_bytes,
    )


class RagServicer(rag_pb2_grpc.RagServicer):
    def __init__(self, service: RagService, retriever: Retriever) -> None:
        self.service = service
        self.retriever = retriever

    async def CreateCollection(
        self, request: rag_pb2.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> rag_pb2.Collection:
        return collection_to_proto(await self.service.create_collection(caller(), request.name, request.description))

    async def GetCollection(
        self, request: rag_pb2.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> rag_pb2.Collection:
        return collection_to_proto(await self.service.collection(caller(), request.name))

    async def ListCollections(
        self, request: rag_pb2.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> rag_pb2.ListCollectionsResponse:
        rows = await self.service.list_collections(caller())
        return rag_pb2.ListCollectionsResponse(collections=[collection_to_proto(r) for r in rows])

    async def DeleteCollection(
        self, request: rag_pb2.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> rag_pb2.DeleteCollectionResponse:
        await self.service.delete_collection(caller(), request.name)
        return rag_pb2.DeleteCollectionResponse(deleted=True)

    async def AddDocument(
        self, request: rag_pb2.AddDocumentRequest, context: grpc.aio.ServicerContext
    ) -> rag_pb2.Document:
        new = NewDocument(
            text=request.text,
            content=request.content,
            filename=request.filename,
            content_type=request.content_type,
            title=request.title,
            document_id=request.document_id,
            metadata=dict(request.metadata),
        )
        result = await self.service.add_document(caller(), request.collection, new)
        return document_to_proto(result.document, result.collection.name, unchanged=result.unchanged)

    async def GetDocument(
        self, request: rag_pb2.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> rag_pb2.Document:
        row = await self.service.get_document(caller(), request.collection, request.document_id)
        return document_to_proto(row, request.collection)

    async def ListDocuments(
        self, request: rag_pb2.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> rag_pb2.ListDocumentsResponse:
        rows, total = await self.service.list_documents(caller(), request.collection, request.limit, request.offset)
        return rag_pb2.ListDocumentsResponse(
            documents=[document_to_proto(r, request.collection) for r in rows], total=total
        )

    async def DeleteDocument(
        self, request: rag_pb2.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> rag_pb2.DeleteDocumentResponse:
        await self.service.delete_document(caller(), request.collection, request.document_id)
        return rag_pb2.DeleteDocumentResponse(deleted=True)

    async def Query(self, request: rag_pb2.QueryRequest, context: grpc.aio.ServicerContext) -> rag_pb2.QueryResponse:
        """Search the named collection of the caller's tenant; no name: every collection of the caller's
        tenant (the tenant is the verified principal's, so another tenant's are never searched)."""
        if request.collection:
            collections = [await self.service.collection(caller(), request.collection)]
        else:
            collections = await self.service.list_collections(caller())
        result = await self.retriever.query_many(
            collections,
            QueryParams(
                query=request.query,
                top_k=request.top_k,
                min_score=request.min_score if request.HasField("min_score") else None,
                filter=dict(request.filter),
                merge_neighbors=request.merge_neighbors,
            ),
        )
        return rag_pb2.QueryResponse(
            hits=[
                rag_pb2.QueryHit(
                    document_id=h.document.id,
                    chunk_id=h.chunk_id,
                    text=h.text,
                    score=h.cosine,
                    fused_score=h.fused,
                    title=h.document.title,
                    chunk_index=h.index,
                    heading_path=[p for p in h.heading.split(" > ") if p],
                    metadata=h.document.metadata,
                    citation=common_pb2.Citation(
                        collection=h.collection.name,
                        document_id=h.document.id,
                        chunk_id=h.chunk_id,
                        source=h.document.source or h.document.title,
                        score=h.cosine,
                    ),
                )
                for h in result.hits
            ],
            hit=result.hit,
            best_score=result.best_score,
            min_score=result.min_score,
        )
