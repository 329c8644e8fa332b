"""`python -m bench.faults`: the fault cases of tests/faults under steady mixed load (goblin_tools/faults.py),
as a table in bench/RESULTS.md: per case, requests sent, answered OK, refused clearly (which), failed
otherwise, hung, time to recover after the broken part was back, and answered chats lost from the books."""

from __future__ import annotations

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
from services.common.process import usable_cores


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="goblin-faults-") as base, fault_suite(Path(base)) as (suite, stores, _):
        for case in CASES:
            result = run(suite, stores, case)
            rows.append(result.row())
            print(rows[-1], flush=True)
    rows.append(disk_full_row())
    mix = ", ".join(f"{kind} {share:.0%}" for kind, share in MIX.items())
    body = f"""
Open-loop 50 req/s of mixed traffic ({mix}) through the gateway, the fault 2 s in; the load
generator shares the {usable_cores()} cores with the suite (load average {os.getloadavg()[0]:.1f} at the end).
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


if __name__ == "__main__":
    main()
