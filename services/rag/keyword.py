"""A BM25 keyword index over one collection's chunks, in tantivy (an incremental, on-disk index).

A change deletes and adds documents in one commit (segments are written beside the old ones and
merged in the background), so its cost follows the change, not the collection: the bm25s index this
replaces rebuilt its whole matrix per change (~9.6 s at 10,000 chunks). A commit is atomic
(tantivy writes its segment list last), and searches see the last commit (:meth:`KeywordIndex.update`
reloads the reader before it returns).

Words are cut and stemmed here, in Python, as before: two or more word characters, lower-cased,
English stop words dropped, Snowball-stemmed; tantivy gets them space-separated and splits on spaces.
Queries are the same tokens OR-ed as term queries, never tantivy's query syntax, so a question's
quotes, colons or brackets are words, not operators. The texts are the redacted chunk texts Chroma
holds (title and heading path in front): Chroma is the source of truth, and an index that is missing,
unreadable or of the bm25s format is rebuilt from it (services.rag.keyword_store).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

import bm25s
import Stemmer
import tantivy

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
# tantivy refuses terms past 65,530 bytes; no word is near 64 characters, a run of letters may be.
_MAX_TOKEN_CHARS = 64
# The writer's memory: segments are flushed past it. 15 MB is tantivy's floor for one thread, and a
# change is one document's chunks, far below it.
_WRITER_HEAP = 15_000_000
# The files a bm25s index (before tantivy) left in a collection's directory.
LEGACY_FILES = ("chunks.json", "bm25")
ID_FIELD = "id"
TEXT_FIELD = "text"


class KeywordIndexCorrupt(Exception):
    """The files under a keyword index directory are missing, unreadable or of the old bm25s format;
    rebuild from Chroma."""


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    # The chunk id: indexed whole (deletes go by it) and stored (searches return it).
    builder.add_text_field(ID_FIELD, stored=True, tokenizer_name="raw")
    # Frequencies without positions: BM25 needs no phrase queries.
    builder.add_text_field(TEXT_FIELD, stored=False, tokenizer_name="whitespace", index_option="freq")
    return builder.build()


_STEMMER = threading.local()  # PyStemmer objects are not thread-safe; updates run in worker threads
_STOPWORDS = frozenset(bm25s.stopwords.STOPWORDS_EN)


def tokenize(text: str) -> list[str]:
    """Lower-cased words of two or more characters, English stop words dropped, Snowball-stemmed."""
    stemmer = getattr(_STEMMER, "english", None)
    if stemmer is None:
        stemmer = _STEMMER.english = Stemmer.Stemmer("english")
    words = [w for w in _TOKEN.findall(text.lower()) if w not in _STOPWORDS and len(w) <= _MAX_TOKEN_CHARS]
    return stemmer.stemWords(words)


def is_legacy(path: Path | str) -> bool:
    """Whether path holds a bm25s index of the format before tantivy (to be rebuilt)."""
    path = Path(path)
    return any((path / name).exists() for name in LEGACY_FILES)


class KeywordIndex:
    """BM25 over (id, text) pairs; ids are chunk ids, unique within the index. ``path`` None keeps the
    index in memory (tests, the quality benchmark); otherwise it is the index's directory."""

    def __init__(self, path: Path | str | None = None, *, _index: tantivy.Index | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.schema = _schema()
        if _index is not None:
            self._index = _index
        elif self.path is None:
            self._index = tantivy.Index(self.schema)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._index = tantivy.Index(self.schema, path=str(self.path))
        # One writer at a time (tantivy's lock is per directory, and two writers would race on it).
        self._write_lock = threading.Lock()

    def __len__(self) -> int:
        return self._index.searcher().num_docs

    def len(self) -> int:
        """The number of chunks indexed (the benchmark's spelling of len())."""
        return len(self)

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """See :func:`tokenize`."""
        return tokenize(text)

    def update(
        self,
        *,
        remove: Iterable[str] = (),
        add_ids: list[str] | None = None,
        add_texts: list[str] | None = None,
    ) -> None:
        """Remove then add chunks in one commit, visible to searches when this returns. An id that is
        both removed and added ends up with the added text; removing a missing id does nothing."""
        add_ids = add_ids or []
        add_texts = add_texts or []
        if len(add_ids) != len(add_texts):
            raise ValueError("ids and texts differ in length")
        # Tokenize before the writer exists: a failure here leaves the index as it was.
        documents = [
            tantivy.Document(**{ID_FIELD: chunk_id, TEXT_FIELD: " ".join(tokenize(text))})
            for chunk_id, text in zip(add_ids, add_texts, strict=True)
        ]
        # An id added again replaces its old text; tantivy applies a delete to what came before it.
        removed = list(dict.fromkeys([*remove, *add_ids]))
        if not removed and not documents:
            return
        with self._write_lock:
            writer = self._index.writer(heap_size=_WRITER_HEAP, num_threads=1)
            try:
                for chunk_id in removed:
                    writer.delete_documents_by_term(ID_FIELD, chunk_id)
                for document in documents:
                    writer.add_document(document)
                writer.commit()
            except BaseException:
                writer.rollback()
                raise
            finally:
                # Waits for the merges this commit started, so segments stay few and the writer's
                # lock is released before the next change.
                writer.wait_merging_threads()
            self._index.reload()

    def add(self, ids: list[str], texts: list[str]) -> None:
        """Index these chunks; an id already present has its text replaced."""
        self.update(add_ids=ids, add_texts=texts)

    def remove(self, ids: list[str]) -> None:
        """Drop these chunks; ids not present are ignored."""
        self.update(remove=ids)

    def ids(self) -> list[str]:
        """Every chunk id in the index (tests and diagnostics: it reads every stored id)."""
        searcher = self._index.searcher()
        if searcher.num_docs == 0:
            return []
        result = searcher.search(tantivy.Query.all_query(), searcher.num_docs)
        return [searcher.doc(address)[ID_FIELD][0] for _, address in result.hits]

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The best k chunks for the query as (id, BM25 score), best first; chunks scoring 0 are left out."""
        tokens = tokenize(query)
        if not tokens or k <= 0:
            return []
        searcher = self._index.searcher()
        if searcher.num_docs == 0:
            return []
        terms = [
            (tantivy.Occur.Should, tantivy.Query.term_query(self.schema, TEXT_FIELD, token))
            for token in dict.fromkeys(tokens)
        ]
        result = searcher.search(tantivy.Query.boolean_query(terms), min(k, searcher.num_docs))
        hits = []
        for score, address in result.hits:
            if score > 0.0:
                hits.append((searcher.doc(address)[ID_FIELD][0], float(score)))
        return hits

    @classmethod
    def load(cls, path: Path | str) -> KeywordIndex:
        """Open the index at path; KeywordIndexCorrupt when it is missing, unreadable or of the bm25s format."""
        path = Path(path)
        if is_legacy(path):
            raise KeywordIndexCorrupt(f"{path}: a bm25s index (the format before tantivy)")
        if not (path / "meta.json").is_file():
            raise KeywordIndexCorrupt(f"{path}: no index there")
        try:
            index = tantivy.Index.open(str(path))
            # Opening the searcher opens every segment the last commit lists: a missing file fails here.
            index.searcher()
            # Another schema (a field missing) fails here.
            for field in (ID_FIELD, TEXT_FIELD):
                tantivy.Query.term_query(index.schema, field, "probe")
        except ValueError as exc:
            raise KeywordIndexCorrupt(f"{path}: {exc}") from exc
        return cls(path, _index=index)

    @classmethod
    def build(cls, path: Path | str, ids: list[str], texts: list[str]) -> KeywordIndex:
        """A new index of these chunks at path, replacing whatever is there atomically: it is built in a
        staging directory beside it and renamed into place, so a crash leaves the old one or the new."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            staged = cls(staging)
            staged.update(add_ids=ids, add_texts=texts)
            del staged  # the writer is gone; the files are complete
            old = path.with_name(f".{path.name}.old")
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        # Opened at its final path: an index object keeps the directory it was opened in.
        return cls.load(path)
