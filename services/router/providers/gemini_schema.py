"""JSON Schema -> the OpenAPI 3.0 subset Gemini's ``Schema`` object takes (function parameters and
``responseSchema``).

Gemini's Schema knows: ``type`` (one of STRING NUMBER INTEGER BOOLEAN ARRAY OBJECT), ``format``,
``title``, ``description``, ``nullable``, ``enum`` (of strings), ``items``, ``properties``,
``required``, ``propertyOrdering``, ``minItems``/``maxItems``, ``minProperties``/``maxProperties``,
``minLength``/``maxLength``, ``pattern``, ``minimum``/``maximum``, ``anyOf``, ``default``, ``example``.
It refuses the whole request for any other key, so the conversion keeps the meaning where it can and
drops the rest:

- rewritten: local ``$ref`` (``#/$defs/...``, ``#/definitions/...``) are inlined (a recursive one is
  refused: Gemini has no references); ``type: [T, "null"]`` and ``anyOf``/``oneOf`` with a null
  branch -> ``nullable``; ``oneOf`` -> ``anyOf``; ``allOf`` -> its schemas merged; ``const`` of a
  string -> a one-value ``enum``; ``examples`` -> ``example`` (the first);
- dropped: ``additionalProperties``, ``patternProperties``, ``not``, ``if``/``then``/``else``,
  ``exclusiveMinimum``/``exclusiveMaximum``, ``multipleOf``, ``uniqueItems``, ``contains``,
  ``prefixItems``, ``dependent*``, ``unevaluated*``, ``$schema``/``$id``/``$comment``, an ``enum`` of
  non-strings, a ``const`` of a non-string, and any ``format`` Gemini does not list for the type
  (it keeps ``date-time``/``enum`` for strings, ``float``/``double``, ``int32``/``int64``).
Constraints dropped are not enforced by Gemini; the answer still has the declared shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.common.errors import InvalidArgument

TYPES = {"string", "number", "integer", "boolean", "array", "object"}
KEEP = (
    "title",
    "description",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "default",
    "example",
)
FORMATS = {"string": {"date-time", "enum"}, "number": {"float", "double"}, "integer": {"int32", "int64"}}
MAX_DEPTH = 32


def gemini_schema(schema: Mapping[str, Any], where: str, *, ordered: bool = False) -> dict[str, Any]:
    """``schema`` in Gemini's subset (see the module's doc). ``ordered``: add ``propertyOrdering`` so
    that an answer's keys come in the schema's order (Gemini otherwise sorts them)."""
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    return _convert(schema, defs, where, ordered, (), 0)


def _resolve(ref: str, defs: Mapping[str, Any], where: str) -> tuple[str, Mapping[str, Any]]:
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix) and ref[len(prefix) :] in defs:
            return ref, defs[ref[len(prefix) :]]
    raise InvalidArgument(f"{where}: $ref {ref[:80]!r} is not a local definition (Gemini schemas have no references)")


def _merge_all_of(schema: Mapping[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if not isinstance(part, Mapping):
            continue
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _convert(
    schema: Any, defs: Mapping[str, Any], where: str, ordered: bool, refs: tuple[str, ...], depth: int
) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if schema is True or schema == {}:
        return {}  # anything: Gemini has no such type, so leave the shape open
    if not isinstance(schema, Mapping):
        raise InvalidArgument(f"{where}: a schema must be an object")
    if "$ref" in schema:
        ref, target = _resolve(schema["$ref"], defs, where)
        if ref in refs:
            raise InvalidArgument(f"{where}: the schema refers to itself ({ref}); Gemini schemas cannot recurse")
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return _convert({**target, **siblings}, defs, where, ordered, (*refs, ref), depth + 1)
    if "allOf" in schema:
        return _convert(_merge_all_of(schema), defs, where, ordered, refs, depth + 1)

    out: dict[str, Any] = {}
    nullable = False
    kind = schema.get("type")
    if isinstance(kind, list):
        nullable = "null" in kind
        kinds = [k for k in kind if k != "null"]
        if len(kinds) > 1:
            rest = {k: v for k, v in schema.items() if k != "type"}
            branches = [{**rest, "type": k} for k in kinds]
            return _with_nullable(
                {"anyOf": [_convert(b, defs, where, ordered, refs, depth + 1) for b in branches]}, nullable
            )
        kind = kinds[0] if kinds else None
    if kind == "null":
        kind, nullable = None, True
    if kind is not None and kind not in TYPES:
        raise InvalidArgument(f"{where}: type {str(kind)[:40]!r} is not a JSON Schema type")

    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        kept = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
        nullable = nullable or len(kept) < len(branches)
        converted = [_convert(b, defs, where, ordered, refs, depth + 1) for b in kept]
        rest = {k: schema[k] for k in ("title", "description", "default") if k in schema}
        if len(converted) == 1:
            merged = {**converted[0], **{k: v for k, v in rest.items() if k not in converted[0]}}
            return _with_nullable(merged, nullable)
        return _with_nullable({**rest, "anyOf": converted}, nullable)

    if kind is not None:
        out["type"] = kind.upper()
    for key in KEEP:
        if key in schema:
            out[key] = schema[key]
    if "examples" in schema and "example" not in out and isinstance(schema["examples"], list) and schema["examples"]:
        out["example"] = schema["examples"][0]
    if isinstance(schema.get("format"), str) and schema["format"] in FORMATS.get(kind or "", ()):
        out["format"] = schema["format"]
    values = schema.get("enum")
    if "const" in schema and values is None:
        values = [schema["const"]]
    if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
        out["enum"] = list(values)
        out.setdefault("type", "STRING")
    if "properties" in schema and isinstance(schema["properties"], Mapping):
        out["properties"] = {
            name: _convert(sub, defs, f"{where}.properties.{name}", ordered, refs, depth + 1)
            for name, sub in schema["properties"].items()
        }
        out.setdefault("type", "OBJECT")
        required = [r for r in schema.get("required", ()) if r in out["properties"]]
        if required:
            out["required"] = required
        if ordered and out["properties"]:
            out["propertyOrdering"] = list(out["properties"])
    if "items" in schema and isinstance(schema["items"], Mapping | bool):
        out["items"] = _convert(schema["items"], defs, f"{where}.items", ordered, refs, depth + 1)
        out.setdefault("type", "ARRAY")
    return _with_nullable(out, nullable)


def _with_nullable(schema: dict[str, Any], nullable: bool) -> dict[str, Any]:
    if nullable:
        schema["nullable"] = True
    return schema
