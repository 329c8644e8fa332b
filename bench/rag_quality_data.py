"""Builds bench/data/pydocs/corpus.jsonl: the Python documentation cut into documents of a few hundred words.

Run once (``python -m bench.rag_quality_data``); the output is committed, so the benchmark never needs
this script's sources at bench time. The questions and qrels are written by hand and are not touched here.

Sources:
- ``pydoc_data.topics.topics`` (standard library): the language reference and built-in types as plain
  text, the text ``help()`` shows. Several topics repeat others (``compound`` holds ``if``, ``for``,
  ``try``, ...; ``specialnames`` holds ``customization``, ``attribute-access``, ...), so topics are taken
  smallest first and a paragraph already taken is dropped: every paragraph is in one document only, else
  the qrels would miss identical twins.
- Five library chapters from Debian's ``python3.11-doc`` reST sources (functools, json, contextlib,
  dataclasses, pathlib), cleaned of markup: they add module-level API text that the topics do not have.

Document ids are ``<topic>-<nn>`` in reading order; rebuilding with the same inputs gives the same ids,
which the hand-written qrels depend on.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data" / "pydocs"
RST_DIR = Path("/usr/share/doc/python3.11/html/_sources/library")
LIBRARY_CHAPTERS = ("functools", "json", "contextlib", "dataclasses", "pathlib")

# A document closes at the first boundary past SOFT_WORDS (an API entry) or past TARGET_WORDS (any
# paragraph); headings always close it. Sizes keep most documents within MiniLM's 256 word pieces.
SOFT_WORDS = 90
TARGET_WORDS = 170

_TOPIC_UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}$")
_RST_UNDERLINE = re.compile(r"^([=\-~^*#\"'+`])\1{2,}$")
_RST_DIRECTIVE = re.compile(r"^\.\. ([a-z:-]+)::\s*(.*)$")
# Directives whose whole block (header and indented body) carries nothing a reader would search for.
_DROPPED_DIRECTIVES = {
    "module",
    "moduleauthor",
    "sectionauthor",
    "testsetup",
    "testcleanup",
    "index",
    "audit-event",
    "image",
    "program",
    "highlight",
    "currentmodule",
    "toctree",
    "_",
}
# Directives that open an API entry (a function, class, method, ...): a soft document boundary.
_API_DIRECTIVES = {
    "function",
    "class",
    "method",
    "classmethod",
    "staticmethod",
    "attribute",
    "data",
    "decorator",
    "exception",
    "coroutinemethod",
    "coroutinefunction",
    "cmdoption",
    "decoratormethod",
}


@dataclass
class Block:
    """A paragraph of text, with where it may close a document."""

    text: str
    heading: str | None = None  # set when the block starts a new section (a hard boundary)
    api: bool = False  # an API entry's signature (a soft boundary)


@dataclass
class Document:
    id: str
    title: str
    text: str


def words(text: str) -> int:
    return len(text.split())


def topic_blocks(text: str) -> list[Block]:
    """Blocks of one pydoc topic: headings are a line underlined with ``***``, ``===`` or ``---``."""
    lines = text.splitlines()
    blocks: list[Block] = []
    current: list[str] = []
    heading: str | None = None

    def flush() -> None:
        nonlocal heading
        body = "\n".join(current).strip("\n")
        if body.strip() or heading:
            blocks.append(Block(body, heading=heading))
        current.clear()
        heading = None

    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip() and _TOPIC_UNDERLINE.match(following.strip()) and len(following.strip()) >= len(line.strip()):
            flush()
            heading = line.strip()
            index += 2
            continue
        if not line.strip():
            flush()
        else:
            current.append(line)
        index += 1
    flush()
    return [block for block in blocks if block.text.strip() or block.heading]


def clean_rst_inline(text: str) -> str:
    """reST inline markup to the plain style of the pydoc topics."""
    # :role:`title <target>` and :role:`~a.b.c`
    text = re.sub(r":[\w:.-]+:`([^`<]*?)\s*<[^`>]*>`", r"\1", text)
    text = re.sub(r":[\w:.-]+:`[~!]?(?:[\w.]*\.)?([^`]+)`", lambda m: f'"{m.group(1)}"', text)
    text = re.sub(r"`([^`<]+?)\s*<[^`>]+>`__?", r"\1", text)  # external links
    text = re.sub(r"``(.+?)``", r'"\1"', text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    text = re.sub(r"\|(\w+)\|", r"\1", text)  # substitutions
    text = text.replace("\\ ", "")  # an escaped space joins markup to a word: "with"\ -statement
    return text


def rst_blocks(text: str) -> list[Block]:
    """Blocks of one reST chapter: section headings, API entries and paragraphs, markup removed."""
    lines = text.splitlines()
    blocks: list[Block] = []
    current: list[str] = []
    pending_heading: str | None = None
    pending_api = False
    skip_indent: int | None = None  # inside a dropped directive's body

    def flush() -> None:
        nonlocal pending_heading, pending_api
        body = "\n".join(current).strip("\n")
        if body.strip():
            blocks.append(Block(clean_rst_inline(body), heading=pending_heading, api=pending_api))
            pending_heading = None
            pending_api = False
        current.clear()

    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if stripped and indent <= skip_indent:
                skip_indent = None
            else:
                index += 1
                continue
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        # Overlined titles: ===\nTitle\n===
        if _RST_UNDERLINE.match(stripped) and following and index + 2 < len(lines):
            if _RST_UNDERLINE.match(lines[index + 2].strip()):
                flush()
                pending_heading = clean_rst_inline(following)
                index += 3
                continue
        if stripped and _RST_UNDERLINE.match(following) and len(following) >= len(stripped) and indent == 0:
            flush()
            pending_heading = clean_rst_inline(stripped)
            index += 2
            continue
        directive = _RST_DIRECTIVE.match(stripped)
        if directive:
            name, argument = directive.group(1), directive.group(2)
            flush()
            if name in _DROPPED_DIRECTIVES or name.startswith("_"):
                skip_indent = indent
            elif name in _API_DIRECTIVES:
                pending_api = True
                current.append(clean_rst_inline(argument))
            elif name == "versionadded":
                current.append(f"New in version {argument}.")
            elif name == "versionchanged":
                current.append(f"Changed in version {argument}:")
            elif name == "deprecated":
                current.append(f"Deprecated since version {argument}:")
            elif name in {"seealso", "note", "warning", "rubric"}:
                label = {"seealso": "See also:", "note": "Note:", "warning": "Warning:"}.get(name, "")
                current.append(f"{label} {argument}".strip())
            # other directives (code-block, ...): their indented body stays as plain text
            index += 1
            continue
        if stripped.startswith(".. ") or stripped == "..":
            skip_indent = indent  # a comment or a link target
            index += 1
            continue
        if not stripped:
            flush()
        elif stripped == "-" * len(stripped) and len(stripped) > 3:
            flush()  # a transition line
        elif stripped.startswith("**Source code:**"):
            pass
        else:
            current.append(line.rstrip().replace("::", ":") if line.rstrip().endswith("::") else line.rstrip())
        index += 1
    flush()
    return blocks


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def documents_from_blocks(prefix: str, chapter_title: str, blocks: list[Block], seen: set[str]) -> list[Document]:
    """Group blocks into documents, dropping paragraphs of more than eight words already in ``seen``."""
    documents: list[Document] = []
    section = ""
    current: list[str] = []
    current_section = ""

    def close() -> None:
        text = "\n\n".join(current).strip()
        if words(text) >= 25:
            title = (
                chapter_title
                if not current_section or current_section == chapter_title
                else f"{chapter_title} — {current_section}"
            )
            documents.append(Document(f"{prefix}-{len(documents) + 1:02d}", title, text))
        elif text and documents:
            # a scrap too small to stand alone joins the previous document of the same chapter
            documents[-1].text += "\n\n" + text
        current.clear()

    for block in blocks:
        size = words("\n\n".join(current))
        if block.heading is not None:
            close()
            section = block.heading
            current_section = section
        elif block.api and size >= SOFT_WORDS or size >= TARGET_WORDS:
            close()
            current_section = section
        if not current:
            current_section = section
        key = _normalised(block.text)
        if words(key) > 8:
            if key in seen:
                continue
            seen.add(key)
        if block.text.strip():
            current.append(block.text.strip("\n"))
    close()
    return documents


def topic_title(text: str, fallback: str) -> str:
    for block in topic_blocks(text):
        if block.heading:
            return block.heading
    return fallback


def build(rst_dir: Path = RST_DIR) -> list[Document]:
    """Every document: the pydoc topics (smallest first, duplicates dropped), then the library chapters."""
    from pydoc_data.topics import topics

    seen: set[str] = set()
    documents: list[Document] = []
    for name in sorted(topics, key=lambda key: (words(topics[key]), key)):
        text = topics[name]
        blocks = topic_blocks(text)
        title = topic_title(text, name)
        # the first heading names the chapter; it is the title, not a section of its own
        if blocks and blocks[0].heading == title:
            blocks[0].heading = None
        documents.extend(documents_from_blocks(name, title, blocks, seen))
    for chapter in LIBRARY_CHAPTERS:
        path = rst_dir / f"{chapter}.rst.txt"
        if not path.is_file():
            print(f"{path} is missing (apt-get install python3.11-doc): chapter {chapter} skipped", file=sys.stderr)
            continue
        blocks = rst_blocks(path.read_text(encoding="utf-8"))
        # '"functools" --- Higher-order functions ...' reads as 'functools — Higher-order functions ...'
        title = blocks[0].heading if blocks and blocks[0].heading else chapter
        title = re.sub(r'^"(\w+)" -+ ', r"\1 — ", title)
        if blocks and blocks[0].heading:
            blocks[0].heading = None
        documents.extend(documents_from_blocks(chapter, title, blocks, seen))
    return documents


def main() -> None:
    documents = build()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with (DATA_DIR / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for document in documents:
            out.write(
                json.dumps({"_id": document.id, "title": document.title, "text": document.text}, ensure_ascii=False)
                + "\n"
            )
    sizes = sorted(words(document.text) for document in documents)
    print(f"{len(documents)} documents, words: median {sizes[len(sizes) // 2]}, min {sizes[0]}, max {sizes[-1]}")


if __name__ == "__main__":
    main()
