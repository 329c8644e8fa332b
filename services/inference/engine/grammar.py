"""Grammars that make the local model answer in the shape a request demands.

llama.cpp samples under a GBNF grammar: at every step the tokens the grammar cannot accept are masked
out, so the output is in the grammar's language by construction, whatever the model would have
preferred, and the grammar ends by allowing only end-of-generation. :func:`constraint_for` turns a
request's ``response_format`` or forced tool choice into such a grammar, with llama-cpp-python's JSON
Schema converter (:class:`llama_cpp.llama_grammar.SchemaConverter`) building the rules:

- ``json_object``: any JSON object;
- ``json_schema``: exactly the schema's language, so the answer validates against it;
- ``tool_choice`` ``required`` or a named function: ``{"name": "<tool>", "arguments": <arguments>}``
  where the arguments validate against that tool's parameters (one alternative per tool for
  ``required``). The wrapper is written without optional whitespace, so the name and where the
  arguments start are known from the text as it streams (:mod:`.toolcalls`).

The converter does not enforce every JSON Schema keyword (numeric bounds, ``not``, ``uniqueItems``...).
A schema using one would produce answers that parse but may not validate; it is refused instead, naming
the keyword, because a silent "mostly valid" is worse than a clear 400.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llama_cpp.llama_grammar import PRIMITIVE_RULES, SchemaConverter

from services.common.chat_content import ChatOptions, Tool
from services.common.errors import InvalidArgument

# Keywords that constrain values but that the converter ignores: output would not always validate.
UNENFORCEABLE_KEYWORDS = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minProperties",
        "maxProperties",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "patternProperties",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
        "oneOf",  # the converter treats it as anyOf: an answer could match two branches
    }
)
# Keywords whose value is a schema or a list/map of schemas: where nested schemas are found.
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "prefixItems")
_SUBSCHEMAS = ("items", "additionalProperties")

Kind = Literal["json", "tool"]
# A character of a JSON string. The converter's own rule lets raw control characters (a newline) in,
# which JSON forbids inside strings: json.loads would refuse the answer. This is llama.cpp's newer rule.
JSON_CHAR_RULE = r'[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


@dataclass(frozen=True)
class Constraint:
    """A grammar for one request, and what its output is: a JSON answer or a tool call."""

    gbnf: str
    kind: Kind
    tools: tuple[str, ...] = ()  # the tools a "tool" output may call

    @property
    def is_tool_call(self) -> bool:
        return self.kind == "tool"


def tool_call_prefix(name: str) -> str:
    """The text a forced tool call starts with, up to its arguments."""
    return '{"name": ' + json.dumps(name) + ', "arguments": '


def constraint_for(options: ChatOptions) -> Constraint | None:
    """The grammar ``options`` ask for, or None when the answer is free text.

    A forced tool call (``tool_choice`` ``required`` or a named function) wins over ``response_format``,
    which shapes content, and a tool call has none. ``tool_choice`` ``auto`` constrains nothing: see the
    service README for what the local model does with it. Raises InvalidArgument for a schema whose
    rules the grammar cannot enforce.
    """
    choice = options.tool_choice
    if options.tools and choice is not None and choice.mode in ("required", "function"):
        tools = options.tools if choice.mode == "required" else [t for t in options.tools if t.name == choice.function]
        return _tool_constraint(tools)
    fmt = options.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        converter = _converter()
        converter._add_rule("root", converter._add_primitive("object", PRIMITIVE_RULES["object"]))
        return Constraint(gbnf=_grammar(converter), kind="json")
    if fmt.schema is None:
        raise InvalidArgument("response_format.json_schema.schema is required")
    converter = _converter()
    _visit(converter, fmt.schema, "", "response_format.json_schema.schema")
    return Constraint(gbnf=_grammar(converter), kind="json")


def _tool_constraint(tools: Sequence[Tool]) -> Constraint:
    converter = _converter()
    alternatives = []
    for i, tool in enumerate(tools):
        rule = _visit(converter, tool.parameters, f"tool{i}-args", f"tools[{tool.name}].function.parameters")
        alternatives.append(f"{converter._format_literal(tool_call_prefix(tool.name))} {rule}")
    converter._add_rule("root", "(" + " | ".join(alternatives) + ') "}"')
    return Constraint(gbnf=_grammar(converter), kind="tool", tools=tuple(t.name for t in tools))


def _grammar(converter: SchemaConverter) -> str:
    if "char" in converter._rules:
        converter._rules["char"] = JSON_CHAR_RULE
    return converter.format_grammar()


def _converter() -> SchemaConverter:
    # No fetching of remote $refs, ever; patterns are regular expressions as JSON Schema has them.
    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _visit(converter: SchemaConverter, schema: Mapping[str, Any], name: str, where: str) -> str:
    """Add the rules of ``schema`` under ``name``; the rule's name. InvalidArgument when the grammar
    could not enforce it."""
    for path, keyword in _keywords(schema, where):
        if keyword in UNENFORCEABLE_KEYWORDS:
            raise InvalidArgument(f"{path}: the local model cannot enforce {keyword!r}; use another model")
    for path, ref in _refs(schema, where):
        if not ref.startswith("#/"):
            raise InvalidArgument(f"{path}: only local $refs (#/...) are supported by the local model")
    # resolve_refs rewrites "$ref"s in place: work on a copy, the request's schema stays as sent. The
    # converter names a $ref's rule after its last segment, so two tools' "#/$defs/Item" would share one
    # rule: each tool's definitions get its own prefix first.
    own = _prefix_definitions(copy.deepcopy(dict(schema)), name) if name else copy.deepcopy(dict(schema))
    try:
        resolved = converter.resolve_refs(own, name or "root")
        return converter.visit(resolved, name)
    except InvalidArgument:
        raise
    except Exception as exc:  # the converter raises assertions, KeyErrors, ValueErrors on what it lacks
        raise InvalidArgument(f"{where}: the local model cannot make a grammar of this schema ({exc!s:.200})") from None


def _prefix_definitions(node: Any, prefix: str) -> Any:
    """``node`` with every ``$defs``/``definitions`` name and local ``$ref`` to one prefixed."""
    if isinstance(node, list):
        return [_prefix_definitions(item, prefix) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("$defs", "definitions") and isinstance(value, dict):
            out[key] = {f"{prefix}-{k}": _prefix_definitions(v, prefix) for k, v in value.items()}
        elif key == "$ref" and isinstance(value, str):
            out[key] = re.sub(r"^#/(\$defs|definitions)/", rf"#/\1/{prefix}-", value)
        elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {k: _prefix_definitions(v, prefix) for k, v in value.items()}
        else:
            out[key] = _prefix_definitions(value, prefix)
    return out


def _walk(schema: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every (sub)schema of ``schema`` with its path."""
    if not isinstance(schema, Mapping):
        return
    yield path, schema
    for key in _SUBSCHEMA_MAPS:
        children = schema.get(key)
        if isinstance(children, Mapping):
            for child_name, child in children.items():
                yield from _walk(child, f"{path}.{key}.{child_name}")
    for key in _SUBSCHEMA_LISTS:
        children = schema.get(key)
        if isinstance(children, list):
            for i, child in enumerate(children):
                yield from _walk(child, f"{path}.{key}[{i}]")
    for key in _SUBSCHEMAS:
        yield from _walk(schema.get(key), f"{path}.{key}")


def _keywords(schema: Mapping[str, Any], where: str) -> Iterator[tuple[str, str]]:
    for path, sub in _walk(schema, where):
        for keyword in sub:
            yield path, keyword


def _refs(schema: Mapping[str, Any], where: str) -> Iterator[tuple[str, str]]:
    for path, sub in _walk(schema, where):
        ref = sub.get("$ref")
        if isinstance(ref, str):
            yield path, ref
