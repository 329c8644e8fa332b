"""A deterministic value that fits a schema, for the fake providers' tool-call arguments and JSON
answers. Reads JSON Schema (local ``$ref``, ``anyOf``/``oneOf``/``allOf``, ``const``, ``enum``, type
lists) and Gemini's OpenAPI subset (upper-case types, ``nullable``) alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 12


def example(schema: Any, root: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A value valid for ``schema`` (its required and optional properties all filled)."""
    if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
        return None
    root = schema if root is None else root
    if "$ref" in schema:
        return example(_resolve(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        branches = [b for b in schema.get(key) or () if isinstance(b, Mapping) and b.get("type") != "null"]
        if branches:
            return example(branches[0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part["$ref"], root) if "$ref" in part else part)
        return example(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = (kind or ("object" if "properties" in schema else "string")).lower()
    if kind == "object":
        return {name: example(sub, root, depth + 1) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example(schema.get("items") or {}, root, depth + 1)] * max(1, int(schema.get("minItems") or 1))
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1) if "maximum" not in schema else int(schema["maximum"])
    if kind == "number":
        return float(schema.get("minimum", 1.5)) if "maximum" not in schema else float(schema["maximum"])
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if schema.get("format") == "date-time":
        return "2026-01-01T00:00:00Z"
    if schema.get("format") == "date":
        return "2026-01-01"
    return "fake".ljust(int(schema.get("minLength") or 0), "e")


def _resolve(ref: str, root: Mapping[str, Any]) -> Any:
    node: Any = root
    for key in ref.removeprefix("#/").split("/"):
        node = node.get(key, {}) if isinstance(node, Mapping) else {}
    return node
