"""The per-collection keyword store: opening, migration from the bm25s format, and rebuilding from
Chroma when the index on disk does not match it."""

from __future__ import annotations

import json

import pytest

from services.rag.keyword import KeywordIndex
from services.rag.keyword_store import KeywordStore
from tests.unit.rag.fakes import FakeChroma

CHROMA = "goblin_col_a"


@pytest.fixture
async def chroma() -> FakeChroma:
    store = FakeChroma()
    await store.upsert(
        CHROMA,
        ["d:0", "d:1"],
        [[1.0], [1.0]],
        ["Glaciers carve valleys.", "Volcanoes build islands."],
        [
            {"document_id": "d", "title": "Earth", "heading": "Ice"},
            {"document_id": "d", "title": "Earth", "heading": ""},
        ],
    )
    return store


async def test_a_missing_index_is_built_from_chroma(tmp_path, chroma) -> None:
    store = KeywordStore(tmp_path / "kw", chroma)  # type: ignore[arg-type]
    index = await store.index("col_a", CHROMA)
    assert sorted(index.ids()) == ["d:0", "d:1"]
    # The title and heading path are searched too, as at ingestion (naming.search_text).
    assert (await store.search("col_a", CHROMA, "ice glaciers", 5))[0][0] == "d:0"
    assert len(KeywordIndex.load(tmp_path / "kw" / "col_a")) == 2


async def test_a_bm25s_index_on_disk_is_migrated(tmp_path, chroma, caplog) -> None:
    legacy = tmp_path / "kw" / "col_a"
    (legacy / "bm25").mkdir(parents=True)
    (legacy / "bm25" / "params.index.json").write_text("{}", encoding="utf-8")
    (legacy / "chunks.json").write_text(
        json.dumps({"format": 1, "k1": 1.5, "b": 0.75, "ids": ["d:0"], "texts": ["stale"]}), encoding="utf-8"
    )
    store = KeywordStore(tmp_path / "kw", chroma)  # type: ignore[arg-type]
    index = await store.index("col_a", CHROMA)
    assert len(index) == 2 and (await store.search("col_a", CHROMA, "volcanoes", 5))[0][0] == "d:1"
    assert not (legacy / "chunks.json").exists() and not (legacy / "bm25").exists()
    assert any("bm25s" in getattr(r, "reason", "") for r in caplog.records)
    # A second process start opens the tantivy index as it is.
    assert len(await KeywordStore(tmp_path / "kw", chroma).index("col_a", CHROMA)) == 2  # type: ignore[arg-type]


async def test_an_index_that_disagrees_with_chroma_is_rebuilt(tmp_path, chroma) -> None:
    # As a crash between the Chroma write and the keyword commit, or a backup taken at two moments.
    KeywordIndex.build(tmp_path / "kw" / "col_a", ["d:0"], ["Glaciers carve valleys."])
    store = KeywordStore(tmp_path / "kw", chroma)  # type: ignore[arg-type]
    index = await store.index("col_a", CHROMA)
    assert sorted(index.ids()) == ["d:0", "d:1"]


async def test_replace_is_one_commit_and_drop_removes_the_files(tmp_path, chroma) -> None:
    store = KeywordStore(tmp_path / "kw", chroma)  # type: ignore[arg-type]
    await store.replace("col_a", CHROMA, remove=["d:0"], add_ids=["e:0"], add_texts=["Rivers reach the sea."])
    assert await store.search("col_a", CHROMA, "glaciers", 5) == []
    assert (await store.search("col_a", CHROMA, "rivers", 5))[0][0] == "e:0"
    await store.drop("col_a")
    assert not (tmp_path / "kw" / "col_a").exists()
    with pytest.raises(ValueError):
        store.path("../escape")
