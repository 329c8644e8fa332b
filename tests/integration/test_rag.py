"""RAG end to end over HTTPS through the gateway, with the real suite: real embedded Chroma (and a Chroma
server started here with ``chroma run``), real MiniLM embeddings from the inference service, real
Postgres. Ingest a small corpus of text, Markdown, HTML and PDF, query it, re-ingest, replace, delete,
and look into the stores directly to see what is (and is not) there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from goblin_tools.suite import Suite, free_ports, start_suite
from services.rag.keyword import KeywordIndex
from tests.integration.rag_support import db_rows, make_pdf
from tests.unit.common.test_secrets import SAMPLES

SECRET = SAMPLES["github_token"]

CORPUS = {
    "volcanoes.txt": (
        "text/plain",
        "Volcanoes\n\nA volcano is a rupture in the crust of a planet through which lava, volcanic ash and "
        "gases escape from a magma chamber below the surface. Mount Etna in Sicily is one of the most "
        "active volcanoes in the world.\n\nShield volcanoes such as Mauna Loa are built almost entirely of "
        "fluid lava flows.",
    ),
    "sourdough.md": (
        "text/markdown",
        "# Sourdough baking\n\n## Starter\n\nA sourdough starter is a culture of wild yeast and lactic acid "
        "bacteria kept alive by feeding it flour and water every day.\n\n## Proofing\n\nThe dough proofs "
        "overnight in the refrigerator, which slows fermentation and deepens the sour flavour.",
    ),
    "kubernetes.html": (
        "text/html",
        "<html><head><title>Kubernetes pods</title></head><body><h1>Pods</h1><p>A pod is the smallest "
        "deployable unit in Kubernetes: one or more containers that share storage and a network "
        "namespace.</p><h2>Probes</h2><p>A readiness probe tells the kubelet when a container can take "
        "traffic; a liveness probe restarts a container that hangs.</p></body></html>",
    ),
}
PDF_LINES = [
    "The migration of the Arctic tern is the longest of any bird.",
    "Each year it flies from its Arctic breeding grounds to the Antarctic and back.",
]


def collection_name() -> str:
    return f"c{uuid.uuid4().hex[:12]}"


def upload(client: httpx.Client, collection: str, name: str, content: bytes, content_type: str, **fields: str):
    files = {"file": (name, content, content_type)}
    return client.post(f"/v1/collections/{collection}/documents", files=files, data=fields)


def ingest_corpus(client: httpx.Client, collection: str) -> dict[str, dict]:
    documents = {}
    for name, (content_type, text) in CORPUS.items():
        reply = upload(client, collection, name, text.encode(), content_type, document_id=name.split(".")[0])
        assert reply.status_code == 201, reply.text
        documents[name] = reply.json()
    reply = upload(client, collection, "tern.pdf", make_pdf(PDF_LINES, title="Arctic tern"), "application/pdf")
    assert reply.status_code == 201, reply.text
    documents["tern.pdf"] = reply.json()
    return documents


def query(client: httpx.Client, collection: str, text: str, **extra) -> dict:
    reply = client.post(f"/v1/collections/{collection}/query", json={"query": text, **extra})
    assert reply.status_code == 200, reply.text
    return reply.json()


def chroma_chunks(suite: Suite, collection_id: str) -> dict:
    """Everything Chroma holds for a collection, read directly (embedded: the suite's files)."""
    import chromadb
    from chromadb.config import Settings

    from services.rag.chroma import PrecomputedOnly

    settings = Settings(anonymized_telemetry=False)
    url = suite.extra.get("CHROMA_URL")
    if url:
        host, port = url.removeprefix("http://").split(":")
        client = chromadb.HttpClient(host=host, port=int(port), settings=settings)
    else:
        client = chromadb.PersistentClient(path=str(suite.home / "chroma"), settings=settings)
    names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
    if f"goblin_{collection_id}" not in names:
        return {"ids": [], "documents": [], "metadatas": [], "exists": False}
    collection = client.get_collection(f"goblin_{collection_id}", embedding_function=PrecomputedOnly())
    got = collection.get(include=["documents", "metadatas"])
    return {"ids": got["ids"], "documents": got["documents"], "metadatas": got["metadatas"], "exists": True}


def keyword_files(suite: Suite, collection_id: str) -> str:
    directory = suite.home / "rag" / "keyword" / collection_id
    if not directory.exists():
        return ""
    return "\n".join(p.read_bytes().decode("latin-1") for p in sorted(directory.rglob("*")) if p.is_file())


def keyword_hits(suite: Suite, collection_id: str, words: str) -> list[str]:
    """The chunk ids the collection's keyword index on disk (tantivy, opened read-only beside the running
    service) matches for these words: what the index holds, not what a query returns after fusion."""
    index = KeywordIndex.load(suite.home / "rag" / "keyword" / collection_id)
    return [chunk for chunk, _ in index.search(words, 50)]


@pytest.fixture(scope="module")
def corpus(suite: Suite) -> Iterator[tuple[str, dict]]:
    """One collection with the corpus in it, for the read-only tests."""
    name = collection_name()
    with suite.admin_client() as client:
        reply = client.post("/v1/collections", json={"name": name, "description": "the test corpus"})
        assert reply.status_code == 201, reply.text
        documents = ingest_corpus(client, name)
    yield name, {"collection": reply.json(), "documents": documents}


def test_collections_are_created_listed_and_refuse_duplicates(suite: Suite, corpus) -> None:
    name, info = corpus
    with suite.admin_client() as client:
        listed = client.get("/v1/collections").json()["data"]
        mine = next(c for c in listed if c["name"] == name)
        assert mine["document_count"] == 4 and mine["chunk_count"] >= 4
        assert client.get(f"/v1/collections/{info['collection']['id']}").json()["name"] == name
        again = client.post("/v1/collections", json={"name": name})
        assert again.status_code == 409, again.text


def test_every_format_is_indexed_with_titles(suite: Suite, corpus) -> None:
    name, info = corpus
    docs = info["documents"]
    assert docs["sourdough.md"]["title"] == "Sourdough baking"
    assert docs["kubernetes.html"]["title"] == "Kubernetes pods"
    assert docs["tern.pdf"]["title"] == "Arctic tern"
    assert docs["tern.pdf"]["content_type"] == "application/pdf"
    with suite.admin_client() as client:
        listed = client.get(f"/v1/collections/{name}/documents").json()
        assert listed["total"] == 4
        one = client.get(f"/v1/collections/{name}/documents/sourdough").json()
        assert one["chunk_count"] >= 1 and one["content_sha256"] == docs["sourdough.md"]["content_sha256"]


@pytest.mark.parametrize(
    ("question", "document", "words"),
    [
        ("Which volcano in Sicily is very active?", "volcanoes", "Etna"),
        ("how do I keep a sourdough starter alive", "sourdough", "flour and water"),
        ("which Kubernetes probe restarts a container that hangs", "kubernetes", "liveness probe"),
        ("which bird has the longest migration", None, "Arctic tern"),
    ],
)
def test_a_query_cites_the_right_chunk(suite: Suite, corpus, question: str, document: str | None, words: str) -> None:
    name, info = corpus
    with suite.admin_client() as client:
        answer = query(client, name, question, top_k=3)
    best = answer["hits"][0]
    expected = document or info["documents"]["tern.pdf"]["id"]
    assert best["document_id"] == expected, answer
    assert words in best["text"]
    assert best["chunk_id"].startswith(f"{expected}:")
    assert answer["hit"] is True and best["score"] >= answer["min_score"]
    assert all(-1.0 <= h["score"] <= 1.0 and h["fused_score"] > 0 for h in answer["hits"])


def test_an_unrelated_question_is_not_a_hit_and_filters_narrow(suite: Suite, corpus) -> None:
    name, _ = corpus
    with suite.admin_client() as client:
        far = query(client, name, "quarterly tax filing deadlines for corporations", min_score=0.6)
        assert far["hit"] is False
        filtered = query(client, name, "volcano lava", filter={"lang": "fr"})
        assert filtered["hits"] == [] and filtered["hit"] is False


def rag_metric(suite: Suite, sample: str) -> float:
    """The value of one sample line of the rag service's /metrics (0 when absent)."""
    for line in httpx.get(suite.metrics_url("rag"), timeout=10).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_hit_rate_metrics_count_hits_misses_and_best_scores(suite: Suite, corpus) -> None:
    # The design notes' hit rate is goblin_rag_queries_total{hit="true"} over all queries, with the best
    # score's histogram beside it.
    name, _ = corpus
    samples = (
        'goblin_rag_queries_total{hit="true"}',
        'goblin_rag_queries_total{hit="false"}',
        "goblin_rag_best_score_count",
        'goblin_rag_best_score_bucket{le="0.3"}',
    )
    before = [rag_metric(suite, s) for s in samples]
    with suite.admin_client() as client:
        assert query(client, name, "Which volcano in Sicily is very active?")["hit"] is True
        missed = query(client, name, "Which volcano in Sicily is very active?", min_score=0.99)
        assert missed["hit"] is False and missed["best_score"] > 0.3
    after = [rag_metric(suite, s) for s in samples]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 2, 0]


