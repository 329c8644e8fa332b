-- The RAG service's schema `rag`: collections and the documents indexed into them (the vectors live in
-- Chroma). tenant_id is the auth service's tenant id as plain text: no service references another's rows.

CREATE TABLE search_collections (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    chroma_name     TEXT NOT NULL UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE search_documents (
    id              TEXT PRIMARY KEY,
    collection_id   TEXT NOT NULL REFERENCES search_collections(id) ON DELETE CASCADE,
    source          TEXT NOT NULL DEFAULT '',
    content_sha256  TEXT NOT NULL,
    chunk_count     INTEGER NOT NULL DEFAULT 0,
    redactions      INTEGER NOT NULL DEFAULT 0,
    metadata        JSONB NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_search_documents_collection_id ON search_documents(collection_id);
