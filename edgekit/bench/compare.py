"""``edgekit bench``: the full model and the compressed one, on torch and every requested target.

Rows: the baseline (the lineage root on torch eager FP32, or ONNX Runtime FP32 for an ONNX-only
root), the full model on each target (what the target alone buys), and the compressed artifact on
each target (what compression adds). Builds that are missing are made (and cached) first. A target
that cannot run here gives an "unavailable" row with its install hint; the rest still runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import console, trust
from edgekit.artifact import Artifact, check_output
from edgekit.bench.harness import (
    PROCESS_STRIDE,
    Timed,
    TimingConfig,
    memory_added_mb,
    speedup,
    speedup_interval,
    stats_ms,
    time_variants,
)
from edgekit.bench.report import (
    BenchConfig,
    BenchReport,
    Latency,
    Row,
    machine,
    markdown,
    plot,
    print_table,
)
from edgekit.errors import BadInputError, EdgekitError, ParityError
from edgekit.metrics import agreement, cosine, task_metric
from edgekit.targets.base import Runtime, default_threads
from edgekit.targets.catalog import CATALOG, load_baseline, load_target, resolve

DEFAULT_TARGETS = ("onnxruntime", "openvino")


@dataclass
class Plan:
    variant: str
    art: Artifact
    target: str
    precision: str
    is_baseline: bool = False
    device: str = "cpu"
    against: int = 0  # the index of the baseline plan this row's speedup is against
    runtime: Runtime | None = None
    row: dict[str, Any] = field(default_factory=dict)

    @property
    def on_gpu(self) -> bool:
        return self.device in GPU_DEVICES


def _variant_name(art: Artifact) -> str:
    return art.recipe_name or art.manifest.name


GPU_DEVICES = ("cuda", "tensorrt")


def _device(target: str, device: str | None) -> str:
    """The device a target runs on in this bench: ``--device`` where the target has it, else its default."""
    devices = CATALOG[target].devices
    return device if device in devices else next(iter(devices))


def plan_rows(art: Artifact, targets: list[str], device: str | None = None) -> list[Plan]:
    """The rows: the baseline (the full model on torch eager CPU, or ONNX Runtime CPU for an ONNX-only
    model), then per target the full model and the compressed one. Rows on a GPU get a torch CUDA
    baseline of their own beside the CPU one: a GPU engine is never sped up against CPU eager."""
    root = art.root()
    plans: list[Plan] = []
    base_target = "torch" if root.manifest.model is not None else "onnxruntime"
    plans.append(Plan("full", root, base_target, "fp32", is_baseline=True))
    compressed = art if art.path.resolve() != root.path.resolve() else None
    if compressed is not None and compressed.manifest.model is not None and not compressed.manifest.quantized:
        plans.append(Plan(_variant_name(compressed), compressed, "torch", "fp32"))
    rows: list[Plan] = []
    for name in targets:
        info = resolve(name)
        if info.name == "torch":
            continue
        dev = _device(info.name, device)
        if not (info.name == base_target and dev == "cpu"):
            rows.append(Plan("full", root, info.name, "fp32", device=dev))
        if compressed is not None:
            rows.append(Plan(_variant_name(compressed), compressed, info.name,
                             "int8" if compressed.manifest.quantized else "fp32", device=dev))
    if base_target == "torch" and any(p.on_gpu for p in rows):
        plans.append(Plan("full", root, "torch", "fp32", is_baseline=True, device="cuda"))
    gpu_base = next((i for i, p in enumerate(plans) if p.is_baseline and p.on_gpu), 0)
    for p in [*plans, *rows]:
        p.against = gpu_base if p.on_gpu else 0
    return plans + rows


def _size(art: Artifact, built: Artifact | None) -> int:
    if built is not None and built.manifest.target is not None:
        return sum(e.size for n, e in built.manifest.files.items() if n != "timing.cache")
    spec = art.manifest.model
    if spec is not None and spec.weights in art.manifest.files:
        return art.manifest.files[spec.weights].size
    return art.manifest.files[str(art.manifest.onnx)].size if art.manifest.onnx else 0


def prepare(p: Plan, threads: int, max_batch: int | None = None) -> None:
    """Build (or reuse) and load the runtime of one row; failures become the row's status.
    ``max_batch``: the largest batch the bench runs (an engine's profile must cover it)."""
    from edgekit.build import build

    info = CATALOG[p.target]
    device = p.device if p.device in info.devices else next(iter(info.devices))
    p.row.update(device=device, status="ok")
    try:
        load_baseline(info).check(device)
    except EdgekitError as exc:
        p.row.update(status="unavailable", reason=exc.message, hint=exc.hint)
        return
    built = None
    t0 = time.perf_counter()
    try:
        if p.target == "torch":
            from edgekit.checkpoint import load_module
            from edgekit.targets.torch import TorchRuntime

            def load_torch() -> None:
                p.runtime = TorchRuntime(load_module(p.art), p.art.io.output_names, device=device, threads=threads)

            p.row["load_memory_mb"] = memory_added_mb(load_torch)
            p.row["precision"] = "fp32"
        else:
            built = build(p.art, p.target, p.precision, device=device, max_batch=max_batch)
            assert built is not None and built.manifest.target is not None  # noqa: S101 - not a dry run
            p.row["compile_s"] = built.manifest.metrics.get("build_s")
            t0 = time.perf_counter()
            record = built.manifest.target

            target = load_target(info)

            def load_built() -> None:
                p.runtime = target.load(built.path, record, threads=threads, shared=True)

            p.row["load_memory_mb"] = memory_added_mb(load_built)
            p.row["precision"] = built.manifest.target.precision
    except ParityError as exc:
        p.row.update(status="failed", reason=exc.message, hint=exc.hint, parity_failed=True)
        return
    except EdgekitError as exc:
        p.row.update(status="failed", reason=exc.message, hint=exc.hint)
        return
    p.row["load_s"] = time.perf_counter() - t0
    p.row["size_bytes"] = _size(p.art, built)
    p.row["params"] = p.art.manifest.metrics.get("params")
    p.row["macs"] = p.art.manifest.metrics.get("macs")


def eval_inputs(art: Artifact, data: str | None, samples: int | None) -> tuple[dict[str, np.ndarray], np.ndarray | None, bool]:
    from edgekit.data import evaluation_samples

    return evaluation_samples(art.io, data, samples, seed=0)


def run_all(rt: Runtime, inputs: dict[str, np.ndarray], out_name: str, batch: int) -> np.ndarray:
    from edgekit.targets.base import run_batched

    return run_batched(rt, inputs, batch)[out_name]


@dataclass(frozen=True)
class BenchRequest:
    """What a benchmark is asked for: which rows, batches and threads, how long to time them, on what
    data, and where the report goes. ``targets`` empty: the default targets. ``processes``: fresh
    processes to time in, samples pooled (0: time in the calling one). ``device``: where targets that
    have it run (e.g. cuda for torch and ONNX Runtime); others run on their default device and say so
    in the row."""

    targets: tuple[str, ...] = ()
    batches: tuple[int, ...] = (1, 8)
    threads: int | None = None
    timing: TimingConfig = field(default_factory=TimingConfig)
    processes: int = 3
    device: str | None = None
    data: str | None = None
    samples: int | None = None
    out: Path | None = None
    overwrite: bool = False
    dry_run: bool = False

    def check(self) -> None:
        if any(b < 1 for b in self.batches):
            raise BadInputError("--batch sizes must be positive")
        t = self.timing
        if t.min_runs < 1 or t.min_time < 0 or t.warmup < 0 or self.processes < 0:
            raise BadInputError("--min-runs must be >= 1, --min-time, --warmup and --processes >= 0")


def bench(art: Artifact, request: BenchRequest | None = None) -> tuple[BenchReport | None, int]:
    """Run the benchmark; returns (report, exit code: 0, or 4 if a requested build failed parity)."""
    req = request or BenchRequest()
    req.check()
    trust.vouch_named(req.data)  # named by the caller: theirs to run
    targets = list(req.targets or DEFAULT_TARGETS)
    batches = sorted(set(req.batches or (1, 8)))
    threads = req.threads or default_threads()
    device, processes, cfg = req.device, req.processes, req.timing
    if art.kind not in ("checkpoint", "compressed"):
        raise BadInputError(f"{art.path} is a {art.kind} artifact; bench takes a checkpoint or compressed one")
    if device is not None and not any(device in resolve(t).devices for t in [*targets, "torch"]):
        known = sorted({d for t in [*targets, "torch"] for d in resolve(t).devices})
        raise BadInputError(f"none of the targets runs on device '{device}'", hint=f"devices of these targets: {', '.join(known)}")
    plans = plan_rows(art, targets, device)
    root = plans[0].art
    data = req.data or root.manifest.data
    if req.dry_run:
        for p in plans:
            try:
                load_baseline(CATALOG[p.target]).check(p.device)
                status = "ok"
            except EdgekitError as exc:
                status = f"unavailable: {exc.message}"
            console.info(f"dry run: {p.variant} on {p.target} ({p.device}) {p.precision}: {status}")
        eval_inputs(art, data, 8)
        return None, 0
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = req.out or art.path / "bench" / stamp
    check_output(out, req.overwrite, art.chain_paths())
    for p in plans:
        console.info(f"preparing {p.variant} on {p.target} ({p.device}, {p.precision})")
        prepare(p, threads, max(batches))
    x_eval, y_eval, real = eval_inputs(art, data, req.samples)
    feeds = {b: {k: np.ascontiguousarray(np.resize(v, (b, *v.shape[1:]))) for k, v in x_eval.items()} for b in batches}
    # without timing processes, memory is measured here (rows loaded before a row share their libraries)
    memory = run_memory(plans, [i for i, p in enumerate(plans) if p.runtime is not None], feeds) if processes == 0 else {}
    _accuracy(plans, art, x_eval, y_eval, real, max(batches))
    rows: list[Row] = []
    live = [i for i, p in enumerate(plans) if p.runtime is not None]
    if processes > 0:
        for p in plans:  # the timing processes load their own; free the memory and the threads
            p.runtime = None
        timings, alone = time_in_processes(art, targets, threads, live, feeds, cfg, processes, device)
        for i, p in enumerate(plans):  # each row's memory as measured in a process it had to itself
            p.row["load_memory_mb"] = alone.get(f"{i}#load_mb")
        memory = {(i, b): alone.get(f"{i}/{b}#run_mb") for i in live for b in batches}
    else:
        timings = time_here(plans, live, feeds, cfg)
    for batch in batches:
        for i, p in enumerate(plans):
            mine, base = timings.get(f"{i}/{batch}"), timings.get(f"{p.against}/{batch}")
            rows.append(_row(p, batch, threads, mine.ns if mine else None))
            rows[-1].baseline = f"{plans[p.against].target} {plans[p.against].device}"
            run_mb, load_mb = memory.get((i, batch)), p.row.get("load_memory_mb")
            rows[-1].memory_mb = None if run_mb is None or load_mb is None else load_mb + run_mb
            if base is not None and mine is not None and rows[-1].latency_ms is not None:
                rows[-1].speedup = speedup(base.ns, mine.ns, base.rounds, mine.rounds)
                interval = speedup_interval(base.ns, mine.ns, base.rounds, mine.rounds)
                rows[-1].speedup_interval = list(interval) if interval and not p.is_baseline else None
    base_acc = next((r.accuracy for r in rows if r.is_baseline), None)
    for r in rows:
        if r.accuracy is not None and base_acc is not None:
            r.accuracy_delta = r.accuracy - base_acc
    report = BenchReport(
        created=stamp, machine=machine(),
        config=BenchConfig(artifact=str(art.path), root=str(root.path), targets=[resolve(t).name for t in targets],
                           batches=batches, threads=threads, warmup=cfg.warmup, min_runs=cfg.min_runs, min_time=cfg.min_time,
                           processes=processes, memory="own process per row" if processes > 0 else "bench process",
                           data=data, split="test" if real else "synthetic", eval_samples=len(next(iter(x_eval.values())))),
        rows=rows,
    )
    write(report, out, req.overwrite)
    print_table(report, console.err)
    console.info(f"[green]wrote[/green] {out}/bench.json, bench.md, bench.png")
    failed_parity = any(p.row.get("parity_failed") for p in plans)
    return report, 4 if failed_parity else 0


@dataclass
class Samples:
    """One row's timed calls (ns) and the round each was timed in."""

    ns: list[int]
    rounds: list[int]


def run_memory(plans: list[Plan], live: list[int], feeds: dict[int, dict[str, np.ndarray]]) -> dict[tuple[int, int], float | None]:
    """Per row and batch: the memory a call adds at its peak on top of the loaded runtime (activation
    buffers, workspaces), one row at a time, each row's first calls, batches in ascending order (a
    runtime keeps the buffers of a smaller batch, so each batch adds what it needs beyond them),
    before the accuracy pass runs anything at the largest batch."""
    out: dict[tuple[int, int], float | None] = {}
    for i in live:
        runtime = plans[i].runtime
        assert runtime is not None  # noqa: S101 - live rows have one
        grown = 0.0
        for b in sorted(feeds):
            try:
                added = memory_added_mb(partial(runtime.infer, feeds[b]))
            except EdgekitError:
                break
            if added is None:
                out[(i, b)] = None
                continue
            grown += added
            out[(i, b)] = grown
        # a row that fails on these inputs is marked by the accuracy pass
    return out


def time_here(plans: list[Plan], live: list[int], feeds: dict[int, dict[str, np.ndarray]],
              cfg: TimingConfig) -> dict[str, Samples]:
    """Time every live row at every batch size in this process, all in the same rounds (a slow spell
    of the host falls on all of them). Keys ``"<plan index>/<batch>"``."""
    timed = {f"{i}/{b}": Timed(f"{plans[i].variant}/{plans[i].target}/b{b}", plans[i].runtime, feeds[b])  # type: ignore[arg-type]
             for i in live for b in feeds}
    with console.progress() as bar:
        task = bar.add_task(f"timing {len(timed)} rows", total=None, status="")
        time_variants(list(timed.values()), cfg, on_round=partial(bar.advance, task))
    return {k: Samples(t.samples_ns, t.rounds) for k, t in timed.items()}


def time_in_processes(art: Artifact, targets: list[str], threads: int, live: list[int],
                      feeds: dict[int, dict[str, np.ndarray]], cfg: TimingConfig, processes: int,
                      device: str | None = None) -> tuple[dict[str, Samples], dict[str, float]]:
    """Time the rows in ``processes`` fresh processes, one after the other (edgekit.bench.worker says
    why), and pool their samples (rounds numbered apart per process: rows pair only within one).
    Also each row's memory, measured in a process where it was loaded first: the timing process it
    leads, else one of its own (``"<i>#load_mb"``, ``"<i>/<batch>#run_mb"``)."""
    import dataclasses
    import json
    import os
    import subprocess  # noqa: S404 - our own worker module, fixed argv
    import sys
    import tempfile

    pooled: dict[str, Samples] = {}
    memory: dict[str, float] = {}
    unled = live[processes:]  # rows no timing process loads first: each gets a short process of its own
    runs: list[tuple[list[int], int, dict[str, Any] | None]] = [(live, k, dataclasses.asdict(cfg)) for k in range(processes)]
    runs += [([i], 0, None) for i in unled]
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp, console.progress() as bar:
        names = list(next(iter(feeds.values())))
        np.savez(Path(tmp) / "feeds.npz", **{f"b{b}/{n}": a for b, f in feeds.items() for n, a in f.items()})  # type: ignore[arg-type]  # numpy types **kwds as bool
        task = bar.add_task(f"timing {len(live) * len(feeds)} rows in {processes} processes", total=len(runs), status="")
        for k, (rows, rotate, timing) in enumerate(runs):
            spec = {"artifact": str(art.path), "targets": targets, "device": device, "threads": threads, "rows": rows,
                    "batches": list(feeds), "inputs": names, "feeds": str(Path(tmp) / "feeds.npz"),
                    "timing": timing, "trust": trust.state(),
                    "sys_path": sys.path, "rotate": rotate, "parent": os.getpid(), "out": str(Path(tmp) / f"samples{k}.npz")}
            (Path(tmp) / f"spec{k}.json").write_text(json.dumps(spec))
            res = subprocess.run([sys.executable, "-m", "edgekit.bench.worker", str(Path(tmp) / f"spec{k}.json")],  # noqa: S603
                                 capture_output=True, text=True, check=False)
            if res.returncode != 0:
                last = (res.stderr.strip().splitlines() or ["no message"])[-1]
                what = f"timing process {k + 1} of {processes}" if timing else f"memory process for row {rows[0]}"
                raise EdgekitError(f"{what} failed: {last}",
                                   hint="run with --processes 0 to time in this process and see the full error")
            with np.load(Path(tmp) / f"samples{k}.npz", allow_pickle=False) as f:
                memory |= {name: float(f[name][0]) for name in f.files if name.endswith("_mb")}
                for key in (name for name in f.files if not name.endswith(("#rounds", "_mb"))):
                    into = pooled.setdefault(key, Samples([], []))
                    into.ns.extend(int(x) for x in f[key])
                    into.rounds.extend(k * PROCESS_STRIDE + int(r) for r in f[f"{key}#rounds"])
            bar.advance(task)
    return pooled, memory


def _accuracy(plans: list[Plan], art: Artifact, x: dict[str, np.ndarray], y: np.ndarray | None, real: bool, batch: int) -> None:
    io = art.io
    name = io.output_names[0]
    base = next(p for p in plans if p.is_baseline)
    ref = run_all(base.runtime, x, name, batch) if base.runtime is not None else None
    for p in plans:
        if p.runtime is None:
            continue
        try:
            outs = ref if p is base else run_all(p.runtime, x, name, batch)
        except EdgekitError as exc:  # one row that cannot run these inputs fails alone
            p.row.update(status="failed", reason=exc.message, hint=exc.hint)
            p.runtime = None
            continue
        assert outs is not None  # noqa: S101
        metric, value = task_metric(io, outs, y, ref) if real else (None, None)
        p.row.update(accuracy_metric=metric, accuracy=value)
        if ref is not None:
            p.row["agreement"] = agreement(outs, ref) if io.task == "classification" else cosine(outs, ref)
            p.row["agreement_inputs"] = "real" if real else "synthetic"


def _row(p: Plan, batch: int, threads: int, samples_ns: list[int] | None) -> Row:
    fields = {k: v for k, v in p.row.items() if k != "parity_failed"}
    from edgekit.cpu import detect

    cpu_kind = detect().kind if fields.get("device", "cpu") == "cpu" else None
    row = Row(variant=p.variant, artifact=str(p.art.path), sha256=p.art.sha256, is_baseline=p.is_baseline,
              target=p.target, precision_requested=p.precision, batch=batch, threads=threads, cpu_kind=cpu_kind, **fields)
    if samples_ns:
        stats = stats_ms(samples_ns)
        row.latency_ms = Latency(**stats)
        row.runs = len(samples_ns)
        row.sequential_throughput_per_s = batch * 1000.0 / stats["mean"]
    return row


def write(report: BenchReport, out: Path, overwrite: bool = False) -> None:
    from edgekit.artifact import staging

    with staging(out, overwrite) as tmp:
        (tmp / "bench.json").write_text(report.model_dump_json(indent=2) + "\n")
        (tmp / "bench.md").write_text(markdown(report))
        plot(report, tmp / "bench.png")
