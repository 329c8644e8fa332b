"""Markdown through markdown-it-py's CommonMark token stream (plus tables).

Headings become the heading path; paragraphs, list items, block quotes, table rows and code blocks become
paragraphs. Raw HTML blocks keep their text without the tags. Inline markup is reduced to its text (link
text, image alt text, inline code).
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markdown_it.token import Token

from services.rag.ingest.document import (
    TEXT_MARKDOWN,
    ParsedDocument,
    SectionBuilder,
    collapse_spaces,
    filename_title,
    first_line,
    make_title,
    require_text,
    tidy_lines,
)

# CommonMark's preset caps block nesting (maxNesting), which keeps 10,000 ">" or "-" from recursing deep.
_MARKDOWN = MarkdownIt("commonmark").enable("table")
_TAG = re.compile(r"<[^>]*>")


def parse_markdown(text: str, *, filename: str = "") -> ParsedDocument:
    """Parse cleaned Markdown. The title is the first level-1 heading, else the first heading, else the
    first line, else the file name."""
    builder = SectionBuilder()
    first_h1 = ""
    tokens = _MARKDOWN.parse(text)
    list_item_start = False
    in_cell = False
    row: list[str] = []
    table_rows: list[str] = []
    heading_level = 0
    for token in tokens:
        kind = token.type
        if kind == "heading_open":
            heading_level = int(token.tag[1:])
        elif kind == "inline":
            content = _inline_text(token)
            if heading_level:
                builder.heading(heading_level, content)
                if heading_level == 1 and not first_h1:
                    first_h1 = content
            elif in_cell:
                row.append(collapse_spaces(content))
            else:
                content = collapse_spaces(content)
                builder.paragraph(f"- {content}" if list_item_start and content else content)
                list_item_start = False
        elif kind == "heading_close":
            heading_level = 0
        elif kind == "list_item_open":
            list_item_start = True
        elif kind in ("fence", "code_block"):
            builder.paragraph(tidy_lines(token.content))
        elif kind == "html_block":
            builder.paragraph(collapse_spaces(_TAG.sub(" ", token.content)))
        elif kind in ("th_open", "td_open"):
            in_cell = True
        elif kind in ("th_close", "td_close"):
            in_cell = False
        elif kind == "tr_open":
            row = []
        elif kind == "tr_close":
            table_rows.append(" | ".join(cell for cell in row if cell))
        elif kind == "table_close":
            builder.paragraph("\n".join(line for line in table_rows if line))
            table_rows = []
    sections = require_text(builder.build(), "Markdown document")
    title = make_title(
        first_h1,
        builder.heading_texts[0] if builder.heading_texts else "",
        first_line(sections[0].text),
        filename_title(filename),
        sections[0].text,
    )
    return ParsedDocument(title=title, sections=sections, content_type=TEXT_MARKDOWN)


def _inline_text(token: Token) -> str:
    """The readable text of an inline token: text, inline code, link text and image alt text."""
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)
