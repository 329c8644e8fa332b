"""Token-sized chunks that follow a document's structure.

A chunk never crosses a section (heading) boundary. Inside a section, chunks are cut where the text
allows it best: between paragraphs, else between sentences, else between words, and only inside a word
when one "word" alone is longer than a chunk (a base64 blob, a 100,000-character line). Consecutive chunks
of one section share about ``overlap_tokens`` tokens, starting at a sentence or word start, so a passage
cut in two is still found whole in one of them.

Sizes are in the embedding model's tokens, without special tokens. Each paragraph is encoded once (in
one batch per document) and the cuts are planned on the token offsets; the chunk texts are then encoded
once more, in one batch, to report exact counts (a tokenizer may count a text cut mid-word differently
from the same characters inside the whole paragraph) and to re-split the rare chunk that came out
longer than ``chunk_tokens``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

from tokenizers import Encoding, Tokenizer

from services.rag.ingest.document import ParsedDocument, Section

# A word-piece tokenizer turns any word over 100 characters into one [UNK]; a planned token is never wider
# than this, so a giant "word" is cut into pieces like any over-long sentence.
_MAX_TOKEN_CHARS = 64
# A chunk's text is also bounded in characters (tokens of one [UNK] each could otherwise be any length).
_MAX_CHARS_PER_TOKEN = 16
# Where a sentence ends: terminal punctuation (with closing quotes or brackets) and whitespace, a CJK full
# stop, or a line break inside a paragraph (code lines, table rows, plain-text lines).
_SENTENCE_BREAK = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？]+\s*|\n\s*")

_PARAGRAPH, _SENTENCE, _WORD, _INSIDE_WORD = 3, 2, 1, 0
_RESPLIT_DEPTH = 4


@dataclass(frozen=True)
class Chunk:
    """One piece of a document as it is embedded and indexed.

    ``text`` is the body only; ``title`` and ``heading_path`` say where it comes from (the service may
    put them in front of the text it embeds). ``token_count`` is the exact number of tokens of ``text``
    for the chunker's tokenizer, without special tokens.
    """

    index: int
    text: str
    title: str
    heading_path: tuple[str, ...]
    token_count: int


@dataclass
class _Plan:
    """One section's tokens on the section's text: start and end offsets, and how good a cut before
    each token is (``ranks`` has one more entry, for the end)."""

    text: str
    starts: list[int]
    ends: list[int]
    ranks: list[int]


class Chunker:
    """Splits parsed documents into chunks of at most ``chunk_tokens`` tokens.

    ``overlap_tokens`` (at most half of ``chunk_tokens``) is the target overlap between consecutive chunks
    of one section; the overlap starts at a sentence or word start, so it is that many tokens or fewer.
    Deterministic: the same document and settings give the same chunks.
    """

    def __init__(self, tokenizer: Tokenizer, *, chunk_tokens: int = 256, overlap_tokens: int = 32) -> None:
        if chunk_tokens < 16:
            raise ValueError("chunk_tokens must be at least 16")
        if not 0 <= overlap_tokens <= chunk_tokens // 2:
            raise ValueError("overlap_tokens must be between 0 and half of chunk_tokens")
        if tokenizer.truncation is not None:
            raise ValueError("the tokenizer truncates, so it cannot measure chunks: call no_truncation()")
        self.tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.max_chunk_chars = chunk_tokens * _MAX_CHARS_PER_TOKEN

    def chunk(self, document: ParsedDocument) -> list[Chunk]:
        """The chunks of ``document``, in reading order, indexed from 0; none is empty."""
        sections: list[tuple[Section, list[str]]] = []
        paragraphs: list[str] = []
        for section in document.sections:
            kept = [paragraph.strip() for paragraph in section.text.split("\n\n") if paragraph.strip()]
            if kept:
                sections.append((section, kept))
                paragraphs.extend(kept)
        encodings = self.tokenizer.encode_batch(paragraphs, add_special_tokens=False) if paragraphs else []

        pieces: list[tuple[tuple[str, ...], str]] = []
        position = 0
        for section, kept in sections:
            plan = _plan_section(kept, encodings[position : position + len(kept)])
            position += len(kept)
            pieces.extend((section.heading_path, text) for text in self._cut(plan, self.overlap_tokens))

        chunks: list[Chunk] = []
        texts = [text for _, text in pieces]
        counts = self._counts(texts)
        for (heading_path, text), count in zip(pieces, counts, strict=True):
            for piece, piece_count in self._fit(text, count, _RESPLIT_DEPTH):
                chunks.append(
                    Chunk(
                        index=len(chunks),
                        text=piece,
                        title=document.title,
                        heading_path=heading_path,
                        token_count=piece_count,
                    )
                )
        return chunks

    def _counts(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(encoding.ids) for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def _fit(self, text: str, count: int, depth: int) -> list[tuple[str, int]]:
        """``text`` as it is when it fits, else cut again (without overlap) until every piece fits."""
        if count <= self.chunk_tokens:
            return [(text, count)] if count > 0 else []
        if depth > 0:
            encoding = self.tokenizer.encode(text, add_special_tokens=False)
            pieces = self._cut(_plan_section([text], [encoding]), 0)
        else:
            # Not reached with word-piece or BPE tokenizers; halving by characters always terminates.
            middle = len(text) // 2
            pieces = [text[:middle], text[middle:]]
        if len(pieces) < 2:
            middle = len(text) // 2
            pieces = [text[:middle], text[middle:]]
        fitted: list[tuple[str, int]] = []
        for piece, piece_count in zip(pieces, self._counts(pieces), strict=True):
            fitted.extend(self._fit(piece, piece_count, depth - 1))
        return fitted

    def _cut(self, plan: _Plan, overlap_tokens: int) -> list[str]:
        """The texts of one section's chunks, cut at the best places the plan offers."""
        starts, ends, ranks = plan.starts, plan.ends, plan.ranks
        total = len(starts)
        texts: list[str] = []
        first = 0
        while first < total:
            limit = min(first + self.chunk_tokens, total)
            # No more characters than max_chunk_chars either; a planned token is at most _MAX_TOKEN_CHARS.
            limit = max(min(limit, bisect_right(ends, starts[first] + self.max_chunk_chars, first)), first + 1)
            end = limit if limit == total else self._best_end(ranks, first, limit)
            texts.append(plan.text[starts[first] : ends[end - 1]])
            if end == total:
                break
            first = self._next_start(ranks, first, end, overlap_tokens)
        return texts

    def _best_end(self, ranks: list[int], first: int, limit: int) -> int:
        """Where to end a chunk starting at ``first`` that may run to ``limit``: the last paragraph end if
        that fills at least half the chunk, else the last sentence end, else the last word end past the
        half, else ``limit``."""
        half = first + (limit - first) // 2
        paragraph = sentence = word = 0
        for position in range(limit, first, -1):
            rank = ranks[position]
            if rank >= _PARAGRAPH and not paragraph:
                paragraph = position
            if rank >= _SENTENCE and not sentence:
                sentence = position
            if rank >= _WORD and not word:
                word = position
            if paragraph:
                break
        if paragraph and paragraph - first >= (self.chunk_tokens // 2) - 1 or paragraph and paragraph == sentence:
            return paragraph
        if sentence:
            return sentence
        if word and word >= half:
            return word
        return limit

    @staticmethod
    def _next_start(ranks: list[int], first: int, end: int, overlap_tokens: int) -> int:
        """Where the chunk after [first, end) starts: the earliest sentence start, else word start, at
        most ``overlap_tokens`` (and half the previous chunk) before ``end``."""
        overlap = min(overlap_tokens, (end - first) // 2)
        if overlap <= 0:
            return end
        lowest = end - overlap
        word = 0
        for position in range(lowest, end):
            rank = ranks[position]
            if rank >= _SENTENCE:
                return position
            if rank >= _WORD and not word:
                word = position
        return word or lowest


def _plan_section(paragraphs: list[str], encodings: list[Encoding]) -> _Plan:
    """The cut plan of a section whose text is ``paragraphs`` joined by blank lines."""
    starts: list[int] = []
    ends: list[int] = []
    ranks: list[int] = []
    base = 0
    for paragraph, encoding in zip(paragraphs, encodings, strict=True):
        sentence_starts = {match.end() for match in _SENTENCE_BREAK.finditer(paragraph)}
        previous_end = -1
        for start, end in encoding.offsets:
            if end <= start:
                continue
            if previous_end < 0:
                rank = _PARAGRAPH
            elif start in sentence_starts:
                rank = _SENTENCE
            elif start > previous_end:
                rank = _WORD
            else:
                rank = _INSIDE_WORD
            while end - start > _MAX_TOKEN_CHARS:
                starts.append(base + start)
                ends.append(base + start + _MAX_TOKEN_CHARS)
                ranks.append(rank)
                start += _MAX_TOKEN_CHARS
                rank = _INSIDE_WORD
            starts.append(base + start)
            ends.append(base + end)
            ranks.append(rank)
            previous_end = end
        base += len(paragraph) + 2
    ranks.append(_PARAGRAPH)
    return _Plan(text="\n\n".join(paragraphs), starts=starts, ends=ends, ranks=ranks)
