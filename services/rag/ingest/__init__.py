"""Document ingestion for RAG: parse text, Markdown, HTML and PDF into sections, and cut them into
token-sized chunks with the embedding model's tokenizer."""

from services.rag.ingest.chunking import Chunk, Chunker
from services.rag.ingest.document import (
    APPLICATION_PDF,
    MAX_DOCUMENT_BYTES,
    MAX_PDF_PAGES,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    ParsedDocument,
    Section,
)
from services.rag.ingest.parsers import SUPPORTED_TYPES, detect_type, parse_document, parse_text
from services.rag.ingest.tokenizer import load_tokenizer

__all__ = [
    "APPLICATION_PDF",
    "MAX_DOCUMENT_BYTES",
    "MAX_PDF_PAGES",
    "SUPPORTED_TYPES",
    "TEXT_HTML",
    "TEXT_MARKDOWN",
    "TEXT_PLAIN",
    "Chunk",
    "Chunker",
    "ParsedDocument",
    "Section",
    "detect_type",
    "load_tokenizer",
    "parse_document",
    "parse_text",
]
