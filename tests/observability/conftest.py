"""One running suite for the observability tests (test_traces.py, test_metrics.py): every service as a
real process, exporting its spans over OTLP to a TraceService this test session serves
(goblin_tools.otlp), with the real rag and inference services and a fake OpenAI-compatible provider
(``acme``) behind the router, so a request's trace has a provider HTTP call in it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.otlp import OtlpCollector
from goblin_tools.suite import Suite, start_suite
from tests.integration.auth_support import ADMIN_PASSWORD
from tests.integration.docqa_support import HANDBOOK, ingest

REMOTE_MODEL = "acme/acme-chat"
COLLECTION = "handbook"


@pytest.fixture(scope="session")
def obs_collector() -> Iterator[OtlpCollector]:
    collector = OtlpCollector().start()
    yield collector
    collector.stop()


@pytest.fixture(scope="session")
def obs_fake() -> Iterator[FakeProviders]:
    with FakeProviders(reply="Backups run nightly [1].") as server:
        yield server


@pytest.fixture(scope="session")
def obs_suite(
    tmp_path_factory: pytest.TempPathFactory,
    new_database: Callable[[], str],
    redis_url: str,
    obs_collector: OtlpCollector,
    obs_fake: FakeProviders,
) -> Iterator[Suite]:
    home = tmp_path_factory.mktemp("observability")
    catalog = Path(home) / "catalog.yaml"
    catalog.write_text(
        f"""
providers:
  acme:
    kind: openai_compatible
    base_url: http://127.0.0.1:{obs_fake.port}/acme/v1
models:
  {REMOTE_MODEL}:
    context_length: 8000
    input_price_per_mtok: 1.0
    output_price_per_mtok: 2.0
"""
    )
    suite = start_suite(
        home / "suite",
        DATABASE_URL=new_database(),
        REDIS_URL=redis_url,
        GOBLIN_CATALOG_FILE=str(catalog),
        ACME_API_KEY=obs_fake.key("acme"),
        GOBLIN_ADMIN_PASSWORD=ADMIN_PASSWORD,
        OTEL_EXPORTER_OTLP_ENDPOINT=obs_collector.endpoint,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="100",
        **obs_fake.env(),
    )
    try:
        suite.wait_ready()
        yield suite
    finally:
        suite.stop()


@pytest.fixture(scope="session")
def obs_admin(obs_suite: Suite) -> Iterator[httpx.Client]:
    """The admin's client, with the handbook collection ingested."""
    with obs_suite.admin_client() as client:
        client.timeout = httpx.Timeout(300)
        ingest(client, COLLECTION, HANDBOOK)
        yield client
