"""HTML through selectolax's lexbor parser.

Scripts, styles, navigation, footers and other non-content elements are dropped; h1-h6 become the
heading path; block elements (paragraphs, list items, table cells, quotes, ...) become paragraphs, and
``<pre>`` keeps its lines. The tree is walked with an explicit loop, never recursion, so nesting depth
costs no stack.
"""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

from services.common.errors import InvalidArgument
from services.rag.ingest.document import (
    TEXT_HTML,
    ParsedDocument,
    SectionBuilder,
    collapse_spaces,
    filename_title,
    first_line,
    make_title,
    require_text,
    tidy_lines,
)

# lexbor's tree builder spends time proportional to the depth of open elements on each new block
# element, so 50,000 nested <div>s take seconds; no real page nests anywhere near this deep.
MAX_HTML_DEPTH = 1000

_DROPPED = ["script", "style", "nav", "footer", "noscript", "template", "iframe", "svg", "math", "object", "head"]
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# Elements whose start and end break the text into paragraphs.
_BLOCKS = frozenset(
    "address article aside blockquote body caption dd details dialog div dl dt fieldset figcaption figure "
    "form header hgroup hr html li main ol p section summary table tbody td tfoot th thead tr ul br".split()
)
# Elements that need no end tag, or whose end tag is optional: they do not deepen the tree when left open.
_UNNESTED = frozenset(
    "area base br col embed hr img input link meta param source track wbr "
    "p li dt dd tr td th thead tbody tfoot option optgroup rb rt rtc rp colgroup caption".split()
)
_TAG = re.compile(rb"<(/?)([A-Za-z][A-Za-z0-9-]*)[^>]*?(/?)>")


def parse_html(text: str, *, filename: str = "") -> ParsedDocument:
    """Parse cleaned HTML. The title is ``<title>``, else the first h1, else the first line, else the file
    name."""
    _check_depth(text)
    tree = LexborHTMLParser(text)
    title_node = tree.css_first("title")
    page_title = title_node.text(deep=True) if title_node is not None else ""
    tree.strip_tags(_DROPPED)
    builder = SectionBuilder()
    first_h1 = _walk(tree.body or tree.root, builder)
    sections = require_text(builder.build(), "HTML document")
    title = make_title(page_title, first_h1, first_line(sections[0].text), filename_title(filename))
    return ParsedDocument(title=title, sections=sections, content_type=TEXT_HTML)


def _check_depth(text: str) -> None:
    """Refuse markup nested deeper than ``MAX_HTML_DEPTH``, counted from the tags alone (cheap)."""
    depth = 0
    for match in _TAG.finditer(text.encode("utf-8", "replace")):
        closing, name, self_closing = match.groups()
        if self_closing or name.lower().decode() in _UNNESTED:
            continue
        if closing:
            depth = max(depth - 1, 0)
        else:
            depth += 1
            if depth > MAX_HTML_DEPTH:
                raise InvalidArgument(f"the HTML document nests elements deeper than {MAX_HTML_DEPTH} levels")


def _walk(root: LexborNode, builder: SectionBuilder) -> str:
    """Feed the text under ``root`` to ``builder`` in document order; returns the first h1's text."""
    first_h1 = ""
    inline: list[str] = []

    def flush() -> None:
        if inline:
            paragraph = collapse_spaces("".join(inline))
            # A list item whose text sits in nested blocks leaves only its bullet behind.
            if paragraph != "-":
                builder.paragraph(paragraph)
            inline.clear()

    node: LexborNode | None = root.child
    while node is not None:
        tag = node.tag
        descend = True
        if tag == "-text":
            inline.append(node.text_content or "")
        elif tag in _HEADINGS:
            flush()
            heading = node.text(deep=True)
            builder.heading(_HEADINGS[tag], heading)
            if tag == "h1" and not first_h1:
                first_h1 = collapse_spaces(heading)
            descend = False
        elif tag == "pre":
            flush()
            builder.paragraph(tidy_lines(node.text(deep=True)))
            descend = False
        elif tag in _BLOCKS:
            flush()
            if tag == "li":
                inline.append("- ")
        elif tag == "img":
            inline.append(f" {node.attributes.get('alt') or ''} ")
        if descend and node.child is not None:
            node = node.child
            continue
        if tag in _BLOCKS:
            flush()
        # Climb until a node with a next sibling; leaving a block element ends its paragraph.
        while node is not None and node.next is None:
            node = node.parent
            if node is None or node.mem_id == root.mem_id:
                node = None
                break
            if node.tag in _BLOCKS or node.tag in _HEADINGS:
                flush()
        if node is not None:
            node = node.next
    flush()
    return first_h1
