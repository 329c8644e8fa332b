"""`python -m bench.faults`: the fault cases of tests/faults under steady mixed load (goblin_tools/faults.py),
as tables in bench/RESULTS.md: per case, requests sent, answered OK, refused clearly (which), failed
otherwise, hung, time to recover after the broken part was back, and answered chats lost from the books.

Two families, each in a suite of its own: the services and stores killed or stopped ("Faults under
load"), and the providers failing (goblin_tools/provider_faults.py, "Provider faults under load").
``--family core`` or ``--family provider`` runs one of them."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from bench.results import write_section
from goblin_tools.faults import (
    CASES,
    MIX,
    TABLE_HEAD,
    NoSmallFilesystem,
    fault_suite,
    run,
    run_disk_full,
    small_home_suite,
)
from goblin_tools.provider_faults import (
    COOLDOWN_S,
    PROVIDER_CASES,
    PROVIDER_TABLE_HEAD,
    provider_fault_suite,
    run_provider_case,
    settle,
)
from services.common.process import usable_cores


def load_note() -> str:
    mix = ", ".join(f"{kind} {share:.0%}" for kind, share in MIX.items())
    return (
        f"Open-loop 50 req/s of mixed traffic ({mix}) through the gateway; the load generator shares the "
        f"{usable_cores()} cores with the suite (load average {os.getloadavg()[0]:.1f} at the end)."
    )


def core() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="goblin-faults-") as base, fault_suite(Path(base)) as (suite, stores, _):
        for case in CASES:
            result = run(suite, stores, case)
            rows.append(result.row())
            print(rows[-1], flush=True)
    rows.append(disk_full_row())
    body = f"""
{load_note()} The fault 2 s in.
"Refused clearly" is a JSON error: 429 with Retry-After (backpressure) or 504 (the route's 10 s deadline)
at any time, 503 only from a route that needs the broken part. "Lost" counts chats answered OK that
have no row in the routing ledger 30 s later. "GOBLIN_HOME full" runs on a suite of its own whose
GOBLIN_HOME is a 64 MiB tmpfs, kept full for 5 s (every freed byte taken again) under the same load;
no route may answer 503 there.

{TABLE_HEAD}
{chr(10).join(rows)}
"""
    print(body)
    write_section("Faults under load", body, "python -m bench.faults")


def disk_full_row() -> str:
    """Case 7 on a suite of its own whose GOBLIN_HOME is a small filesystem, filled under the same load
    (goblin_tools/faults.py ``small_home_suite``); a row saying why when no small filesystem can be made."""
    with tempfile.TemporaryDirectory(prefix="goblin-diskfull-") as base:
        try:
            with small_home_suite(Path(base)) as small:
                row = run_disk_full(small).row()
        except NoSmallFilesystem as exc:
            row = f"| GOBLIN_HOME full | skipped: {exc} | | | | | | |"
    print(row, flush=True)
    return row


def provider() -> None:
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="goblin-provider-faults-") as base,
        provider_fault_suite(Path(base)) as (suite, fakes),
    ):
        asyncio.run(settle(suite))
        for case in PROVIDER_CASES:
            result = run_provider_case(suite, fakes, case)
            rows.append(result.row())
            print(rows[-1], flush=True)
            for problem in result.problems():
                print(f"  problem: {problem}", flush=True)
    body = f"""
{load_note()} The provider chats go to the policy `resilient` (flaky/flaky-chat, then backup/backup-chat)
with a fallback, to flaky/flaky-chat alone without; flaky breaks 1 s in, for 5 s. Circuits open after 3
failures for {COOLDOWN_S:.0f} s; the attempt timeout is 1 s. "Refused clearly" also admits a provider chat
refused with a provider error code (`circuit_open`, `provider_*`); with a fallback there must be none.
"Circuit opened" is the circuit seen open in `goblin_router_circuit_state` (`*`: provider-wide).

{PROVIDER_TABLE_HEAD}
{chr(10).join(rows)}
"""
    print(body)
    write_section("Provider faults under load", body, "python -m bench.faults --family provider")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("all", "core", "provider"), default="all")
    family = parser.parse_args().family
    if family in ("all", "core"):
        core()
    if family in ("all", "provider"):
        provider()


if __name__ == "__main__":
    main()
