"""Case 5 of issue 19, provider faults under steady mixed load (goblin_tools/provider_faults.py): a
provider that refuses connections, hangs, resets connections, sends half an SSE stream, answers 429 with
Retry-After or malformed JSON. With a fallback nothing reaches the user; without one, clear refusals
that name the provider and when it is tried again; the circuit opens and is seen to; no answered chat
is missing from the books. One suite runs every case; `python -m bench.faults` reports the same cases.
The last test restarts the router over persisted circuits that expired long ago."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from goblin_tools.faults import wait_serving
from goblin_tools.provider_faults import (
    FLAKY,
    FLAKY_CHAT,
    PROVIDER_CASES,
    ProviderCase,
    ProviderFakes,
    circuit_states,
    provider_fault_suite,
    run_provider_case,
    settle,
)
from goblin_tools.suite import Suite

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Suite, ProviderFakes]]:
    with provider_fault_suite(tmp_path_factory.mktemp("provider-faults")) as (suite, fakes):
        asyncio.run(settle(suite))
        yield suite, fakes


@pytest.mark.parametrize("case", PROVIDER_CASES, ids=[c.name for c in PROVIDER_CASES])
def test_provider_fault_under_load(running: tuple[Suite, ProviderFakes], case: ProviderCase) -> None:
    suite, fakes = running
    result = run_provider_case(suite, fakes, case)
    problems = result.problems()
    print(f"\n{result.row()}")
    assert not problems, f"{case.name}:\n" + "\n".join(problems) + f"\n{suite.log_tail(40)}"
    assert result.lost == 0, f"{case.name}: {result.lost} answered chats missing from the ledger"
    assert result.counts()["ok"] > 0


async def _persist_long_expired_circuits(suite: Suite) -> None:
    """Circuits a router wrote a day ago, when flaky failed (deployment and provider-wide)."""
    opened = datetime.now(UTC) - timedelta(days=1)
    conn = await asyncpg.connect(suite.database_url)
    try:
        await conn.execute(
            """INSERT INTO router.provider_metrics
                   (provider, model, circuit_state, consecutive_failures, opened_at, open_until)
               VALUES ($1, $2, 'open', 7, $3, $4)
               ON CONFLICT (provider, model) DO UPDATE SET circuit_state = 'open', consecutive_failures = 7,
                   opened_at = EXCLUDED.opened_at, open_until = EXCLUDED.open_until""",
            FLAKY,
            FLAKY_CHAT,
            opened,
            opened + timedelta(seconds=3),
        )
        await conn.execute(
            """INSERT INTO router.provider_metrics (provider, model, circuit_state, consecutive_failures, opened_at)
               VALUES ($1, '', 'half_open', 7, $2)
               ON CONFLICT (provider, model) DO UPDATE SET circuit_state = 'half_open', consecutive_failures = 7,
                   opened_at = EXCLUDED.opened_at, open_until = NULL""",
            FLAKY,
            opened,
        )
    finally:
        await conn.close()


def test_circuits_persisted_long_ago_do_not_hold_back_a_fresh_start(running: tuple[Suite, ProviderFakes]) -> None:
    """Restarted over circuits that opened a day ago, the router serves the first requests at once: all
    of a concurrent burst (not one probe while the rest are refused), with no fallback to hide behind."""
    suite, _ = running
    asyncio.run(_persist_long_expired_circuits(suite))
    os.kill(suite.service_process("router").pid, signal.SIGKILL)
    asyncio.run(wait_serving(suite, "router", lambda: 0.0))

    def ask(_: int) -> int:
        with httpx.Client(base_url=suite.gateway_url, verify=suite.ssl_context(), timeout=15) as client:
            reply = client.post(
                "/v1/chat/completions",
                json={"model": FLAKY_CHAT, "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {suite.admin_key}"},
            )
        return reply.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(ask, range(8)))
    assert statuses == [200] * 8
    assert all(value == 0 for value in asyncio.run(circuit_states(suite)).values())
