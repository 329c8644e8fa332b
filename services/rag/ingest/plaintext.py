"""Plain text: paragraphs split on blank lines, no headings."""

from __future__ import annotations

from services.rag.ingest.document import (
    TEXT_PLAIN,
    ParsedDocument,
    Section,
    filename_title,
    first_line,
    make_title,
    require_text,
    split_paragraphs,
)


def parse_plain(text: str, *, filename: str = "") -> ParsedDocument:
    """Parse cleaned plain text. The title is its first line when that is short, else the file name."""
    paragraphs = split_paragraphs(text)
    sections = (Section(heading_path=(), text="\n\n".join(paragraphs)),) if paragraphs else ()
    require_text(sections, "text document")
    title = make_title(first_line(paragraphs[0]), filename_title(filename), paragraphs[0])
    return ParsedDocument(title=title, sections=sections, content_type=TEXT_PLAIN)
