"""The embedding model's tokenizer, for counting chunk sizes in the tokens the embedder will see."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from services.inference.models import embedding_model_files


def load_tokenizer(model_dir: Path | None = None) -> Tokenizer:
    """The tokenizer.json the inference service's embedder loads, with truncation and padding off.

    ``model_dir`` is the value of ``GOBLIN_EMBED_MODEL_DIR`` (None: the embedded default model), found
    by the same lookup the inference service uses, so chunk sizes are counted in the embedder's tokens.
    Raises :class:`services.inference.models.ModelNotFound` when the files are missing.
    """
    tokenizer = Tokenizer.from_file(str(embedding_model_files(model_dir).tokenizer))
    # tokenizer.json ships with truncation and padding at 128: counts must be of the whole text.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
