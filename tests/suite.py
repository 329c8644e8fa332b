"""A pytest plugin: the suite runner of goblin_tools.suite as session fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from goblin_tools.otlp import OtlpCollector
from goblin_tools.suite import Suite, start_suite


@pytest.fixture(scope="session")
def otlp_collector() -> Iterator[OtlpCollector]:
    collector = OtlpCollector().start()
    yield collector
    collector.stop()


@pytest.fixture(scope="session")
def suite(
    tmp_path_factory: pytest.TempPathFactory,
    new_database: Callable[[], str],
    redis_url: str,
    otlp_collector: OtlpCollector,
) -> Iterator[Suite]:
    """The whole suite against the session's PostgreSQL and Redis, exporting traces to a test
    collector, ready to take requests."""
    running = start_suite(
        tmp_path_factory.mktemp("suite"),
        DATABASE_URL=new_database(),
        REDIS_URL=redis_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_collector.endpoint,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
