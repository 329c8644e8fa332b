"""The goblin catalog: the shipped YAML, argument validation that names the field, argv rendering that
keeps hostile text inert, and catalogs that fail at load."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.common.settings import ConfigError
from services.executor.catalog import BUILTIN_CATALOG, Catalog, GoblinSpec, Limits
from services.executor.sandbox import available_modes, run
from services.executor.taskuser import task_python

HOSTILE = ["; rm -rf /", "$(touch /tmp/goblin-pwned)", "`id`", "a && b", "x | nc evil 1", "'\"", "\n--help"]


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.load()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "goblins.yaml"
    path.write_text(text)
    return path


def one(argv: str = "[printf, '%s', '{x}']", schema: str | None = None, extra: str = "") -> str:
    schema = schema or "{type: object, additionalProperties: false, properties: {x: {type: string}}}"
    return f"goblins:\n  - name: g\n    description: d\n    argv: {argv}\n    args_schema: {schema}\n{extra}"


def test_the_default_catalog_loads_with_absolute_executables(catalog: Catalog) -> None:
    names = [spec.name for spec in catalog.list()]
    assert {"hello", "sleep", "disk-usage", "model-checksum", "rag-reindex"} <= set(names)
    assert names == sorted(names)
    for spec in catalog.list():
        assert os.path.isabs(spec.argv[0]) and os.access(spec.argv[0], os.X_OK), spec.name
    assert catalog.get("model-checksum").argv[0] == task_python()
    assert catalog.get("hello").public()["args_schema"]["properties"]["name"]["default"] == "world"
    assert "argv" not in catalog.get("hello").public()


def test_validate_renders_argv_with_defaults(catalog: Catalog) -> None:
    assert catalog.validate("hello", {})[1:] == ["hello, %s\n", "world"]
    assert catalog.validate("disk-usage", {"path": "/tmp"})[1:] == ["-h", "-d", "1", "--", "/tmp"]
    assert catalog.validate("sleep", {"seconds": 0.5})[1:] == ["0.5"]


def test_an_unknown_goblin_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound, match="no goblin named 'nope'"):
        catalog.validate("nope", {})


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("sleep", {}, "args.seconds: is required"),
        ("sleep", {"seconds": "5"}, "args.seconds: must be of type number"),
        ("sleep", {"seconds": 99999}, "args.seconds: 99999 is greater than the maximum of 3600"),
        ("hello", {"name": "x", "shell": "sh"}, "args.shell: is not an argument of this goblin"),
        ("hello", {"name": ""}, "args.name: "),
        ("model-checksum", {"path": "/tmp/m.gguf", "sha256": "abc"}, "args.sha256: does not match"),
        ("disk-usage", {"path": "relative/dir"}, "args.path: does not match"),
    ],
)
def test_validation_errors_name_the_field(catalog: Catalog, name: str, args: dict, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        catalog.validate(name, args)
    assert caught.value.message.startswith(message)


def test_arguments_must_be_an_object(catalog: Catalog) -> None:
    with pytest.raises(InvalidArgument, match="^args: must be an object"):
        catalog.validate("hello", ["x"])  # type: ignore[arg-type]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_stays_one_literal_argv_item(catalog: Catalog, text: str) -> None:
    argv = catalog.validate("hello", {"name": text})
    assert argv[1:] == ["hello, %s\n", text]


async def test_hostile_text_is_printed_not_executed(catalog: Catalog, work_root: Path) -> None:
    marker = work_root / "pwned"
    text = f"$(touch {marker}); touch {marker}; `touch {marker}`"
    result = await run(catalog.run_spec("hello", {"name": text}, work_root=work_root))
    assert result.stdout_tail == f"hello, {text}\n"
    assert not await asyncio.to_thread(marker.exists)


@pytest.mark.parametrize(
    "path", ["-rf", "--files0-from=/etc/passwd", "/tmp/../etc", "/etc/passwd", "/", "/tmpfoo", "/tmp/x\x00y"]
)
def test_a_path_argument_cannot_become_an_option_or_leave_its_roots(catalog: Catalog, path: str) -> None:
    with pytest.raises(InvalidArgument, match="^args.path: "):
        catalog.validate("disk-usage", {"path": path})


def test_a_symlink_out_of_the_roots_is_refused(catalog: Catalog, tmp_path: Path) -> None:
    link = Path("/tmp") / f"goblin-test-link-{os.getpid()}"
    link.symlink_to("/etc")
    try:
        with pytest.raises(InvalidArgument, match="^args.path: must be under one of"):
            catalog.validate("disk-usage", {"path": str(link)})
    finally:
        link.unlink()


def test_nul_characters_are_refused(catalog: Catalog) -> None:
    with pytest.raises(InvalidArgument, match="^args.name: must not contain NUL"):
        catalog.validate("hello", {"name": "a\x00b"})


def test_list_arguments_expand_and_absent_optional_ones_drop(tmp_path: Path) -> None:
    schema = (
        "{type: object, additionalProperties: false, properties: "
        "{files: {type: array, items: {type: string}}, n: {type: integer}}}"
    )
    catalog = Catalog.load(write(tmp_path, one("[echo, '{n}', '--', '{files}']", schema)))
    assert catalog.validate("g", {"files": ["a b", "-c"], "n": 3})[1:] == ["3", "--", "a b", "-c"]
    assert catalog.validate("g", {})[1:] == ["--"]


def test_run_spec_uses_the_goblins_environment_names_and_may_only_shorten_the_timeout(tmp_path: Path) -> None:
    catalog = Catalog.load(write(tmp_path, one(extra="    env: [GOBLIN_URL]\n    limits: {timeout_s: 60}\n")))
    source = {"GOBLIN_URL": "https://x", "GOBLIN_API_KEY": "secret", "DATABASE_URL": "pg://secret"}
    spec = catalog.run_spec("g", {"x": "1"}, work_root=tmp_path, timeout_s=5, source_env=source)
    assert spec.env == {"PATH": spec.env["PATH"], "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "GOBLIN_URL": "https://x"}
    assert spec.limits.timeout_s == 5
    assert catalog.run_spec("g", {}, work_root=tmp_path, timeout_s=600).limits.timeout_s == 60


def test_the_environment_variable_names_another_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOBLIN_EXECUTOR_CATALOG", str(write(tmp_path, one())))
    assert [spec.name for spec in Catalog.load().list()] == ["g"]
    assert Catalog.load(BUILTIN_CATALOG).get("hello")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (one(schema="{type: object, additionalProperties: false, properties: {x: {type: 5}}}"), "args_schema: not a"),
        (one(schema="{type: object, properties: {x: {type: string}}}"), "additionalProperties: false"),
        (one(argv="[printf, '{y}']"), "argv[1]: placeholder {y} names no property"),
        (one(argv="['{x}', a]"), "argv[0]: the executable must be literal"),
        (one(argv="[/no/such/program, '{x}']"), "argv[0]: executable '/no/such/program' not found"),
        (one(argv="[no-such-program-xyz]"), "argv[0]: executable 'no-such-program-xyz' not found"),
        (one(argv="[printf]", extra="    limits: {timeout_secs: 5}\n"), "limits.timeout_secs: unknown limit"),
        (one(argv="[printf]", extra="    limits: {cpu_s: 1.5}\n"), "limits.cpu_s: expected an integer"),
        (one(argv="[printf]", extra="    limits: {timeout_s: 0}\n"), "limits.timeout_s must be positive"),
        (one(argv="[printf]", extra="    env: [LD_PRELOAD]\n"), "env: LD_PRELOAD is set by the sandbox"),
        (one(argv="[printf]", extra="    env: [PATH]\n"), "env: PATH is set by the sandbox"),
        (one(argv="[printf]", extra="    shell: true\n"), "unknown field 'shell'"),
        (one(argv="[printf]", extra="    path_roots: {y: [/tmp]}\n"), "path_roots.y: names no string property"),
        (one(argv="[printf]", extra="    path_roots: {x: [tmp]}\n"), "'tmp' is not absolute"),
        (one(argv="[printf]", extra="    max_attempts: 0\n"), "max_attempts: expected an integer from 1 to 10"),
        (one() + one().removeprefix("goblins:\n"), "duplicate goblin name 'g'"),
        ("goblins:\n  - name: Bad Name\n", "goblins[0].name: expected a lower-case name"),
        ("goblins: {}\n", "expected a mapping with a 'goblins' list"),
        ("goblins: [\n", "cannot read it"),
    ],
)
def test_a_wrong_catalog_fails_at_load_naming_the_goblin_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Catalog.load(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_boolean_argument_cannot_be_a_placeholder(tmp_path: Path) -> None:
    schema = "{type: object, additionalProperties: false, properties: {x: {type: boolean}}}"
    with pytest.raises(ConfigError, match=r"goblins.g.argv\[2\]: \{x\} must be a string, integer or number"):
        Catalog.load(write(tmp_path, one(schema=schema)))


def test_specs_are_plain_values() -> None:
    spec = GoblinSpec(name="n", description="d", args_schema={}, argv=("/bin/true",))
    assert spec.limits == Limits() and spec.env == () and not spec.idempotent and spec.max_attempts == 1


async def test_the_default_goblins_run(catalog: Catalog, work_root: Path) -> None:
    hello = await run(catalog.run_spec("hello", {}, work_root=work_root))
    assert hello.status == "succeeded" and hello.stdout_tail == "hello, world\n"
    nap = await run(catalog.run_spec("sleep", {"seconds": 0.1}, work_root=work_root))
    assert nap.status == "succeeded"
    short = await run(catalog.run_spec("sleep", {"seconds": 30}, work_root=work_root, timeout_s=0.5))
    assert short.status == "timed_out"
    scanned = work_root / "scanned"
    await asyncio.to_thread(scanned.mkdir, 0o755)
    usage = await run(catalog.run_spec("disk-usage", {"path": str(scanned), "depth": 0}, work_root=work_root))
    assert usage.status == "succeeded" and usage.stdout_tail.rstrip().endswith(str(scanned))


@pytest.mark.skipif("bwrap" not in available_modes(), reason="bubblewrap does not work here")
async def test_a_goblin_runs_under_bubblewrap(catalog: Catalog, work_root: Path) -> None:
    result = await run(catalog.run_spec("hello", {"name": "bwrap"}, work_root=work_root, mode="bwrap"))
    assert result.stdout_tail == "hello, bwrap\n"


async def test_model_checksum(work_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = work_root / "model.gguf"
    await asyncio.to_thread(model.write_bytes, b"GGUF" + bytes(1000))
    model.chmod(0o644)
    digest = hashlib.sha256(b"GGUF" + bytes(1000)).hexdigest()
    monkeypatch.setenv("GOBLIN_MODEL_PATH", str(model))
    catalog = Catalog.load()
    good = catalog.run_spec("model-checksum", {"path": str(model), "sha256": digest}, work_root=work_root)
    bad = catalog.run_spec("model-checksum", {"path": str(model), "sha256": "0" * 64}, work_root=work_root)
    ok = await run(good)
    assert ok.status == "succeeded" and ok.stdout_tail.endswith("checksum ok\n") and digest in ok.stdout_tail
    mismatch = await run(bad)
    assert mismatch.status == "failed" and mismatch.exit_code == 1 and "checksum mismatch" in mismatch.stderr_tail
    with pytest.raises(InvalidArgument, match="^args.path: must be under"):
        catalog.validate("model-checksum", {"path": "/etc/x.gguf", "sha256": digest})


@pytest.mark.skipif(os.geteuid() != 0, reason="only a dropped user can lack access to a program")
def test_a_program_out_of_the_task_users_reach_is_reported_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    program = tmp_path / "private-tool"  # under pytest's 0700 directories
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(0o755)
    Catalog.load(write(tmp_path, one(argv=f"[{program}]")))
    assert "out of the task user's reach" in caplog.text
