"""Latency-aware placement: which layers of an INT8 build run faster in float, measured on this CPU.

INT8 is not faster everywhere: on a CPU whose float kernels are strong (blocked AVX-512 convolutions
in ONNX Runtime), a depthwise or small convolution can run slower as an integer kernel than in
float once the layout changes and quantize round trips around it are paid. The build measures it
instead of guessing. ONNX Runtime's profiler times every kernel of two builds of the same QDQ
graph, all-INT8 and all-float; each kernel is charged to a region (a quantized layer with the
quantizers, activations and layout changes ONNX Runtime puts around it, ``layer_regions``); the
layers whose region is faster in float can run in float (``keep_float``). Since a switch between
INT8 and float regions costs time no region owns, a few such mixed builds are timed end to end
beside all-INT8 and all-float, and the fastest is built, as TensorRT picks the fastest kernel per
layer, float ones included. The choice, with every region's two times and every candidate's, goes
into the build's manifest (``placement``). It is measured on the build machine, and the manifest
says which CPU kind that was.
"""

from __future__ import annotations

import bisect
import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.onnx_graph import graph_maps
from edgekit.targets.qdq_rewrite import layer_regions, rewrite

PROFILE_RUNS = 30  # kernel timings per build (the median run is kept)
TIMED_BLOCKS = 7  # end-to-end: blocks of runs alternating between candidates
# Candidate builds: the layers whose float time is under t x their INT8 time run float, for each t.
# A region's own times leave out what a switch between INT8 and float regions costs (a quantize or
# dequantize of the whole activation, a layout change), so a few sets, from "only where float is
# much faster" to "float unless INT8 is much faster", are timed end to end, with all-INT8 and
# all-float, and the fastest is built.
THRESHOLDS = (0.6, 0.97, 1.5)
KEEP_INT8 = 0.98  # all-INT8 stays unless another candidate takes under 98 % of its time


@dataclass
class Region:
    layer: str
    int8_ms: float
    float_ms: float
    choice: str  # int8 | float


@dataclass
class Candidate:
    name: str  # int8 | float | "float < t x int8"
    float_layers: list[str]
    ms: float = 0.0


@dataclass
class Placement:
    """What the build chose and why: every region's INT8 and float time on this CPU, and every
    candidate's end-to-end time."""

    chosen: str  # int8 (every layer as quantized) | mixed (the float layers below) | float (every layer)
    cpu: str
    int8_ms: float
    chosen_ms: float
    float_ms: float
    regions: list[Region] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def float_layers(self) -> set[str]:
        return {r.layer for r in self.regions if r.choice == "float"}

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["float_layers"] = sorted(self.float_layers)
        for c in out["candidates"]:
            c["float_layers"] = len(c["float_layers"])
        return out


def _feeds(session: Any, ranges: dict[str, list[tuple[int, int, int] | None]] | None = None) -> dict[str, np.ndarray]:
    """One input per model input, of its dtype, at the latency shape ``InputSpec.shape(1)`` gives: a
    dynamic first axis is 1, another dynamic axis its IO range's opt (``ranges``, per input and axis),
    else 16. Random floats; integer inputs (token ids, masks) are ones."""
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        axes = (ranges or {}).get(i.name) or []
        dims = []
        for k, d in enumerate(i.shape):
            r = axes[k] if k < len(axes) else None
            dims.append(d if isinstance(d, int) and d > 0 else 1 if k == 0 else r[1] if r else 16)
        if "int" in i.type:
            feeds[i.name] = np.ones(dims, np.int64 if "int64" in i.type else np.int32)
        else:
            feeds[i.name] = rng.standard_normal(dims).astype(np.float16 if "float16" in i.type else np.float32)
    return feeds


def _charge(optimized: Any, source: Any) -> dict[str, str]:
    """Each kernel of ONNX Runtime's optimized graph -> the source region it computes. ONNX Runtime
    names a fused kernel after a source node (``<node>`` or ``<node>_token_<n>``) or, for a blocked
    NCHWc one, after the source tensor it computes (``<tensor>_nchwc``); a layout change it inserted
    is charged through the first source tensor it leads to."""
    regions = layer_regions(source.graph)
    tensor_region = {o: regions[n.name or n.output[0]] for n in source.graph.node for o in n.output}
    _, _, consumers = graph_maps(optimized.graph)
    out: dict[str, str] = {}
    for node in optimized.graph.node:
        base = re.sub(r"_token_\d+$", "", node.name)
        found = regions.get(node.name, regions.get(base, tensor_region.get(node.name.removesuffix("_nchwc"))))
        frontier, seen = list(node.output), set[str]()
        while found is None and frontier and len(seen) < 64:
            t = frontier.pop(0)
            seen.add(t)
            found = tensor_region.get(t)
            frontier += [o for u in consumers.get(t, []) for o in u.output if o not in seen]
        out[node.name] = found or ""
    return out


