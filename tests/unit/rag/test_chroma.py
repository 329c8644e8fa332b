"""The embedded Chroma store: vectors go in precomputed, and a text without one is refused rather than
embedded by Chroma's default function (which would download a model)."""

from __future__ import annotations

import pytest

from services.rag.chroma import ChromaStore, PrecomputedOnly


async def test_precomputed_vectors_in_and_no_embedding_by_chroma(tmp_path) -> None:
    store = ChromaStore(None, tmp_path / "chroma")
    await store.start()
    try:
        name = "goblin_col_unit"
        await store.upsert(
            name, ["d:0", "d:1"], [[1.0, 0.0], [0.0, 1.0]], ["first", "second"], [{"document_id": "d"}] * 2
        )
        assert await store.count(name) == 2
        assert sorted(c.id for c in await store.all_chunks(name)) == ["d:0", "d:1"]
        nearest = await store.query(name, [1.0, 0.1], 1)
        assert nearest[0].id == "d:0" and nearest[0].cosine > 0.99
        # A text without its vector reaches the embedding function, which refuses.
        with pytest.raises(Exception, match="precomputed"):
            store._collection(name).add(ids=["d:2"], documents=["no vector"])
        assert await store.count(name) == 2
        with pytest.raises(RuntimeError):
            PrecomputedOnly()(["text"])
        await store.drop(name)
        assert name not in await store.collection_names()
    finally:
        await store.stop()
