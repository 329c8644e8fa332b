"""The load generator's own ceiling: how fast it can offer requests, against the cheapest target there is.

``python -m bench.throughput --ceiling [--generators N] [--duration 5]``: the direct path (the fake
provider, nothing in between) at 400, 800, 1600 and 3200 requests/s, first with one generator process,
then with N; a setting stops at the first rate where the generator fell behind its schedule (send lag p99
>= 25 ms), the path did not keep up (served < 95 % of offered) or any request failed. The fake provider
shares the 2 cores with the generator, so this is a floor under the generator's ceiling; the sweep's
800 requests/s needs it above 800. Section "Throughput: load generator ceiling" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse

from bench.results import write_section
from bench.throughput import direct_path, fake_provider, load_average, warm_up
from bench.throughput_load import MIN_SERVED, Generator, Step
from bench.throughput_report import sweep_table

RATES = (400.0, 800.0, 1600.0, 3200.0)
# A generator that cannot keep up falls further behind with every request (lags of hundreds of ms); a busy
# shared machine alone delays a wake-up by a few ms now and then.
LAG_LIMIT_MS = 25.0


def behind(step: Step) -> str | None:
    """Why the generator (or the direct path under it) did not keep up at ``step``, or None."""
    if step.errors:
        return f"{step.errors} errors"
    if step.send_lag_p99_ms >= LAG_LIMIT_MS:
        return f"send lag p99 {step.send_lag_p99_ms:.0f} ms"
    if step.served < MIN_SERVED * step.offered:
        return f"served {step.served:.0f}/s"
    return None


def run_ceiling(args: argparse.Namespace) -> None:
    loads_start = load_average()
    lines, steps, held = [], [], {}
    with fake_provider() as (fake_port, fake):
        endpoint = direct_path(fake_port, fake)
        for workers in sorted({1, args.generators}):
            with Generator(workers) as generator:
                warm_up(generator, [endpoint])
                held[workers] = 0.0
                for rate in RATES:
                    before = endpoint.cpu()
                    samples = generator.run(endpoint.target, rate, args.duration)
                    step = Step.of(f"{workers} generator(s)", rate, args.duration, samples, endpoint.cpu_since(before))
                    steps.append(step)
                    why = behind(step)
                    print(
                        f"{workers} generator(s) {rate:5.0f}/s: served {step.served:.0f}/s, lag p99 "
                        f"{step.send_lag_p99_ms:.1f} ms, {step.generator_cpu_ms:.2f} ms CPU/request: "
                        f"{why or 'kept up'}",
                        flush=True,
                    )
                    if why is not None:
                        break
                    held[workers] = rate
    for workers, rate in held.items():
        lines.append(f"{workers} generator process(es): kept up to **{rate:.0f}/s**")
    body = f"""
The load generator against the direct path (the fake provider, nothing between), {args.duration:g} s per
rate; a setting stops where the generator fell behind its schedule (send lag p99 >= {LAG_LIMIT_MS:.0f} ms),
the path served < {MIN_SERVED:.0%} of the offered rate, or a request failed. The fake provider runs on the
same 2 cores, so these are floors under the generator's own ceiling. Load average (1, 5, 15 min) at the
start {loads_start}, at the end {load_average()}.

{"; ".join(lines)}.

{sweep_table(steps)}

(The verdict column is the sweep's rule, p99 < 100 ms included; this section's rule is the send lag and
the served rate above.)
"""
    write_section("Throughput: load generator ceiling", body, "python -m bench.throughput --ceiling")
    print(body)
