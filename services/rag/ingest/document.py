"""What a parser produces, the limits every parser enforces, and the text clean-up they share."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from services.common.errors import InvalidArgument

# The largest document accepted, in bytes (UTF-8 for text handed over as a string).
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
# PDFs past this many pages are refused: text extraction costs time per page, and a 10 MiB file can
# declare many thousands of near-empty pages.
MAX_PDF_PAGES = 2000
# Titles longer than this are cut at a word boundary: a "first line" can be a whole paragraph.
MAX_TITLE_CHARS = 200

TEXT_PLAIN = "text/plain"
TEXT_MARKDOWN = "text/markdown"
TEXT_HTML = "text/html"
APPLICATION_PDF = "application/pdf"


@dataclass(frozen=True)
class Section:
    """The body of one part of a document, under the headings that lead to it.

    ``heading_path`` is the chain of headings from the outermost in, e.g. ``("Install", "On Linux")``;
    ``()`` for text before the first heading and for formats without headings. ``text`` holds the
    section's paragraphs separated by ``"\\n\\n"``.
    """

    heading_path: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class ParsedDocument:
    """A document reduced to its title and its sections, in reading order, none of them empty."""

    title: str
    sections: tuple[Section, ...]
    content_type: str


# C0 and C1 control characters except tab and newline (carriage returns are folded into newlines first),
# lone surrogates (a str can hold them, UTF-8 cannot), and the byte-order mark / zero-width no-break space.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufeff]")
_NEWLINES = re.compile(r"\r\n?|[\u2028\u2029\x85\x0b\x0c]")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Unicode NFC with newlines unified and control characters removed; whitespace is left as it is."""
    text = _NEWLINES.sub("\n", text)
    text = _CONTROL.sub("", text)
    return unicodedata.normalize("NFC", text)


def collapse_spaces(text: str) -> str:
    """Every run of whitespace, newlines included, as one space; the ends stripped (prose)."""
    return _SPACES.sub(" ", text).strip()


def tidy_lines(text: str) -> str:
    """Lines with trailing spaces and blank lines dropped, tabs as four spaces, and the indentation the
    lines share removed; the rest of the indentation stays (code and indented lists read by it). No blank
    line is left inside: the chunker would read it as a paragraph break."""
    lines = [line.rstrip() for line in text.replace("\t", "    ").split("\n")]
    lines = [line for line in lines if line]
    indent = min((len(line) - len(line.lstrip(" ")) for line in lines), default=0)
    return "\n".join(line[indent:] for line in lines)


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, each with its lines tidied; empty ones dropped."""
    paragraphs = (tidy_lines(block) for block in _BLANK_LINES.split(text))
    return [paragraph for paragraph in paragraphs if paragraph]


def make_title(*candidates: str) -> str:
    """The first candidate with text in it, whitespace collapsed and cut to ``MAX_TITLE_CHARS``."""
    for candidate in candidates:
        title = collapse_spaces(clean_text(candidate or ""))
        if title:
            if len(title) > MAX_TITLE_CHARS:
                cut = title.rfind(" ", 0, MAX_TITLE_CHARS)
                title = title[: cut if cut > MAX_TITLE_CHARS // 2 else MAX_TITLE_CHARS].rstrip() + "…"
            return title
    return ""


def first_line(text: str, *, max_chars: int = 120) -> str:
    """The first non-blank line of ``text`` when it is short enough to read as a title, else ``""``."""
    for line in text.split("\n", 50)[:50]:
        line = line.strip()
        if line:
            return line if len(line) <= max_chars else ""
    return ""


def filename_title(filename: str) -> str:
    """A title from a file name: the last path part without its extension."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return stem.replace("_", " ").strip()


class SectionBuilder:
    """Collects paragraphs under a changing heading path and yields non-empty sections in order."""

    def __init__(self) -> None:
        self._sections: list[Section] = []
        self._headings: list[tuple[int, str]] = []
        self._paragraphs: list[str] = []
        self.heading_texts: list[str] = []

    def heading(self, level: int, text: str) -> None:
        """Start a section under a heading of ``level`` (1 outermost); deeper and equal levels close."""
        text = collapse_spaces(text)
        if not text:
            return
        self._flush()
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, text))
        self.heading_texts.append(text)

    def paragraph(self, text: str) -> None:
        """Add one paragraph (already normalised) to the current section; blank ones are ignored."""
        if text and not text.isspace():
            self._paragraphs.append(text)

    def build(self) -> tuple[Section, ...]:
        """The sections collected. A document of headings only keeps them, as one heading-less section."""
        self._flush()
        if not self._sections and self.heading_texts:
            return (Section(heading_path=(), text="\n\n".join(self.heading_texts)),)
        return tuple(self._sections)

    def _flush(self) -> None:
        if self._paragraphs:
            path = tuple(text for _, text in self._headings)
            self._sections.append(Section(heading_path=path, text="\n\n".join(self._paragraphs)))
            self._paragraphs = []


def require_text(sections: tuple[Section, ...], what: str) -> tuple[Section, ...]:
    """``sections`` unless there are none, which means the document had no text worth indexing."""
    if not sections:
        raise InvalidArgument(f"the {what} has no text to index (empty or whitespace only)")
    return sections
