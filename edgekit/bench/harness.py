"""Latency timing that holds up on a noisy 2-core machine.

Variants alternate in blocks: each round, every variant gets a few untimed calls (its thread pool
wakes up) and then a block of timed calls. Rounds continue until every variant has at least
``min_runs`` timed calls and ``min_time`` seconds of timed work, so a slow spell of the machine falls
on all of them. The runtimes are loaded with ``shared=True``: ONNX Runtime's workers otherwise spin
after a run and, on 2 cores, took whole time slices from the next variant (torch's p90 went from
1 ms to 5 ms). ``perf_counter_ns`` only; GPU runtimes synchronise inside ``infer``.

Speedups compare the fast end of equal numbers of calls taken round by round, with a bootstrap
interval over rounds (see ``speedup`` and ``speedup_interval``).
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
    rounds: list[int] = field(default_factory=list)  # the round each sample was timed in (same length)

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
    round_no = 0
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
                v.rounds.append(round_no)
        round_no += 1
        if on_round is not None:
            on_round()


FAST_PERCENTILE = 10  # of per-round minima: the fast end, less at the mercy of one lucky call than the minimum


PROCESS_STRIDE = 10**9  # round labels of timing process k start at k * PROCESS_STRIDE


def _fast_end(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per row of ``values`` (padded with +inf past ``counts``): its FAST_PERCENTILE-th order statistic."""
    k = (FAST_PERCENTILE / 100.0 * (counts - 1)).astype(np.int64)
    return np.take_along_axis(np.sort(values, axis=1), k[:, None], axis=1)[:, 0]


def _round_minima(base_ns: list[int], base_rounds: list[int] | None, other_ns: list[int],
                  other_rounds: list[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per round both rows ran in: the fastest of the same number of calls from each (the smaller
    block's count, taken evenly across the larger block). A row that makes 50 calls a round while the
    baseline makes 3 gets no more chances at a lucky minimum than the baseline does."""
    if base_rounds is None or other_rounds is None:  # no round labels: one round each
        base_rounds, other_rounds = [0] * len(base_ns), [0] * len(other_ns)
    a, ra = np.asarray(base_ns, np.int64), np.asarray(base_rounds, np.int64)
    b, rb = np.asarray(other_ns, np.int64), np.asarray(other_rounds, np.int64)
    mins_a, mins_b = [], []
    shared = np.intersect1d(ra, rb)
    for r in shared:
        xa, xb = a[ra == r], b[rb == r]
        n = min(len(xa), len(xb))
        mins_a.append(xa[np.linspace(0, len(xa) - 1, n).round().astype(int)].min())
        mins_b.append(xb[np.linspace(0, len(xb) - 1, n).round().astype(int)].min())
    return np.asarray(mins_a, np.float64), np.asarray(mins_b, np.float64), shared // PROCESS_STRIDE


def speedup(base_ns: list[int], other_ns: list[int], base_rounds: list[int] | None = None,
            other_rounds: list[int] | None = None) -> float | None:
    """How many times faster the ``other`` samples are than the ``base`` ones: in each round both ran
    in, the fastest of the same number of calls from each; across rounds, the ratio of the 10th
    percentiles of those minima.

    On a shared host, other load only ever adds time to a call, so the fast end is what it moves
    least (BenchmarkTools.jl compares minimums for the same reason): p50 ratios of two back-to-back
    ``edgekit bench`` runs differed by 10-40 % on a 2-core VM, ratios of minimums by 5-13 %. But the
    minimum of more calls is lower by chance alone (ONNX Runtime makes 50 calls in the time torch
    makes 3), so both sides get the same count; and a low percentile of per-round minima, unlike the
    one fastest call, is a statistic a bootstrap over rounds gives honest intervals for (95 % of
    simulated intervals held the true ratio)."""
    if not base_ns or not other_ns:
        return None
    mins_a, mins_b, _ = _round_minima(base_ns, base_rounds, other_ns, other_rounds)
    if not len(mins_a):
        return None
    n = np.array([len(mins_a)])
    return float(_fast_end(mins_a[None], n)[0] / _fast_end(mins_b[None], n)[0])


def speedup_interval(base_ns: list[int], other_ns: list[int], base_rounds: list[int] | None,
                     other_rounds: list[int] | None, resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float] | None:
    """A bootstrap interval of ``speedup``, two-level: the timing processes are drawn with replacement,
    then the rounds (slices of time both rows shared) within each drawn process, so a process that ran
    faster or slower as a whole widens the interval as it should; None with fewer than 5 shared rounds."""
    mins_a, mins_b, process = _round_minima(base_ns, base_rounds, other_ns, other_rounds)
    if len(mins_a) < 5:
        return None
    rng = np.random.default_rng(seed)
    order = np.argsort(process, kind="stable")
    mins_a, mins_b, process = mins_a[order], mins_b[order], process[order]
    _, start, size = np.unique(process, return_index=True, return_counts=True)
    slots = rng.integers(0, len(size), size=(resamples, len(size)))  # the processes drawn, per resample
    width = int(size.max())
    u = rng.random((resamples, len(size), width))
    drawn = start[slots][..., None] + (u * size[slots][..., None]).astype(np.int64)  # rounds within each
    unused = np.arange(width)[None, None, :] >= size[slots][..., None]  # a smaller process draws fewer
    pick_a = np.where(unused, np.inf, mins_a[np.minimum(drawn, len(mins_a) - 1)]).reshape(resamples, -1)
    pick_b = np.where(unused, np.inf, mins_b[np.minimum(drawn, len(mins_b) - 1)]).reshape(resamples, -1)
    counts = size[slots].sum(axis=1)
    ratios = _fast_end(pick_a, counts) / _fast_end(pick_b, counts)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


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


def _status_mb(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process since the last reset, in MB."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float | None:
    """Resident memory of this process now, in MB (None where /proc is not there)."""
    return _status_mb("VmRSS")


def memory_added_mb(work: Callable[[], object]) -> float | None:
    """The most resident memory ``work`` adds to this process at its peak, in MB: what a row costs on
    top of whatever else is loaded (None where the peak counter cannot be reset)."""
    before = rss_mb()
    if before is None or not peak_rss_reset():
        work()
        return None
    work()
    peak = peak_rss_mb()
    return None if peak is None else max(0.0, peak - before)
