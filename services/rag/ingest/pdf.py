"""PDF through pypdf: the text of each page, paragraphs where the page has blank lines or indents.

pypdf raises a wide range of exception types on malformed files (its own errors, but also ValueError,
KeyError, TypeError, struct.error, zlib.error, RecursionError, ...), so every call into it is guarded and
any failure becomes :class:`InvalidArgument`: a bad upload is the uploader's problem, never a 500.
"""

from __future__ import annotations

import io
import logging
import re

from pypdf import PdfReader

from services.common.errors import InvalidArgument
from services.rag.ingest.document import (
    APPLICATION_PDF,
    MAX_PDF_PAGES,
    ParsedDocument,
    Section,
    clean_text,
    collapse_spaces,
    filename_title,
    first_line,
    make_title,
)

# PDF 1.7 (ISO 32000-1, 7.5.2) lets the header start anywhere in the first 1024 bytes.
PDF_MAGIC = b"%PDF-"
_HEADER_WINDOW = 1024
# A word broken at a line end: "exam-\nple" reads "example".
_HYPHENATED = re.compile(r"(\w)-\n(\w)")
_BLANK_LINES = re.compile(r"\n\s*\n")


def looks_like_pdf(content: bytes) -> bool:
    """Whether ``content`` carries the PDF header where the format allows it."""
    return PDF_MAGIC in content[:_HEADER_WINDOW]


def parse_pdf(content: bytes, *, filename: str = "") -> ParsedDocument:
    """Parse a PDF's text. The title is the metadata title, else the first line, else the file name."""
    if not looks_like_pdf(content):
        raise InvalidArgument("the document is not a PDF (no %PDF- header)")
    # pypdf logs a warning per recoverable defect; a hostile file can make thousands.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted:
            _decrypt(reader)
        page_count = len(reader.pages)
    except InvalidArgument:
        raise
    except Exception as exc:
        raise InvalidArgument(f"the PDF could not be read (corrupt or truncated): {_reason(exc)}") from exc
    if page_count > MAX_PDF_PAGES:
        raise InvalidArgument(f"the PDF has {page_count} pages; at most {MAX_PDF_PAGES} are accepted")
    paragraphs: list[str] = []
    try:
        for page in reader.pages:
            paragraphs.extend(_page_paragraphs(page.extract_text() or ""))
        metadata_title = _metadata_title(reader)
    except Exception as exc:
        raise InvalidArgument(f"the PDF's text could not be extracted (corrupt?): {_reason(exc)}") from exc
    sections = (Section(heading_path=(), text="\n\n".join(paragraphs)),) if paragraphs else ()
    if not sections:
        raise InvalidArgument("the PDF has no extractable text (scanned pages would need OCR, which is not done)")
    title = make_title(metadata_title, first_line(paragraphs[0]), filename_title(filename), paragraphs[0])
    return ParsedDocument(title=title, sections=sections, content_type=APPLICATION_PDF)


def _decrypt(reader: PdfReader) -> None:
    """Open a PDF encrypted with an empty user password (restrictions only); refuse any other."""
    try:
        opened = reader.decrypt("")
    except Exception as exc:
        raise InvalidArgument(f"the PDF is encrypted and could not be opened: {_reason(exc)}") from exc
    if not opened:
        raise InvalidArgument("the PDF is encrypted with a password; upload an unencrypted copy")


def _page_paragraphs(raw: str) -> list[str]:
    """One page's extracted text as paragraphs: blank lines split, lines within a paragraph join."""
    text = _HYPHENATED.sub(r"\1\2", clean_text(raw))
    return [paragraph for paragraph in (collapse_spaces(block) for block in _BLANK_LINES.split(text)) if paragraph]


def _metadata_title(reader: PdfReader) -> str:
    metadata = reader.metadata
    title = metadata.title if metadata is not None else None
    return title if isinstance(title, str) else ""


def _reason(exc: BaseException) -> str:
    """A short, single-line reason for a pypdf failure, safe to show the uploader."""
    text = collapse_spaces(str(exc))[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