def test_metadata_filters_select_documents(suite: Suite) -> None:
    name = collection_name()
    with suite.admin_client() as client:
        assert client.post("/v1/collections", json={"name": name}).status_code == 201
        for lang, text in (("en", "The cat sat on the warm mat."), ("de", "The cat slept on the cold mat.")):
            reply = client.post(
                f"/v1/collections/{name}/documents",
                json={"text": text, "document_id": lang, "metadata": {"lang": lang}},
            )
            assert reply.status_code == 201, reply.text
        hits = query(client, name, "cat on a mat", filter={"lang": "de"})["hits"]
        assert [h["document_id"] for h in hits] == ["de"] and hits[0]["metadata"] == {"lang": "de"}
        assert client.delete(f"/v1/collections/{name}").status_code == 200


def test_reingest_is_a_no_op_and_changed_content_replaces(suite: Suite) -> None:
    name = collection_name()
    with suite.admin_client() as client:
        created = client.post("/v1/collections", json={"name": name}).json()
        first = client.post(
            f"/v1/collections/{name}/documents",
            json={"text": "Copper conducts electricity well.", "document_id": "metal"},
        )
        assert first.status_code == 201
        again = client.post(
            f"/v1/collections/{name}/documents",
            json={"text": "Copper conducts electricity well.", "document_id": "metal"},
        )
        assert again.status_code == 200 and again.json()["unchanged"] is True
        assert again.json()["content_sha256"] == first.json()["content_sha256"]
        # Without a document id the content hash finds the same document.
        same = client.post(f"/v1/collections/{name}/documents", json={"text": "Copper conducts electricity well."})
        assert same.status_code == 200 and same.json()["id"] == "metal"
        changed = client.post(
            f"/v1/collections/{name}/documents",
            json={"text": "Titanium is strong and light; aircraft use it.", "document_id": "metal"},
        )
        assert changed.status_code == 201 and changed.json()["unchanged"] is False
        chunks = chroma_chunks(suite, created["id"])
        assert chunks["ids"] == ["metal:0"]
        assert "Titanium" in chunks["documents"][0] and "Copper" not in " ".join(chunks["documents"])
        assert keyword_hits(suite, created["id"], "copper") == []
        assert keyword_hits(suite, created["id"], "titanium aircraft") == ["metal:0"]
        hits = query(client, name, "copper electricity")["hits"]
        assert all("Copper" not in h["text"] for h in hits)
        assert client.get(f"/v1/collections/{name}/documents").json()["total"] == 1
        client.delete(f"/v1/collections/{name}")


