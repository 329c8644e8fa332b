"""bench.rag_quality: the metrics, the BEIR loader, the threshold choice, and a run on a tiny hand-made set."""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from bench import rag_quality as rq


def write_beir(directory: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple], unanswerable=()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus))
    (directory / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries))
    (directory / "qrels").mkdir(exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + ["\t".join(map(str, row)) for row in qrels]
    (directory / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    if unanswerable:
        (directory / rq.UNANSWERABLE_FILE).write_text("".join(json.dumps(row) + "\n" for row in unanswerable))
    return directory


def test_recall_counts_the_share_of_relevant_documents_in_the_first_k():
    relevant = {"a": 1, "b": 1}
    assert rq.recall_at(["x", "a", "y", "z", "w", "b"], relevant, 5) == 0.5
    assert rq.recall_at(["b", "a"], relevant, 5) == 1.0
    assert rq.recall_at([], relevant, 5) == 0.0
    assert rq.recall_at(["a"], {}, 5) == 0.0


def test_mrr_is_the_reciprocal_rank_of_the_first_relevant_document_within_k():
    assert rq.mrr_at(["x", "y", "a"], {"a": 1}, 10) == pytest.approx(1 / 3)
    assert rq.mrr_at(["a"], {"a": 1}, 10) == 1.0
    assert rq.mrr_at(["x", "y", "a"], {"a": 1}, 2) == 0.0


def test_ndcg_uses_the_graded_score_as_gain_and_the_ideal_order():
    # one relevant at rank 2: (1 / log2 3) / (1 / log2 2)
    assert rq.ndcg_at(["x", "a"], {"a": 1}, 10) == pytest.approx(1 / math.log2(3))
    # grades 2 and 1 in the wrong order
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert rq.ndcg_at(["b", "a"], {"a": 2, "b": 1}, 10) == pytest.approx(dcg / idcg)
    assert rq.ndcg_at(["a", "b"], {"a": 2, "b": 1}, 10) == pytest.approx(1.0)
    assert rq.ndcg_at(["x"], {"a": 1}, 10) == 0.0


def test_evaluate_averages_over_judged_queries_and_scores_a_missing_ranking_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    result = rq.evaluate({"q1": ["a"]}, qrels, 10)
    assert result == {"recall@5": 0.5, "mrr@10": 0.5, "ndcg@10": 0.5}


def test_load_beir_skips_the_header_unjudged_queries_zero_scores_and_unknown_documents(tmp_path):
    corpus = [{"_id": f"d{i}", "title": f"T{i}", "text": f"text {i}"} for i in range(6)]
    queries = [{"_id": "q1", "text": "one"}, {"_id": "q2", "text": "two"}, {"_id": "q3", "text": "three"}]
    qrels = [("q1", "d1", 1), ("q1", "d5", 2), ("q2", "d2", 0), ("q3", "nope", 1)]
    directory = write_beir(tmp_path / "set", corpus, queries, qrels, [{"_id": "u1", "text": "cooking"}])

    data = rq.load_beir(directory)
    assert data.qrels == {"q1": {"d1": 1, "d5": 2}}
    assert data.queries == {"q1": "one"}
    assert data.corpus["d3"] == ("T3", "text 3")
    assert data.unanswerable == {"u1": "cooking"}

    small = rq.load_beir(directory, max_docs=3)
    assert list(small.corpus) == ["d1", "d5", "d0"]  # judged documents first, then file order


def test_load_beir_names_the_line_that_is_not_json(tmp_path):
    directory = write_beir(tmp_path / "set", [{"_id": "d", "title": "", "text": "x"}], [], [])
    (directory / "queries.jsonl").write_text('{"_id": "q1", "text": "fine"}\nnot json\n')
    with pytest.raises(ValueError, match=r"queries.jsonl:2"):
        rq.load_beir(directory)


def test_hit_rates_and_the_recommended_threshold():
    rows = rq.hit_rates([0.9, 0.7, 0.5, 0.3], [0.6, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], (0.4, 0.65))
    assert rows[0] == {"threshold": 0.4, "hit_rate": 0.75, "false_hit_rate": pytest.approx(1 / 11)}
    assert rows[1] == {"threshold": 0.65, "hit_rate": 0.5, "false_hit_rate": 0.0}
    chosen, meets = rq.recommend_threshold(rows)
    assert (chosen["threshold"], meets) == (0.4, True)

    # none reaches > 60 % hits with < 10 % false hits: the widest margin, flagged
    rows = [
        {"threshold": 0.3, "hit_rate": 0.9, "false_hit_rate": 0.5},
        {"threshold": 0.5, "hit_rate": 0.5, "false_hit_rate": 0.0},
    ]
    chosen, meets = rq.recommend_threshold(rows)
    assert (chosen["threshold"], meets) == (0.5, False)


def hashed_embedder(texts: list[str]) -> np.ndarray:
    """A deterministic bag-of-words embedder: each word adds to one of 64 dimensions."""
    vectors = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            vectors[row, zlib.crc32(word.encode()) % 64] += 1.0
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-9)


def test_run_ranks_documents_with_bm25_vectors_and_fusion_and_reports_hits(tmp_path):
    topics = ["volcano lava eruption", "penguin antarctic ice", "violin orchestra concert", "compiler parser syntax"]
    corpus = [{"_id": f"d{i}", "title": topic.split()[0], "text": f"{topic} " * 5} for i, topic in enumerate(topics)]
    queries = [{"_id": f"q{i}", "text": topic.split()[1]} for i, topic in enumerate(topics)]
    qrels = [(f"q{i}", f"d{i}", 1) for i in range(len(topics))]
    unanswerable = [{"_id": "u1", "text": "zebra"}, {"_id": "u2", "text": "mortgage"}]
    data = rq.load_beir(write_beir(tmp_path / "set", corpus, queries, qrels, unanswerable))

    result = rq.run(data, hashed_embedder, k=5)

    assert result["documents"] == result["chunks"] == 4
    assert result["depth"] == 20
    assert set(result["metrics"]) == {"bm25", "vector"} | {
        f"{m} w={w}" for m in ("rrf", "weighted") for w in rq.WEIGHTS
    }
    assert result["metrics"]["bm25"] == {"recall@5": 1.0, "mrr@5": 1.0, "ndcg@5": 1.0}
    assert result["queries"] == 4 and result["unanswerable_queries"] == 2
    assert [row["threshold"] for row in result["hit_rates"]] == list(rq.THRESHOLDS)
    json.dumps(result)  # the --json output
    table = rq.markdown(result, dataset="tiny")
    assert re.search(r"^\| (\*\*)?bm25(\*\*)? \| 1\.000 \| 1\.000 \| 1\.000 \|$", table, re.M)


def test_chunk_documents_uses_the_services_chunker_and_search_text():
    chunker = rq.service_chunker(32, 8)
    text = "\n\n".join(f"Paragraph {i} talks about the number {i} at some length, word after word." for i in range(12))
    chunks = rq.chunk_documents({"doc-1": ("A title", text)}, chunker)
    assert len(chunks) > 1
    assert [c.id for c in chunks] == [f"doc-1:{i}" for i in range(len(chunks))]
    assert all(c.document == "doc-1" and c.text.startswith("A title\n\n") for c in chunks)
    whole = rq.chunk_documents({"doc-1": ("A title", text)}, None)
    assert [(c.id, c.text) for c in whole] == [("doc-1:0", f"A title\n\n{text}")]
    assert rq.service_chunker(0, 0) is None


def test_the_committed_pydocs_set_is_complete_and_consistent():
    data = rq.load_beir(rq.DEFAULT_BEIR)
    assert len(data.corpus) >= 300
    assert len(data.queries) >= 100
    assert len(data.unanswerable) >= 40
    assert all(1 <= len(judged) <= 3 for judged in data.qrels.values())
    assert len(set(data.queries.values())) == len(data.queries)
    assert not set(data.unanswerable) & set(data.queries)
    raw = sum(1 for line in (rq.DEFAULT_BEIR / "queries.jsonl").read_text().splitlines() if line.strip())
    assert raw == len(data.queries)  # every question has a judged document in the corpus
