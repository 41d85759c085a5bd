"""The bench report: a versioned pydantic schema, a rich table, Markdown and a PNG plot."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from edgekit.artifact import library_versions

SCHEMA_VERSION = 2  # 2: speedup over equal call counts with an interval, per-row memory, sequential items/s
Status = Literal["ok", "failed", "unavailable"]


class Latency(BaseModel):
    min: float | None = None  # absent in files written before 0.1.0's speedup-from-minimum change
    p50: float
    p90: float
    p99: float
    mean: float


class Row(BaseModel):
    variant: str  # "full" (the lineage root) or the compressed artifact's recipe
    artifact: str
    sha256: str
    is_baseline: bool = False
    target: str
    device: str
    precision_requested: str
    precision: str | None = None  # what actually ran
    batch: int
    threads: int
    status: Status
    reason: str | None = None
    hint: str | None = None
    latency_ms: Latency | None = None
    runs: int | None = None
    # batch / mean latency of back-to-back synchronous calls: one request at a time, not a runtime's
    # throughput mode (several streams or async requests), which would serve more
    sequential_throughput_per_s: float | None = None
    load_s: float | None = None
    compile_s: float | None = None
    load_memory_mb: float | None = None  # resident memory loading this row's runtime added (MB)
    memory_mb: float | None = None  # load_memory_mb + what one call at this batch adds at its peak
    accuracy_metric: str | None = None  # top1 | cosine | neg_mse
    accuracy: float | None = None  # fraction in 0..1
    accuracy_delta: float | None = None  # vs the baseline row
    agreement: float | None = None  # prediction agreement with the full model
    agreement_inputs: Literal["real", "synthetic"] | None = None
    size_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    speedup: float | None = None  # fast end of equal call counts, baseline / this, same batch (harness.speedup)
    baseline: str | None = None  # the row speedup is against: "torch cpu", or "torch cuda" for GPU rows
    speedup_interval: list[float] | None = None  # 95 % bootstrap interval over timing rounds (low, high)
    cpu_kind: str | None = None  # the INT8 kind of the CPU the row ran on (edgekit.cpu)


class Machine(BaseModel):
    cpu: str
    cores: int
    threads_available: int
    flags: list[str]
    cpu_kind: str | None = None  # edgekit.cpu: which INT8 kernels this CPU has
    u8s8_saturates: bool | None = None
    os: str
    python: str
    versions: dict[str, str]


class BenchConfig(BaseModel):
    artifact: str
    root: str
    targets: list[str]
    batches: list[int]
    threads: int
    warmup: int
    min_runs: int
    min_time: float
    processes: int | None = None  # fresh processes the rows were timed in (0: in the bench process)
    memory: str | None = None  # where each row's memory was measured: "own process per row" | "bench process"
    data: str | None
    split: str
    eval_samples: int | None


class BenchReport(BaseModel):
    schema_version: int = SCHEMA_VERSION
    created: str
    machine: Machine
    config: BenchConfig
    rows: list[Row] = Field(default_factory=list)


INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16", "amx_tile", "neon", "asimd")


def machine() -> Machine:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith(("flags", "Features")):
                flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    from edgekit.cpu import detect

    kind = detect()
    return Machine(
        cpu=cpu, cores=os.cpu_count() or 1, threads_available=avail,
        flags=[f for f in INTERESTING_FLAGS if f in flags], cpu_kind=kind.kind, u8s8_saturates=kind.u8s8_saturates,
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(), versions=library_versions(),
    )


def _fmt_ms(row: Row) -> str:
    return f"{row.latency_ms.p50:.3f}" if row.latency_ms else "-"


def _pct(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v * 100:+.2f}" if signed else f"{v * 100:.2f}"


def _size(v: int | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.2f} MB" if v >= 1e5 else f"{v / 1e3:.1f} kB"


COLUMNS = ["variant", "target", "precision", "batch", "status", "min ms", "p50 ms", "p90 ms", "speedup", "95% interval", "seq. items/s",
           "accuracy %", "Δ acc pts", "agree %", "size", "memory", "params", "MACs"]


def row_cells(r: Row) -> list[str]:
    status = r.status
    return [
        r.variant + ((" (baseline)" if r.device == "cpu" else f" (baseline, {r.device})") if r.is_baseline else ""),
        r.target,
        r.precision or r.precision_requested,
        str(r.batch),
        status,
        f"{r.latency_ms.min:.3f}" if r.latency_ms and r.latency_ms.min is not None else "-",
        _fmt_ms(r),
        f"{r.latency_ms.p90:.3f}" if r.latency_ms else "-",
        f"{r.speedup:.2f}x" if r.speedup else "-",
        f"{r.speedup_interval[0]:.2f}-{r.speedup_interval[1]:.2f}x" if r.speedup_interval else "-",
        f"{r.sequential_throughput_per_s:,.0f}" if r.sequential_throughput_per_s else "-",
        _pct(r.accuracy),
        _pct(r.accuracy_delta, signed=True),
        _pct(r.agreement) + ("*" if r.agreement_inputs == "synthetic" and r.agreement is not None else ""),
        _size(r.size_bytes),
        f"{r.memory_mb:.1f} MB" if r.memory_mb is not None else "-",
        f"{r.params:,}" if r.params else "-",
        f"{r.macs / 1e6:,.1f}M" if r.macs else "-",
    ]


def print_table(report: BenchReport, console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    for batch in report.config.batches:
        table = Table(title=f"edgekit bench - batch {batch}, {report.config.threads} threads, {report.machine.cpu} "
                            f"({report.machine.cpu_kind or 'unknown CPU kind'})")
        for col in COLUMNS:
            table.add_column(col, justify="left" if col in ("variant", "target", "precision", "status") else "right",
                             overflow="fold")
        for r in report.rows:
            if r.batch != batch:
                continue
            cells = [escape(c) for c in row_cells(r)]
            style = {"ok": None, "failed": "red", "unavailable": "yellow"}[r.status]
            if r.status != "ok":
                cells[4] = f"[{style}]{cells[4]}[/{style}]"
            table.add_row(*cells)
        console.print(table)
    notes = {(r.variant, r.target, r.status, r.reason or "", r.hint or "") for r in report.rows if r.status != "ok"}
    for variant, target, status, reason, hint in sorted(notes):
        console.print(f"  {variant} on {target}: {status}: {escape(reason)}" + (f" [dim](hint: {escape(hint)})[/dim]" if hint else ""))
    if any(r.agreement_inputs == "synthetic" for r in report.rows):
        console.print("  * agreement measured on synthetic inputs (the model has no data)")


def markdown(report: BenchReport) -> str:
    m = report.machine
    lines = [
        f"# edgekit bench ({report.created})",
        "",
        f"Machine: {m.cpu}, {m.cores} cores ({m.threads_available} available), flags {', '.join(m.flags) or '-'}, "
        f"CPU kind {m.cpu_kind or 'unknown'}, "
        f"{m.os}, Python {m.python}. Threads: {report.config.threads}.",
        f"Versions: {', '.join(f'{k} {v}' for k, v in m.versions.items())}.",
        f"Artifact: `{report.config.artifact}` (full model: `{report.config.root}`); data: {report.config.data or 'none'} "
        f"({report.config.split}).",
        "",
    ]
    for batch in report.config.batches:
        lines += [f"## Batch {batch}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for r in report.rows:
            if r.batch == batch:
                lines.append("| " + " | ".join(c.replace("|", "/") for c in row_cells(r)) + " |")
        lines.append("")
    for variant, target, status, reason, hint in sorted(
            {(r.variant, r.target, r.status, r.reason or "", r.hint or "") for r in report.rows if r.status != "ok"}):
        lines.append(f"- {variant} on {target}: {status}: {reason}" + (f" (hint: `{hint}`)" if hint else ""))
    lines.append("")
    lines.append("Speedup and Δ accuracy are against the baseline row (the full model on torch eager FP32, or ONNX "
                 "Runtime FP32 for an ONNX-only model); rows on a GPU are sped up against torch eager on CUDA (the "
                 "row's `baseline` in bench.json). Latencies come from timed runs alternating with the other rows; "
                 "speedup compares the fast end (10th percentile of per-round minima over equal numbers of calls "
                 "from the rounds both rows ran in: other load on the machine moves it least), with a 95% "
                 "bootstrap interval over those rounds. Items/s are sequential: batch / mean latency of one synchronous request at a time. "
                 "Memory is what the row's runtime added to the process when loaded plus what its calls added at "
                 "this batch, measured one row at a time.")
    return "\n".join(lines) + "\n"


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not beaten on both latency (lower) and accuracy (higher)."""
    front = []
    for i, (lat, acc) in enumerate(points):
        if not any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for j, (l2, a2) in enumerate(points) if j != i):
            front.append(i)
    return front


