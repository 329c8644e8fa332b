"""Markdown through markdown-it-py's CommonMark token stream (plus tables).

Headings become the heading path; paragraphs, list items, block quotes, table rows and code blocks become
paragraphs. Raw HTML blocks keep their text without the tags. Inline markup is reduced to its text (link
text, image alt text, code spans, character references decoded).
"""

from __future__ import annotations

import html
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
# Only the block structure comes from markdown-it-py: its inline rules (link labels, emphasis pairs) cost
# time that grows with the square of a block's length, 6 s for one line of 100,000 "[" and tens of
# milliseconds for an ordinary 2,000-character paragraph with a few unclosed brackets. Inline markup is
# removed by the patterns below instead; each repetition is bounded or stops at the next opening
# character, so the whole pass is linear.
_BLOCKS = MarkdownIt("commonmark").enable("table").disable("inline")
_LINK_TARGET = r"\((?:[^()\s]{0,1000})(?:\s+\"[^\"\n]{0,200}\")?\)"
_INLINE_MARKUP = (
    # Images and links keep their alt text and link text: ![alt](src), [text](href), [text][ref].
    (re.compile(r"!?\[([^\[\]\n]{0,1000})\]" + _LINK_TARGET), r"\1"),
    (re.compile(r"\[([^\[\]\n]{0,1000})\]\[[^\[\]\n]{0,200}\]"), r"\1"),
    # Autolinks keep their address; other inline HTML tags go.
    (re.compile(r"<((?:https?|ftp|mailto):[^<>\s]{1,2000})>"), r"\1"),
    (re.compile(r"</?[A-Za-z][^<>]{0,1000}>"), ""),
    # Code span fences, and emphasis marks at a word's edge (snake_case and 2 * 3 keep theirs).
    (re.compile(r"`+"), ""),
    (re.compile(r"(?<![\w*_\\])[*_]{1,3}(?=\w)|(?<=\w)[*_]{1,3}(?![\w*_])"), ""),
    # Backslash escapes of punctuation.
    (re.compile(r"\\([!-/:-@\[-`{-~])"), r"\1"),
)
# Tags of raw HTML blocks; stopping at the next "<" keeps a run of "<" linear.
_TAG = re.compile(r"<[^<>]*>")


def parse_markdown(text: str, *, filename: str = "") -> ParsedDocument:
    """Parse cleaned Markdown. The title is the first level-1 heading, else the first heading, else the
    first line, else the file name."""
    builder = SectionBuilder()
    first_h1 = ""
    tokens = _BLOCKS.parse(text)
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
    """The readable text of an inline token: markup removed, link text, image alt text and code kept."""
    text = token.content
    for pattern, replacement in _INLINE_MARKUP:
        text = pattern.sub(replacement, text)
    return html.unescape(text)
