"""The decoding thread policy and its /proc sampler, without a model: samples are fed by hand."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from services.inference.engine.threads import AdaptiveThreads, CpuSampler, ThreadPolicy

pytestmark = pytest.mark.unit

IDLE, BUSY = 0.0, 1.0


def feed(policy: ThreadPolicy, samples: list[float | None]) -> list[int]:
    return [policy.feed(sample) for sample in samples]


def test_idle_machine_decodes_on_every_core() -> None:
    policy = ThreadPolicy(2, 1)
    assert policy.current == 2
    assert feed(policy, [IDLE] * 20) == [2] * 20


def test_busy_machine_steps_down_at_the_first_busy_sample() -> None:
    policy = ThreadPolicy(2, 1)
    assert feed(policy, [IDLE, BUSY, BUSY]) == [2, 1, 1]


def test_never_below_the_floor_and_proportional_on_big_machines() -> None:
    policy = ThreadPolicy(16, 12, busy_above=0.3, idle_below=0.15)
    assert policy.feed(0.5) == 15  # a fraction of a core asks one back
    assert policy.feed(2.5) == 13
    assert policy.feed(10.0) == 12  # the floor
    assert ThreadPolicy(2, 1).feed(50.0) == 1


def test_the_default_thresholds_keep_every_core_for_our_own_streams_serving() -> None:
    # Serving one local stream through the suite costs others 0.3 core or more (bench.inference_bench): not
    # a reason to step down; a busy loop of a whole core is.
    policy = ThreadPolicy(2, 1)
    assert feed(policy, [0.3, 0.5, 0.6, 0.7]) == [2, 2, 2, 2]
    assert policy.feed(1.0) == 1


def test_steps_up_only_after_a_run_of_quiet_samples() -> None:
    policy = ThreadPolicy(2, 1, up_after=5)
    policy.feed(BUSY)
    assert feed(policy, [IDLE] * 4) == [1] * 4
    assert policy.feed(IDLE) == 2


def test_hysteresis_band_holds_the_current_count() -> None:
    # Between idle_below and busy_above nothing changes, in either direction.
    policy = ThreadPolicy(2, 1, busy_above=0.3, idle_below=0.15, up_after=2)
    assert feed(policy, [0.2] * 10) == [2] * 10
    policy.feed(BUSY)
    assert feed(policy, [0.2] * 10) == [1] * 10


def test_alternating_load_does_not_flap() -> None:
    policy = ThreadPolicy(2, 1, up_after=5)
    counts = feed(policy, [BUSY, IDLE, IDLE, IDLE, IDLE] * 10)
    assert counts == [1] * 50
    changes = sum(1 for a, b in zip([2, *counts], counts, strict=False) if a != b)
    assert changes == 1


def test_steps_up_to_the_fewest_the_quiet_run_allowed() -> None:
    policy = ThreadPolicy(8, 4, busy_above=0.3, idle_below=0.15, up_after=3)
    assert policy.feed(5.0) == 4
    # 0.1 allows 8, 1.2 (>= idle_below) allows 6: the run ends at 6, not 8.
    assert feed(policy, [0.1, 1.2, 0.1]) == [4, 4, 6]


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -1.0])
def test_bad_samples_change_nothing_and_break_a_quiet_run(bad: float | None) -> None:
    policy = ThreadPolicy(2, 1, up_after=3)
    assert policy.feed(bad) == 2
    policy.feed(BUSY)
    assert feed(policy, [IDLE, IDLE, bad, IDLE, IDLE]) == [1, 1, 1, 1, 1]
    assert policy.feed(IDLE) == 2


def test_equal_floor_and_maximum_never_changes() -> None:
    policy = ThreadPolicy(1, 1)
    assert feed(policy, [BUSY, IDLE, BUSY, None]) == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_threads": 2, "min_threads": 3}, "min_threads"),
        ({"max_threads": 0, "min_threads": 1}, "min_threads"),
        ({"max_threads": 2, "min_threads": 0}, "min_threads"),
        ({"max_threads": 2, "min_threads": 1, "idle_below": 0.5, "busy_above": 0.3}, "idle_below"),
        ({"max_threads": 2, "min_threads": 1, "up_after": 0}, "up_after"),
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ThreadPolicy(**kwargs)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def stat_text(busy: list[int], idle: list[int]) -> str:
    lines = [f"cpu  {sum(busy)} 0 0 {sum(idle)} 0 0 0 0 0 0"]
    lines += [f"cpu{i} {b} 0 0 {d} 0 0 0 0 0 0" for i, (b, d) in enumerate(zip(busy, idle, strict=True))]
    return "\n".join([*lines, "intr 1 2 3", "ctxt 5", "procs_running 2"]) + "\n"


def make_sampler(tmp_path: Path, cpus: frozenset[int] | None = None) -> tuple[CpuSampler, Path, Clock, list[float]]:
    stat = tmp_path / "stat"
    clock = Clock()
    own = [0.0]
    sampler = CpuSampler(stat, cpus=cpus, clock=clock, own_cpu=lambda: own[0])
    sampler._ticks = 100.0  # /proc/stat counts in USER_HZ ticks; fixed here so the numbers are exact
    return sampler, stat, clock, own


def test_sampler_reports_cores_used_by_others(tmp_path: Path) -> None:
    sampler, stat, clock, own = make_sampler(tmp_path)
    stat.write_text(stat_text([1000, 1000], [0, 0]))
    assert sampler.others() is None  # the first reading only starts the window
    # 1 s later: 150 ticks busy over both cores (1.5 cores), of which we used 1.0 s.
    clock.now += 1.0
    own[0] = 1.0
    stat.write_text(stat_text([1100, 1050], [0, 50]))
    assert sampler.others() == pytest.approx(0.5)


def test_sampler_counts_only_the_cores_we_may_run_on(tmp_path: Path) -> None:
    sampler, stat, clock, _ = make_sampler(tmp_path, cpus=frozenset({1}))
    stat.write_text(stat_text([0, 0], [0, 0]))
    sampler.others()
    clock.now += 1.0
    stat.write_text(stat_text([100, 20], [0, 80]))  # cpu0 busy, but it is not ours
    assert sampler.others() == pytest.approx(0.2)


def test_time_the_hypervisor_steals_is_not_other_processes(tmp_path: Path) -> None:
    # /proc/stat's eighth field, steal, is time our virtual CPU was runnable while the host ran another
    # machine: no process of ours (gateway, router) needs that core, and giving it up helps nobody.
    sampler, stat, clock, _ = make_sampler(tmp_path)
    stat.write_text("cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\ncpu1 0 0 0 0 0 0 0 0 0 0\n")
    sampler.others()
    clock.now += 1.0
    # Each core: 20 ticks of user, 5 of system, 5 of irq and softirq (0.3 core each, 0.6 in all),
    # 40 of steal.
    stat.write_text("cpu  40 0 10 70 0 4 6 80 0 0\ncpu0 20 0 5 35 0 2 3 40 0 0\ncpu1 20 0 5 35 0 2 3 40 0 0\n")
    assert sampler.others() == pytest.approx(0.6)


def test_our_own_cpu_is_never_counted_as_others(tmp_path: Path) -> None:
    sampler, stat, clock, own = make_sampler(tmp_path)
    stat.write_text(stat_text([0, 0], [0, 0]))
    sampler.others()
    clock.now += 1.0
    own[0] = 2.05  # clocks disagree by a tick: clamped to 0, not negative
    stat.write_text(stat_text([100, 100], [0, 0]))
    assert sampler.others() == 0.0


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "no cpu lines here\n",
        "cpu0 1 2 three 4 5 6 7 8\n",
        "cpu0 1 2 3\n",
        "cpuX 1 2 3 4 5 6 7 8\n",
        "cpu0 -1 0 0 0 0 0 0 0\n",
        "\x00\xff binary",
    ],
)
def test_bad_proc_stat_reads_as_unknown(tmp_path: Path, garbage: str) -> None:
    sampler, stat, clock, _ = make_sampler(tmp_path)
    stat.write_text(stat_text([0, 0], [0, 0]))
    sampler.others()
    clock.now += 1.0
    stat.write_text(garbage)
    assert sampler.others() is None


def test_missing_proc_stat_and_counters_going_back_read_as_unknown(tmp_path: Path) -> None:
    sampler, stat, clock, _ = make_sampler(tmp_path)
    assert sampler.others() is None  # no file at all
    stat.write_text(stat_text([500, 500], [0, 0]))
    sampler.others()
    clock.now += 1.0
    stat.write_text(stat_text([100, 100], [0, 0]))
    assert sampler.others() is None


def test_a_stale_window_only_starts_a_new_one(tmp_path: Path) -> None:
    sampler, stat, clock, _ = make_sampler(tmp_path)
    stat.write_text(stat_text([0, 0], [0, 0]))
    sampler.others()
    clock.now += 60.0  # the engine was idle for a minute
    stat.write_text(stat_text([6000, 0], [0, 6000]))
    assert sampler.others() is None
    clock.now += 0.2
    stat.write_text(stat_text([6020, 0], [0, 6020]))
    assert sampler.others() == pytest.approx(1.0)


def test_real_proc_stat_gives_a_number() -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc here")
    sampler = CpuSampler()
    sampler.others()
    sum(i * i for i in range(200_000))  # let some time and CPU pass
    value = sampler.others()
    assert value is not None and value >= 0


class FakeSampler:
    def __init__(self, values: list[float | None]) -> None:
        self.values = values
        self.calls = 0

    def others(self) -> float | None:
        self.calls += 1
        return self.values.pop(0)


def test_adaptive_threads_samples_at_the_interval_and_reports_changes_only() -> None:
    clock = Clock()
    sampler = FakeSampler([IDLE, BUSY, BUSY, IDLE, IDLE])
    policy = ThreadPolicy(2, 1, up_after=2)
    threads = AdaptiveThreads(policy, sampler, batch_threads=2, interval=0.2, clock=clock)  # type: ignore[arg-type]
    assert threads.poll() is None  # idle: stays at 2
    assert threads.poll() is None and sampler.calls == 1  # too soon to sample again
    clock.now += 0.2
    assert threads.poll() == (1, 1)  # batches give back the same core
    clock.now += 0.2
    assert threads.poll() is None
    clock.now += 0.2
    assert threads.poll() is None
    clock.now += 0.2
    assert threads.poll() == (2, 2)
    assert threads.current == 2 and sampler.calls == 5


def test_batch_threads_step_down_by_as_many_cores_but_not_below_one() -> None:
    clock = Clock()
    threads = AdaptiveThreads(ThreadPolicy(4, 2), FakeSampler([3.0]), batch_threads=3, clock=clock)  # type: ignore[arg-type]
    assert threads.poll() == (2, 1)


def test_settings_default_to_every_core_with_a_floor_one_below(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.inference.config import InferenceSettings

    for name in ("GOBLIN_INFERENCE_THREADS", "GOBLIN_INFERENCE_MIN_THREADS", "GOBLIN_INFERENCE_ADAPTIVE_THREADS"):
        monkeypatch.delenv(name, raising=False)
    settings = InferenceSettings()
    assert settings.threads == len(os.sched_getaffinity(0))
    assert settings.min_threads == max(1, settings.threads - 1)
    assert settings.adaptive_threads is True
    monkeypatch.setenv("GOBLIN_INFERENCE_THREADS", "1")
    assert InferenceSettings().min_threads == 1
    monkeypatch.setenv("GOBLIN_INFERENCE_THREADS", "8")
    monkeypatch.setenv("GOBLIN_INFERENCE_MIN_THREADS", "5")
    monkeypatch.setenv("GOBLIN_INFERENCE_ADAPTIVE_THREADS", "false")
    settings = InferenceSettings()
    assert (settings.threads, settings.min_threads, settings.adaptive_threads) == (8, 5, False)


@pytest.mark.parametrize(("threads", "floor"), [("2", "3"), ("2", "0"), ("4", "many")])
def test_settings_refuse_a_floor_above_the_maximum_or_nonsense(
    monkeypatch: pytest.MonkeyPatch, threads: str, floor: str
) -> None:
    from pydantic import ValidationError

    from services.inference.config import InferenceSettings

    monkeypatch.setenv("GOBLIN_INFERENCE_THREADS", threads)
    monkeypatch.setenv("GOBLIN_INFERENCE_MIN_THREADS", floor)
    with pytest.raises(ValidationError, match="GOBLIN_INFERENCE_MIN_THREADS|min_threads"):
        InferenceSettings()


def test_the_engine_refuses_a_floor_above_its_maximum() -> None:
    from services.inference.engine import ChatEngine

    with pytest.raises(ValueError, match="min_threads"):
        ChatEngine("/nonexistent.gguf", n_threads=2, min_threads=3)
    engine = ChatEngine("/nonexistent.gguf", n_threads=4)
    assert (engine.min_threads, engine.current_threads, engine.stats().threads) == (3, 4, 4)
