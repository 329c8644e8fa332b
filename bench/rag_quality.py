"""Retrieval quality on a BEIR-format set: BM25, vectors and their fusion, and where to put the hit threshold.

    python -m bench.rag_quality [--beir DIR] [--k 10] [--max-docs N] [--json]

The retrieval pieces are the rag service's own: ``services.rag.keyword.KeywordIndex`` for BM25 and
``services.rag.fusion.fuse`` for the hybrid; the vectors come from the inference service's ``Embedder``
(all-MiniLM-L6-v2, in-process) with an exact cosine search over unit vectors in numpy, which is what
Chroma's cosine space computes (without HNSW's approximation). Each document is indexed as its title, a
blank line, then its text, for both halves; each half hands its best ``--depth`` documents to the fusion.

A BEIR directory holds ``corpus.jsonl`` ({"_id", "title", "text"}), ``queries.jsonl`` ({"_id", "text"})
and ``qrels/<split>.tsv`` (query-id, corpus-id, score, after a header line); an optional
``queries_unanswerable.jsonl`` holds questions the corpus cannot answer, for the false-hit rate.
Without ``--beir`` the set is bench/data/pydocs, and the results replace their section of
bench/RESULTS.md (``make bench`` runs it that way).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_BEIR = Path(__file__).resolve().parent / "data" / "pydocs"
UNANSWERABLE_FILE = "queries_unanswerable.jsonl"
WEIGHTS = (0.3, 0.5, 0.7, 0.8)
THRESHOLDS = tuple(round(0.20 + 0.05 * i, 2) for i in range(9))  # 0.20 .. 0.60
HIT_GOAL = 0.60
FALSE_HIT_LIMIT = 0.10


# --- the data set -----------------------------------------------------------------------------------


@dataclass
class BeirSet:
    """A BEIR set in memory: documents (title, text), queries, graded relevance per query."""

    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    unanswerable: dict[str, str] = field(default_factory=dict)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
    return rows


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query-id -> {corpus-id: score} from a BEIR qrels TSV (its first line is a header)."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        next(rows, None)
        for row in rows:
            if not row:
                continue
            if len(row) < 3:
                raise ValueError(f"{path}: a qrels row needs query-id, corpus-id and score: {row}")
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    return qrels


def load_beir(directory: Path, *, split: str = "test", max_docs: int | None = None) -> BeirSet:
    """Load a BEIR directory; queries without a judged-relevant document are left out.

    With ``max_docs`` the corpus keeps every document some kept query judges relevant, then the others
    in file order up to ``max_docs`` (the usual way to subsample a BEIR corpus: recall stays measurable).
    """
    corpus = {
        str(row["_id"]): (row.get("title") or "", row.get("text") or "")
        for row in _read_jsonl(directory / "corpus.jsonl")
    }
    queries = {str(row["_id"]): row["text"] for row in _read_jsonl(directory / "queries.jsonl")}
    qrels = read_qrels(directory / "qrels" / f"{split}.tsv")
    qrels = {
        qid: {doc: score for doc, score in judged.items() if score > 0 and doc in corpus}
        for qid, judged in qrels.items()
        if qid in queries
    }
    qrels = {qid: judged for qid, judged in qrels.items() if judged}
    if max_docs is not None and len(corpus) > max_docs:
        needed = {doc for judged in qrels.values() for doc in judged}
        kept = [doc for doc in corpus if doc in needed]
        kept += [doc for doc in corpus if doc not in needed][: max(0, max_docs - len(kept))]
        corpus = {doc: corpus[doc] for doc in kept}
    unanswerable: dict[str, str] = {}
    if (directory / UNANSWERABLE_FILE).is_file():
        unanswerable = {str(row["_id"]): row["text"] for row in _read_jsonl(directory / UNANSWERABLE_FILE)}
    return BeirSet(corpus, {qid: queries[qid] for qid in qrels}, qrels, unanswerable)


def document_text(title: str, text: str) -> str:
    """What gets indexed for a document: the title, a blank line, the text."""
    return f"{title}\n\n{text}" if title else text


# --- metrics ---------------------------------------------------------------------------------------


def recall_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    """Share of the relevant documents found in the first k."""
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)


def mrr_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    """1 / rank of the first relevant document in the first k, else 0."""
    for rank, doc in enumerate(ranked[:k], start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    """nDCG@k with the graded score as the gain (as pytrec_eval, which BEIR uses, computes it)."""
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranked[:k], start=1))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def evaluate(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int) -> dict[str, float]:
    """Mean recall@5, MRR@k and nDCG@k over the judged queries (a query with no ranking scores 0)."""
    totals = {"recall@5": 0.0, f"mrr@{k}": 0.0, f"ndcg@{k}": 0.0}
    for qid, relevant in qrels.items():
        ranked = rankings.get(qid, [])
        totals["recall@5"] += recall_at(ranked, relevant, 5)
        totals[f"mrr@{k}"] += mrr_at(ranked, relevant, k)
        totals[f"ndcg@{k}"] += ndcg_at(ranked, relevant, k)
    return {name: value / max(1, len(qrels)) for name, value in totals.items()}


def hit_rates(answerable: Sequence[float], unanswerable: Sequence[float], thresholds: Sequence[float]) -> list[dict]:
    """For each threshold, the share of answerable questions whose best similarity reaches it (hits)
    and the share of unanswerable ones that do too (false hits)."""
    rows = []
    for threshold in thresholds:
        hits = sum(score >= threshold for score in answerable) / max(1, len(answerable))
        false_hits = sum(score >= threshold for score in unanswerable) / max(1, len(unanswerable))
        rows.append({"threshold": threshold, "hit_rate": hits, "false_hit_rate": false_hits})
    return rows


def recommend_threshold(rows: Sequence[dict]) -> tuple[dict, bool]:
    """Among the thresholds meeting both goals (> 60 % hits, < 10 % false hits), the one with the widest
    margin of hits over false hits (ties: the higher threshold, further from the false hits), and True;
    when none meets them, the widest margin overall, and False."""
    meeting = [row for row in rows if row["hit_rate"] > HIT_GOAL and row["false_hit_rate"] < FALSE_HIT_LIMIT]

    def margin(row: dict) -> tuple[float, float]:
        return (round(row["hit_rate"] - row["false_hit_rate"], 9), row["threshold"])

    return max(meeting or rows, key=margin), bool(meeting)


# --- retrieval -------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """What gets indexed: a piece of one document, as the rag service searches it."""

    id: str
    document: str
    text: str


def chunk_documents(corpus: dict[str, tuple[str, str]], chunker: Any | None) -> list[Chunk]:
    """The rag service's chunks of every document: its ``Chunker`` (token-sized pieces cut between
    paragraphs, sentences or words, overlapping) and its ``search_text`` (title, blank line, body) for
    what is embedded and keyword-indexed. Without a chunker every document is one chunk, which the
    embedder truncates at its sequence length."""
    from services.rag.ingest.document import TEXT_PLAIN, ParsedDocument, Section
    from services.rag.naming import chunk_id, search_text

    chunks: list[Chunk] = []
    for doc, (title, text) in corpus.items():
        if chunker is None:
            chunks.append(Chunk(chunk_id(doc, 0), doc, search_text(text, title, "")))
            continue
        parsed = ParsedDocument(title=title, sections=(Section(heading_path=(), text=text),), content_type=TEXT_PLAIN)
        for piece in chunker.chunk(parsed):
            heading = " > ".join(piece.heading_path)
            chunks.append(Chunk(chunk_id(doc, piece.index), doc, search_text(piece.text, title, heading)))
    return chunks


def by_document(hits: Sequence[tuple[str, float]], document_of: dict[str, str]) -> list[tuple[str, float]]:
    """Chunk hits to document hits: each document at the rank of its best chunk, with that score."""
    seen: set[str] = set()
    ranked = []
    for chunk, score in hits:
        doc = document_of[chunk]
        if doc not in seen:
            seen.add(doc)
            ranked.append((doc, score))
    return ranked


class Retrievers:
    """The chunks indexed once, for BM25 and vectors; chunk rankings for any query."""

    def __init__(self, chunks: list[Chunk], embed: Callable[[list[str]], np.ndarray], *, depth: int) -> None:
        from services.rag.keyword import KeywordIndex

        self.depth = depth
        self.ids = [chunk.id for chunk in chunks]
        self.column = {chunk: i for i, chunk in enumerate(self.ids)}
        self.document_of = {chunk.id: chunk.document for chunk in chunks}
        texts = [chunk.text for chunk in chunks]
        started = time.perf_counter()
        self.keyword = KeywordIndex()
        self.keyword.add(self.ids, texts)
        self.keyword.search("warm up", 1)  # builds the BM25 matrix now, not inside the first query
        self.keyword_seconds = time.perf_counter() - started
        started = time.perf_counter()
        self.vectors = embed(texts)
        self.embed_seconds = time.perf_counter() - started

    def similarities(self, query_vectors: np.ndarray) -> np.ndarray:
        """Cosine similarity of every query to every chunk (the vectors are unit length)."""
        return query_vectors @ self.vectors.T

    def vector_hits(self, row: np.ndarray) -> list[tuple[str, float]]:
        """The best ``depth`` chunks for one query's row of similarities, best first."""
        depth = min(self.depth, len(self.ids))
        top = np.argpartition(-row, depth - 1)[:depth]
        top = top[np.argsort(-row[top], kind="stable")]
        return [(self.ids[i], float(row[i])) for i in top]

    def keyword_hits(self, query: str) -> list[tuple[str, float]]:
        return self.keyword.search(query, self.depth)


