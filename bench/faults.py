"""`python -m bench.faults`: the fault cases of tests/faults under steady mixed load (goblin_tools/faults.py),
as a table in bench/RESULTS.md: per case, requests sent, answered OK, refused clearly (which), failed
otherwise, hung, time to recover after the broken part was back, and answered chats lost from the books."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.results import write_section
from goblin_tools.faults import CASES, MIX, TABLE_HEAD, fault_suite, run
from services.common.process import usable_cores


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="goblin-faults-") as base, fault_suite(Path(base)) as (suite, stores, _):
        for case in CASES:
            result = run(suite, stores, case)
            rows.append(result.row())
            print(rows[-1], flush=True)
    mix = ", ".join(f"{kind} {share:.0%}" for kind, share in MIX.items())
    body = f"""
Open-loop 50 req/s of mixed traffic ({mix}) through the gateway, the fault 2 s in; the load
generator shares the {usable_cores()} cores with the suite (load average {os.getloadavg()[0]:.1f} at the end).
"Refused clearly" is a JSON error: 429 with Retry-After (backpressure) or 504 (the route's 10 s deadline)
at any time, 503 only from a route that needs the broken part. "Lost" counts chats answered OK that
have no row in the routing ledger 30 s later.

{TABLE_HEAD}
{chr(10).join(rows)}
"""
    print(body)
    write_section("Faults under load", body, "python -m bench.faults")


if __name__ == "__main__":
    main()
