"""Faults under load, case 5 of issue 19: a provider that refuses connections, hangs, resets
connections, sends half an SSE stream, answers 429 with Retry-After, or answers malformed JSON, while
the suite carries the steady mixed load of :mod:`goblin_tools.faults` (whose ``run_case`` drives it).

One suite runs the whole family: two fake providers, ``flaky`` (the one that breaks; two models, so
that one failing model can be seen not to cut off the other) and ``backup`` (always healthy), each its
own server so that ``flaky`` can stop listening while ``backup`` answers. The load's provider chats go
to the policy ``resilient`` (flaky/flaky-chat, then backup/backup-chat) in the cases with a fallback,
and to flaky/flaky-chat alone in the one without. Circuits open after 3 failures and cool for 3 s, so
each case's circuits are closed again before the next begins (:func:`settle`).

What each case must show besides the load's own counts (:meth:`ProviderCaseResult.problems`):
- with a fallback: no provider chat answered other than OK (zero user-visible errors);
- the circuit opens: the deployment's (or, for refused connections, the provider-wide one) in
  ``goblin_router_circuit_state`` and the provider's row of the admin view;
- without a fallback: refusals are clear (503/504/429 JSON with a provider error code) and one of
  them names the provider, the model and when it is tried again, with Retry-After;
- a half stream ends with an error event after its text and is not sent again to the fallback;
- a 429's Retry-After is honoured: the model is not asked again before it is up, while its sibling
  model at the same provider answers.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from goblin_tools.fakes.providers import FakeProviders
from goblin_tools.faults import (
    CLEAR_STATUSES,
    ROUTE_TIMEOUT_S,
    SUITE_ENV,
    CaseResult,
    Outcome,
    Stores,
    ledger_missing,
    run_case,
)
from goblin_tools.suite import Suite, catalog_suite

FLAKY, BACKUP = "flaky", "backup"
FLAKY_CHAT, FLAKY_OTHER, BACKUP_CHAT = "flaky/flaky-chat", "flaky/flaky-other", "backup/backup-chat"
WITH_FALLBACK = "resilient"  # the policy: flaky/flaky-chat, then backup/backup-chat
COOLDOWN_S = 3.0
RETRY_AFTER_S = 6  # longer than the router's longest retry wait (4 s): the deployment cools instead
PROVIDER_CODES = frozenset(
    {"circuit_open", "provider_unavailable", "provider_timeout", "provider_rate_limited", "provider_bad_response"}
)
PROVIDER_SUITE_ENV = {
    **SUITE_ENV,
    "GOBLIN_PROVIDER_TIMEOUT_S": "1",  # the attempt timeout a hanging provider runs into
    "GOBLIN_ROUTER_CIRCUIT_FAILURES": "3",
    "GOBLIN_ROUTER_CIRCUIT_COOLDOWN_S": str(COOLDOWN_S),
}
CATALOG = """
providers:
  flaky:
    kind: openai_compatible
    base_url: http://127.0.0.1:{flaky}/flaky/v1
  backup:
    kind: openai_compatible
    base_url: http://127.0.0.1:{backup}/backup/v1
