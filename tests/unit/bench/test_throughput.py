"""bench.throughput's tools on synthetic samples: the stop rule, the merge, the table, the plots, the memory
summary, the options and LiteLLM's offline settings. No processes, no network, no timing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from bench import throughput, throughput_litellm
from bench.throughput_load import Samples, Step, failure, highest_holding
from bench.throughput_report import (
    error_examples,
    growth,
    holding_rates,
    memory_plot,
    memory_summary,
    memory_table,
    sweep_plot,
    sweep_table,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def step(target="goblin", offered=100.0, *, ok=None, errors=0, p99=10.0, p50=5.0, served=None) -> Step:
    ok = int(offered * 20) if ok is None else ok
    return Step(
        target=target,
        offered=offered,
        duration_s=20,
        sent=ok + errors,
        ok=ok,
        errors=errors,
        served=offered if served is None else served,
        p50_ms=p50,
        p99_ms=p99,
        generator_cpu_ms=0.5,
        send_lag_p99_ms=1.0,
        target_cpu_ms=2.0,
        error_kinds=(("HTTP 503", errors),) if errors else (),
        error_examples=(("HTTP 503", '{"error": {"message": "busy"}}'),) if errors else (),
    )


def test_a_fast_clean_fully_served_step_holds():
    assert failure(step()) is None


def test_any_error_fails_a_step():
    assert failure(step(errors=1)) == "1 errors"


def test_p99_at_the_limit_fails_a_step():
    assert failure(step(p99=99.9)) is None
    assert "p99 100 ms" in failure(step(p99=100.0))


def test_served_under_95_percent_of_offered_fails_a_step():
    assert failure(step(offered=400, served=380)) is None
    assert "served 379/s" in failure(step(offered=400, served=379))


def test_a_step_with_no_answers_fails():
    assert failure(step(ok=0, p99=float("nan"), p50=float("nan"))) == "no answers"


def test_the_highest_holding_rate_stops_at_the_first_failure():
    steps = [step(offered=50), step(offered=100), step(offered=200, p99=150), step(offered=400)]
    assert highest_holding(steps) == 100
    assert highest_holding([step(offered=50, errors=2)]) == 0
    assert holding_rates([*steps, step("litellm", 50), step("litellm", 100, p99=300)]) == {
        "goblin": 100,
        "litellm": 50,
    }


def test_samples_merge_adds_counts_and_keeps_the_latest_finish():
    one = Samples(sent=3, latencies_ms=[1, 2], errors={"HTTP 500": 1}, cpu_s=0.1, last_done_s=10, examples={"x": "a"})
    two = Samples(sent=2, latencies_ms=[3, 4], errors={"HTTP 500": 1, "TimeoutError": 1}, cpu_s=0.2, last_done_s=12)
    merged = one.merge(two)
    assert merged.sent == 5
    assert sorted(merged.latencies_ms) == [1, 2, 3, 4]
    assert merged.errors == {"HTTP 500": 2, "TimeoutError": 1}
    assert merged.cpu_s == pytest.approx(0.3)
    assert merged.last_done_s == 12
    assert merged.examples == {"x": "a"}


def test_a_step_is_served_over_the_schedule_or_until_its_last_answer():
    on_time = Step.of("direct", 100, 10, Samples(sent=1000, latencies_ms=[1.0] * 1000, last_done_s=9.99), 1.0)
    assert on_time.served == pytest.approx(100)
    assert on_time.target_cpu_ms == pytest.approx(1.0)
    late = Step.of("direct", 100, 10, Samples(sent=1000, latencies_ms=[1.0] * 1000, last_done_s=20), 0.0)
    assert late.served == pytest.approx(50)
    assert failure(late) is not None


def test_the_generator_cpu_is_per_request_sent():
    samples = Samples(sent=400, latencies_ms=[2.0] * 400, cpu_s=0.2, last_done_s=4)
    assert Step.of("direct", 100, 4, samples, 0.0).generator_cpu_ms == pytest.approx(0.5)


def test_the_table_has_a_row_per_step_with_its_verdict_and_errors():
    steps = [step(offered=50), step(offered=100, errors=3), step("litellm", 50, p99=float("nan"), ok=0)]
    table = sweep_table(steps).splitlines()
    assert len(table) == 2 + 3
    assert table[2].startswith("| goblin | 50 | 50 |") and table[2].endswith("| holds |")
    assert "| 3 (HTTP 503 3) |" in table[3] and "fails: 3 errors" in table[3]
    assert "| litellm | 50 |" in table[4] and "| - |" in table[4] and "fails: no answers" in table[4]
    assert error_examples(steps) == '- goblin, HTTP 503: `{"error": {"message": "busy"}}`'


def test_the_sweep_plot_is_a_png(tmp_path: Path):
    steps = [step(offered=r, p99=r / 4) for r in (50, 100, 200)] + [step("litellm", 50, p99=150)]
    path = sweep_plot(steps, tmp_path / "sweep.png", "test")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_the_report_names_the_skeletons_rates_as_the_floor(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("BENCH_NO_WRITE", "1")
    monkeypatch.setattr(throughput, "WORK", tmp_path)
    steps = [
        step("direct", 400),
        step("skeleton", 200),
        step("skeleton", 400, p99=150.0),
        step("secure-skeleton", 100),
        step("secure-skeleton", 200, p99=120.0),
        step("goblin", 50),
        step("goblin", 100, errors=3),
    ]
    body = throughput.report(steps, [100, 200, 400], 20, 2, ("1.00, 1.00, 1.00", "1.00, 1.00, 1.00"))
    assert "skeleton 200/s, secure-skeleton 100/s" in body
    assert "| secure-skeleton | 200 |" in body and "fails: p99 120 ms" in body


def test_growth_is_the_fitted_line_rise_over_where_it_starts():
    times = [0.0, 10.0, 20.0, 30.0]
    assert growth(times, [100.0, 101.0, 102.0, 103.0]) == pytest.approx(0.03)
    assert growth(times, [100.0, 100.0, 100.0, 100.0]) == 0
    # A sawtooth around a flat level: the line barely moves though one sample jumps.
    assert abs(growth(times, [100.0, 110.0, 100.0, 100.0])) < 0.05
    assert growth([5.0], [100.0]) == 0


def test_the_memory_summary_reports_start_end_max_and_the_last_third():
    mb = 1024 * 1024
    series = {
        "gateway": [(t * 10.0, (100 + (t if t >= 6 else 0)) * mb) for t in range(10)],
        "router": [(t * 10.0, 80 * mb) for t in range(10)],
        "gone": [],
    }
    rows = {row.name: row for row in memory_summary(series)}
    assert set(rows) == {"gateway", "router"}
    assert (rows["gateway"].start_mb, rows["gateway"].end_mb, rows["gateway"].max_mb) == (100, 109, 109)
    # The last third is t = 60..90 s: 106 -> 109 MB.
    assert rows["gateway"].last_third_growth == pytest.approx(3 / 106)
    assert rows["router"].last_third_growth == 0
    table = memory_table(list(rows.values()))
    assert "| gateway | 100.0 | 109.0 | 109.0 | +2.83 % |" in table


def test_the_memory_plot_is_a_png(tmp_path: Path):
    series = {"gateway": [(0.0, 100 * 2**20), (10.0, 101 * 2**20)], "router": [(0.0, 80 * 2**20)]}
    assert memory_plot(series, tmp_path / "soak.png", "test").read_bytes().startswith(PNG_MAGIC)


def test_the_options_default_to_the_issue_sweep():
    args = throughput.parse([])
    assert args.rates == "50,100,200,400,800" and args.duration == 20 and args.soak == 0
    assert throughput.targets(args.targets) == ["direct", "skeleton", "secure-skeleton", "goblin", "litellm"]
    assert args.generators >= 1
    short = throughput.parse(["--rates", "50,100", "--duration", "2", "--targets", "direct"])
    assert (short.rates, short.duration, short.targets) == ("50,100", 2, "direct")
    floor = throughput.parse(["--targets", "skeleton, secure-skeleton"])
    assert throughput.targets(floor.targets) == ["skeleton", "secure-skeleton"]
    soak = throughput.parse(["--soak", "60", "--rate", "100"])
    assert (soak.soak, soak.rate, soak.sample_every) == (60, 100, 10)


@pytest.mark.parametrize(
    "argv",
    [
        ["--duration", "0"],
        ["--generators", "0"],
        ["--rate", "-1"],
        ["--soak", "-5"],
        ["--targets", "goblin,nginx"],
        ["--targets", ","],
    ],
)
def test_the_options_refuse_nonsense(argv: list[str]):
    with pytest.raises(SystemExit):
        throughput.parse(argv)


def test_litellm_is_configured_for_the_fake_provider_with_a_master_key():
    config = yaml.safe_load(throughput_litellm.config("http://127.0.0.1:9999/openai/v1", "k", "gpt-4o-mini", "sk-m"))
    (model,) = config["model_list"]
    assert model["model_name"] == "gpt-4o-mini"
    assert model["litellm_params"] == {
        "model": "openai/gpt-4o-mini",
        "api_base": "http://127.0.0.1:9999/openai/v1",
        "api_key": "k",
    }
    assert config["general_settings"]["master_key"] == "sk-m"


def test_litellm_reaches_nothing_outside_this_machine():
    env = throughput_litellm.OFFLINE_ENV
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    urls = [v for k, v in env.items() if k.endswith(("_URL", "_PROXY", "_proxy")) and k.lower() != "no_proxy"]
    assert urls and all(value.startswith("http://127.0.0.1:") for value in urls)
    assert "127.0.0.1" in env["NO_PROXY"]
    assert throughput_litellm.REQUIREMENT == f"litellm[proxy]=={throughput_litellm.VERSION}"
    assert throughput_litellm.WORKERS == 2


def test_a_nan_renders_as_a_dash():
    assert "| - |" in sweep_table([step(ok=0, p50=math.nan, p99=math.nan)])
