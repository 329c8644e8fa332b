"""The fixtures every auth unit test module uses: in-memory stores and a whole AuthService over them."""

from __future__ import annotations

import pytest

from services.auth.service import AuthService
from tests.unit.auth.fakes import FakeEphemeral, FakeStore, make_service


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def ephemeral() -> FakeEphemeral:
    return FakeEphemeral()


@pytest.fixture
async def service(store: FakeStore, ephemeral: FakeEphemeral) -> AuthService:
    made = make_service(store, ephemeral)
    await made.keyring.ensure()  # signing keys exist, as after the server's start-up
    return made