models:
  flaky/flaky-chat: {{context_length: 8000, input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
  flaky/flaky-other: {{context_length: 8000, input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}
  backup/backup-chat: {{context_length: 8000, input_price_per_mtok: 0.5, output_price_per_mtok: 1.0}}
policies:
  resilient: {{strategy: explicit, models: [flaky/flaky-chat, backup/backup-chat]}}
"""
PROVIDER_TABLE_HEAD = (
    "| case | sent | OK | refused clearly | failed otherwise | hung | time to recover | lost | circuit opened | "
    "what else held |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


class ProviderFakes:
    """The two fake providers; ``flaky`` can stop listening and start again on the same port."""

    def __init__(self) -> None:
        self.flaky = FakeProviders()
        self.backup = FakeProviders()
        self._flaky_port = 0

    def start(self) -> ProviderFakes:
        self.flaky.start()
        self._flaky_port = self.flaky.port
        self.backup.start()
        return self

    def refuse_connections(self) -> None:
        """Nothing listens on flaky's port: connections are refused."""
        self.flaky.stop()

    def listen_again(self) -> None:
        self.flaky.start(self._flaky_port)

    def heal(self) -> None:
        """flaky answers normally again; what it was asked stays recorded."""
        self.flaky.clear_faults()

    def stop(self) -> None:
        self.flaky.stop()
        self.backup.stop()


@contextmanager
def provider_fault_suite(base: Path) -> Iterator[tuple[Suite, ProviderFakes]]:
    """The whole suite routing to the two fake providers, on stores of its own (the books are read from
    them), ready."""
    stores = Stores(base / "stores")
    fakes = ProviderFakes().start()
    try:
        with catalog_suite(
            base,
            CATALOG.format(flaky=fakes.flaky.port, backup=fakes.backup.port),
            DATABASE_URL=stores.database_url,
            REDIS_URL=stores.redis_url,
            FLAKY_API_KEY=fakes.flaky.key(FLAKY),
            BACKUP_API_KEY=fakes.backup.key(BACKUP),
            **PROVIDER_SUITE_ENV,
        ) as suite:
            yield suite, fakes
    finally:
        fakes.stop()
        stores.close()


# -- what a case saw besides the load --------------------------------------------------------------


@dataclass
class Seen:
    circuit_opened: str = ""  # which circuit was seen open: a model id, or "*" (the provider-wide one)
    admin_circuit: str = ""  # the provider's circuit in the admin view while it was open
    refusal: dict[str, str] = field(default_factory=dict)  # a direct request's refusal (no fallback)
    streams: list[str] = field(default_factory=list)  # what went wrong with the stream probes
    streams_checked: int = 0
    quiet_s: float | None = None  # how long the rate-limited model was left alone after its 429
    sibling_status: int = 0  # what the rate-limited model's sibling answered meanwhile


@dataclass
class ProviderCaseResult(CaseResult):
    fallback: bool = True
    expect_open: str = FLAKY_CHAT
    seen: Seen = field(default_factory=Seen)

    def classify(self, o: Outcome) -> str:
        """A provider chat refused by the router for the provider's fault (a clear status and one of its
        provider error codes) is a clear refusal; everything else as in every case."""
        if o.kind == "chat_fake" and not o.hung and o.status in CLEAR_STATUSES and o.error in PROVIDER_CODES:
            return "refused"
        return super().classify(o)

    def recovery_s(self) -> float:
        """From the provider being healed to the last provider chat not answered OK."""
        affected = [o for o in self.outcomes if o.kind == "chat_fake" and self.classify(o) != "ok"]
        return max(0.0, max((o.sent_at for o in affected), default=0.0) - self.healed_at)

    def problems(self) -> list[str]:
        """What of the case's promises did not hold (empty: all did)."""
        found = [f"{o.kind} at {o.sent_at:.2f}s: {o.status} {o.error} hung={o.hung}" for o in self.failures()[:10]]
        if self.fallback:
            refused = [o for o in self.outcomes if o.kind == "chat_fake" and self.classify(o) != "ok"]
            found += [f"with a fallback, a provider chat got {o.status} {o.error}" for o in refused[:10]]
        if self.expect_open and self.seen.circuit_opened != self.expect_open:
            found.append(f"the circuit of {self.expect_open} was not seen open (saw {self.seen.circuit_opened!r})")
        if self.expect_open and self.seen.admin_circuit not in ("open", "half_open"):
            found.append(f"the admin view showed {FLAKY}'s circuit as {self.seen.admin_circuit!r}")
        if not self.fallback:
            message = self.seen.refusal.get("message", "")
            if not (message.startswith(f"{FLAKY}: ") and FLAKY_CHAT in message and "tried again in" in message):
                found.append(f"the refusal does not name the provider, model and retry time: {self.seen.refusal}")
            if not self.seen.refusal.get("retry_after"):
                found.append("the refusal has no Retry-After")
        found += self.seen.streams
        if self.seen.quiet_s is not None:
            wait = f"after the provider asked to wait {RETRY_AFTER_S} s"
            if wait not in self.seen.refusal.get("message", ""):
                found.append(f"while {FLAKY_CHAT} cooled, the refusal did not say it was {wait}: {self.seen.refusal}")
            if self.seen.quiet_s < RETRY_AFTER_S:
                found.append(
                    f"{FLAKY_CHAT} asked again {self.seen.quiet_s:.1f}s after a Retry-After of {RETRY_AFTER_S}s"
                )
        if self.seen.quiet_s is not None and self.seen.sibling_status != 200:
            found.append(f"{FLAKY_OTHER} answered {self.seen.sibling_status} while {FLAKY_CHAT} cooled")
        return found

    def row(self) -> str:
        counts = self.counts()
        refused = ", ".join(f"{k} ×{v}" for k, v in sorted(self.refusals().items())) or "—"
        held = []
        if self.seen.streams_checked:
            held.append(f"{self.seen.streams_checked} started streams ended with an error event, none re-sent")
        if self.seen.quiet_s is not None:
            held.append(f"{FLAKY_CHAT} left alone {self.seen.quiet_s:.1f} s (Retry-After {RETRY_AFTER_S} s)")
            held.append(f"{FLAKY_OTHER} answered {self.seen.sibling_status}")
        if self.seen.refusal:
            held.append(
                f"refusal: “{self.seen.refusal.get('message', '')}”, Retry-After {self.seen.refusal.get('retry_after')}"
            )
        return (
            f"| {self.name} | {len(self.outcomes)} | {counts['ok']} | {refused} | {counts['failed']} | "
            f"{counts['hung']} | {self.recovery_s():.1f} s | {self.lost} | {self.seen.circuit_opened or 'no'} | "
            f"{'; '.join(held) or '—'} |"
        )


# -- probes ----------------------------------------------------------------------------------------


def _client(suite: Suite, timeout_s: float = ROUTE_TIMEOUT_S + 5) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=suite.gateway_url,
        verify=suite.ssl_context(),
        headers={"Authorization": f"Bearer {suite.admin_key}"},
        timeout=timeout_s,
    )


async def circuit_states(suite: Suite, client: httpx.AsyncClient | None = None) -> dict[str, int]:
    """``goblin_router_circuit_state`` of flaky's circuits, by model ("*": the provider-wide one)."""
    if client is None:
        async with httpx.AsyncClient(timeout=5) as own:
            return await circuit_states(suite, own)
    text = (await client.get(suite.metrics_url("router"))).text
    states = {}
    for line in text.splitlines():
        match = re.match(r"^goblin_router_circuit_state\{(.*)\} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels.get("provider") == FLAKY:
                states[labels.get("model", "")] = int(float(match.group(2)))
    return states


async def admin_circuit(suite: Suite) -> str:
    """flaky's circuit as the admin view (its JSON) shows it."""
    async with _client(suite) as client:
        reply = await client.get("/mcp/v1/admin/dashboard", headers={"Accept": "application/json"})
    for provider in reply.json().get("providers", []):
        if provider.get("name") == FLAKY:
            return str(provider.get("circuit"))
    return "absent"


async def watch_circuit(suite: Suite, seen: Seen, until: float) -> None:
    """Poll the circuit metric and the admin view until ``until`` (time.monotonic()): the first circuit
    the metric shows open (or half-open, which it only is after opening), and the admin view's state of
    flaky when it shows one other than closed. Two loops, since the admin view (a whole KPI document)
    answers far more slowly than the metric on a busy machine."""

    async def metric() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < until and not seen.circuit_opened:
                opened = [model for model, value in (await circuit_states(suite, client)).items() if value >= 1]
                if opened:
                    seen.circuit_opened = "*" if "*" in opened else sorted(opened)[0]
                await asyncio.sleep(0.2)

    async def admin() -> None:
        while time.monotonic() < until and seen.admin_circuit in ("", "closed", "absent"):
            seen.admin_circuit = await admin_circuit(suite)
            await asyncio.sleep(0.5)  # a whole document each time: the load generator shares this loop

    await asyncio.gather(metric(), admin())


async def refusal(suite: Suite, seen: Seen) -> None:
    """A direct request to flaky/flaky-chat once its circuit is open: what the caller is told."""
    async with _client(suite) as client:
        for _ in range(40):
            reply = await client.post(
                "/v1/chat/completions", json={"model": FLAKY_CHAT, "messages": [{"role": "user", "content": "hi"}]}
            )
            body = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
            if body.get("error") == "circuit_open":
                seen.refusal = {
                    "status": str(reply.status_code),
                    "message": str(body.get("message", "")),
                    "retry_after": reply.headers.get("retry-after", ""),
                }
                return
            await asyncio.sleep(0.1)


async def stream_probes(suite: Suite, fakes: ProviderFakes, seen: Seen, count: int = 3) -> None:
    """Streams through the policy while flaky breaks its streams: each must end with an error event
    after some text, and never reach the fallback (a started stream is not sent again)."""
    async with _client(suite) as client:
        for _ in range(count):
            mark = f"stream-probe-{uuid.uuid4().hex[:10]}"
            body = {"model": WITH_FALLBACK, "stream": True, "messages": [{"role": "user", "content": mark}]}
            text, error = [], None
            async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                async for line in reply.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[len("data: ") :])
                    if "error" in event:
                        error = event["error"]
                    for choice in event.get("choices", []):
                        text.append(choice.get("delta", {}).get("content") or "")
            sent_again = [r for r in fakes.backup.requests(BACKUP) if mark in json.dumps(r.body)]
            tries = [r for r in fakes.flaky.requests(FLAKY) if mark in json.dumps(r.body)]
            if error is None:
                seen.streams.append(f"stream {mark}: no error event (text {''.join(text)!r})")
            elif not "".join(text).strip():
                seen.streams.append(f"stream {mark}: an error event but no text before it")
            if sent_again or len(tries) != 1:
                seen.streams.append(f"stream {mark}: sent {len(tries)}× to flaky and {len(sent_again)}× to backup")
            seen.streams_checked += 1


async def retry_after_honoured(suite: Suite, fakes: ProviderFakes, seen: Seen, injected: float) -> None:
    """After flaky/flaky-chat's first 429 (Retry-After 6 s), heal it at once: it must still not be asked
    again before the 6 s are up (a direct request is refused naming that wait), while flaky/flaky-other
    answers."""

    def chats(rate_limited: bool) -> list[float]:
        return [
            r.at
            for r in fakes.flaky.requests(FLAKY)
            if (r.body or {}).get("model") == "flaky-chat"
            and r.at > injected
            and (r.fault is not None and r.fault.status == 429) == rate_limited
        ]

    for _ in range(250):  # 5 s for the load to send flaky-chat a request
        if chats(rate_limited=True):
            break
        await asyncio.sleep(0.02)
    await refusal(suite, seen)  # asked at once, while the wait is surely on
    fakes.heal()
    first = min(chats(rate_limited=True), default=time.monotonic())
    async with _client(suite) as client:
        reply = await client.post(
            "/v1/chat/completions", json={"model": FLAKY_OTHER, "messages": [{"role": "user", "content": "hi"}]}
        )
        seen.sibling_status = reply.status_code
    for _ in range(int((RETRY_AFTER_S + 3) / 0.1)):  # until flaky-chat is asked again, or well past it
        if [at for at in chats(rate_limited=False) if at > first] or time.monotonic() > first + RETRY_AFTER_S + 3:
            break
        await asyncio.sleep(0.1)
    later = [at for at in chats(rate_limited=False) if at > first]
    seen.quiet_s = (min(later) - first) if later else time.monotonic() - first


# -- the cases -------------------------------------------------------------------------------------

Probe = Callable[[Suite, ProviderFakes, Seen, float], Awaitable[None]]


@dataclass(frozen=True)
class ProviderCase:
    name: str
    inject: Callable[[ProviderFakes], None]
    heal: Callable[[ProviderFakes], None] = ProviderFakes.heal
    model: str = WITH_FALLBACK  # what the load's provider chats ask for
    expect_open: str = FLAKY_CHAT
    probe: Probe | None = None
    fault_s: float = 5.0  # how long the provider stays broken
    duration_s: float = 8.0


def _no_fallback_probe(suite: Suite, fakes: ProviderFakes, seen: Seen, injected: float) -> Awaitable[None]:
    return refusal(suite, seen)


def _stream_probe(suite: Suite, fakes: ProviderFakes, seen: Seen, injected: float) -> Awaitable[None]:
    return stream_probes(suite, fakes, seen)


PROVIDER_CASES: list[ProviderCase] = [
    ProviderCase(
        "provider refuses connections (fallback)",
        ProviderFakes.refuse_connections,
        heal=ProviderFakes.listen_again,
        expect_open="*",
    ),
    ProviderCase("provider hangs (fallback)", lambda f: f.flaky.slow(FLAKY, 30, times=None, model="flaky-chat")),
    ProviderCase(
        "provider resets connections (fallback)",
        lambda f: f.flaky.reset_connection(FLAKY, times=None, model="flaky-chat"),
    ),
    ProviderCase(
        "provider sends half an SSE stream (fallback)",
        lambda f: f.flaky.break_stream(FLAKY, 2, times=None, model="flaky-chat"),
        expect_open="",  # the load's unary chats to the same model succeed, so it stays closed
        probe=_stream_probe,
    ),
    ProviderCase(
        f"provider 429, Retry-After {RETRY_AFTER_S} s (fallback)",
        lambda f: f.flaky.fail(FLAKY, 429, times=None, retry_after=str(RETRY_AFTER_S), model="flaky-chat"),
        heal=lambda f: None,  # the probe heals it right after the first 429
        probe=retry_after_honoured,
        fault_s=RETRY_AFTER_S + 3,
        duration_s=11.0,
    ),
    ProviderCase(
        "provider answers malformed JSON (fallback)",
        lambda f: f.flaky.malformed(FLAKY, times=None, model="flaky-chat"),
    ),
    ProviderCase(
        "provider hangs (no fallback)",
        lambda f: f.flaky.slow(FLAKY, 30, times=None, model="flaky-chat"),
        model=FLAKY_CHAT,
        probe=_no_fallback_probe,
    ),
]


def _fault(suite: Suite, fakes: ProviderFakes, case: ProviderCase, seen: Seen):
    async def fault(clock: Callable[[], float]) -> float:
        injected = time.monotonic()
        await asyncio.to_thread(case.inject, fakes)
        # Watched past the healing: a circuit opened near its end stays open for its cooldown.
        watching = asyncio.create_task(watch_circuit(suite, seen, injected + case.fault_s + COOLDOWN_S))
        if case.probe is not None:
            await case.probe(suite, fakes, seen, injected)
        await asyncio.sleep(max(0.0, injected + case.fault_s - time.monotonic()))
        await asyncio.to_thread(case.heal, fakes)
        healed_at = clock()
        await watching
        return healed_at

    return fault


async def settle(suite: Suite, timeout_s: float = 30.0) -> None:
    """Wait until flaky's circuits are closed again (asking flaky's models drives their probes)."""
    deadline = time.monotonic() + timeout_s
    async with _client(suite) as client:
        while time.monotonic() < deadline:
            if all(value == 0 for value in (await circuit_states(suite)).values()):
                return
            for model in (FLAKY_CHAT, FLAKY_OTHER):
                await client.post(
                    "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
                )
            await asyncio.sleep(0.3)
    raise TimeoutError(f"{FLAKY}'s circuits did not close within {timeout_s}s")


def run_provider_case(suite: Suite, fakes: ProviderFakes, case: ProviderCase) -> ProviderCaseResult:
    """One provider case under load, with what it lost from the books; the circuits closed after it."""
    seen = Seen()
    result = asyncio.run(
        run_case(
            suite,
            case.name,
            broken=frozenset({FLAKY}),
            fault=_fault(suite, fakes, case, seen),
            duration_s=case.duration_s,
            fault_after_s=1.0,
            fake_model=case.model,
            timeout_s=ROUTE_TIMEOUT_S,
        )
    )
    fakes.heal()
    provider_result = ProviderCaseResult(
        **vars(result), fallback=case.model == WITH_FALLBACK, expect_open=case.expect_open, seen=seen
    )
    provider_result.lost = ledger_missing(suite, provider_result)
    asyncio.run(settle(suite))
    return provider_result