def run(
    data: BeirSet,
    embed: Callable[[list[str]], np.ndarray],
    *,
    k: int = 10,
    depth: int | None = None,
    chunks: list[Chunk] | None = None,
) -> dict:
    """Every method's metrics, the hit-rate table and the recommendations, as one JSON-able dict.

    Retrieval and fusion run over ``chunks`` (default: one per document), each half handing ``depth``
    chunks to the fusion (default: the service's max(4 k, 20)); a document ranks where its best chunk
    does. A question is a hit, as in the service, when the best cosine similarity among the top k
    fused chunks of the best hybrid reaches the threshold.
    """
    from services.rag.fusion import fuse

    depth = depth or max(4 * k, 20)
    if chunks is None:
        chunks = chunk_documents(data.corpus, None)
    retrievers = Retrievers(chunks, embed, depth=depth)
    owner = retrievers.document_of

    def search(questions: dict[str, str]) -> tuple[dict, dict, dict]:
        qids = list(questions)
        vectors = embed([questions[q] for q in qids]) if qids else np.zeros((0, retrievers.vectors.shape[1]))
        rows = dict(zip(qids, retrievers.similarities(vectors), strict=True))
        vector = {qid: retrievers.vector_hits(rows[qid]) for qid in qids}
        keyword = {qid: retrievers.keyword_hits(questions[qid]) for qid in qids}
        return rows, vector, keyword

    def fused(method: str, vector: list, keyword: list) -> list[tuple[str, float]]:
        if method == "bm25":
            return keyword
        if method == "vector":
            return vector
        name, weight = method.split(" w=")
        return fuse(vector, keyword, k=depth, method=name, vector_weight=float(weight))

    names = ["bm25", "vector"] + [f"{method} w={weight}" for method in ("rrf", "weighted") for weight in WEIGHTS]
    rows, vector, keyword = search(data.queries)
    methods = {
        name: {qid: [doc for doc, _ in by_document(fused(name, vector[qid], keyword[qid]), owner)][:k] for qid in rows}
        for name in names
    }
    metrics = {name: evaluate(rankings, data.qrels, k) for name, rankings in methods.items()}
    ndcg = f"ndcg@{k}"
    best = max(metrics, key=lambda name: metrics[name][ndcg])
    best_hybrid = max(names[2:], key=lambda name: metrics[name][ndcg])

    def best_cosines(rows: dict, vector: dict, keyword: dict) -> dict[str, float]:
        scores = {}
        for qid, row in rows.items():
            top = fused(best_hybrid, vector[qid], keyword[qid])[:k]
            scores[qid] = max((float(row[retrievers.column[chunk]]) for chunk, _ in top), default=-1.0)
        return scores

    answerable = best_cosines(rows, vector, keyword)
    unanswerable = best_cosines(*search(data.unanswerable)) if data.unanswerable else {}
    thresholds = hit_rates(list(answerable.values()), list(unanswerable.values()), THRESHOLDS)
    # A stricter reading of "hit": over the threshold AND a relevant document among the hybrid's top 5.
    for row in thresholds:
        correct = sum(
            score >= row["threshold"] and bool(set(methods[best_hybrid][qid][:5]) & set(data.qrels[qid]))
            for qid, score in answerable.items()
        )
        row["correct_hit_rate"] = correct / max(1, len(answerable))
    recommended, meets_goal = recommend_threshold(thresholds) if unanswerable else (None, False)
    false_hits = (
        sorted(data.unanswerable[q] for q, score in unanswerable.items() if score >= recommended["threshold"])
        if recommended
        else []
    )
    return {
        "documents": len(data.corpus),
        "chunks": len(retrievers.ids),
        "queries": len(answerable),
        "unanswerable_queries": len(unanswerable),
        "k": k,
        "depth": depth,
        "seconds": {"bm25_index": retrievers.keyword_seconds, "embed_corpus": retrievers.embed_seconds},
        "metrics": metrics,
        "best_method": best,
        "best_hybrid": best_hybrid,
        "hybrid_beats_both": metrics[best_hybrid][ndcg] > max(metrics["bm25"][ndcg], metrics["vector"][ndcg]),
        "hit_rates": thresholds,
        "recommended_threshold": recommended,
        "threshold_meets_goal": meets_goal,
        "false_hits_at_recommended": false_hits,
        "best_similarity": {
            "answerable_median": float(np.median(list(answerable.values()))) if answerable else None,
            "unanswerable_median": float(np.median(list(unanswerable.values()))) if unanswerable else None,
        },
    }


