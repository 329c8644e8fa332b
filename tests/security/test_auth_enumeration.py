"""Passkey sign-in options do not tell whether an account exists (nor whether it has passkeys)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from goblin_tools.suite import Suite
from tests.integration.auth_support import auth_suite_fixture, bearer, create_user, unique_email
from tests.integration.webauthn_authenticator import SoftAuthenticator

auth_suite = auth_suite_fixture()


@pytest.fixture
def client(auth_suite: Suite) -> Iterator[httpx.Client]:
    with auth_suite.client() as c:
        yield c


def options_for(client: httpx.Client, email: str) -> dict[str, Any]:
    reply = client.post("/auth/passkeys/login/options", json={"email": email})
    assert reply.status_code == 200, reply.text
    return reply.json()["options"]


def shape(options: dict[str, Any]) -> dict[str, Any]:
    """Everything but the values that are fresh on every call."""
    return {k: (len(v) if isinstance(v, list) else v) for k, v in options.items() if k != "challenge"}


def test_login_options_look_the_same_for_known_and_unknown_emails(client: httpx.Client, auth_suite: Suite) -> None:
    origin = f"https://localhost:{auth_suite.env['GOBLIN_GATEWAY_PORT']}"
    with_passkey, pair = create_user(client)
    options = client.post("/auth/passkeys/register/options", headers=bearer(pair["access_token"])).json()
    authenticator = SoftAuthenticator(origin)
    enrolled = client.post(
        "/auth/passkeys/register/verify",
        json={"challenge_id": options["challenge_id"], "credential": authenticator.create(options["options"])},
        headers=bearer(pair["access_token"]),
    )
    assert enrolled.status_code == 201, enrolled.text
    without_passkey, _ = create_user(client)
    nobody = unique_email("nobody")

    shapes = {email: shape(options_for(client, email)) for email in (with_passkey, without_passkey, nobody)}
    assert shapes[with_passkey] == shapes[without_passkey] == shapes[nobody], shapes
    # Stable: asking twice about the unknown email answers the same.
    assert shape(options_for(client, nobody)) == shapes[nobody]

    # Nor the time it takes (medians, to ride out a loaded machine): within a few milliseconds.
    def median_s(email: str) -> float:
        samples = []
        for _ in range(15):
            start = time.perf_counter()
            options_for(client, email)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    known, unknown = median_s(with_passkey), median_s(nobody)
    assert abs(known - unknown) < max(0.02, 0.5 * min(known, unknown)), (known, unknown)

    # The account's passkey still signs in when its email is given.
    login = client.post("/auth/passkeys/login/options", json={"email": with_passkey}).json()
    signed_in = client.post(
        "/auth/passkeys/login/verify",
        json={"challenge_id": login["challenge_id"], "credential": authenticator.get(login["options"])},
    )
    assert signed_in.status_code == 200, signed_in.text
