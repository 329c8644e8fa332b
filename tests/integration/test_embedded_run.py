"""`goblin up` exactly as `make run` uses it: no URLs, so embedded PostgreSQL, Redis and Chroma."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil

from goblin_tools.suite import GOBLIN, ROOT, SERVICES, start_suite


def test_embedded_suite_starts_refuses_a_second_copy_and_stops_clean(tmp_path: Path) -> None:
    suite = start_suite(tmp_path / "home")
    try:
        suite.wait_ready()
        assert (suite.home / "pg" / "PG_VERSION").exists()
        assert (suite.home / "redis" / "redis.sock").exists()
        assert (suite.home / "chroma").is_dir()
        assert (suite.home / "tls" / "ca.pem").exists()
        with suite.admin_client() as client:
            assert client.get("/auth/me").status_code == 200
        children = psutil.Process(suite.process.pid).children(recursive=True)
        assert {f"services.{n}" for n in (*SERVICES, "gateway")} <= {c.cmdline()[-1] for c in children}

        second = subprocess.run(
            [str(GOBLIN), "up"], cwd=ROOT, env=suite.env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert "already running" in second.stderr
        assert str(suite.process.pid) in second.stderr

        doctor = subprocess.run(
            [str(GOBLIN), "doctor"], cwd=ROOT, env=suite.env, capture_output=True, text=True, timeout=60
        )
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        for name in SERVICES:
            assert f"service {name}" in doctor.stdout
        assert doctor.stdout.count("SERVING") >= len(SERVICES)
    finally:
        code = suite.stop()
    assert code == 0, suite.log_tail()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
        time.sleep(0.1)
    leftovers = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not leftovers, f"processes left after stop: {leftovers}"
    assert not (suite.home / "pg" / "postmaster.pid").exists(), "embedded postgres still running"
    # The data survives for the next start.
    restarted = start_suite(
        suite.home, **{k: v for k, v in suite.env.items() if k.startswith("GOBLIN_") and k != "GOBLIN_HOME"}
    )
    try:
        restarted.wait_ready()
        with restarted.client(headers={"Authorization": f"Bearer {suite.admin_key}"}) as client:
            assert client.get("/auth/me").status_code == 200, "the admin key must survive a restart"
    finally:
        assert restarted.stop() == 0


def test_doctor_reports_unreachable_database(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GOBLIN_HOME": str(tmp_path),
        "DATABASE_URL": f"postgresql://x@/x?host={tmp_path}/none",
    }
    result = subprocess.run([str(GOBLIN), "doctor"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "DATABASE_URL unreachable" in result.stdout