def minilm_embedder(threads: int) -> Callable[[list[str]], np.ndarray]:
    """The inference service's embedder, in-process: texts -> (n, dim) float32 unit vectors."""
    from services.inference.embeddings import Embedder
    from services.inference.models import EMBED_MODEL_DIR_ENV, embedding_model_files

    embedder = Embedder.from_files(embedding_model_files(os.environ.get(EMBED_MODEL_DIR_ENV)), intra_op_threads=threads)

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(embedder.embed(texts).vectors, dtype=np.float32).reshape(len(texts), embedder.dimensions)

    return embed


def service_chunker(chunk_tokens: int, overlap: int) -> Any:
    """The rag service's chunker with its tokenizer (the embedder's), or None for whole documents."""
    if chunk_tokens <= 0:
        return None
    from services.inference.models import EMBED_MODEL_DIR_ENV
    from services.rag.ingest.chunking import Chunker
    from services.rag.ingest.tokenizer import load_tokenizer

    directory = os.environ.get(EMBED_MODEL_DIR_ENV)
    return Chunker(
        load_tokenizer(Path(directory) if directory else None), chunk_tokens=chunk_tokens, overlap_tokens=overlap
    )


# --- output ----------------------------------------------------------------------------------------


def chunking(result: dict) -> str:
    if not result.get("chunk_tokens"):
        return f"Whole documents ({result['chunks']}), truncated by the embedder at its sequence length."
    return (
        f"Documents cut by the rag service's `Chunker` into {result['chunks']} chunks of at most "
        f"{result['chunk_tokens']} word pieces ({result['overlap']} overlapping)."
    )


