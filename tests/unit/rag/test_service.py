"""The rag service's logic with in-memory stores: tenants apart, idempotent and atomic ingestion,
redaction before chunking, retrieval over ready documents only, recovery at start."""

from __future__ import annotations

import shutil

import pytest

from services.common.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from services.common.secrets import DetectionPoint, SecretGuard, SecretPolicy, SecretsBlocked
from services.rag.ingest import Chunker, load_tokenizer
from services.rag.keyword import KeywordIndex
from services.rag.keyword_store import KeywordStore
from services.rag.retrieval import Hit, QueryParams, RetrievalSettings, Retriever, merge_neighbors
from services.rag.service import Caller, NewDocument, RagService
from tests.unit.rag.fakes import FakeChroma, FakeEmbedder, FakeRepository

ALICE = Caller(tenant_id="alice")
BOB = Caller(tenant_id="bob")
SECRET = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture
def parts(tmp_path, tokenizer):
    repository, chroma, embedder = FakeRepository(), FakeChroma(), FakeEmbedder()
    keywords = KeywordStore(tmp_path / "kw", chroma)  # type: ignore[arg-type]
    guard = SecretGuard(DetectionPoint.document_indexing)
    service = RagService(
        repository, chroma, keywords, embedder, guard, Chunker(tokenizer, chunk_tokens=32, overlap_tokens=4)
    )  # type: ignore[arg-type]
    retriever = Retriever(repository, chroma, keywords, embedder, RetrievalSettings(min_score=0.2))  # type: ignore[arg-type]
    return service, retriever, repository, chroma, keywords


async def test_collections_are_per_tenant(parts) -> None:
    service, *_ = parts
    created = await service.create_collection(ALICE, "notes", "")
    assert (await service.collection(ALICE, created.id)).name == "notes"
    for ref in ("notes", created.id):
        with pytest.raises(NotFound):
            await service.collection(BOB, ref)
    assert (await service.create_collection(BOB, "notes", "")).id != created.id
    with pytest.raises(AlreadyExists):
        await service.create_collection(ALICE, "notes", "")
    with pytest.raises(Unauthenticated):
        await service.list_collections(Caller(tenant_id=""))
    with pytest.raises(InvalidArgument):
        await service.create_collection(ALICE, "Bad Name", "")


async def test_same_bytes_are_a_no_op_and_a_changed_document_replaces_its_chunks(parts) -> None:
    service, retriever, repository, chroma, keywords = parts
    collection = await service.create_collection(ALICE, "c1", "")
    first = await service.add_document(ALICE, "c1", NewDocument(text="Alpha beta gamma.", document_id="d"))
    again = await service.add_document(ALICE, "c1", NewDocument(text="Alpha beta gamma.", document_id="d"))
    assert not first.unchanged and again.unchanged and again.document.id == "d"
    calls = len(service.embedder.calls)
    assert (await service.add_document(ALICE, "c1", NewDocument(text="Alpha beta gamma."))).document.id == "d"
    assert len(service.embedder.calls) == calls  # nothing embedded for a no-op
    long_text = "\n\n".join(f"Paragraph {i} tells of delta epsilon zeta and more words to fill it." for i in range(12))
    replaced = await service.add_document(ALICE, "c1", NewDocument(text=long_text, document_id="d"))
    assert replaced.document.chunk_count > 1
    ids = await chroma.document_chunk_ids(collection.chroma_name, "d")
    assert sorted(ids) == sorted(f"d:{i}" for i in range(replaced.document.chunk_count))
    shorter = await service.add_document(ALICE, "c1", NewDocument(text="Only eta now.", document_id="d"))
    assert shorter.document.chunk_count == 1
    assert await chroma.document_chunk_ids(collection.chroma_name, "d") == ["d:0"]
    index = await keywords.index(collection.id, collection.chroma_name)
    assert index.ids() == ["d:0"] and index.search("epsilon", 5) == []


