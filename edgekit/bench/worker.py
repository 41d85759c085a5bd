"""One timing process of ``edgekit bench`` (``python -m edgekit.bench.worker SPEC.json``).

A process has its own memory layout and lands on the host in its own state; on a shared 2-core VM
that moved one row's fastest call by up to ~10 % from one process to the next, more than any
in-process statistic could hide. So ``bench`` times its rows in a few fresh processes, one after the
other, and pools their samples (pyperf does the same with its worker processes). This module is
that process: it loads the rows ``bench`` already built (from the build cache), times them with the
alternating-block harness on the inputs ``bench`` wrote, and saves the samples. It reads JSON and an
``.npz`` without pickles, and writes an ``.npz``.

The row a process loads first is alone in it: that row's memory is measured there, before anything
else is loaded (the runtime's libraries, its model, then one call per batch, smallest first), so a
row's memory does not depend on which rows ran before it. ``"timing": null`` measures that one row
and stops (for rows no timing process leads).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def run(spec: dict[str, Any]) -> None:
    from edgekit import console, trust
    from edgekit.artifact import Artifact
    from edgekit.bench.compare import plan_rows, prepare, run_memory
    from edgekit.bench.harness import Timed, TimingConfig, time_variants

    console.set_quiet(True)
    trust.restore(spec["trust"])
    plans = plan_rows(Artifact.load(Path(spec["artifact"])), list(spec["targets"]), spec.get("device"))
    with np.load(spec["feeds"], allow_pickle=False) as f:
        feeds = {int(b): {name: f[f"b{b}/{name}"] for name in spec["inputs"]} for b in spec["batches"]}
    rows = list(spec["rows"])
    k = int(spec["rotate"]) % len(rows)
    timed: dict[str, Timed] = {}
    arrays: dict[str, np.ndarray] = {}
    order = rows[k:] + rows[:k]  # a different row leads in each process
    for i in order:
        p = plans[i]
        prepare(p, int(spec["threads"]), max(int(b) for b in spec["batches"]))
        if p.runtime is None:
            raise RuntimeError(f"{p.variant} on {p.target}: {p.row.get('reason', 'did not load')}")
        if i == order[0]:  # alone in this process so far: its memory is its own
            if p.row.get("load_memory_mb") is not None:
                arrays[f"{i}#load_mb"] = np.asarray([p.row["load_memory_mb"]], dtype=np.float64)
            for (_, b), mb in run_memory(plans, [i], feeds).items():
                if mb is not None:
                    arrays[f"{i}/{b}#run_mb"] = np.asarray([mb], dtype=np.float64)
            if spec["timing"] is None:
                break
        for b in spec["batches"]:
            timed[f"{i}/{b}"] = Timed(f"{p.variant}/{p.target}/b{b}", p.runtime, feeds[int(b)])
    if spec["timing"] is not None:
        time_variants(list(timed.values()), TimingConfig(**spec["timing"]))
    arrays |= {key: np.asarray(t.samples_ns, dtype=np.int64) for key, t in timed.items()}
    arrays |= {f"{key}#rounds": np.asarray(t.rounds, dtype=np.int64) for key, t in timed.items()}
    np.savez(spec["out"], **arrays)  # type: ignore[arg-type]


def die_with_parent(parent: int) -> None:
    """End this process when ``bench`` (its parent) ends, even by SIGKILL: Linux's PR_SET_PDEATHSIG, and
    elsewhere a thread that watches the parent id."""
    import os
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        import threading
        import time

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent was gone before the signal was armed
        os._exit(1)


def main() -> None:
    try:
        spec = json.loads(Path(sys.argv[1]).read_text())
        if "parent" in spec:
            die_with_parent(int(spec["parent"]))
        sys.path[:0] = [p for p in spec["sys_path"] if p not in sys.path]  # the parent's imports resolve here too
        run(spec)
    except Exception as exc:  # noqa: BLE001 - one line for the parent, which reports it as the row's failure
        print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
