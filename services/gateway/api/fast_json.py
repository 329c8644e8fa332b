"""JSON for the hot path (chat answers and their SSE events) with orjson: several times faster than the
standard library's encoder, which was a visible share of the gateway's CPU per request
(bench/RESULTS.md, "Gateway CPU profile").

The same compact JSON, UTF-8 rather than ``\\uXXXX`` escapes; a non-finite float (a logprob of -inf)
becomes ``null`` instead of failing the answer. What orjson cannot encode (an integer beyond 64 bits)
falls back to the standard library, so nothing that encoded before fails now.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi.responses import JSONResponse


def dumps(content: Any) -> bytes:
    """``content`` as compact JSON bytes."""
    try:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


class FastJSONResponse(JSONResponse):
    """A JSONResponse rendered by :func:`dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)