def markdown(result: dict, *, dataset: str) -> str:
    """The RESULTS.md body: metrics per method, then the threshold table and the recommendations."""
    k = result["k"]
    lines = [
        f"Set {dataset}: {result['documents']} documents, {result['queries']} questions with judged "
        f"documents, {result['unanswerable_queries']} unanswerable questions. {chunking(result)} Each chunk "
        f"(the document's title, a blank line, its text) is indexed by `KeywordIndex` (BM25 in tantivy) and "
        f"embedded by all-MiniLM-L6-v2 (exact cosine, what Chroma computes); each half hands its top {result['depth']} "
        f"chunks to `fuse` (max(4 k, 20), as the service); a document ranks where its best chunk does. "
        f"w = vector_weight.",
        "",
        f"| method | recall@5 | MRR@{k} | nDCG@{k} |",
        "| --- | --- | --- | --- |",
    ]
    for name, values in result["metrics"].items():
        bold = "**" if name == result["best_method"] else ""
        lines.append(
            f"| {bold}{name}{bold} | {values['recall@5']:.3f} | {values[f'mrr@{k}']:.3f} | {values[f'ndcg@{k}']:.3f} |"
        )
    lines += [
        "",
        f"Best on nDCG@{k}: **{result['best_method']}**; best hybrid {result['best_hybrid']}, which "
        + ("beats" if result["hybrid_beats_both"] else "does NOT beat")
        + " both halves.",
    ]
    if result["hit_rates"] and result["unanswerable_queries"]:
        lines += [
            "",
            f"Hit = the best cosine similarity among the top {k} chunks of {result['best_hybrid']} reaches the "
            "threshold, as the service decides it (correct hit: and a relevant document is in its top 5).",
            "",
            "| threshold | hit rate (answerable) | correct hit rate | false-hit rate (unanswerable) |",
            "| --- | --- | --- | --- |",
        ]
        for row in result["hit_rates"]:
            lines.append(
                f"| {row['threshold']:.2f} | {row['hit_rate']:.1%} | {row['correct_hit_rate']:.1%} | "
                f"{row['false_hit_rate']:.1%} |"
            )
        chosen = result["recommended_threshold"]
        verdict = (
            "meets the goal (> 60 % hits, < 10 % false hits)"
            if result["threshold_meets_goal"]
            else "is the best trade-off: NO threshold meets > 60 % hits with < 10 % false hits"
        )
        lines += [
            "",
            f"Recommended threshold **{chosen['threshold']:.2f}** ({chosen['hit_rate']:.1%} hits, "
            f"{chosen['false_hit_rate']:.1%} false hits) {verdict}. Median best similarity: answerable "
            f"{result['best_similarity']['answerable_median']:.3f}, unanswerable "
            f"{result['best_similarity']['unanswerable_median']:.3f}."
            + (
                " Unanswerable questions over it: " + "; ".join(f"“{q}”" for q in result["false_hits_at_recommended"])
                if result["false_hits_at_recommended"]
                else ""
            ),
        ]
    return "\n".join(lines)


