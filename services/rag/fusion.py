"""Fusing the vector and the keyword rankings into one.

Both inputs are ranked lists of (id, score), best first. Their scores live on different scales
(cosine similarity in [-1, 1], BM25 unbounded), which is why reciprocal-rank fusion, which only looks
at ranks, is the default; the weighted sum min-max normalises each list first.
"""

from __future__ import annotations

from collections.abc import Sequence

FUSION_METHODS = ("rrf", "weighted")


def _check(k: int, method: str, vector_weight: float, rrf_k: int) -> None:
    if method not in FUSION_METHODS:
        raise ValueError(f"fusion method must be one of {', '.join(FUSION_METHODS)}, not {method!r}")
    if not 0.0 <= vector_weight <= 1.0:
        raise ValueError("vector_weight must be between 0 and 1")
    if rrf_k < 0:
        raise ValueError("rrf_k must not be negative")
    if k < 0:
        raise ValueError("k must not be negative")


def _minmax(hits: Sequence[tuple[str, float]]) -> dict[str, float]:
    if not hits:
        return {}
    scores = [s for _, s in hits]
    low, high = min(scores), max(scores)
    if high == low:
        # One hit, or all tied: each is as good as the best of its list.
        return {doc_id: 1.0 for doc_id, _ in hits}
    return {doc_id: (s - low) / (high - low) for doc_id, s in hits}


def _first(hits: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    seen: set[str] = set()
    return [(i, s) for i, s in hits if not (i in seen or seen.add(i))]


def _ranks(hits: Sequence[tuple[str, float]]) -> dict[str, int]:
    # An id listed twice keeps its better (first) rank.
    ranks: dict[str, int] = {}
    for rank, (doc_id, _) in enumerate(hits, start=1):
        ranks.setdefault(doc_id, rank)
    return ranks


def fuse(
    vector_hits: Sequence[tuple[str, float]],
    keyword_hits: Sequence[tuple[str, float]],
    *,
    k: int,
    method: str = "rrf",
    vector_weight: float = 0.5,
    rrf_k: int = 60,
) -> list[tuple[str, float]]:
    """The best k ids of the two rankings as (id, fused score), best first.

    "rrf": score = w / (rrf_k + rank_v) + (1 - w) / (rrf_k + rank_kw), ranks from 1, a list that lacks
    the id adds nothing. "weighted": score = w * minmax(vector) + (1 - w) * minmax(keyword), a list
    that lacks the id adds 0. Ties break on the vector rank, then on the keyword rank, then on the id,
    so the order is deterministic.
    """
    _check(k, method, vector_weight, rrf_k)
    fused: dict[str, float] = {}
    vector_rank = _ranks(vector_hits)
    keyword_rank = _ranks(keyword_hits)
    if method == "rrf":
        for doc_id, rank in vector_rank.items():
            fused[doc_id] = fused.get(doc_id, 0.0) + vector_weight / (rrf_k + rank)
        for doc_id, rank in keyword_rank.items():
            fused[doc_id] = fused.get(doc_id, 0.0) + (1.0 - vector_weight) / (rrf_k + rank)
    else:
        for doc_id, score in _minmax(_first(vector_hits)).items():
            fused[doc_id] = fused.get(doc_id, 0.0) + vector_weight * score
        for doc_id, score in _minmax(_first(keyword_hits)).items():
            fused[doc_id] = fused.get(doc_id, 0.0) + (1.0 - vector_weight) * score
    missing = len(vector_rank) + len(keyword_rank) + 1
    ordered = sorted(
        fused.items(),
        key=lambda item: (
            -item[1],
            vector_rank.get(item[0], missing),
            keyword_rank.get(item[0], missing),
            item[0],
        ),
    )
    return ordered[:k]
