"""A BM25 keyword index over one collection's chunks (bm25s: sparse matrices in numpy).

bm25s has no incremental add or remove, so the index keeps its chunk texts and rebuilds the score
matrix on the next search after a change (tens of milliseconds at 10,000 chunks). The texts kept
here are the redacted chunk texts, the same ones Chroma holds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import bm25s
import Stemmer

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_TEXTS_FILE = "chunks.json"
_FORMAT = 1


class KeywordIndexCorrupt(Exception):
    """The files under a keyword index directory are missing or unreadable; rebuild from Chroma."""


class KeywordIndex:
    """BM25 over (id, text) pairs; ids are chunk ids, unique within the index."""

    def __init__(self, *, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._texts: dict[str, str] = {}
        self._stemmer = Stemmer.Stemmer("english")
        self._stopwords = set(bm25s.stopwords.STOPWORDS_EN)
        # (chunk ids in matrix order, the bm25s retriever or None): replaced as one, so a search never
        # pairs one build's ids with another's matrix.
        self._built: tuple[list[str], Any] = ([], None)
        self._dirty = True

    def __len__(self) -> int:
        return len(self._texts)

    def len(self) -> int:
        """The number of chunks indexed (the benchmark's spelling of len())."""
        return len(self._texts)

    def tokenize(self, text: str) -> list[str]:
        """Lower-cased words of two or more characters, English stop words dropped, Snowball-stemmed."""
        words = [w for w in _TOKEN.findall(text.lower()) if w not in self._stopwords]
        return self._stemmer.stemWords(words)

    def add(self, ids: list[str], texts: list[str]) -> None:
        """Index these chunks; an id already present has its text replaced."""
        if len(ids) != len(texts):
            raise ValueError("ids and texts differ in length")
        for chunk_id, text in zip(ids, texts, strict=True):
            self._texts[chunk_id] = text
        self._dirty = True

    def remove(self, ids: list[str]) -> None:
        """Drop these chunks; ids not present are ignored."""
        for chunk_id in ids:
            if self._texts.pop(chunk_id, None) is not None:
                self._dirty = True

    def ids(self) -> list[str]:
        """Every chunk id in the index."""
        return list(self._texts)

    def copy(self) -> KeywordIndex:
        """An independent index with the same chunks (the current build is shared until either changes)."""
        twin = KeywordIndex(k1=self.k1, b=self.b)
        twin._texts = dict(self._texts)
        twin._built = self._built
        twin._dirty = self._dirty
        return twin

    def _rebuild(self) -> None:
        ids = list(self._texts)
        corpus = [self.tokenize(self._texts[i]) for i in ids]
        retriever = None
        if any(corpus):
            retriever = bm25s.BM25(k1=self.k1, b=self.b)
            retriever.index(corpus, show_progress=False)
        self._built = (ids, retriever)
        self._dirty = False

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The best k chunks for the query as (id, BM25 score), best first; chunks scoring 0 are left out."""
        if self._dirty:
            self._rebuild()
        ids, retriever = self._built
        if retriever is None or k <= 0:
            return []
        tokens = [t for t in self.tokenize(query) if t in retriever.vocab_dict]
        if not tokens:
            return []
        docs, scores = retriever.retrieve([tokens], k=min(k, len(ids)), show_progress=False, n_threads=1)
        return [(ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0], strict=True) if float(s) > 0.0]

    def save(self, path: Path | str) -> None:
        """Write the index under path, atomically: a crash leaves the old files or the new, never half."""
        path = Path(path)
        if self._dirty:
            self._rebuild()
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            ids, retriever = self._built
            payload = {
                "format": _FORMAT,
                "k1": self.k1,
                "b": self.b,
                "ids": ids,
                "texts": [self._texts[i] for i in ids],
            }
            (staging / _TEXTS_FILE).write_text(json.dumps(payload), encoding="utf-8")
            if retriever is not None:
                retriever.save(str(staging / "bm25"), show_progress=False)
            old = path.with_name(f".{path.name}.old")
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path: Path | str) -> KeywordIndex:
        """Read an index save() wrote; KeywordIndexCorrupt when the files are missing or do not agree."""
        path = Path(path)
        try:
            payload = json.loads((path / _TEXTS_FILE).read_text(encoding="utf-8"))
            if payload.get("format") != _FORMAT:
                raise KeywordIndexCorrupt(f"{path}: unknown format {payload.get('format')!r}")
            ids, texts = payload["ids"], payload["texts"]
            if not isinstance(ids, list) or not isinstance(texts, list) or len(ids) != len(texts):
                raise KeywordIndexCorrupt(f"{path}: ids and texts differ")
            index = cls(k1=float(payload["k1"]), b=float(payload["b"]))
            index._texts = dict(zip(ids, texts, strict=True))
            retriever = None
            if (path / "bm25").is_dir():
                retriever = bm25s.BM25.load(str(path / "bm25"), show_progress=False, verbosity=0)
                if retriever.scores["num_docs"] != len(ids):
                    raise KeywordIndexCorrupt(f"{path}: the BM25 matrix does not match the chunks")
            index._built = (list(ids), retriever)
            # A saved index without a matrix had no searchable words; anything else means files are missing.
            index._dirty = retriever is None and any(index.tokenize(t) for t in texts)
            if index._dirty:
                raise KeywordIndexCorrupt(f"{path}: the BM25 matrix is missing")
            return index
        except KeywordIndexCorrupt:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeywordIndexCorrupt(f"{path}: {exc}") from exc
