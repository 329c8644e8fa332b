"""Fusion of the vector and keyword rankings."""

from __future__ import annotations

import pytest

from services.rag.fusion import fuse

VECTOR = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
KEYWORD = [("c", 12.0), ("d", 7.0), ("a", 1.0)]


def test_rrf_rewards_an_id_both_lists_rank():
    fused = fuse(VECTOR, KEYWORD, k=4)
    # a (ranks 1 and 3) ties c (ranks 3 and 1); the tie breaks on the vector rank.
    assert [i for i, _ in fused][:2] == ["a", "c"]
    assert {i for i, _ in fused} == {"a", "b", "c", "d"}
    a = dict(fused)["a"]
    assert a == pytest.approx(0.5 / 61 + 0.5 / 63)


def test_rrf_weights_shift_the_order():
    vector_only = fuse(VECTOR, KEYWORD, k=4, vector_weight=1.0)
    assert [i for i, _ in vector_only][:3] == ["a", "b", "c"]
    keyword_only = fuse(VECTOR, KEYWORD, k=4, vector_weight=0.0)
    assert [i for i, _ in keyword_only][:3] == ["c", "d", "a"]


def test_weighted_normalises_each_list():
    fused = dict(fuse(VECTOR, KEYWORD, k=4, method="weighted", vector_weight=0.5))
    # a: vector 1.0, keyword (1-1)/(12-1) = 0; c: vector 0, keyword 1.0
    assert fused["a"] == pytest.approx(0.5)
    assert fused["c"] == pytest.approx(0.5)
    assert fused["d"] == pytest.approx(0.5 * (7 - 1) / 11)
    assert fused["b"] == pytest.approx(0.5 * (0.8 - 0.1) / 0.8)


def test_ties_break_on_vector_rank_then_id():
    fused = fuse([("x", 0.5), ("y", 0.4)], [("y", 3.0), ("x", 2.0)], k=2)
    assert [i for i, _ in fused] == ["x", "y"]


def test_k_truncates_and_empty_inputs():
    assert len(fuse(VECTOR, KEYWORD, k=2)) == 2
    assert fuse([], [], k=5) == []
    assert fuse(VECTOR, [], k=0) == []
    assert [i for i, _ in fuse([], KEYWORD, k=5)] == ["c", "d", "a"]
    assert fuse([("solo", 0.3)], [], k=5, method="weighted") == [("solo", 0.5)]


def test_a_duplicate_id_keeps_its_best_rank():
    fused = dict(fuse([("a", 0.9), ("a", 0.1)], [], k=5, vector_weight=1.0))
    assert fused == {"a": pytest.approx(1 / 61)}


@pytest.mark.parametrize(
    "kwargs",
    [{"method": "max"}, {"vector_weight": 1.5}, {"vector_weight": -0.1}, {"rrf_k": -1}, {"k": -1}],
)
def test_bad_parameters_are_refused(kwargs):
    params = {"k": 3, **kwargs}
    with pytest.raises(ValueError):
        fuse(VECTOR, KEYWORD, **params)
