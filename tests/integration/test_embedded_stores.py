"""The embedded stores wherever GOBLIN_HOME is, even in a path with characters URLs give meaning to."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
import redis

from goblin_tools.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedStoreError


@pytest.mark.parametrize("name", ["my home", "we?ird#home", "a&b", "it's", "a,b", "50%", "user@host", "x:y"])
def test_shell_characters_in_the_postgres_path_are_refused_clearly(tmp_path: Path, name: str) -> None:
    with pytest.raises(EmbeddedStoreError, match="set GOBLIN_HOME to another directory, or DATABASE_URL"):
        EmbeddedPostgres(tmp_path / name / "pg")
    server = EmbeddedRedis(tmp_path / name / "redis")  # Redis takes any path (its URL is percent-encoded)
    try:
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()


def test_embedded_stores_in_a_safe_path_with_punctuation(tmp_path: Path) -> None:
    home = tmp_path / "goblin-home_v1.2"
    server = EmbeddedRedis(home / "redis")
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
    finally:
        server.stop()
    postgres = EmbeddedPostgres(home / "pg")
    try:

        async def version() -> int:
            conn = await asyncpg.connect(postgres.create_database("goblin"))
            try:
                return await conn.fetchval("SELECT 1")
            finally:
                await conn.close()

        assert asyncio.run(version()) == 1
    finally:
        postgres.stop()
