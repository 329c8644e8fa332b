"""The entry points: decide a document's type, decode it, refuse what cannot be indexed, and parse it."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument
from services.rag.ingest.document import (
    APPLICATION_PDF,
    MAX_DOCUMENT_BYTES,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    ParsedDocument,
    clean_text,
)
from services.rag.ingest.html import parse_html
from services.rag.ingest.markdown import parse_markdown
from services.rag.ingest.pdf import looks_like_pdf, parse_pdf
from services.rag.ingest.plaintext import parse_plain

SUPPORTED_TYPES = (TEXT_PLAIN, TEXT_MARKDOWN, TEXT_HTML, APPLICATION_PDF)

_MEDIA_TYPES = {
    TEXT_PLAIN: TEXT_PLAIN,
    TEXT_MARKDOWN: TEXT_MARKDOWN,
    "text/x-markdown": TEXT_MARKDOWN,
    TEXT_HTML: TEXT_HTML,
    "application/xhtml+xml": TEXT_HTML,
    APPLICATION_PDF: APPLICATION_PDF,
    "application/x-pdf": APPLICATION_PDF,
}
# Types that say nothing about the content: browsers and curl send them for any file.
_UNINFORMATIVE_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_EXTENSIONS = {
    ".txt": TEXT_PLAIN,
    ".text": TEXT_PLAIN,
    ".md": TEXT_MARKDOWN,
    ".markdown": TEXT_MARKDOWN,
    ".html": TEXT_HTML,
    ".htm": TEXT_HTML,
    ".pdf": APPLICATION_PDF,
}
_HTML_START = re.compile(rb"\s*(<!--.*?-->\s*)*<(!doctype\s+html|html)[\s>]", re.IGNORECASE | re.DOTALL)
_TEXT_PARSERS = {TEXT_PLAIN: parse_plain, TEXT_MARKDOWN: parse_markdown, TEXT_HTML: parse_html}


def parse_document(content: bytes, *, filename: str = "", content_type: str = "") -> ParsedDocument:
    """Parse an uploaded document's bytes.

    The type comes from ``content_type``, else ``filename``'s extension, else the content (a PDF header,
    an ``<html`` start, else plain text). Raises :class:`InvalidArgument` for a document over
    ``MAX_DOCUMENT_BYTES``, of an unsupported type, empty or whitespace-only, text that is not UTF-8,
    and a PDF that is not one, is corrupt or encrypted, or has no text.
    """
    _check_size(len(content))
    if not content.strip():
        raise InvalidArgument("the document is empty or whitespace only")
    kind = detect_type(content[:2048], filename=filename, content_type=content_type)
    if kind == APPLICATION_PDF:
        return parse_pdf(content, filename=filename)
    return _parse_text(kind, _decode(content), filename)


def parse_text(text: str, *, filename: str = "", content_type: str = "") -> ParsedDocument:
    """Parse a document that arrived as a string (a JSON body). Text types only; the same refusals as
    :func:`parse_document`."""
    _check_size(len(text))
    _check_size(len(text.encode("utf-8", "surrogatepass")))
    kind = detect_type(text[:2048].encode("utf-8", "replace"), filename=filename, content_type=content_type)
    if kind == APPLICATION_PDF:
        raise InvalidArgument("a PDF must be uploaded as a file, not as text")
    if "\x00" in text:
        raise InvalidArgument("the text contains NUL characters: binary data is not a text document")
    return _parse_text(kind, text, filename)


def detect_type(head: bytes, *, filename: str = "", content_type: str = "") -> str:
    """The normalised type of a document from its declared type, its file name, or its first bytes."""
    declared = content_type.split(";", 1)[0].strip().lower()
    if declared not in _UNINFORMATIVE_TYPES:
        kind = _MEDIA_TYPES.get(declared)
        if kind is None:
            raise InvalidArgument(f"unsupported content type {declared!r}: supported are {', '.join(SUPPORTED_TYPES)}")
        return kind
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
    if "." in name.lstrip("."):
        extension = "." + name.rsplit(".", 1)[1]
        kind = _EXTENSIONS.get(extension)
        if kind is None:
            raise InvalidArgument(
                f"unsupported file type {extension!r}: supported are {', '.join(sorted(_EXTENSIONS))}"
            )
        return kind
    if looks_like_pdf(head):
        return APPLICATION_PDF
    if _HTML_START.match(head.removeprefix(b"\xef\xbb\xbf")):
        return TEXT_HTML
    return TEXT_PLAIN


def _check_size(size: int) -> None:
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidArgument(
            f"the document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes ({MAX_DOCUMENT_BYTES // 2**20} MiB)"
        )


def _decode(content: bytes) -> str:
    """UTF-8 text (a byte-order mark allowed); binary data and other encodings are refused."""
    if b"\x00" in content:
        raise InvalidArgument("the document contains NUL bytes: binary data is not a text document")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"the document is not valid UTF-8 text (byte {exc.start}): convert it to UTF-8 or upload a PDF"
        ) from exc


def _parse_text(kind: str, text: str, filename: str) -> ParsedDocument:
    text = clean_text(text)
    if not text.strip():
        raise InvalidArgument("the document is empty or whitespace only")
    return _TEXT_PARSERS[kind](text, filename=filename)