def plot(report: BenchReport, path: Path) -> None:
    """Accuracy vs latency (p50, smallest batch), one point per variant x target, Pareto front marked."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = min(report.config.batches)
    rows = [r for r in report.rows if r.batch == batch and r.status == "ok" and r.latency_ms is not None]
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    use_acc = all(r.accuracy is not None for r in rows) and bool(rows)
    ys = [(r.accuracy if use_acc else r.agreement) or 0.0 for r in rows]
    xs = [r.latency_ms.p50 for r in rows if r.latency_ms]
    front = set(pareto(list(zip(xs, ys, strict=True))))
    markers = {"torch": "o", "onnxruntime": "s", "openvino": "D", "tensorrt": "^"}
    for i, (r, x, y) in enumerate(zip(rows, xs, ys, strict=True)):
        color = "tab:blue" if r.variant == "full" else "tab:orange"
        ax.scatter(x, y * 100, marker=markers.get(r.target, "o"), s=70, color=color,
                   edgecolors="black" if i in front else "none", linewidths=1.5, zorder=3)
        ax.annotate(f"{r.variant}/{r.target}/{r.precision or r.precision_requested}", (x, y * 100),
                    textcoords="offset points", xytext=(6, 4 - 11 * (i % 4)), fontsize=8)  # staggered: ties overlap
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=markers.get(t, "o"), linestyle="", color="gray", label=t)
               for t in dict.fromkeys(r.target for r in rows)]
    handles += [Line2D([], [], marker="s", linestyle="", color="tab:blue", label="full model"),
                Line2D([], [], marker="s", linestyle="", color="tab:orange", label="compressed")]
    if front:
        pts = sorted((xs[i], ys[i] * 100) for i in front)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", color="gray", zorder=2)
        handles.append(Line2D([], [], linestyle="--", color="gray", marker="o", markerfacecolor="none",
                              markeredgecolor="black", label="Pareto front"))
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    # label only the 2x and 5x minor ticks: all eight crowd into one another near a decade's start
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
    lo, hi = min(ys, default=0.0) * 100, max(ys, default=1.0) * 100
    pad = max(0.5, 0.15 * (hi - lo))
    ax.set_ylim(lo - pad, hi + pad if hi > 100 else min(hi + pad, 100 + pad / 4))  # a percentage stops near 100
    ax.set_xlabel(f"latency p50 (ms, batch {batch}, log scale)")
    ax.set_ylabel(("accuracy" if use_acc else "agreement with full model") + " (%)")
    ax.set_title(f"{Path(report.config.artifact).name}: accuracy vs latency")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
