"""Readiness behind a load balancer: with GOBLIN_READY_REQUIRES naming what every request needs, a
stalled inference (a model reload, a restart) degrades its routes but leaves the gateway in rotation;
a stalled router takes it out. Services are held down with SIGSTOP so the supervisor cannot race the
test by restarting them."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from goblin_tools.suite import Suite, start_suite

REQUIRES = "postgres,redis,auth,router"


@pytest.fixture(scope="module")
def lb_suite(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str
) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("readiness"),
        DATABASE_URL=new_database(),
        REDIS_URL=redis_url,
        GOBLIN_READY_REQUIRES=REQUIRES,
        GOBLIN_HEALTH_TIMEOUT_S="0.5",
    )
    try:
        suite.wait_ready()
        # /health/ready answers 200 as soon as what REQUIRES names is up; rag and executor may still
        # be starting (the first test wants every service serving), so wait for the whole suite.
        deadline = time.monotonic() + 120
        while (body := ready(suite).json())["status"] != "ready":
            assert time.monotonic() < deadline, f"the suite never became wholly ready: {body}"
            time.sleep(0.2)
        yield suite
    finally:
        suite.stop()


@contextmanager
def stopped(suite: Suite, service: str) -> Iterator[None]:
    pid = suite.service_process(service).pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def ready(suite: Suite) -> httpx.Response:
    with suite.client(timeout=10) as client:
        return client.get("/health/ready")


def test_all_serving_is_ready(lb_suite: Suite) -> None:
    reply = ready(lb_suite)
    assert reply.status_code == 200 and reply.json()["status"] == "ready", reply.text


def test_a_stalled_inference_degrades_but_keeps_the_gateway_ready(lb_suite: Suite) -> None:
    with stopped(lb_suite, "inference"):
        reply = ready(lb_suite)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["status"] == "degraded"
        assert body["services"]["inference"] != "SERVING"
        assert body["services"]["router"] == "SERVING"
        # its routes answer a clear error, not a hang: a local chat fails fast with a JSON body
        with lb_suite.client(timeout=30, headers={"Authorization": f"Bearer {lb_suite.admin_key}"}) as client:
            chat = client.post(
                "/v1/chat/completions",
                json={"model": "local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            )
        assert chat.status_code in (503, 504), chat.text
        assert "error" in chat.json()
    deadline = time.monotonic() + 30
    while ready(lb_suite).json()["status"] != "ready":
        assert time.monotonic() < deadline, "inference did not come back after SIGCONT"
        time.sleep(0.2)


def test_a_stalled_required_service_takes_the_gateway_out(lb_suite: Suite) -> None:
    with stopped(lb_suite, "router"):
        reply = ready(lb_suite)
        assert reply.status_code == 503, reply.text
        body = reply.json()
        assert body["error"] == "not_ready" and "router" in body["message"]
    lb_suite.wait_ready(timeout_s=30)
