"""Tool-call ids that survive a conversation moving between providers.

A client sends back, in later turns, the ids of the calls a model made (the assistant's ``tool_calls``
and each ``tool`` message's ``tool_call_id``). A fallback may put those turns in front of another
provider than the one that issued the ids, so every adapter must accept any id a sibling issued:

- OpenAI-compatible providers take any string (Moonshot's look like ``functions.get_weather:0``).
- Anthropic wants ``^[a-zA-Z0-9_-]+$``: :func:`wire_id` rewrites any other id the same way wherever it
  appears (the ``tool_use`` and its ``tool_result``), so the pair still matches; the client keeps its
  own id, since the rewrite is only on the wire.
- Gemini has no ids at all (its ``functionResponse`` names the function, and parallel answers follow
  the calls' order): :func:`new_call_id` issues ids for its calls, and :func:`call_names` maps a
  conversation's ids back to the function names (and order) Gemini matches on.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from services.common.errors import InvalidArgument

WIRE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NOT_WIRE = re.compile(r"[^A-Za-z0-9_-]+")


def new_call_id() -> str:
    """An OpenAI-style id (``call_`` + 24 hex digits) for a call its provider gave none."""
    return f"call_{uuid.uuid4().hex[:24]}"


def wire_id(call_id: str) -> str:
    """``call_id`` if it is ``[A-Za-z0-9_-]{1,64}``; else a deterministic rewrite that is (its legal
    characters and a hash of the whole id, so two ids never meet in one)."""
    if WIRE_ID.match(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:12]
    cleaned = _NOT_WIRE.sub("_", call_id)[:40].strip("_")
    return f"{cleaned}_{digest}" if cleaned else f"call_{digest}"


def call_names(messages: Sequence[Any]) -> dict[str, tuple[str, int]]:
    """Each tool-call id of ``messages``' assistant turns -> (function name, its position in its turn)."""
    names: dict[str, tuple[str, int]] = {}
    for message in messages:
        for position, call in enumerate(getattr(message, "tool_calls", ()) or ()):
            names[call.id] = (call.name, position)
    return names


def arguments_object(arguments: str, where: str) -> dict[str, Any]:
    """A call's JSON ``arguments`` as the object Anthropic's ``input`` and Gemini's ``args`` need
    (OpenAI carries them as text, so a model may have written anything there)."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        raise InvalidArgument(f"{where}: the arguments are not JSON") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where}: the arguments must be a JSON object")
    return value
