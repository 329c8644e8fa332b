"""RAG routes: collections, their documents, and queries over them (``/v1/collections``).

Scopes: reading and querying need ``rag``; creating or deleting collections and adding or deleting
documents need ``rag:write`` (``"*"`` holds both). Every caller, admins too, sees only their own
tenant's collections: the rag service takes the tenant from the signed principal, and another tenant's
collection is 404 as a missing one is.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from goblin.v1 import auth_pb2, rag_pb2
from services.gateway.api.schemas.rag import (
    CollectionCreateBody,
    CollectionList,
    CollectionOut,
    CollectionRef,
    Deleted,
    DocumentBody,
    DocumentFields,
    DocumentId,
    DocumentList,
    DocumentOut,
    QueryBody,
    QueryOut,
)
from services.gateway.deps import StateDep, principal_context, require_scopes
from services.gateway.errors import ApiError

router = APIRouter(prefix="/v1/collections", tags=["rag"])

RagReadDep = Annotated[auth_pb2.Principal, Depends(require_scopes("rag"))]
RagWriteDep = Annotated[auth_pb2.Principal, Depends(require_scopes("rag:write"))]

# The multipart fields besides the file; anything else in the form is refused.
_FORM_FIELDS = {"file", "title", "document_id", "metadata"}


@router.post("", response_model=CollectionOut, status_code=201, summary="Create a collection")
async def create_collection(
    body: CollectionCreateBody, request: Request, principal: RagWriteDep, state: StateDep
) -> CollectionOut:
    created = await state.clients.rag.create_collection(
        principal_context(principal, request), body.name, body.description
    )
    return CollectionOut.of(created)


@router.get("", response_model=CollectionList, summary="Your tenant's collections")
async def list_collections(request: Request, principal: RagReadDep, state: StateDep) -> CollectionList:
    rows = await state.clients.rag.list_collections(principal_context(principal, request))
    return CollectionList(data=[CollectionOut.of(c) for c in rows])


@router.get("/{collection}", response_model=CollectionOut, summary="One collection, by name or id")
async def get_collection(
    collection: CollectionRef, request: Request, principal: RagReadDep, state: StateDep
) -> CollectionOut:
    return CollectionOut.of(await state.clients.rag.get_collection(principal_context(principal, request), collection))


@router.delete("/{collection}", response_model=Deleted, summary="Delete a collection, its documents and vectors")
async def delete_collection(
    collection: CollectionRef, request: Request, principal: RagWriteDep, state: StateDep
) -> Deleted:
    await state.clients.rag.delete_collection(principal_context(principal, request), collection)
    return Deleted(id=collection)


async def _document_request(request: Request) -> rag_pb2.AddDocumentRequest:
    """The document in a JSON body ({text, ...}) or a multipart upload (``file`` and optional
    ``title``, ``document_id``, ``metadata`` as a JSON object)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _multipart_document(request)
    if content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the document as application/json {\"text\": ...} or as multipart/form-data with a 'file' field",
        )
    try:
        payload = await request.json()
    except ValueError:
        raise ApiError(400, "invalid_request", "the request body is not valid JSON") from None
    try:
        body = DocumentBody.model_validate(payload)
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", _first_problem(exc)) from None
    return rag_pb2.AddDocumentRequest(
        text=body.text,
        title=body.title,
        document_id=body.document_id or "",
        metadata=body.metadata,
        content_type=body.content_type,
        filename=body.filename,
    )


async def _multipart_document(request: Request) -> rag_pb2.AddDocumentRequest:
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # starlette raises MultiPartException or HTTPException for a bad form
        raise ApiError(400, "invalid_request", f"the multipart body cannot be read: {exc}") from None
    try:
        unknown = set(form.keys()) - _FORM_FIELDS
        if unknown:
            raise ApiError(400, "invalid_request", f"unknown form field(s): {', '.join(sorted(unknown))[:200]}")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "invalid_request", "the multipart body needs a 'file' field holding the document")
        fields: dict[str, Any] = {}
        for name in ("title", "document_id"):
            value = form.get(name)
            if isinstance(value, str) and value:
                fields[name] = value
        raw_metadata = form.get("metadata")
        if isinstance(raw_metadata, str) and raw_metadata:
            try:
                fields["metadata"] = json.loads(raw_metadata)
            except ValueError:
                raise ApiError(400, "invalid_request", "metadata: not a JSON object") from None
        try:
            checked = DocumentFields.model_validate(fields)
        except ValidationError as exc:
            raise ApiError(400, "invalid_request", _first_problem(exc)) from None
        content = await upload.read()
        return rag_pb2.AddDocumentRequest(
            content=content,
            filename=(upload.filename or "")[:512],
            content_type=upload.content_type or "",
            title=checked.title,
            document_id=checked.document_id or "",
            metadata=checked.metadata,
        )
    finally:
        await form.close()


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ())) or "body"
    return f"{where}: {error.get('msg', 'invalid')}"


@router.post(
    "/{collection}/documents",
    response_model=DocumentOut,
    status_code=201,
    summary="Add a document (JSON text or a file upload); the same bytes again change nothing (200)",
)
async def add_document(
    collection: CollectionRef, request: Request, response: Response, principal: RagWriteDep, state: StateDep
) -> DocumentOut:
    document = await _document_request(request)
    document.context.CopyFrom(principal_context(principal, request))
    document.collection = collection
    added = await state.clients.rag.add_document(document)
    if added.unchanged:
        response.status_code = 200
    return DocumentOut.of(added)


@router.get("/{collection}/documents", response_model=DocumentList, summary="The collection's documents")
async def list_documents(
    collection: CollectionRef,
    request: Request,
    principal: RagReadDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> DocumentList:
    reply = await state.clients.rag.list_documents(principal_context(principal, request), collection, limit, offset)
    return DocumentList(data=[DocumentOut.of(d) for d in reply.documents], total=reply.total)


@router.get("/{collection}/documents/{document_id}", response_model=DocumentOut, summary="One document")
async def get_document(
    collection: CollectionRef, document_id: DocumentId, request: Request, principal: RagReadDep, state: StateDep
) -> DocumentOut:
    document = await state.clients.rag.get_document(principal_context(principal, request), collection, document_id)
    return DocumentOut.of(document)


@router.delete(
    "/{collection}/documents/{document_id}", response_model=Deleted, summary="Delete a document and its vectors"
)
async def delete_document(
    collection: CollectionRef, document_id: DocumentId, request: Request, principal: RagWriteDep, state: StateDep
) -> Deleted:
    await state.clients.rag.delete_document(principal_context(principal, request), collection, document_id)
    return Deleted(id=document_id)


@router.post("/{collection}/query", response_model=QueryOut, summary="Hybrid (vector + BM25) search")
async def query_collection(
    collection: CollectionRef, body: QueryBody, request: Request, principal: RagReadDep, state: StateDep
) -> QueryOut:
    query = rag_pb2.QueryRequest(
        context=principal_context(principal, request),
        collection=collection,
        query=body.query,
        top_k=body.top_k,
        filter=body.filter,
        merge_neighbors=body.merge_neighbors,
    )
    if body.min_score is not None:
        query.min_score = body.min_score
    return QueryOut.of(collection, await state.clients.rag.query(query))
