"""The chunker on the real embedding tokenizer (all-MiniLM-L6-v2's word pieces)."""

from __future__ import annotations

import pydoc_data.topics
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from services.inference.models import embedding_model_files
from services.rag.ingest import Chunk, Chunker, ParsedDocument, Section, load_tokenizer, parse_text

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_tokenizer()


def count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def sentences(n: int, *, start: int = 0) -> str:
    """``n`` distinct sentences of 8 to 20 words."""
    words = "goblin lantern cave treasure night oil wick map river stone bridge troll gold key door".split()
    out = []
    for i in range(start, start + n):
        length = 8 + (i * 7) % 13
        out.append(" ".join(words[(i + k) % len(words)] for k in range(length)).capitalize() + f" number {i}.")
    return " ".join(out)


def python_docs(limit: int | None = None) -> str:
    topics = [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]
    return "\n\n".join(topics[:limit])


def assert_well_formed(chunks: list[Chunk], document: ParsedDocument, tokenizer: Tokenizer, limit: int) -> None:
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    sections = {section.heading_path: section.text for section in document.sections}
    for chunk in chunks:
        assert chunk.text.strip() and chunk.text == chunk.text.strip()
        assert chunk.token_count == count(tokenizer, chunk.text)
        assert 0 < chunk.token_count <= limit
        assert chunk.title == document.title
        # Never crosses a section: the text is a piece of its own section's text.
        assert chunk.text in sections[chunk.heading_path]


def test_load_tokenizer_is_the_embedders_tokenizer_without_truncation_or_padding(tokenizer: Tokenizer) -> None:
    reference = Tokenizer.from_file(str(embedding_model_files().tokenizer))
    long_text = sentences(40)

    assert tokenizer.truncation is None and tokenizer.padding is None
    assert tokenizer.encode(long_text).ids[:100] == reference.encode(long_text).ids[:100]
    assert count(tokenizer, long_text) > 300


def test_load_tokenizer_takes_the_configured_model_dir(tmp_path: Path) -> None:
    files = embedding_model_files()
    (tmp_path / "model.onnx").symlink_to(files.model)
    (tmp_path / "tokenizer.json").symlink_to(files.tokenizer)

    assert load_tokenizer(tmp_path).encode("goblin").ids == load_tokenizer().encode("goblin").ids


def test_short_paragraphs_are_packed_whole_into_one_chunk(tokenizer: Tokenizer) -> None:
    document = parse_text("First point.\n\nSecond point.\n\nThird point.", filename="a.txt")

    chunks = Chunker(tokenizer).chunk(document)

    assert [chunk.text for chunk in chunks] == ["First point.\n\nSecond point.\n\nThird point."]
    assert chunks[0].heading_path == () and chunks[0].title == "First point."


def test_chunks_fit_overlap_and_end_at_sentence_ends(tokenizer: Tokenizer) -> None:
    paragraphs = [sentences(6, start=6 * i) for i in range(12)]
    document = parse_text("\n\n".join(paragraphs), filename="a.txt")

    chunks = Chunker(tokenizer, chunk_tokens=64, overlap_tokens=16).chunk(document)

    assert len(chunks) > 10
    assert_well_formed(chunks, document, tokenizer, 64)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        # Every sentence fits, so none is cut: each chunk ends at a sentence end. The next one starts with
        # the last sentences that fit in the overlap, else with a whole word.
        assert previous.text.endswith(".")
        overlap = _overlap(previous.text, current.text)
        assert overlap, (previous.text, current.text)
        assert 0 < count(tokenizer, overlap) <= 16
        assert previous.text[-len(overlap) - 1] in " \n"


def test_paragraph_boundaries_are_preferred_once_a_chunk_is_half_full(tokenizer: Tokenizer) -> None:
    paragraphs = [sentences(3, start=3 * i) for i in range(20)]
    document = parse_text("\n\n".join(paragraphs), filename="a.txt")

    chunks = Chunker(tokenizer, chunk_tokens=128, overlap_tokens=0).chunk(document)

    assert_well_formed(chunks, document, tokenizer, 128)
    for chunk in chunks:
        # With no overlap and paragraphs well under half a chunk, every chunk is whole paragraphs.
        assert all(paragraph in paragraphs for paragraph in chunk.text.split("\n\n"))
    assert "\n\n".join(chunk.text for chunk in chunks) == "\n\n".join(paragraphs)


def test_no_overlap_means_the_chunks_add_up_to_the_text(tokenizer: Tokenizer) -> None:
    text = python_docs(40)
    document = parse_text(text, filename="topics.txt")

    chunks = Chunker(tokenizer, chunk_tokens=100, overlap_tokens=0).chunk(document)

    assert_well_formed(chunks, document, tokenizer, 100)
    assert _squash(" ".join(chunk.text for chunk in chunks)) == _squash(document.sections[0].text)