async def test_a_failure_half_way_leaves_nothing(parts) -> None:
    service, retriever, repository, chroma, keywords = parts
    collection = await service.create_collection(ALICE, "c2", "")
    chroma.fail_upsert = True
    with pytest.raises(ConnectionError):
        await service.add_document(ALICE, "c2", NewDocument(text="Some text to index.", document_id="x"))
    assert await repository.get_document(collection.id, "x", ready_only=False) is None
    assert await chroma.document_chunk_ids(collection.chroma_name, "x") == []
    assert len(await keywords.index(collection.id, collection.chroma_name)) == 0
    chroma.fail_upsert = False
    result = await retriever.query(collection, QueryParams(query="text to index"))
    assert result.hits == [] and result.hit is False


async def test_an_indexing_document_is_invisible_and_recovery_removes_it(parts) -> None:
    service, retriever, repository, chroma, keywords = parts
    collection = await service.create_collection(ALICE, "c3", "")
    await service.add_document(ALICE, "c3", NewDocument(text="Walruses have tusks.", document_id="w"))
    row = await repository.get_document(collection.id, "w")
    await repository.begin_document(row)  # as if a replacement were under way, or crashed
    assert (await retriever.query(collection, QueryParams(query="walrus tusks"))).hits == []
    assert (await service.list_documents(ALICE, "c3", 0, 0))[1] == 0
    await chroma.ensure("goblin_col_orphan")
    await service.recover()
    assert await repository.get_document(collection.id, "w", ready_only=False) is None
    assert await chroma.document_chunk_ids(collection.chroma_name, "w") == []
    assert "goblin_col_orphan" not in await chroma.collection_names()


async def test_secrets_are_redacted_before_chunking_everywhere(parts) -> None:
    service, retriever, repository, chroma, keywords = parts
    collection = await service.create_collection(ALICE, "c4", "")
    text = f"# Token {SECRET}\n\nThe deploy token is {SECRET} today."
    added = await service.add_document(
        ALICE,
        "c4",
        NewDocument(text=text, filename="n.md", title=f"t {SECRET}", metadata={"k": SECRET}, document_id="s"),
    )
    # the heading (as the title the parser found and as the heading path), the body, the title, the metadata
    assert added.document.redactions == 5
    stored = str(chroma.collections[collection.chroma_name]) + str(added.document)
    assert SECRET not in stored and "[REDACTED:github_token]" in stored
    index = await keywords.index(collection.id, collection.chroma_name)
    # The secret is no word of the index (what it keeps are the words of the redacted text).
    assert index.search(SECRET, 5) == [] and index.search("deploy token", 5)[0][0].startswith("s:")
    assert all(SECRET not in t for call in service.embedder.calls for t in call)


async def test_the_block_policy_refuses_a_document_with_a_secret(parts) -> None:
    service, *_ = parts
    await service.create_collection(ALICE, "c5", "")
    service.guard = SecretGuard(DetectionPoint.document_indexing, policy=SecretPolicy.block)
    with pytest.raises(SecretsBlocked):
        await service.add_document(ALICE, "c5", NewDocument(text=f"key {SECRET}"))
    assert (await service.list_documents(ALICE, "c5", 0, 0))[1] == 0


async def test_query_fuses_filters_and_reports_cosine(parts) -> None:
    service, retriever, *_ = parts
    collection = await service.create_collection(ALICE, "c6", "")
    for doc, text, lang in (
        ("a", "Glaciers carve valleys slowly over millennia.", "en"),
        ("b", "Deserts receive very little rain each year.", "en"),
        ("c", "Glaciers melt faster in warm summers.", "de"),
    ):
        await service.add_document(ALICE, "c6", NewDocument(text=text, document_id=doc, metadata={"lang": lang}))
    result = await retriever.query(collection, QueryParams(query="glaciers valleys", top_k=2))
    assert [h.document.id for h in result.hits][0] == "a"
    assert len(result.hits) == 2 and all(h.fused > 0 for h in result.hits)
    assert result.hit and result.best_score == max(h.cosine for h in result.hits)
    only_de = await retriever.query(collection, QueryParams(query="glaciers", filter={"lang": "de"}))
    assert [h.document.id for h in only_de.hits] == ["c"]
    strict = await retriever.query(collection, QueryParams(query="glaciers valleys", min_score=0.99))
    assert strict.hit is False and strict.min_score == 0.99
    with pytest.raises(InvalidArgument, match="top_k"):
        await retriever.query(collection, QueryParams(query="x", top_k=1_000_000))
    with pytest.raises(InvalidArgument, match="filter"):
        await retriever.query(collection, QueryParams(query="x", filter={"$where": "1"}))


