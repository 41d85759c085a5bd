"""The timing harness on its own: block alternation, the stopping rule, and the speedup statistic
(fast end of equal numbers of calls per round, with a bootstrap interval)."""

from __future__ import annotations

import time

import numpy as np

from edgekit.bench.harness import (
    Timed,
    TimingConfig,
    speedup,
    speedup_interval,
    stats_ms,
    time_variants,
)


class Sleeper:
    """A runtime that takes a fixed time per call and logs who ran when."""

    def __init__(self, name: str, seconds: float, log: list[str]) -> None:
        self.name, self.seconds, self.log = name, seconds, log

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.log.append(self.name)
        time.sleep(self.seconds)
        return {"y": inputs["x"]}


def test_variants_alternate_in_blocks_until_each_has_its_runs_and_time() -> None:
    log: list[str] = []
    x = {"x": np.zeros(1, np.float32)}
    fast, slow = Timed("fast", Sleeper("fast", 0.0005, log), x), Timed("slow", Sleeper("slow", 0.002, log), x)
    cfg = TimingConfig(warmup=2, min_runs=12, min_time=0.03, block_time=0.006, settle=1, max_time=5.0)
    time_variants([fast, slow], cfg)
    for v in (fast, slow):
        assert len(v.samples_ns) >= cfg.min_runs and v.total_s >= cfg.min_time
        assert len(v.rounds) == len(v.samples_ns) and v.rounds == sorted(v.rounds)
    # the warm-up sets each block to ~block_time of calls (at least 3), so the fast one makes more per round
    per_round = {v.name: np.bincount(v.rounds).max() for v in (fast, slow)}
    assert per_round["fast"] > per_round["slow"] >= 3
    # after the warm-up, the runtimes take turns: both appear in the log before either finishes
    timed = log[2 * cfg.warmup:]
    switches = sum(a != b for a, b in zip(timed, timed[1:], strict=False))
    assert switches >= 3
    assert np.median(slow.samples_ns) > 2 * np.median(fast.samples_ns)


def test_max_time_stops_a_variant_that_cannot_reach_its_runs() -> None:
    log: list[str] = []
    v = Timed("slow", Sleeper("slow", 0.01, log), {"x": np.zeros(1, np.float32)})
    t0 = time.perf_counter()
    time_variants([v], TimingConfig(warmup=1, min_runs=10_000, min_time=0.0, block_time=0.02, settle=0, max_time=0.1))
    assert time.perf_counter() - t0 < 1.0
    assert 0 < len(v.samples_ns) < 10_000


def test_stats_are_in_milliseconds() -> None:
    s = stats_ms([1_000_000, 2_000_000, 3_000_000, 4_000_000])
    assert s["min"] == 1.0 and s["p50"] == 2.5


def test_speedup_is_the_ratio_of_fastest_calls() -> None:
    """Other load on the host only adds time: a slow spell in the baseline's samples (30, 30) must not
    turn a 2x speedup into more."""


    assert speedup([30, 10, 30], [5, 6, 9]) == 2.0
    assert speedup([30, 10], []) is None


def test_speedup_compares_equal_numbers_of_calls() -> None:
    """Both rows draw from the same latency distribution, but one makes 50 calls a round and the
    other 3: the minimum of all calls calls the busier one faster by chance; edgekit's speedup does
    not, and its interval holds the true 1.0."""




    old, new, covered = [], [], 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        base = (1e6 * rng.lognormal(0, 0.05, (60, 3))).astype(int)
        other = (1e6 * rng.lognormal(0, 0.05, (60, 50))).astype(int)
        rounds_a, rounds_b = np.repeat(np.arange(60), 3).tolist(), np.repeat(np.arange(60), 50).tolist()
        a, b = base.ravel().tolist(), other.ravel().tolist()
        old.append(min(a) / min(b))
        s = speedup(a, b, rounds_a, rounds_b)
        interval = speedup_interval(a, b, rounds_a, rounds_b)
        assert s is not None and interval is not None and interval[0] <= s <= interval[1]
        new.append(s)
        covered += interval[0] <= 1.0 <= interval[1]
    assert float(np.mean(old)) > 1.02  # the bias this fixes
    assert abs(float(np.mean(new)) - 1.0) < 0.01
    assert covered >= 16
    assert speedup_interval([1, 2, 3], [1, 2, 3], [0, 1, 2], [0, 1, 2]) is None  # too few rounds for an interval


