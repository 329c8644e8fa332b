"""The image, without a Docker engine: the Dockerfile parsed (dockerfile-parse) and its promises checked,
and its entry point run with a stand-in python to prove each command reaches the right module."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from goblin_tools import deploy_tools
from services.common.topology import BACKEND_SERVICES

ROOT = deploy_tools.ROOT
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
SERVICES = ("gateway", *BACKEND_SERVICES)
SECRET_WORDS = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE|_KEY$|DATABASE_URL|REDIS_URL)", re.IGNORECASE)


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(ROOT / "Dockerfile"))


def _stages(parser: DockerfileParser) -> list[list[dict]]:
    stages: list[list[dict]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_multi_stage_with_a_pinned_base(dockerfile: DockerfileParser) -> None:
    stages = _stages(dockerfile)
    assert len(stages) >= 2
    for image in dockerfile.parent_images:  # ARGs resolved: what each FROM really pulls
        name, _, digest = image.partition("@")
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
        assert digest.startswith("sha256:") or re.fullmatch(r"\d+\.\d+\.\d+[\w.-]*", tag), (
            f"{image}: pin the base by digest or an exact version tag"
        )
        assert tag != "latest"


def test_llama_cpp_is_built_in_the_builder_with_specs_cmake_args(dockerfile: DockerfileParser) -> None:
    builder, runtime = _stages(dockerfile)[0], _stages(dockerfile)[-1]
    builder_text = "\n".join(i["value"] for i in builder)
    spec_args = re.search(r"export CMAKE_ARGS \?= (.+)", (ROOT / "Makefile").read_text()).group(1).strip()
    assert f'CMAKE_ARGS="{spec_args}"' in builder_text
    assert '".[local]"' in builder_text  # llama-cpp-python comes from the local extra
    assert "build-essential" in builder_text
    runtime_text = "\n".join(i["value"] for i in runtime)
    assert "build-essential" not in runtime_text and "pip install" not in runtime_text
    assert any(i["instruction"] == "COPY" and i["value"].startswith("--from=builder") for i in runtime)


def test_runs_as_a_non_root_user(dockerfile: DockerfileParser) -> None:
    runtime = _stages(dockerfile)[-1]
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users, "the runtime stage must name a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric user lets Kubernetes check runAsNonRoot"
    # the chart's podSecurityContext runs the same uid
    assert f"runAsUser: {user}" in (deploy_tools.VALUES_FILE.read_text())


def test_no_secrets_in_the_image(dockerfile: DockerfileParser) -> None:
    for instruction in dockerfile.structure:
        if instruction["instruction"] in ("ENV", "ARG", "LABEL"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", instruction["value"]):
                assert not SECRET_WORDS.search(name), f"{instruction['instruction']} {name}: secrets come at run time"
        if instruction["instruction"] in ("COPY", "ADD"):
            sources = shlex.split(instruction["value"])[:-1]
            for source in sources:
                assert not source.startswith("--") or source.startswith(("--from=", "--chmod=")), source
                assert ".goblin" not in source and not source.endswith((".pem", ".key", ".env"))
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[[line.strip() for line in ignored].index("**")] == "**"  # everything out unless let in
    assert not any(line.startswith("!") and ".goblin" in line for line in ignored)


def test_every_copied_path_exists(dockerfile: DockerfileParser) -> None:
    for instruction in _stages(dockerfile)[0] + _stages(dockerfile)[-1]:
        if instruction["instruction"] == "COPY" and "--from=" not in instruction["value"]:
            for source in shlex.split(instruction["value"])[:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), source


def test_entrypoint_chooses_the_service_by_command(dockerfile: DockerfileParser, tmp_path: Path) -> None:
    runtime = _stages(dockerfile)[-1]
    entry = [i["value"] for i in runtime if i["instruction"] == "ENTRYPOINT"][-1]
    assert entry == '["/usr/local/bin/goblin-entrypoint"]'
    copy = next(i["value"] for i in runtime if i["instruction"] == "COPY" and "goblin-entrypoint" in i["value"])
    assert "deploy/docker/entrypoint.sh" in copy
    # Run the real script with stand-ins for python and goblin that print what they were asked to run.
    for tool in ("python", "goblin"):
        stub = tmp_path / tool
        stub.write_text(f'#!/bin/sh\necho {tool} "$@"\n')
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env)

    for service in SERVICES:
        assert run(service).stdout.strip() == f"python -m services.{service}"
        # the module it starts is in the repository, with a __main__
        assert (ROOT / "services" / service / "__main__.py").is_file()
    assert run().stdout.strip() == "python -m services.gateway"
    assert run("migrate").stdout.strip() == "goblin migrate"
    assert run("smoke", "ready").stdout.strip() == "python -m goblin_tools.deploy_tools smoke ready"
    refused = run("sh")
    assert refused.returncode == 64 and "unknown command" in refused.stderr
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["goblin"] == "goblin_tools.cli:main"


def test_every_command_the_chart_runs_is_one_the_entrypoint_knows(rendered: dict) -> None:
    known = set(re.findall(r"^\s+([a-z|]+)\)", ENTRYPOINT.read_text(), re.MULTILINE))
    commands = {c for group in known for c in group.split("|")}
    for objects in rendered.values():
        for obj in objects:
            spec = obj.get("spec", {})
            spec = spec.get("template", {}).get("spec", spec) if obj["kind"] != "Pod" else spec
            for container in spec.get("containers", []) if isinstance(spec, dict) else []:
                if container["image"].startswith("ghcr.io/goblin/goblin"):
                    assert container["args"][0] in commands, (obj["metadata"]["name"], container["args"])
