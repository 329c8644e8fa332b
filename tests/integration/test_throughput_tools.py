"""bench.throughput's load generator for real, tiny: two generator processes against the fake provider (in
a thread here) for a second or two, then the sweep and its report on that. Well under a minute; no suite,
no LiteLLM, and no timing asserted (the machine is shared)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from bench import throughput
from bench.throughput_load import Generator, Target
from goblin_tools.fakes.providers import FakeProviders

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def fake():
    with FakeProviders() as providers:
        yield providers


def direct(fake: FakeProviders) -> throughput.Endpoint:
    target = Target(
        "direct",
        f"http://127.0.0.1:{fake.port}/openai/v1/chat/completions",
        throughput.body("gpt-4o-mini", max_completion_tokens=4),
        {"Authorization": f"Bearer {fake.key('openai')}"},
    )
    me = psutil.Process(os.getpid())
    return throughput.Endpoint(target, lambda: [me])


def test_two_generator_processes_send_one_schedule_between_them(fake: FakeProviders):
    fake.reset()
    with Generator(2) as generator:
        samples = generator.run(direct(fake).target, 40, 1.0)
    assert samples.sent == 40
    assert samples.errors == {}
    assert len(samples.latencies_ms) == 40 and all(value > 0 for value in samples.latencies_ms)
    assert len(samples.send_lag_ms) == 40
    assert samples.cpu_s > 0
    assert len(fake.requests("openai")) == 40


def test_a_refused_request_is_an_error_with_its_answer(fake: FakeProviders):
    fake.reset()
    fake.fail("openai", 503, times=None)
    try:
        with Generator(1) as generator:
            samples = generator.run(direct(fake).target, 10, 0.5)
    finally:
        fake.reset()
    assert samples.errors == {"HTTP 503": 5}
    assert not samples.latencies_ms
    assert "fake failure 503" in samples.examples["HTTP 503"]


def test_the_sweep_reports_a_row_per_rate_and_a_plot(fake: FakeProviders, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("BENCH_NO_WRITE", "1")
    monkeypatch.setattr(throughput, "WORK", tmp_path)
    monkeypatch.setattr(throughput, "SETTLE_S", 0.1)
    with Generator(2) as generator:
        steps = throughput.sweep(generator, [direct(fake)], [20, 40], 1.0)
    # The second rate runs only if the first held; either way each step counted every request it sent.
    assert [s.offered for s in steps][:1] == [20]
    assert all(s.sent == s.ok + s.errors for s in steps)
    body = throughput.report(steps, [20, 40], 1.0, 2, ("0", "0"))
    assert "| direct | 20 |" in body
    assert (tmp_path / "throughput.png").read_bytes().startswith(b"\x89PNG")
