"""Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime and the ``tokenizers`` library.

The computation follows sentence-transformers' pipeline for this model: word-piece tokens truncated at the
model's ``max_seq_length``, the transformer's last hidden state mean-pooled over the attention mask,
then L2-normalised, so a dot product of two vectors is their cosine similarity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from tokenizers import Encoding, Tokenizer

from services.inference.models import DEFAULT_EMBED_MAX_SEQ_LENGTH, EmbeddingModelFiles

# The inputs a BERT-style export may take; each is fed only if the graph declares it.
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class EmbeddingResult:
    """Vectors in input order, and how many tokens each input was after truncation."""

    vectors: list[list[float]]
    token_counts: list[int]

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


class Embedder:
    """Turns strings into unit-length vectors with one ONNX session.

    ``embed`` is synchronous and CPU-bound; async callers use ``embed_async``, which runs on the
    embedder's own single thread so that concurrent requests queue instead of multiplying threads.
    ``intra_op_threads`` (default 1) bounds how many cores one call uses, leaving the rest to the
    chat model.
    """

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        *,
        max_seq_length: int = DEFAULT_EMBED_MAX_SEQ_LENGTH,
        intra_op_threads: int = 1,
        max_batch_tokens: int = 4096,
    ) -> None:
        if max_seq_length < 2:
            raise ValueError("max_seq_length must leave room for [CLS] and [SEP]")
        if intra_op_threads < 1:
            raise ValueError("intra_op_threads must be at least 1")
        self.model_path = Path(model_path)
        self.max_seq_length = max_seq_length
        # Padded tokens per onnxruntime call: bounds memory for large requests, and past a few thousand
        # tokens bigger batches stop being faster on CPU.
        self.max_batch_tokens = max(max_batch_tokens, max_seq_length)

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self._session = onnxruntime.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = [node.name for node in self._session.get_inputs()]
        unknown = [name for name in names if name not in _KNOWN_INPUTS]
        if unknown or "input_ids" not in names:
            raise ValueError(
                f"{self.model_path}: unexpected model inputs {names}; expected a subset of {_KNOWN_INPUTS}"
            )
        self._input_names = names
        output = self._session.get_outputs()[0]
        self._output_name = output.name
        # Either token states to pool (batch, sequence, dim) or vectors already pooled (batch, dim).
        self._pooled_output = len(output.shape) == 2
        dimensions = output.shape[-1]
        self.dimensions: int = dimensions if isinstance(dimensions, int) else self._probe_dimensions()

        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # tokenizer.json ships with fixed padding and truncation at 128; padding is done per batch here.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_seq_length)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")

    @classmethod
    def from_files(cls, files: EmbeddingModelFiles, *, intra_op_threads: int = 1) -> Embedder:
        """An embedder for the files :func:`services.inference.models.embedding_model_files` found."""
        return cls(
            files.model,
            files.tokenizer,
            max_seq_length=files.max_seq_length,
            intra_op_threads=intra_op_threads,
        )

    def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        """Embed ``texts`` (blocking). An empty input gives an empty result."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of strings, not one string")
        if not texts:
            return EmbeddingResult(vectors=[], token_counts=[])
        encodings = self._tokenizer.encode_batch(list(texts))
        counts = [len(encoding.ids) for encoding in encodings]
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        # Similar lengths share a batch so little compute goes to padding; the attention mask makes the
        # result independent of the batch it ran in.
        order = sorted(range(len(texts)), key=counts.__getitem__)
        for group in self._batches(order, counts):
            vectors[group] = self._run([encodings[i] for i in group])
        return EmbeddingResult(vectors=vectors.tolist(), token_counts=counts)

    async def embed_async(self, texts: Sequence[str]) -> EmbeddingResult:
        """:meth:`embed` on the embedder's own thread, leaving the event loop free."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.embed, texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text becomes, special tokens included, after truncation."""
        return [len(encoding.ids) for encoding in self._tokenizer.encode_batch(list(texts))]

    def close(self) -> None:
        """Stop the thread behind :meth:`embed_async`, after the calls already submitted."""
        self._executor.shutdown(wait=True)

    def _batches(self, order: list[int], counts: list[int]) -> list[list[int]]:
        """Split indices sorted by length into groups of at most ``max_batch_tokens`` padded tokens."""
        groups: list[list[int]] = []
        current: list[int] = []
        for index in order:
            # Sorted ascending, so this index sets the group's padded length.
            if current and (len(current) + 1) * counts[index] > self.max_batch_tokens:
                groups.append(current)
                current = []
            current.append(index)
        if current:
            groups.append(current)
        return groups

    def _run(self, encodings: list[Encoding]) -> np.ndarray:
        """Pooled, normalised vectors for one batch of encodings."""
        length = max(len(encoding.ids) for encoding in encodings)
        shape = (len(encodings), length)
        arrays = {name: np.zeros(shape, dtype=np.int64) for name in _KNOWN_INPUTS}
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            arrays["input_ids"][row, :n] = encoding.ids
            arrays["attention_mask"][row, :n] = encoding.attention_mask
            arrays["token_type_ids"][row, :n] = encoding.type_ids
        feed = {name: arrays[name] for name in self._input_names}
        output = self._session.run([self._output_name], feed)[0]
        if self._pooled_output:
            pooled = output.astype(np.float32)
        else:
            mask = arrays["attention_mask"][:, :, None].astype(np.float32)
            pooled = (output * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)

    def _probe_dimensions(self) -> int:
        """The vector size, by running one tiny input, for graphs that leave it symbolic."""
        ids = np.array([[0]], dtype=np.int64)
        feed = {name: (ids if name == "input_ids" else np.ones_like(ids)) for name in self._input_names}
        if "token_type_ids" in feed:
            feed["token_type_ids"] = np.zeros_like(ids)
        return int(self._session.run([self._output_name], feed)[0].shape[-1])
