"""Shared pieces of the benchmark sections: the run context, artifacts, runtimes, timing, goals.

Everything goes through edgekit's public API (train, import_model, compress, build, the bench
harness); this module only adds what a benchmark needs around it: reusing artifacts between runs,
timing several rows in one process with repeats, and goals with a pass/fail verdict.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RECIPES = HERE / "recipes"
THREADS = 2


# --------------------------------------------------------------------------- results


@dataclass
class Goal:
    """One claim with its target and what was measured; ``passed`` is None when not measured."""

    goal: str
    target: str
    measured: str
    passed: bool | None

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: "n/a"}[self.passed]


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Section:
    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["goals"] = [{**asdict(g), "verdict": g.verdict} for g in self.goals]
        return out


def goal(text: str, target: str, value: float | None, ok: bool | None, fmt: str = "{:.3f}") -> Goal:
    measured = "-" if value is None else fmt.format(round(value, 6) + 0.0)  # no "-0.00"
    return Goal(text, target, measured, None if value is None else ok)


def pct(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v * 100:.{digits}f}"


def pts(v: float | None) -> str:
    return "-" if v is None else f"{round(v * 100, 6) + 0.0:+.2f}"


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def count(v: int | float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    v = float(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suffix}{unit}"
    return f"{v:.0f}{unit}"


def mb(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e6:.2f} MB"


# --------------------------------------------------------------------------- the run context


@dataclass
class Ctx:
    out: Path  # results (JSON, Markdown)
    work: Path  # artifacts
    smoke: bool = False
    repeats: int = 3
    reuse: bool = False
    peers: bool = True  # NNCF rows
    timing: Any = None  # edgekit.bench.harness.TimingConfig

    def section_dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _reusable(self, out: Path) -> Any:
        from edgekit.artifact import Artifact
        from edgekit.errors import ArtifactError

        if not (self.reuse and (out / "manifest.json").is_file()):
            return None
        try:
            art = Artifact.load(out)
            art.root()  # the lineage must still hold (a retrained parent invalidates it)
        except ArtifactError:
            return None
        log(f"reusing {out}")
        return art

    def train(self, out: Path, cfg: Any) -> Any:
        from edgekit.train import train

        art = self._reusable(out)
        if art is None:
            art = train(cfg, out=out, overwrite=True)
        assert art is not None
        return art

    def import_model(self, out: Path, model: str, **kwargs: Any) -> Any:
        from edgekit.importer import import_model
        from edgekit.models import trust_module

        if ":" in model:  # our own factory, named here (import_model trusts it too; a reused artifact needs it)
            trust_module(model.split(":")[0])
        art = self._reusable(out)
        return art if art is not None else import_model(model, out=out, overwrite=True, **kwargs)

    def compress(self, parent: Any, recipe: str | Path, name: str, calib: str | None = None) -> Any:
        """``edgekit.compress.compress`` into ``parent/name``; a missed accuracy budget keeps the
        best artifact (exit 3 on the command line), which the benchmark reports rather than stops on."""
        from edgekit.artifact import Artifact
        from edgekit.compress import compress
        from edgekit.errors import BudgetError

        out = parent.path / name
        art = self._reusable(out)
        if art is not None:
            return art
        try:
            art = compress(parent, str(recipe), calib=calib, out=out, overwrite=True)
        except BudgetError as exc:
            log(f"budget missed for {name}: {exc.message} (the best artifact is kept and reported)")
            art = Artifact.load(out)
        assert art is not None
        return art

    def recipe(self, name_or_path: str | Path, **updates: Any) -> Path:
        """A recipe, scaled down for --smoke (1-epoch steps, fewer samples) and with per-step
        ``updates`` by step kind (e.g. ``distill={"data": "npz:..."}``), written to the work dir.
        Without changes it is the recipe itself."""
        from edgekit.recipe import dump_recipe, load_recipe

        recipe, path = load_recipe(str(name_or_path))
        steps = []
        changed = False
        for step in recipe.steps:
            upd: dict[str, Any] = dict(updates.get(step.kind, {}))
            if self.smoke:
                if step.kind in ("distill", "finetune"):
                    upd.setdefault("epochs", 1)
                if step.kind == "prune":
                    upd.setdefault("iterative_steps", 1)
                    upd.setdefault("finetune_epochs_per_step", 0)
                if step.kind == "quantize":
                    upd.setdefault("samples", min(step.samples, 64))  # type: ignore[union-attr]
                    upd.setdefault("min_samples", 16)
            changed |= bool(upd)
            steps.append(step.model_copy(update=upd) if upd else step)
        if not changed:
            return path
        text = dump_recipe(recipe.model_copy(update={"steps": steps}))
        key = hashlib.sha256(text.encode()).hexdigest()[:8]
        out = self.work / "recipes" / f"{recipe.name}{'-smoke' if self.smoke else ''}-{key}.yaml"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        return out


def log(message: str) -> None:
    from edgekit import console

    console.info(f"[bold cyan]bench[/bold cyan] {message}")


# --------------------------------------------------------------------------- runtimes


def built_runtime(art: Any, target: str, precision: str | None = None, threads: int = THREADS,
                  placement: str = "latency") -> tuple[Any, Any]:
    """(runtime, built artifact) of ``art`` compiled for ``target`` (cached by edgekit.build)."""
    from edgekit.build import build
    from edgekit.targets.catalog import CATALOG, load_target

    built = build(art, target, precision, placement=placement)
    assert built is not None and built.manifest.target is not None
    rt: Any = load_target(CATALOG[target])
    return rt.load(built.path, built.manifest.target, threads=threads, shared=True), built  # timed in turns with others


def torch_runtime(art: Any, threads: int = THREADS) -> Any:
    from edgekit.checkpoint import load_module
    from edgekit.targets.torch import TorchRuntime

    return TorchRuntime(load_module(art), art.io.output_names, threads=threads)


class OrtPeerRuntime:
    """ONNX Runtime's own INT8 model in a CPU session as ONNX Runtime's docs run it (all graph
    optimizations), with edgekit's thread count and no spinning between runs. Without edgekit's
    ``session.x64quantprecision`` entry, as quantize_static's users run it: with the entry ONNX Runtime
    1.32 refuses to load quantize_static's ViT-Tiny ("Attempt to replace the existing tensor")."""

    def __init__(self, path: Path, threads: int = THREADS) -> None:
        from edgekit.onnx_graph import cpu_session

        self.session = cpu_session(path, threads=threads, optimization="all", config={"session.force_spinning_stop": "1"})
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs), strict=True))