def test_delete_removes_vectors_and_keywords(suite: Suite) -> None:
    name = collection_name()
    with suite.admin_client() as client:
        created = client.post("/v1/collections", json={"name": name}).json()
        for doc, text in (
            ("keep", "Penguins live in the southern hemisphere."),
            ("drop", "Zeppelins float on hydrogen."),
        ):
            client.post(f"/v1/collections/{name}/documents", json={"text": text, "document_id": doc})
        assert client.delete(f"/v1/collections/{name}/documents/drop").status_code == 200
        assert client.get(f"/v1/collections/{name}/documents/drop").status_code == 404
        assert client.delete(f"/v1/collections/{name}/documents/drop").status_code == 404
        chunks = chroma_chunks(suite, created["id"])
        assert [m["document_id"] for m in chunks["metadatas"]] == ["keep"]
        assert keyword_hits(suite, created["id"], "zeppelins hydrogen") == []
        assert keyword_hits(suite, created["id"], "penguins") == ["keep:0"]
        assert all(h["document_id"] == "keep" for h in query(client, name, "zeppelin hydrogen")["hits"])
        assert client.delete(f"/v1/collections/{name}").status_code == 200
        assert chroma_chunks(suite, created["id"])["exists"] is False
        assert keyword_files(suite, created["id"]) == ""
        assert db_rows(suite, "SELECT 1 FROM rag.search_documents WHERE collection_id = $1", created["id"]) == []
        assert client.get(f"/v1/collections/{name}").status_code == 404


