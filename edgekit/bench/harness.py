"""Latency timing that holds up on a noisy 2-core machine.

Variants alternate in blocks: each round, every variant gets a few untimed calls (its thread pool
wakes up) and then a block of timed calls. Rounds continue until every variant has at least
``min_runs`` timed calls and ``min_time`` seconds of timed work, so a slow spell of the machine falls
on all of them. The runtimes are loaded with ``shared=True``: ONNX Runtime's workers otherwise spin
after a run and, on 2 cores, took whole time slices from the next variant (torch's p90 went from
1 ms to 5 ms). ``perf_counter_ns`` only; GPU runtimes synchronise inside ``infer``.

Speedups are ratios of minimum latencies (see ``speedup``).
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

    @property
    def total_s(self) -> float:
        return sum(self.samples_ns) / 1e9


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = 5  # untimed calls before the first round
    min_runs: int = 30
    min_time: float = 1.0  # seconds of timed calls per variant (per process)
    block_time: float = 0.03  # seconds of timed calls per variant per round (at least 3 calls)
    settle: int = 2  # untimed calls per variant at the start of each block
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
    while True:
        pending = [v for v in variants if len(v.samples_ns) < cfg.min_runs or v.total_s < cfg.min_time]
        if not pending or time.perf_counter() - started > cfg.max_time * max(1, len(variants)):
            break
        for v in pending:  # a variant that has its runs drops out; the others keep alternating
            for _ in range(cfg.settle):
                v.runtime.infer(v.inputs)
            for _ in range(blocks[v.name]):
                t0 = time.perf_counter_ns()
                v.runtime.infer(v.inputs)
                v.samples_ns.append(time.perf_counter_ns() - t0)
        if on_round is not None:
            on_round()


def speedup(base_ns: list[int], other_ns: list[int]) -> float | None:
    """How many times faster the ``other`` samples are than the ``base`` ones: the ratio of their
    fastest calls.

    On a shared host, other load only ever adds time to a call, so the minimum is the statistic it
    moves least (BenchmarkTools.jl compares minimums for the same reason). Measured on a 2-core VM
    (benchmarks/repeatability.py): p50 ratios or medians of per-block ratios of two back-to-back
    ``edgekit bench`` runs differed by 10-40 %, ratios of minimums by 5-13 % in one process each and
    by at most ~7 % pooled over three processes each."""
    if not base_ns or not other_ns:
        return None
    return min(base_ns) / min(other_ns)


def stats_ms(samples_ns: list[int]) -> dict[str, float]:
    arr = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {
        "min": float(arr.min()),
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
