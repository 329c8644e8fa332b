"""Names derived from generated ids, and the text a chunk is searched by, shared by the stores."""

from __future__ import annotations

CHROMA_PREFIX = "goblin_"


def chroma_name(collection_id: str) -> str:
    """The Chroma collection of a Goblin collection: derived from the generated id, never user text."""
    return f"{CHROMA_PREFIX}{collection_id}"


def chunk_id(document_id: str, index: int) -> str:
    """``<document_id>:<index>``."""
    return f"{document_id}:{index}"


def document_of(chunk: str) -> str:
    """The document id of a chunk id (document ids hold no ':')."""
    return chunk.rpartition(":")[0]


def search_text(text: str, title: str, heading: str) -> str:
    """What is embedded and keyword-indexed for a chunk: its title and headings lead the body, so a
    question naming the document or the section finds it. Chroma stores the body alone, with the title
    and heading in its metadata, so this can be rebuilt from Chroma."""
    lead = " > ".join(part for part in (title, heading) if part)
    return f"{lead}\n\n{text}" if lead else text
