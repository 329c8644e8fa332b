"""What a caller may name: collection names, document ids, metadata, query parameters.

Every check raises InvalidArgument naming the field, so the gateway answers 400 with the reason.
"""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DOCUMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
METADATA_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MAX_METADATA_ENTRIES = 32
MAX_METADATA_VALUE = 1024
MAX_TITLE = 512
MAX_DESCRIPTION = 1024
MAX_QUERY_CHARS = 4000
MAX_TOP_K = 50
DEFAULT_TOP_K = 5


def collection_name(name: str) -> str:
    """A new collection's name: 1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit."""
    if not COLLECTION_NAME.match(name or ""):
        raise InvalidArgument(
            "name: a collection name is 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return name


def collection_ref(ref: str) -> str:
    """A collection named in a request (its name or its id): the same alphabet, any case."""
    if not ref or len(ref) > 64 or not re.match(r"^[A-Za-z0-9_-]+$", ref):
        raise InvalidArgument("collection: not a collection name or id")
    return ref


def description(text: str) -> str:
    if len(text) > MAX_DESCRIPTION:
        raise InvalidArgument(f"description: at most {MAX_DESCRIPTION} characters")
    return text


def document_id(value: str, field: str = "document_id") -> str:
    """A caller-chosen document id: 1-128 of letters, digits, '.', '_' and '-'."""
    if not DOCUMENT_ID.match(value or ""):
        raise InvalidArgument(
            f"{field}: 1-128 characters of letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return value


def title(value: str) -> str:
    if len(value) > MAX_TITLE:
        raise InvalidArgument(f"title: at most {MAX_TITLE} characters")
    return value


def metadata(values: dict[str, str], field: str = "metadata") -> dict[str, str]:
    """Document metadata (or a query filter over it): at most 32 string pairs with plain keys."""
    if len(values) > MAX_METADATA_ENTRIES:
        raise InvalidArgument(f"{field}: at most {MAX_METADATA_ENTRIES} entries")
    for key, value in values.items():
        if not METADATA_KEY.match(key):
            raise InvalidArgument(f"{field}: key {key[:64]!r} is not 1-64 of letters, digits, '_', '.' and '-'")
        if len(value) > MAX_METADATA_VALUE or "\x00" in value:
            raise InvalidArgument(f"{field}: the value of {key!r} is longer than {MAX_METADATA_VALUE} or holds NUL")
    return dict(values)


def top_k(value: int) -> int:
    """1..50; 0 (unset) is the default."""
    if value == 0:
        return DEFAULT_TOP_K
    if not 1 <= value <= MAX_TOP_K:
        raise InvalidArgument(f"top_k: must be between 1 and {MAX_TOP_K}")
    return value


def query_text(value: str) -> str:
    if not value.strip():
        raise InvalidArgument("query: must not be empty")
    if len(value) > MAX_QUERY_CHARS:
        raise InvalidArgument(f"query: at most {MAX_QUERY_CHARS} characters")
    return value


def min_score(value: float) -> float:
    if not -1.0 <= value <= 1.0:
        raise InvalidArgument("min_score: a cosine similarity, between -1 and 1")
    return value