def profile(model: Path, session_factory: Callable[..., Any], runs: int = PROFILE_RUNS,
            ranges: dict[str, list[tuple[int, int, int] | None]] | None = None) -> dict[str, float]:
    """Milliseconds per region of one build (the median over ``runs`` runs), from ONNX Runtime's profiler."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgekit-placement-") as tmp:
        optimized_path = Path(tmp) / "optimized.onnx"
        session = session_factory(model, profile_prefix=str(Path(tmp) / "profile"), optimized_path=optimized_path)
        feeds = _feeds(session, ranges)
        for _ in range(5):
            session.run(None, feeds)
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
        charge = _charge(onnx.load(str(optimized_path), load_external_data=False), onnx.load(str(model), load_external_data=False))
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    windows = windows[-runs:]
    per_run: list[dict[str, float]] = [{} for _ in windows]
    starts = [w[0] for w in windows]
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        k = bisect.bisect_right(starts, e["ts"]) - 1
        if k < 0 or e["ts"] > windows[k][1]:
            continue
        region = charge.get(e["name"].removesuffix("_kernel_time"), "")
        per_run[k][region] = per_run[k].get(region, 0.0) + e["dur"] / 1000.0
    names = {r for run in per_run for r in run}
    return {r: statistics.median(run.get(r, 0.0) for run in per_run) for r in names}


def timed(sessions: dict[str, Any], blocks: int = TIMED_BLOCKS,
          ranges: dict[str, list[tuple[int, int, int] | None]] | None = None) -> dict[str, float]:
    """Median milliseconds per run of each session, timed in alternating blocks (~50 ms each)."""
    feeds = {k: _feeds(s, ranges) for k, s in sessions.items()}
    per_block: dict[str, int] = {}
    for k, s in sessions.items():
        for _ in range(3):
            s.run(None, feeds[k])
        t = time.perf_counter()
        s.run(None, feeds[k])
        per_block[k] = max(3, min(200, int(0.05 / max(time.perf_counter() - t, 1e-5))))
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(blocks):
        for k, s in sessions.items():
            t = time.perf_counter()
            for _ in range(per_block[k]):
                s.run(None, feeds[k])
            samples[k].append((time.perf_counter() - t) / per_block[k] * 1000.0)
    return {k: statistics.median(v) for k, v in samples.items()}


def place(src: Path, steps: tuple[str, ...], out_dir: Path, session_factory: Callable[..., Any], cpu: str,
          on_step: Callable[[str], None] = lambda done: None,
          ranges: dict[str, list[tuple[int, int, int] | None]] | None = None) -> Placement:
    """Measure the all-INT8 and all-float builds of ``src`` per region, write the mixed one, time the
    candidates end to end and return the choice (the caller writes the chosen build). ``on_step`` is
    told each of the four stages as it ends; ``ranges``: the IO spec's axis ranges (the shapes timed)."""
    import onnx

    graph = onnx.load(str(src), load_external_data=False).graph
    layers = {r for r in layer_regions(graph).values() if r}
    int8, flt = out_dir / "int8.onnx", out_dir / "float.onnx"
    rewrite(src, int8, steps)
    rewrite(src, flt, steps, float_layers=layers)
    t_int8 = profile(int8, session_factory, ranges=ranges)
    on_step("INT8 profiled")
    t_float = profile(flt, session_factory, ranges=ranges)
    on_step("float profiled")
    order = sorted(layers, key=lambda name: -(t_int8.get(name, 0.0) - t_float.get(name, 0.0)))
    candidates = {"int8": Candidate("int8", []), "float": Candidate("float", sorted(layers))}
    paths = {"int8": int8, "float": flt}
    for i, t in enumerate(THRESHOLDS):
        chosen = sorted(n for n in layers if t_float.get(n, 0.0) < t * t_int8.get(n, 0.0))
        if chosen and len(chosen) < len(layers) and all(c.float_layers != chosen for c in candidates.values()):
            name = f"float < {t:g} x int8"
            candidates[name] = Candidate(name, chosen)
            paths[name] = out_dir / f"mixed{i}.onnx"
            rewrite(src, paths[name], steps, float_layers=set(chosen))
    on_step(f"{len(candidates) - 2} mixed builds written")
    times = timed({k: session_factory(p) for k, p in paths.items()}, ranges=ranges)
    on_step("timed end to end")
    for k, c in candidates.items():
        c.ms = round(times[k], 4)
    best = min(candidates, key=lambda k: times[k])
    if times["int8"] <= times[best] / KEEP_INT8:
        best = "int8"
    keep = set(candidates[best].float_layers)
    regions = [Region(n, round(t_int8.get(n, 0.0), 4), round(t_float.get(n, 0.0), 4), "float" if n in keep else "int8")
               for n in order]
    label = best if best in ("int8", "float") else "mixed"
    return Placement(chosen=label, cpu=cpu, int8_ms=candidates["int8"].ms, chosen_ms=candidates[best].ms,
                     float_ms=candidates["float"].ms, regions=regions, candidates=list(candidates.values()))
