"""Latency timing that holds up on a noisy 2-core machine.

Variants alternate in blocks: each round, every variant waits a moment (the previous runtime's
thread pool stops spinning: ONNX Runtime's workers spin after a run, and on 2 cores they took whole
time slices from the next variant, torch's p90 went from 1 ms to 5 ms), gets a few untimed calls (its
own pool wakes up) and then a block of timed calls. Rounds continue until
every variant has at least ``min_runs`` timed calls and ``min_time`` seconds of timed work, so ratios
between variants compare like with like. ``perf_counter_ns`` only; GPU runtimes synchronise inside
``infer``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgekit.targets.base import Runtime


@dataclass
class Timed:
    name: str
    runtime: Runtime
    inputs: dict[str, np.ndarray]
    samples_ns: list[int] = field(default_factory=list)
    rounds: dict[int, float] = field(default_factory=dict)  # round index -> median ns of that block

    @property
    def total_s(self) -> float:
        return sum(self.samples_ns) / 1e9


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = 5  # untimed calls before the first round
    min_runs: int = 30
    min_time: float = 0.5  # seconds of timed calls per variant
    block_time: float = 0.03  # seconds of timed calls per variant per round (at least 3 calls)
    settle: int = 2  # untimed calls per variant at the start of each block
    # seconds of sleep before each block, so the last runtime's pool goes idle (20 ms left torch at
    # batch 8 three times slower in 2 of 6 processes that held an ONNX Runtime session; 100 ms: 0 of 10)
    pause: float = 0.1
    max_time: float = 60.0  # stop extending runs after this many seconds per variant


def time_variants(variants: list[Timed], cfg: TimingConfig, on_round: Callable[[], None] | None = None) -> None:
    """Fill each variant's ``samples_ns``, alternating variants block by block."""
    blocks = {}
    for v in variants:
        t0 = time.perf_counter_ns()
        for _ in range(max(cfg.warmup, 1)):
            v.runtime.infer(v.inputs)
        per_call = (time.perf_counter_ns() - t0) / max(cfg.warmup, 1) / 1e9
        blocks[v.name] = int(min(2000, max(3, cfg.block_time / max(per_call, 1e-6))))
    started = time.perf_counter()
    round_no = 0
    while True:
        pending = [v for v in variants if len(v.samples_ns) < cfg.min_runs or v.total_s < cfg.min_time]
        if not pending or time.perf_counter() - started > cfg.max_time * max(1, len(variants)):
            break
        for v in pending:  # a variant that has its runs drops out; the others keep alternating
            time.sleep(cfg.pause)
            for _ in range(cfg.settle):
                v.runtime.infer(v.inputs)
            block = []
            for _ in range(blocks[v.name]):
                t0 = time.perf_counter_ns()
                v.runtime.infer(v.inputs)
                block.append(time.perf_counter_ns() - t0)
            v.samples_ns += block
            v.rounds[round_no] = float(np.median(block))
        round_no += 1
        if on_round is not None:
            on_round()


def paired_speedup(base: Timed, other: Timed) -> float | None:
    """How many times faster ``other`` is than ``base``: the median, over the rounds both were timed
    in, of the ratio of their block medians. Blocks of one round run within a fraction of a second of
    each other, so a slow spell of the machine (a neighbour on the host, a frequency change) hits both
    sides of each ratio; a ratio of whole-run medians carries it into one side only."""
    ratios = [base.rounds[r] / other.rounds[r] for r in base.rounds.keys() & other.rounds.keys()]
    return float(np.median(ratios)) if ratios else None


def stats_ms(samples_ns: list[int]) -> dict[str, float]:
    arr = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {
        "p50": float(np.percentile(arr, 50)),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
        "mean": float(arr.mean()),
    }


def peak_rss_reset() -> bool:
    """Reset the process's peak-RSS counter (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process since the last reset, in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
