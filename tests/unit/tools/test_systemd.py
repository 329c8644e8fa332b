"""deploy/systemd/: the units `goblin install-systemd` writes, checked by systemd itself."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from goblin_tools.cli import app
from goblin_tools.systemd import INFERENCE_SOCKET, UNIT_SERVICES, Layout, render_units, write_units
from services.common.settings import ConfigError, load_settings
from services.inference.config import InferenceSettings

ROOT = Path(__file__).resolve().parents[3]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _sections(text: str) -> configparser.ConfigParser:
    # Repeated keys (Environment=, EnvironmentFile=) are legal in units; keep the last, as a dict would.
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def _layout(tmp_path: Path) -> Layout:
    return Layout(python=Path(sys.executable), app_dir=ROOT, home=tmp_path / "home", config_dir=tmp_path / "etc")


def test_committed_units_are_the_generators_output_for_the_default_layout() -> None:
    committed = {p.name: p.read_text() for p in (ROOT / "deploy" / "systemd").iterdir()}
    assert committed == render_units(Layout()), (
        "deploy/systemd/ is stale: goblin install-systemd --dest deploy/systemd "
        "--python /opt/goblin/venv/bin/python --app-dir /opt/goblin/app"
    )


def test_every_service_is_hardened_and_part_of_the_target() -> None:
    units = render_units(Layout())
    assert set(units) == {f"goblin-{name}.service" for name in UNIT_SERVICES} | {"goblin.target"}
    target = _sections(units["goblin.target"])
    assert set(target["Unit"]["Wants"].split()) == {f"goblin-{name}.service" for name in UNIT_SERVICES}
    for name in UNIT_SERVICES:
        text = units[f"goblin-{name}.service"]
        service = _sections(text)["Service"]
        assert service["User"] == "goblin"
        assert service["NoNewPrivileges"] == "yes"
        assert service["PrivateTmp"] == "yes"
        assert service["ProtectSystem"] == "strict"
        assert service["ReadWritePaths"] == "/var/lib/goblin"
        assert service["CapabilityBoundingSet"] == ""
        assert service["ExecStart"] == f"/opt/goblin/venv/bin/python -m services.{name}"
        # Settings and secrets come from root-only files, never from the unit (world-readable).
        assert f"EnvironmentFile=/etc/goblin/goblin.env\nEnvironmentFile=-/etc/goblin/{name}.env" in text
        assert "PASSWORD" not in text.upper() and "DATABASE_URL" not in text
    inference = _sections(units["goblin-inference.service"])["Service"]
    assert inference["MemoryMax"] == "8G" and inference["CPUQuota"] == "300%"
    assert inference["RuntimeDirectory"] == "goblin"
    assert f"GOBLIN_INFERENCE_UDS={INFERENCE_SOCKET}" in units["goblin-inference.service"]
    assert f"GOBLIN_INFERENCE_ADDR=unix:{INFERENCE_SOCKET}" in units["goblin-router.service"]
    assert "MemoryMax" not in units["goblin-gateway.service"]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_units_for_this_checkout(tmp_path: Path) -> None:
    written = write_units(tmp_path / "units", _layout(tmp_path))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, written)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on mere warnings (an unknown key, a bad value it ignores): any output is a finding.
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a wrong interpreter and a bad quota are reported."""
    unit = tmp_path / "goblin-inference.service"
    text = render_units(_layout(tmp_path))["goblin-inference.service"]
    unit.write_text(text.replace(sys.executable, "/nonexistent/python").replace("CPUQuota=300%", "CPUQuota=lots"))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "Invalid CPU quota" in result.stderr and "/nonexistent/python" in result.stderr


def test_install_systemd_writes_the_units_for_the_given_paths(tmp_path: Path) -> None:
    dest = tmp_path / "system"
    result = CliRunner().invoke(
        app,
        [
            "install-systemd",
            "--dest",
            str(dest),
            "--home",
            str(tmp_path / "state"),
            "--inference-memory-max",
            "3G",
            "--inference-cpu-quota",
            "150%",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dest.iterdir()) == sorted(render_units(Layout()))
    inference = (dest / "goblin-inference.service").read_text()
    assert f"ExecStart={sys.executable} -m services.inference" in inference
    assert f"WorkingDirectory={ROOT}" in inference
    assert f"ReadWritePaths={tmp_path / 'state'}" in inference
    assert "MemoryMax=3G" in inference and "CPUQuota=150%" in inference
    assert oct((dest / "goblin.target").stat().st_mode & 0o777) == "0o644"


def test_install_systemd_into_an_unwritable_place_fails_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(app, ["install-systemd", "--dest", str(blocker / "units")])
    assert result.exit_code == 1
    assert "cannot write the units" in result.output


def test_inference_listens_on_a_unix_socket_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOBLIN_INFERENCE_UDS", "/run/goblin/inference.sock")
    assert load_settings(InferenceSettings).grpc_listen_address() == "unix:/run/goblin/inference.sock"
    monkeypatch.setenv("GOBLIN_INFERENCE_UDS", "unix:/run/goblin/other.sock")
    assert load_settings(InferenceSettings).grpc_listen_address() == "unix:/run/goblin/other.sock"
    monkeypatch.setenv("GOBLIN_INFERENCE_UDS", "relative.sock")
    with pytest.raises(ConfigError, match="GOBLIN_INFERENCE_UDS: must be an absolute path"):
        load_settings(InferenceSettings)
    monkeypatch.delenv("GOBLIN_INFERENCE_UDS")
    monkeypatch.setenv("GOBLIN_INFERENCE_PORT", "50999")
    assert load_settings(InferenceSettings).grpc_listen_address() == "127.0.0.1:50999"


def test_goblin_up_tells_every_peer_to_dial_inference_on_its_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    from goblin_tools.supervisor import SuiteSettings

    monkeypatch.setenv("GOBLIN_INFERENCE_UDS", "/run/goblin/inference.sock")
    addresses = load_settings(SuiteSettings).peer_addresses()
    assert addresses["inference"] == "unix:/run/goblin/inference.sock"
    assert addresses["router"].startswith("127.0.0.1:")
