"""The BM25 keyword index: add, remove, search, persistence and corruption."""

from __future__ import annotations

import json

import pytest

from services.rag.keyword import KeywordIndex, KeywordIndexCorrupt, is_legacy

DOCS = {
    "d1:0": "The gateway terminates TLS and checks API keys before anything else runs.",
    "d1:1": "Rate limits use a token bucket per key, stored in Redis.",
    "d2:0": "Chroma stores the vectors; embeddings come from the inference service.",
    "d2:1": "Running the benchmark prints p50 and p95 latency for each route.",
}


@pytest.fixture
def index() -> KeywordIndex:
    idx = KeywordIndex()
    idx.add(list(DOCS), list(DOCS.values()))
    return idx


def test_search_ranks_the_chunk_with_the_words_first(index):
    hits = index.search("token bucket rate limits", k=3)
    assert hits[0][0] == "d1:1"
    assert all(score > 0 for _, score in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_stemming_matches_word_forms(index):
    assert index.search("benchmarks run", k=1)[0][0] == "d2:1"


def test_no_match_and_stopwords_only_give_nothing(index):
    assert index.search("kubernetes", k=5) == []
    assert index.search("the and of", k=5) == []
    assert index.search("", k=5) == []
    assert index.search("vectors", k=0) == []


def test_k_larger_than_the_index(index):
    assert len(index.search("the gateway vectors latency redis", k=1000)) == 4


def test_remove_and_replace(index):
    index.remove(["d1:1", "missing"])
    assert len(index) == 3
    assert index.search("token bucket", k=5) == []
    index.add(["d2:0"], ["Token buckets now live here."])
    assert index.search("token bucket", k=5)[0][0] == "d2:0"
    assert index.search("chroma embeddings", k=5) == []
    assert len(index) == index.len() == 3


def test_empty_index():
    idx = KeywordIndex()
    assert idx.search("anything", k=5) == []
    idx.add(["x"], ["the of and"])
    assert idx.search("anything", k=5) == []


def test_persists_and_loads(tmp_path):
    target = tmp_path / "kw" / "col1"
    built = KeywordIndex.build(target, list(DOCS), list(DOCS.values()))
    loaded = KeywordIndex.load(target)
    assert len(loaded) == 4
    assert loaded.search("token bucket", k=2) == built.search("token bucket", k=2)
    # A change is committed to disk before update() returns: a fresh open sees it.
    loaded.update(remove=["d1:1"], add_ids=["d3:0"], add_texts=["Kubernetes restarts hung pods."])
    again = KeywordIndex.load(target)
    assert len(again) == 4 and again.search("token bucket", k=5) == []
    assert again.search("kubernetes", k=5)[0][0] == "d3:0"
    assert sorted(again.ids()) == ["d1:0", "d2:0", "d2:1", "d3:0"]
    # Building again replaces the directory atomically and leaves no staging directories behind.
    KeywordIndex.build(target, ["x:0"], ["only one chunk now"])
    assert sorted(p.name for p in target.parent.iterdir()) == ["col1"]
    assert len(KeywordIndex.load(target)) == 1


def test_build_an_empty_index(tmp_path):
    KeywordIndex.build(tmp_path / "empty", [], [])
    assert len(KeywordIndex.load(tmp_path / "empty")) == 0


def test_missing_corrupt_or_legacy_files_raise_corrupt(tmp_path):
    with pytest.raises(KeywordIndexCorrupt):
        KeywordIndex.load(tmp_path / "nothing-here")
    KeywordIndex.build(tmp_path / "c", list(DOCS), list(DOCS.values()))
    (tmp_path / "c" / "meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(KeywordIndexCorrupt):
        KeywordIndex.load(tmp_path / "c")
    KeywordIndex.build(tmp_path / "d", list(DOCS), list(DOCS.values()))
    for segment_file in (tmp_path / "d").glob("*.term"):
        segment_file.unlink()  # a segment the last commit lists is gone
    with pytest.raises(KeywordIndexCorrupt):
        KeywordIndex.load(tmp_path / "d")
    # The bm25s layout from before tantivy: rebuilt by the store, never read.
    legacy = tmp_path / "legacy"
    (legacy / "bm25").mkdir(parents=True)
    (legacy / "chunks.json").write_text(json.dumps({"format": 1, "ids": [], "texts": []}), encoding="utf-8")
    assert is_legacy(legacy)
    with pytest.raises(KeywordIndexCorrupt, match="bm25s"):
        KeywordIndex.load(legacy)


def test_add_refuses_mismatched_lengths_and_changes_nothing(index):
    with pytest.raises(ValueError):
        index.add(["a", "b"], ["only one"])
    assert len(index) == 4


def test_query_syntax_is_words_not_operators(index):
    # tantivy's query language would read these as fields, ranges or phrases; here they are words.
    assert index.search('text:"token" AND [a TO z] OR id:d1:0 ^2 ~ *', k=5)[0][0] == "d1:1"
    assert index.search("x" * 10_000, k=5) == []
    index.add(["long:0"], ["y" * 100_000 + " glacier"])
    assert index.search("glacier", k=5)[0][0] == "long:0"


def test_searches_see_each_commit_whole(index):
    before = index.search("redis", k=5)
    index.update(remove=["d1:1"], add_ids=["d1:1"], add_texts=["Redis keeps the sessions now."])
    after = index.search("redis", k=5)
    assert [i for i, _ in before] == [i for i, _ in after] == ["d1:1"]
    assert index.search("token bucket", k=5) == []
    assert len(index) == 4
