"""The BM25 keyword index: add, remove, search, persistence and corruption."""

from __future__ import annotations

import json

import pytest

from services.rag.keyword import KeywordIndex, KeywordIndexCorrupt

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


def test_save_and_load_round_trip(index, tmp_path):
    target = tmp_path / "kw" / "col1"
    index.save(target)
    loaded = KeywordIndex.load(target)
    assert len(loaded) == 4
    assert loaded.search("token bucket", k=2) == index.search("token bucket", k=2)
    # Saving again replaces the directory atomically and leaves no staging directories behind.
    loaded.remove(["d1:1"])
    loaded.save(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["col1"]
    assert len(KeywordIndex.load(target)) == 3


def test_save_an_empty_index(tmp_path):
    KeywordIndex().save(tmp_path / "empty")
    assert len(KeywordIndex.load(tmp_path / "empty")) == 0


def test_missing_or_corrupt_files_raise_corrupt(index, tmp_path):
    with pytest.raises(KeywordIndexCorrupt):
        KeywordIndex.load(tmp_path / "nothing-here")
    index.save(tmp_path / "c")
    (tmp_path / "c" / "chunks.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(KeywordIndexCorrupt):
        KeywordIndex.load(tmp_path / "c")
    index.save(tmp_path / "d")
    payload = json.loads((tmp_path / "d" / "chunks.json").read_text(encoding="utf-8"))
    payload["ids"].append("extra")
    payload["texts"].append("an extra chunk the matrix does not know")
    (tmp_path / "d" / "chunks.json").write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(KeywordIndexCorrupt):
        KeywordIndex.load(tmp_path / "d")


def test_add_refuses_mismatched_lengths():
    with pytest.raises(ValueError):
        KeywordIndex().add(["a", "b"], ["only one"])