class OvModelRuntime:
    """An ``openvino.Model`` compiled by the OpenVINO target's own ``device_config`` (an INT8 model's
    config: f32 for the float regions, latency hint, the same thread count, no pinning), so peer rows
    compare like with like."""

    def __init__(self, model: Any, threads: int = THREADS, precision: str = "int8") -> None:
        import openvino as ov

        from edgekit.targets.openvino import device_config

        self.config = device_config(precision, "latency", threads, "cpu")
        self.compiled = ov.Core().compile_model(model, "CPU", self.config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.request.infer(inputs, share_inputs=True)
        return {n: np.array(result[o]) for n, o in zip(self.output_names, self.compiled.outputs, strict=True)}


def run_all(rt: Any, inputs: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    """The first output of a runtime over all samples."""
    from edgekit.targets.base import run_batched

    out = run_batched(rt, inputs, batch)
    return next(iter(out.values()))


def file_size(art: Any) -> int:
    return sum(e.size for e in art.manifest.files.values())


# --------------------------------------------------------------------------- timing


def load_average() -> float:
    return os.getloadavg()[0]


def time_rows(ctx: Ctx, rows: list[tuple[str, Any]], feeds: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Time every (name, runtime) in this process with edgekit's alternating-block harness,
    ``ctx.repeats`` times (the order rotates between repeats); per row the median of each statistic."""
    from edgekit.bench.harness import Timed, stats_ms, time_variants

    per: dict[str, list[dict[str, float]]] = {name: [] for name, _ in rows}
    loads = []
    for rep in range(ctx.repeats):
        order = rows[rep % len(rows):] + rows[: rep % len(rows)]
        timed = [Timed(name, rt, feeds) for name, rt in order]
        before = load_average()
        started = time.perf_counter()
        time_variants(timed, ctx.timing)
        loads.append((before, load_average()))
        for t in timed:
            per[t.name].append({**stats_ms(t.samples_ns), "runs": len(t.samples_ns)})
        log(f"timing repeat {rep + 1}/{ctx.repeats}: {time.perf_counter() - started:.1f} s, "
            f"load {before:.2f} -> {loads[-1][1]:.2f}")
    out: dict[str, dict[str, Any]] = {}
    for name, reps in per.items():
        out[name] = {k: statistics.median(r[k] for r in reps) for k in ("p50", "p90", "p99", "mean")}
        out[name]["runs"] = int(sum(r["runs"] for r in reps))
        out[name]["p50_repeats"] = [r["p50"] for r in reps]
        out[name]["load_average"] = loads
    return out


def speedup(timings: dict[str, dict[str, Any]], base: str, row: str) -> float | None:
    if base not in timings or row not in timings:
        return None
    return float(timings[base]["p50"] / timings[row]["p50"])