def _hit(document_id: str, index: int, cosine: float, fake_doc, collection: str = "col_1") -> Hit:
    return Hit(
        fake_doc(collection),
        f"{document_id}:{index}",
        fake_doc(document_id),
        f"text {index}",
        index,
        "",
        cosine,
        1.0 / (index + 1),
    )


def test_merge_neighbors_joins_adjacent_chunks_in_reading_order() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Doc:
        id: str

    hits = [
        _hit("a", 3, 0.9, Doc),
        _hit("a", 2, 0.5, Doc),
        _hit("b", 4, 0.7, Doc),
        _hit("a", 4, 0.6, Doc),
        _hit("a", 9, 0.4, Doc),
        _hit("a", 5, 0.3, Doc, collection="col_2"),  # document "a" of another collection: not a neighbour
    ]
    merged = merge_neighbors(hits)
    assert [h.chunk_id for h in merged] == ["a:2-4", "b:4", "a:9", "a:5"]
    assert merged[0].text == "text 2\n\ntext 3\n\ntext 4" and merged[0].cosine == 0.9 and merged[0].index == 2


async def test_a_query_over_all_of_a_tenants_collections_sees_only_theirs(parts) -> None:
    service, retriever, repository, chroma, keywords = parts
    await service.create_collection(ALICE, "ice", "")
    await service.create_collection(ALICE, "fire", "")
    await service.create_collection(BOB, "bobs", "")
    # The same document id in two collections: two documents, both found, never confused.
    await service.add_document(ALICE, "ice", NewDocument(text="Glaciers carve deep valleys.", document_id="d"))
    await service.add_document(ALICE, "fire", NewDocument(text="Volcanoes erupt glowing lava.", document_id="d"))
    await service.add_document(BOB, "bobs", NewDocument(text="Glaciers carve valleys; bob's secret.", document_id="b"))
    mine = await service.list_collections(ALICE)
    glaciers = await retriever.query_many(mine, QueryParams(query="glaciers carve valleys", top_k=5))
    assert glaciers.hits[0].collection.name == "ice" and glaciers.hits[0].chunk_id == "d:0"
    assert {h.collection.name for h in glaciers.hits} <= {"ice", "fire"}
    assert all("secret" not in h.text for h in glaciers.hits)
    lava = await retriever.query_many(mine, QueryParams(query="volcanoes lava", top_k=5))
    fire = next(c for c in mine if c.name == "fire")
    assert (lava.hits[0].collection.name, lava.hits[0].document.collection_id) == ("fire", fire.id)
    # A tenant with no collections gets no hits; a filter no document matches searches nothing.
    assert (await retriever.query_many([], QueryParams(query="glaciers"))).hits == []
    filtered = await retriever.query_many(mine, QueryParams(query="glaciers", filter={"lang": "fr"}))
    assert filtered.hits == [] and filtered.hit is False


async def test_a_restart_over_a_bm25s_keyword_index_migrates_it_to_tantivy(parts, tmp_path) -> None:
    service, retriever, repository, chroma, keywords = parts
    collection = await service.create_collection(ALICE, "old", "")
    await service.add_document(ALICE, "old", NewDocument(text="Walruses have long tusks.", document_id="w"))
    # What the bm25s version left on disk for this collection.
    directory = keywords.path(collection.id)
    shutil.rmtree(directory)
    (directory / "bm25").mkdir(parents=True)
    (directory / "chunks.json").write_text('{"format": 1, "ids": [], "texts": []}', encoding="utf-8")
    restarted = KeywordStore(keywords.root, chroma)  # type: ignore[arg-type]
    again = RagService(repository, chroma, restarted, service.embedder, service.guard, service.chunker)
    await again.recover()
    assert not (directory / "chunks.json").exists()
    assert KeywordIndex.load(directory).search("walrus tusks", 5)[0][0] == "w:0"
