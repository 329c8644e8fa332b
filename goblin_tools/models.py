"""The local model files by checksum: what a backup records and ``goblin models verify`` checks.

Model files are large and come from a release (a PyPI data package or a file the operator placed), so
a backup does not copy them: it records each file's path, size and sha256, and after a restore (or on
any day) ``goblin models verify DIR`` says whether the files on this machine are still those.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """The hex sha256 of ``path``, read in 1 MiB chunks (a GGUF model does not fit in memory twice)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_files() -> dict[str, Path]:
    """The model files inference would load with the current settings, by role."""
    from services.common.settings import load_settings
    from services.inference.config import InferenceSettings
    from services.inference.models import chat_model_path, embedding_model_files

    settings = load_settings(InferenceSettings)
    embedding = embedding_model_files(settings.embed_model_dir)
    return {
        "chat": chat_model_path(settings.model_path).resolve(),
        "embedding": embedding.model.resolve(),
        "embedding_tokenizer": embedding.tokenizer.resolve(),
    }


def model_manifest() -> list[dict[str, Any]]:
    """One entry per model file: role, absolute path, size and sha256."""
    return [
        {"role": role, "path": str(path), "size": path.stat().st_size, "sha256": sha256_file(path)}
        for role, path in model_files().items()
    ]


@dataclass(frozen=True)
class ModelCheck:
    role: str
    path: str
    ok: bool
    detail: str


def verify_models(entries: list[dict[str, Any]]) -> list[ModelCheck]:
    """Each recorded model file checked on this machine: present, same size, same sha256."""
    checks = []
    for entry in entries:
        path = Path(entry["path"])
        if not path.is_file():
            checks.append(ModelCheck(entry["role"], entry["path"], False, "missing"))
            continue
        if path.stat().st_size != entry["size"]:
            checks.append(ModelCheck(entry["role"], entry["path"], False, "size differs"))
            continue
        actual = sha256_file(path)
        same = actual == entry["sha256"]
        detail = "sha256 matches" if same else f"sha256 differs: {actual[:16]}... (expected {entry['sha256'][:16]}...)"
        checks.append(ModelCheck(entry["role"], entry["path"], same, detail))
    return checks