def print_tables(result: dict, *, dataset: str) -> None:
    from rich.console import Console
    from rich.table import Table

    k = result["k"]
    console = Console()
    table = Table(
        title=f"{dataset}: {result['documents']} documents ({result['chunks']} chunks), {result['queries']} questions"
    )
    for column in ("method", "recall@5", f"MRR@{k}", f"nDCG@{k}"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, values in result["metrics"].items():
        style = "bold green" if name == result["best_method"] else None
        table.add_row(
            name, f"{values['recall@5']:.3f}", f"{values[f'mrr@{k}']:.3f}", f"{values[f'ndcg@{k}']:.3f}", style=style
        )
    console.print(table)
    if result["unanswerable_queries"]:
        hits = Table(title=f"best cosine similarity as a hit threshold ({result['unanswerable_queries']} unanswerable)")
        for column in ("threshold", "hit rate", "correct hit rate", "false-hit rate"):
            hits.add_column(column, justify="right")
        chosen = result["recommended_threshold"]
        for row in result["hit_rates"]:
            hits.add_row(
                f"{row['threshold']:.2f}",
                f"{row['hit_rate']:.1%}",
                f"{row['correct_hit_rate']:.1%}",
                f"{row['false_hit_rate']:.1%}",
                style="bold green" if row is chosen else None,
            )
        console.print(hits)
    console.print(markdown(result, dataset=dataset).split("\n\n")[-1] if result["unanswerable_queries"] else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; also what ``make bench`` calls (with no arguments: the pydocs set, RESULTS.md written)."""
    parser = argparse.ArgumentParser(prog="python -m bench.rag_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--beir", type=Path, default=DEFAULT_BEIR, help="a BEIR directory (default: %(default)s)")
    parser.add_argument("--split", default="test", help="the qrels file: qrels/SPLIT.tsv")
    parser.add_argument("--k", type=int, default=10, help="cut-off for MRR and nDCG, and the ranked list's length")
    parser.add_argument(
        "--depth",
        type=int,
        default=None,
        help="chunks each half hands to the fusion (default: max(4 k, 20), as the service)",
    )
    parser.add_argument(
        "--chunk-tokens", type=int, default=256, help="word pieces per chunk, title included (0: whole documents)"
    )
    parser.add_argument("--overlap", type=int, default=32, help="word pieces shared by neighbouring chunks")
    parser.add_argument("--max-docs", type=int, default=None, help="subsample the corpus (judged documents kept)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the embedder")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:] if __name__ == "__main__" else [])
    if args.k < 5:
        parser.error("--k must be at least 5 (recall@5 is reported)")
    if args.chunk_tokens and (args.chunk_tokens < 16 or not 0 <= args.overlap <= args.chunk_tokens // 2):
        parser.error("--chunk-tokens must be 0 or at least 16, and --overlap at most half of it")

    data = load_beir(args.beir, split=args.split, max_docs=args.max_docs)
    embed = minilm_embedder(args.threads)
    started = time.perf_counter()
    chunks = chunk_documents(data.corpus, service_chunker(args.chunk_tokens, args.overlap))
    result = run(data, embed, k=args.k, depth=max(args.depth, args.k) if args.depth else None, chunks=chunks)
    result["chunk_tokens"], result["overlap"] = args.chunk_tokens, args.overlap
    result["seconds"]["total"] = time.perf_counter() - started
    dataset = args.beir.name
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_tables(result, dataset=dataset)
        print(f"{result['chunks']} chunks; {result['seconds']['total']:.0f}s in all")
    if args.beir.resolve() == DEFAULT_BEIR and argv is None:
        from bench.results import write_section

        command = "python -m bench.rag_quality" + (" " + " ".join(sys.argv[1:]) if __name__ == "__main__" else "")
        write_section("RAG: retrieval quality", markdown(result, dataset=dataset), command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
