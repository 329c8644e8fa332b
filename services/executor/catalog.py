"""The goblin catalog: named commands a task may run, each with a JSON Schema for its arguments and an
argv template, loaded from YAML (the packaged ``goblins.yaml``, or the file ``GOBLIN_EXECUTOR_CATALOG``
names).

An argv template holds literal items and whole-item placeholders ``"{arg}"``. A placeholder is
replaced by the argument's value as ONE argv item (a list argument by one item per element); it is
never interpolated inside a string and never seen by a shell, so ``; rm -rf /`` or ``$(...)`` stay
inert text. An absent optional argument (after JSON Schema defaults) drops its item. Arguments that
name files can be confined to root directories (``path_roots``), checked on the resolved path.

A catalog that is itself wrong (a bad schema, a placeholder naming no property, a duplicate name, an
executable that does not exist) fails at load with a message naming the goblin and the field.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from services.common.errors import InvalidArgument, NotFound
from services.common.settings import ConfigError, default_home
from services.executor.limits import Limits
from services.executor.sandbox import RunSpec, clean_environment
from services.executor.taskuser import task_can_execute, task_python

log = logging.getLogger(__name__)

BUILTIN_CATALOG = Path(__file__).with_name("goblins.yaml")
CATALOG_ENV = "GOBLIN_EXECUTOR_CATALOG"
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
PLACEHOLDER_RE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Variables a goblin may not pass through: they would undo the sandbox's own environment.
RESERVED_ENV = {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PYTHONPATH", "PYTHONHOME", "BASH_ENV", "ENV", "IFS"}
SCALAR_TYPES = {"string", "integer", "number"}
SPEC_KEYS = {"name", "description", "args_schema", "argv", "env", "limits", "idempotent", "max_attempts"}
SPEC_KEYS |= {"network", "path_roots"}


@dataclass(frozen=True)
class GoblinSpec:
    """One catalog entry. ``argv[0]`` is already an absolute path."""

    name: str
    description: str
    args_schema: dict
    argv: tuple[str, ...]  # "python" items became taskuser.task_python(): keep such goblins to the standard library
    env: tuple[str, ...] = ()  # extra variable NAMES allowed through from the service's environment
    limits: Limits = Limits()
    idempotent: bool = False  # may be retried when its executor died
    max_attempts: int = 1
    network: bool = False  # needs the network (keeps it in bubblewrap mode)
    path_roots: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # arg -> allowed resolved roots

    def public(self) -> dict[str, Any]:
        """What ``GET /v1/goblins`` shows: no executable paths, no environment names."""
        return {
            "name": self.name,
            "description": self.description,
            "args_schema": self.args_schema,
            "limits": dataclasses.asdict(self.limits),
            "idempotent": self.idempotent,
        }


class Catalog:
    """An immutable set of goblins by name."""

    def __init__(self, specs: Iterable[GoblinSpec]) -> None:
        self._specs: dict[str, GoblinSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ConfigError(f"goblin catalog: duplicate goblin name {spec.name!r}")
            self._specs[spec.name] = spec

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        """Load ``path``; by default the file ``GOBLIN_EXECUTOR_CATALOG`` names, else the packaged one."""
        if path is None:
            path = Path(os.environ[CATALOG_ENV]) if os.environ.get(CATALOG_ENV) else BUILTIN_CATALOG
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"goblin catalog {path}: cannot read it: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("goblins"), list):
            raise ConfigError(f"goblin catalog {path}: expected a mapping with a 'goblins' list")
        try:
            return cls(_parse_spec(entry, i) for i, entry in enumerate(document["goblins"]))
        except ConfigError as exc:
            raise ConfigError(f"goblin catalog {path}: {exc}") from None

    def get(self, name: str) -> GoblinSpec:
        """The goblin called ``name``; NotFound otherwise."""
        try:
            return self._specs[name]
        except KeyError:
            raise NotFound(f"no goblin named {name!r}", code="goblin_not_found") from None

    def list(self) -> list[GoblinSpec]:
        """Every goblin, by name."""
        return [self._specs[name] for name in sorted(self._specs)]

    def validate(self, name: str, args: dict) -> list[str]:
        """The argv ``name`` runs with ``args``, after validating them against its schema and path roots.

        Raises NotFound for an unknown goblin and InvalidArgument whose message starts with the field
        (``args.path: ...``) for bad arguments."""
        spec = self.get(name)
        if not isinstance(args, dict):
            raise InvalidArgument("args: must be an object", code="invalid_arguments")
        args = _with_defaults(spec.args_schema, args)
        validator = jsonschema.Draft202012Validator(spec.args_schema)
        errors = sorted(validator.iter_errors(args), key=lambda e: (list(e.absolute_path), e.message))
        if errors:
            raise InvalidArgument(_describe_error(errors[0], spec.args_schema), code="invalid_arguments")
        for arg, roots in spec.path_roots.items():
            if arg in args:
                _check_under_roots(arg, args[arg], roots)
        return _render(spec.argv, args)

    def run_spec(
        self,
        name: str,
        args: dict,
        *,
        work_root: Path,
        mode: str = "rlimits",
        timeout_s: float | None = None,
        source_env: Mapping[str, str] | None = None,
    ) -> RunSpec:
        """The sandbox's RunSpec for one goblin call: validated argv, clean environment with the goblin's
        own names, its limits (a caller may shorten the wall clock, never lengthen it)."""
        spec = self.get(name)
        return RunSpec(
            argv=tuple(self.validate(name, args)),
            env=clean_environment(spec.env, source_env),
            limits=spec.limits.replace_timeout(timeout_s),
            work_root=work_root,
            mode=mode,
            network=spec.network,
        )


def _with_defaults(schema: dict, args: dict) -> dict:
    """Top-level ``default`` values of the schema's properties for the arguments not given."""
    merged = dict(args)
    for prop, sub in schema.get("properties", {}).items():
        if prop not in merged and isinstance(sub, dict) and "default" in sub:
            merged[prop] = sub["default"]
    return merged