def test_a_secret_in_a_document_is_stored_nowhere(suite: Suite) -> None:
    name = collection_name()
    text = f"Deploy notes\n\nThe CI token is {SECRET} and must be rotated monthly by the release manager."
    with suite.admin_client() as client:
        created = client.post("/v1/collections", json={"name": name}).json()
        reply = client.post(
            f"/v1/collections/{name}/documents",
            json={"text": text, "title": f"token {SECRET}", "metadata": {"note": SECRET}},
        )
        assert reply.status_code == 201, reply.text
        document = reply.json()
        assert document["redactions"] == 3
        assert SECRET not in reply.text
        hits = query(client, name, "who rotates the CI token")["hits"]
        assert "[REDACTED:github_token]" in hits[0]["text"] and SECRET not in json.dumps(hits)
        metrics = httpx.get(suite.metrics_url("rag")).text
    assert 'goblin_security_secrets_detected_total{location="document_indexing"}' in metrics
    chunks = chroma_chunks(suite, created["id"])
    assert SECRET not in json.dumps(chunks)
    assert SECRET not in keyword_files(suite, created["id"]) and SECRET.lower() not in keyword_files(
        suite, created["id"]
    )
    assert keyword_hits(suite, created["id"], SECRET) == []
    assert keyword_hits(suite, created["id"], "rotated monthly release manager") != []
    rows = db_rows(suite, "SELECT * FROM rag.search_documents WHERE collection_id = $1", created["id"])
    assert rows and SECRET not in json.dumps([dict(r) for r in rows], default=str)
    assert SECRET not in suite.log_path.read_text(errors="replace")


@pytest.mark.parametrize(
    ("send", "status"),
    [
        (lambda c, n: c.post(f"/v1/collections/{n}/documents", json={"text": ""}), 400),
        (lambda c, n: c.post(f"/v1/collections/{n}/documents", json={"text": "   \n  "}), 400),
        (lambda c, n: upload(c, n, "a.docx", b"PK\x03\x04 not a supported type", "application/msword"), 400),
        (lambda c, n: upload(c, n, "fake.pdf", b"%PDF-1.7 this is not really a pdf", "application/pdf"), 400),
        (lambda c, n: upload(c, n, "blob.bin", b"\x00\x01\x02binary", "application/octet-stream"), 400),
        (
            lambda c, n: c.post(
                f"/v1/collections/{n}/documents",
                content=b"x" * (12 * 1024 * 1024),
                headers={"Content-Type": "application/json"},
            ),
            413,
        ),  # fmt: skip
        (
            lambda c, n: c.post(
                f"/v1/collections/{n}/documents", content=b"text", headers={"Content-Type": "text/plain"}
            ),
            415,
        ),
        (lambda c, n: c.post(f"/v1/collections/{n}/query", json={"query": "x", "top_k": 1000000}), 400),
        (lambda c, n: c.post(f"/v1/collections/{n}/query", json={"query": ""}), 400),
        (lambda c, n: c.post("/v1/collections/no-such-collection/query", json={"query": "x"}), 404),
        (lambda c, n: c.post("/v1/collections/no-such-collection/documents", json={"text": "x"}), 404),
    ],
)
def test_bad_input_is_a_clear_4xx_and_stores_nothing(suite: Suite, send: Callable, status: int) -> None:
    name = collection_name()
    with suite.admin_client() as client:
        created = client.post("/v1/collections", json={"name": name}).json()
        reply = send(client, name)
        assert reply.status_code in (status, 422) if status == 400 else reply.status_code == status, reply.text
        assert reply.headers["content-type"].startswith("application/json") and reply.json()["error"]
        assert client.get(f"/v1/collections/{name}/documents").json()["total"] == 0
        client.delete(f"/v1/collections/{name}")
    assert db_rows(suite, "SELECT 1 FROM rag.search_documents WHERE collection_id = $1", created["id"]) == []


def test_top_k_of_a_million_names_the_field(suite: Suite, corpus) -> None:
    name, _ = corpus
    with suite.admin_client() as client:
        reply = client.post(f"/v1/collections/{name}/query", json={"query": "volcano", "top_k": 1000000})
    assert reply.status_code in (400, 422) and "top_k" in reply.text


def test_neighbouring_chunks_merge_into_one_passage(suite: Suite) -> None:
    name = collection_name()
    paragraphs = [f"Paragraph {i} about lighthouse keeper number {i} and the foghorn schedule." * 6 for i in range(8)]
    with suite.admin_client() as client:
        client.post("/v1/collections", json={"name": name})
        reply = client.post(
            f"/v1/collections/{name}/documents", json={"text": "\n\n".join(paragraphs), "document_id": "light"}
        )
        assert reply.status_code == 201 and reply.json()["chunk_count"] >= 3, reply.text
        plain = query(client, name, "lighthouse keeper foghorn schedule", top_k=6)["hits"]
        merged = query(client, name, "lighthouse keeper foghorn schedule", top_k=6, merge_neighbors=True)["hits"]
        assert len(merged) < len(plain)
        assert any("-" in h["chunk_id"].rpartition(":")[2] for h in merged)
        client.delete(f"/v1/collections/{name}")


