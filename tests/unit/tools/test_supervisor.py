from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from goblin_tools.supervisor import SuiteSettings, child_database, suite_decode_threads
from services.common.process import AlreadyRunning, InstanceLock


def test_second_lock_holder_is_refused_with_the_pid(tmp_path: Path) -> None:
    first = InstanceLock(tmp_path / "goblin.lock")
    first.acquire()
    try:
        # flock is per open file description: a second process is the honest test.
        code = (
            "import sys; from pathlib import Path\n"
            "from services.common.process import InstanceLock, AlreadyRunning\n"
            f"lock = InstanceLock(Path({str(tmp_path / 'goblin.lock')!r}))\n"
            "try:\n    lock.acquire()\nexcept AlreadyRunning as e:\n    print(e); sys.exit(3)\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert result.returncode == 3
        assert "already running" in result.stdout
        import os

        assert f"pid {os.getpid()}" in result.stdout
    finally:
        first.release()
    again = InstanceLock(tmp_path / "goblin.lock")
    again.acquire()
    again.release()


def test_same_process_second_lock_is_refused(tmp_path: Path) -> None:
    first = InstanceLock(tmp_path / "goblin.lock")
    first.acquire()
    try:
        with pytest.raises(AlreadyRunning):
            InstanceLock(tmp_path / "goblin.lock").acquire()
    finally:
        first.release()


def test_children_learn_every_peer_address(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOBLIN_HOME", str(tmp_path))
    monkeypatch.setenv("GOBLIN_AUTH_PORT", "6004")
    settings = SuiteSettings()
    env = settings.child_env("postgresql://db/goblin", "unix:///tmp/redis.sock")
    assert env["GOBLIN_AUTH_ADDR"] == "127.0.0.1:6004"
    assert env["GOBLIN_AUTH_PORT"] == "6004"
    assert env["GOBLIN_ROUTER_ADDR"] == "127.0.0.1:50051"
    assert env["GOBLIN_RAG_METRICS_PORT"] == "9103"
    assert env["DATABASE_URL"] == "postgresql://db/goblin"
    assert env["GOBLIN_HOME"] == str(tmp_path)
    import os

    assert env["GOBLIN_INFERENCE_THREADS"] == str(len(os.sched_getaffinity(0)))
    assert env["GOBLIN_INFERENCE_THREADS"] == str(suite_decode_threads())
    monkeypatch.setenv("GOBLIN_INFERENCE_THREADS", "3")
    assert settings.child_env("postgresql://db/goblin", "unix:///x")["GOBLIN_INFERENCE_THREADS"] == "3"


def test_the_startup_heap_is_frozen_out_of_full_collections() -> None:
    # In a fresh interpreter: freezing is process-wide.
    code = (
        "import gc, json\n"
        "from services.common.process import freeze_startup_heap\n"
        "startup = [[i] for i in range(50_000)]\n"
        "before = len(gc.get_objects())\n"
        "freeze_startup_heap()\n"
        "print(json.dumps([before, len(gc.get_objects()), gc.get_freeze_count()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    before, tracked, frozen = json.loads(done.stdout)
    assert before > 50_000
    assert frozen >= 50_000
    assert tracked < 1_000  # a full collection now walks what came after start-up only


def test_each_child_gets_its_own_database_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOBLIN_HOME", str(tmp_path))
    monkeypatch.setenv("GOBLIN_AUTH_DATABASE_URL", "postgresql://goblin_auth:pw@db/goblin")
    urls = SuiteSettings().service_database_urls("postgresql://admin@db/goblin")
    assert urls["auth"] == "postgresql://goblin_auth:pw@db/goblin"
    assert urls["router"] == urls["gateway"] == "postgresql://admin@db/goblin", "unset: DATABASE_URL"
    assert "inference" not in urls
    env = {"DATABASE_URL": "postgresql://admin@db/goblin", "DATABASE_URL_FILE": "/run/db", "REDIS_URL": "unix:///r"}
    assert child_database(env, urls["auth"])["DATABASE_URL"] == "postgresql://goblin_auth:pw@db/goblin"
    inference = child_database(env, None)
    assert "DATABASE_URL" not in inference and "DATABASE_URL_FILE" not in inference, "no database, no credentials"
    assert inference["REDIS_URL"] == "unix:///r"