def _describe_error(error: jsonschema.ValidationError, schema: dict) -> str:
    """One line naming the offending field: ``args.<path>: <what is wrong>``."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [r for r in error.validator_value if r not in error.instance]
        if missing:
            return f"args{where}.{missing[0]}: is required"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in known)
        if extra:
            return f"args{where}.{extra[0]}: is not an argument of this goblin"
    if error.validator == "pattern":
        return f"args{where}: does not match the pattern {error.validator_value!r}"
    if error.validator == "type":
        return f"args{where}: must be of type {error.validator_value}"
    # Other messages quote the value; keep a hostile or huge one from filling the error.
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    return f"args{where}: {message}"


def _check_under_roots(arg: str, value: Any, roots: tuple[str, ...]) -> None:
    resolved = os.path.realpath(str(value))
    for root in roots:
        real_root = os.path.realpath(root)
        if resolved == real_root or resolved.startswith(real_root.rstrip("/") + "/"):
            return
    allowed = ", ".join(roots) or "(none configured)"
    raise InvalidArgument(f"args.{arg}: must be under one of: {allowed}", code="invalid_arguments")


def _render(template: tuple[str, ...], args: dict) -> list[str]:
    argv: list[str] = []
    for item in template:
        match = PLACEHOLDER_RE.match(item)
        if match is None:
            argv.append(item)
            continue
        arg = match.group(1)
        value = args.get(arg)
        if value is None:
            continue
        for element in value if isinstance(value, list) else [value]:
            text = element if isinstance(element, str) else _number(element, arg)
            if "\x00" in text:
                raise InvalidArgument(f"args.{arg}: must not contain NUL characters", code="invalid_arguments")
            argv.append(text)
    return argv


def _number(value: Any, arg: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"args.{arg}: must be a string or a number", code="invalid_arguments")
    return str(value)


# --- loading ------------------------------------------------------------------------------------


def _parse_spec(entry: Any, index: int) -> GoblinSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"goblins[{index}]: expected a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"goblins[{index}].name: expected a lower-case name matching {NAME_RE.pattern}")
    where = f"goblins.{name}"
    unknown = sorted(set(entry) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}")
    description = entry.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(f"{where}.description: expected a non-empty string")
    schema = _parse_schema(where, entry.get("args_schema"))
    argv = _parse_argv(where, entry.get("argv"), schema)
    env = entry.get("env", [])
    if not isinstance(env, list) or not all(isinstance(n, str) and ENV_NAME_RE.match(n) for n in env):
        raise ConfigError(f"{where}.env: expected a list of environment variable names")
    bad = [n for n in env if n in RESERVED_ENV or n.startswith("LD_")]
    if bad:
        raise ConfigError(f"{where}.env: {bad[0]} is set by the sandbox and cannot be passed through")
    for flag in ("idempotent", "network"):
        if not isinstance(entry.get(flag, False), bool):
            raise ConfigError(f"{where}.{flag}: expected true or false")
    attempts = entry.get("max_attempts", 1)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 10:
        raise ConfigError(f"{where}.max_attempts: expected an integer from 1 to 10")
    return GoblinSpec(
        name=name,
        description=description.strip(),
        args_schema=schema,
        argv=argv,
        env=tuple(env),
        limits=_parse_limits(where, entry.get("limits", {})),
        idempotent=entry.get("idempotent", False),
        max_attempts=attempts,
        network=entry.get("network", False),
        path_roots=_parse_path_roots(where, entry.get("path_roots", {}), schema),
    )


def _parse_schema(where: str, schema: Any) -> dict:
    if not isinstance(schema, dict):
        raise ConfigError(f"{where}.args_schema: expected a JSON Schema object")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"{where}.args_schema: not a valid JSON Schema: {exc.message}") from None
    if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
        raise ConfigError(f"{where}.args_schema: must be 'type: object' with 'additionalProperties: false'")
    return schema


def _parse_argv(where: str, argv: Any, schema: dict) -> tuple[str, ...]:
    if not isinstance(argv, list) or not argv or not all(isinstance(item, str) for item in argv):
        raise ConfigError(f"{where}.argv: expected a non-empty list of strings")
    if PLACEHOLDER_RE.match(argv[0]):
        raise ConfigError(f"{where}.argv[0]: the executable must be literal, not an argument")
    properties = schema.get("properties", {})
    for i, item in enumerate(argv[1:], start=1):
        match = PLACEHOLDER_RE.match(item)
        if match is None:
            continue
        arg = match.group(1)
        if arg not in properties:
            raise ConfigError(f"{where}.argv[{i}]: placeholder {item} names no property of args_schema")
        if not _argv_type(properties[arg]):
            raise ConfigError(f"{where}.argv[{i}]: {item} must be a string, integer or number (or an array of them)")
    return (_resolve_executable(where, argv[0]), *argv[1:])


def _argv_type(prop: Any) -> bool:
    if not isinstance(prop, dict):
        return False
    kind = prop.get("type")
    if kind == "array":
        items = prop.get("items")
        return isinstance(items, dict) and items.get("type") in SCALAR_TYPES
    return kind in SCALAR_TYPES


def _resolve_executable(where: str, name: str) -> str:
    """An absolute path now, so a task never depends on its (fixed, minimal) PATH to find its program."""
    if name in ("python", "python3"):
        return task_python()
    if os.path.isabs(name):
        found = name if os.access(name, os.X_OK) and os.path.isfile(name) else None
    else:
        # Beside the interpreter first: the suite's own console scripts (``goblin``) live there.
        search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", ""), "/usr/bin:/bin"])
        found = shutil.which(name, path=search)
    if found is None:
        raise ConfigError(f"{where}.argv[0]: executable {name!r} not found")
    found = os.path.abspath(found)
    if not task_can_execute(found):
        # Not fatal: the operator may fix permissions, or run the executor unprivileged.
        log.warning("%s: %s (or its interpreter) is out of the task user's reach; its tasks will fail", where, found)
    return found


def _parse_limits(where: str, raw: Any) -> Limits:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.limits: expected a mapping")
    known = {f.name: f.type for f in dataclasses.fields(Limits)}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}.limits.{key}: unknown limit (known: {', '.join(known)})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}.limits.{key}: expected a number")
        if known[key] == "int" and not isinstance(value, int):
            raise ConfigError(f"{where}.limits.{key}: expected an integer")
    try:
        return Limits(**raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _parse_path_roots(where: str, raw: Any, schema: dict) -> dict[str, tuple[str, ...]]:
    """``{arg: [root, ...]}``; a root is an absolute path, ``@home`` (GOBLIN_HOME), ``@prefix`` (the
    Python environment) or ``$VAR`` (an environment variable; dropped while unset)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.path_roots: expected a mapping of argument to root directories")
    properties = schema.get("properties", {})
    roots: dict[str, tuple[str, ...]] = {}
    for arg, entries in raw.items():
        if properties.get(arg, {}).get("type") != "string":
            raise ConfigError(f"{where}.path_roots.{arg}: names no string property of args_schema")
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ConfigError(f"{where}.path_roots.{arg}: expected a list of directories")
        resolved = []
        for entry in entries:
            if entry == "@home":
                resolved.append(str(default_home()))
            elif entry == "@prefix":
                resolved.append(sys.prefix)
            elif entry.startswith("$"):
                if os.environ.get(entry[1:]):
                    resolved.append(os.path.abspath(os.environ[entry[1:]]))
            elif os.path.isabs(entry):
                resolved.append(entry)
            else:
                raise ConfigError(f"{where}.path_roots.{arg}: {entry!r} is not absolute, @home, @prefix or $VAR")
        roots[arg] = tuple(resolved)
    return roots