# -- a Chroma server (CHROMA_URL) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_suite(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str
) -> Iterator[Suite]:
    """A second suite whose rag service uses a Chroma server this fixture starts with ``chroma run``."""
    data = tmp_path_factory.mktemp("chroma-server")
    (port,) = free_ports(1)
    chroma = subprocess.Popen(
        [str(Path(sys.executable).parent / "chroma"), "run", "--path", str(data), "--port", str(port),
         "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or chroma.poll() is not None:
                raise RuntimeError("the Chroma server did not start")
            time.sleep(0.3)
        suite = start_suite(
            tmp_path_factory.mktemp("rag-server-suite"),
            DATABASE_URL=new_database(),
            REDIS_URL=redis_url,
            CHROMA_URL=f"http://127.0.0.1:{port}",
        )
        try:
            suite.wait_ready()
            yield suite
        finally:
            suite.stop()
    finally:
        chroma.terminate()
        chroma.wait(timeout=30)


def test_a_chroma_server_holds_the_vectors(server_suite: Suite) -> None:
    name = collection_name()
    with server_suite.admin_client() as client:
        created = client.post("/v1/collections", json={"name": name}).json()
        documents = ingest_corpus(client, name)
        assert len(documents) == 4
        best = query(client, name, "Which volcano in Sicily is very active?")["hits"][0]
        assert best["document_id"] == "volcanoes"
        assert len(chroma_chunks(server_suite, created["id"])["ids"]) >= 4
        assert not (server_suite.home / "chroma").exists() or not any((server_suite.home / "chroma").iterdir())
        client.delete(f"/v1/collections/{name}/documents/volcanoes")
        ids = chroma_chunks(server_suite, created["id"])["ids"]
        assert ids and not any(i.startswith("volcanoes:") for i in ids)
        assert client.delete(f"/v1/collections/{name}").status_code == 200
        assert chroma_chunks(server_suite, created["id"])["exists"] is False


def run_ingest(suite: Suite, *args: str) -> subprocess.CompletedProcess:
    env = {**suite.env, "COLUMNS": "200"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "goblin"), "ingest", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_goblin_ingest_uploads_summarises_and_resumes(suite: Suite, tmp_path: Path) -> None:
    name = collection_name()
    (tmp_path / "a.txt").write_text("Otters hold hands while they sleep so they do not drift apart.")
    (tmp_path / "b.md").write_text("# Bees\n\nHoney bees dance to tell each other where the flowers are.")
    (tmp_path / "fake.pdf").write_bytes(b"%PDF-1.7 not really")
    (tmp_path / "notes.docx").write_bytes(b"skipped: not a supported suffix in a directory")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.html").write_text(
        "<html><title>Owls</title><body><p>Owls turn their heads far.</p></body></html>"
    )

    first = run_ingest(suite, str(tmp_path), "--collection", name)
    assert first.returncode == 1, first.stderr  # the fake PDF failed
    assert "fake.pdf" in first.stderr and "added or replaced" in first.stderr
    with suite.admin_client() as client:
        listed = client.get(f"/v1/collections/{name}/documents").json()
        assert listed["total"] == 2
        assert {d["source"] for d in listed["data"]} == {"a.txt", "b.md"}

    (tmp_path / "fake.pdf").unlink()
    second = run_ingest(suite, str(tmp_path), "--collection", name, "--recursive")
    assert second.returncode == 0, second.stderr
    rows = [line for line in second.stderr.splitlines() if "│" in line]
    counts = {cells[0]: cells[1] for cells in ([c.strip() for c in r.split("│") if c.strip()] for r in rows)}
    assert counts.get("added or replaced") == "1" and counts.get("unchanged") == "2", second.stderr
    state_files = list((suite.home / "ingest").glob("*.json"))
    assert any(str(tmp_path / "sub" / "c.html") in f.read_text() for f in state_files)

    (tmp_path / "a.txt").write_text("Sea otters use rocks as tools to open shellfish.")
    third = run_ingest(suite, str(tmp_path / "a.txt"), "--collection", name)
    assert third.returncode == 0, third.stderr
    with suite.admin_client() as client:
        listed = client.get(f"/v1/collections/{name}/documents").json()
        assert listed["total"] == 3  # a.txt replaced in place, not added beside
        hits = query(client, name, "otters rocks shellfish")["hits"]
        assert "rocks" in hits[0]["text"]
        client.delete(f"/v1/collections/{name}")