def test_a_sentence_longer_than_a_chunk_is_cut_between_words(tokenizer: Tokenizer) -> None:
    sentence = " ".join(f"word{i}" for i in range(400)) + "."
    document = parse_text(sentence, filename="a.txt")

    chunks = Chunker(tokenizer, chunk_tokens=64, overlap_tokens=8).chunk(document)

    assert len(chunks) > 1
    assert_well_formed(chunks, document, tokenizer, 64)
    words = set(sentence.rstrip(".").split())
    for chunk in chunks:
        assert set(chunk.text.rstrip(".").split()) <= words  # no word cut in two
    covered = set().union(*(chunk.text.rstrip(".").split() for chunk in chunks))
    assert covered == words


def test_chunks_never_cross_sections_and_keep_their_heading_paths(tokenizer: Tokenizer) -> None:
    markdown = "\n\n".join(
        [
            "# Guide",
            sentences(10),
            "## Install",
            sentences(3, start=100),
            "### On Linux",
            sentences(12, start=200),
            "## Use",
            "Short.",
        ]
    )
    document = parse_text(markdown, filename="guide.md")

    chunks = Chunker(tokenizer, chunk_tokens=48, overlap_tokens=8).chunk(document)

    assert_well_formed(chunks, document, tokenizer, 48)
    paths = [chunk.heading_path for chunk in chunks]
    assert paths == sorted(paths, key=[s.heading_path for s in document.sections].index)
    assert set(paths) == {("Guide",), ("Guide", "Install"), ("Guide", "Install", "On Linux"), ("Guide", "Use")}
    assert [c.text for c in chunks if c.heading_path == ("Guide", "Use")] == ["Short."]
    # The first chunk of each section starts at the section's start: no overlap reaches across.
    starts = {}
    for chunk in chunks:
        starts.setdefault(chunk.heading_path, chunk.text)
    for section in document.sections:
        assert section.text.startswith(starts[section.heading_path])


def test_one_giant_word_is_cut_by_characters(tokenizer: Tokenizer) -> None:
    # One word-piece [UNK] per 100+ characters: the character bound keeps chunks a sane size.
    document = parse_text("a" * 100_000, filename="blob.txt")

    chunks = Chunker(tokenizer, chunk_tokens=64, overlap_tokens=8).chunk(document)

    assert_well_formed(chunks, document, tokenizer, 64)
    assert max(len(chunk.text) for chunk in chunks) <= 64 * 16


def test_a_markdown_file_of_one_100k_character_line_chunks_within_limits(tokenizer: Tokenizer) -> None:
    document = parse_text("[a](" * 25_000, filename="line.md")

    chunks = Chunker(tokenizer).chunk(document)

    assert_well_formed(chunks, document, tokenizer, 256)


def test_code_and_real_documentation_chunk_within_limits(tokenizer: Tokenizer) -> None:
    document = parse_text(python_docs(120), filename="topics.txt")

    chunks = Chunker(tokenizer).chunk(document)

    assert_well_formed(chunks, document, tokenizer, 256)
    sizes = [chunk.token_count for chunk in chunks]
    # Packed, not shredded: most chunks are well over half full.
    assert sorted(sizes)[len(sizes) // 2] > 150


def test_chunking_is_deterministic(tokenizer: Tokenizer) -> None:
    document = parse_text(python_docs(30), filename="topics.txt")

    first = Chunker(tokenizer, chunk_tokens=128, overlap_tokens=24).chunk(document)
    second = Chunker(load_tokenizer(), chunk_tokens=128, overlap_tokens=24).chunk(document)

    assert first == second


def test_a_hand_made_document_with_blank_paragraphs_has_no_empty_chunks(tokenizer: Tokenizer) -> None:
    document = ParsedDocument(
        title="T",
        sections=(Section((), "\n\n  \n\n"), Section(("A",), "x\n\n\n\n\n\ny"), Section(("B",), "\u200b")),
        content_type="text/plain",
    )

    chunks = Chunker(tokenizer).chunk(document)

    assert [(c.heading_path, c.text) for c in chunks] == [(("A",), "x\n\ny")] or [c.text for c in chunks] == [
        "x\n\n\n\n\n\ny"
    ]


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), [(8, 0), (64, 40), (64, -1)])
def test_invalid_sizes_are_refused(tokenizer: Tokenizer, chunk_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ValueError):
        Chunker(tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)


def test_a_truncating_tokenizer_is_refused() -> None:
    truncating = Tokenizer.from_file(str(embedding_model_files().tokenizer))

    with pytest.raises(ValueError, match="truncat"):
        Chunker(truncating)


def _overlap(previous: str, current: str) -> str:
    """The longest start of ``current`` that ``previous`` ends with."""
    for size in range(min(len(previous), len(current)), 0, -1):
        if previous.endswith(current[:size]):
            return current[:size]
    return ""


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
