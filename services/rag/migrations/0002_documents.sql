-- Documents as the rag service indexes them. A document id is the caller's (or generated) and unique
-- within its collection, not across tenants: the key becomes (collection_id, id). `status` makes an
-- ingestion atomic: a row is 'indexing' while its chunks are written to Chroma and the keyword index
-- and 'ready' last; only ready documents are listed or returned by a query, and rows a crash left
-- 'indexing' are removed, with their chunks, when the service starts.

ALTER TABLE search_documents DROP CONSTRAINT search_documents_pkey;
ALTER TABLE search_documents ADD PRIMARY KEY (collection_id, id);
DROP INDEX IF EXISTS idx_search_documents_collection_id;

ALTER TABLE search_documents
    ADD COLUMN title         TEXT NOT NULL DEFAULT '',
    ADD COLUMN content_type  TEXT NOT NULL DEFAULT '',
    ADD COLUMN size_bytes    BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN status        TEXT NOT NULL DEFAULT 'ready' CHECK (status IN ('indexing', 'ready')),
    ADD COLUMN updated_at    TIMESTAMPTZ NOT NULL DEFAULT now();

CREATE INDEX idx_search_documents_hash ON search_documents(collection_id, content_sha256);
