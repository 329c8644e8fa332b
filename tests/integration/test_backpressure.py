"""Backpressure and cancellation on a suite whose model takes one sequence and queues one more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from goblin.v1 import inference_pb2, inference_pb2_grpc
from goblin_tools.suite import Suite, start_suite

LONG = [{"role": "user", "content": "Write a very long story about a goblin who builds a machine."}]


@pytest.fixture(scope="module")
def small_suite(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str], redis_url: str
) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("small"),
        DATABASE_URL=new_database(),
        REDIS_URL=redis_url,
        GOBLIN_INFERENCE_MAX_QUEUE="1",
        GOBLIN_INFERENCE_MAX_SEQUENCES="1",
    )
    try:
        suite.wait_ready()
        yield suite
    finally:
        suite.stop()


def inference_status(suite: Suite) -> inference_pb2.InferenceStatus:
    with suite.grpc_channel("inference") as channel:
        return inference_pb2_grpc.InferenceStub(channel).GetStatus(inference_pb2.InferenceStatusRequest(), timeout=5)


def wait_idle(suite: Suite, timeout_s: float = 30) -> inference_pb2.InferenceStatus:
    deadline = time.monotonic() + timeout_s
    status = inference_status(suite)
    while time.monotonic() < deadline and (status.active_sequences or status.queue_length):
        time.sleep(0.05)
        status = inference_status(suite)
    return status


async def test_a_full_queue_answers_429_at_once_with_retry_after(small_suite: Suite) -> None:
    headers = {"Authorization": f"Bearer {small_suite.admin_key}"}
    async with httpx.AsyncClient(
        base_url=small_suite.gateway_url, verify=small_suite.ssl_context(), headers=headers, timeout=120
    ) as client:
        body = {"model": "local", "messages": LONG, "max_tokens": 64}
        replies = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(5)))
    statuses = sorted(r.status_code for r in replies)
    assert statuses.count(200) >= 2, statuses  # one decoding + one queued always fit
    refused = [r for r in replies if r.status_code == 429]
    assert refused, f"five requests into room for two were all accepted: {statuses}"
    for reply in refused:
        payload = reply.json()
        assert payload["error"] == "inference_queue_full"
        assert int(reply.headers["Retry-After"]) >= 1
        assert payload["retry_after"] == int(reply.headers["Retry-After"])
    async with httpx.AsyncClient(verify=small_suite.ssl_context(), timeout=10) as client:
        metrics = (await client.get(f"{small_suite.gateway_url}/metrics")).text
        inference_metrics = (await client.get(small_suite.metrics_url("inference"))).text
    assert 'http_requests_429_total{endpoint="/v1/chat/completions"}' in metrics
    assert "goblin_inference_queue_capacity 1.0" in inference_metrics


def test_a_dropped_stream_frees_the_model(small_suite: Suite) -> None:
    wait_idle(small_suite)
    headers = {"Authorization": f"Bearer {small_suite.admin_key}", "X-Correlation-ID": "dropped-stream-1"}
    body = {"model": "local", "messages": LONG, "max_tokens": 1500, "stream": True}
    with httpx.Client(base_url=small_suite.gateway_url, verify=small_suite.ssl_context(), timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as reply:
            assert reply.status_code == 200
            seen = 0
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    seen += 1
                if seen >= 3:
                    break
            assert inference_status(small_suite).active_sequences == 1
        # Leaving the block closed the connection mid-stream.
    status = wait_idle(small_suite, timeout_s=10)
    assert status.active_sequences == 0 and status.queue_length == 0, "the model kept generating for nobody"
    # The next request gets the model straight away: with one sequence and 1500 tokens left it would
    # otherwise wait for the whole story.
    with small_suite.admin_client() as client:
        reply = client.post("/v1/chat/completions", json={"model": "local", "messages": LONG, "max_tokens": 4})
    assert reply.status_code == 200
    assert reply.json()["usage"]["completion_tokens"] <= 4
