"""``edgekit build``: compile an artifact's ONNX graph for a target, cached and parity-checked.

Builds live in ``<artifact>/builds/<target>-<precision>-<key>/``, keyed by the parent manifest's
sha256, the options and the runtime version, so ``bench`` straight after ``compress`` builds what is
missing once and reuses it after. Every build is compared on real samples with its reference (torch,
or the ONNX root, for float builds; the same QDQ graph on ONNX Runtime's reference kernels for INT8);
a miss is exit 4 and nothing is written (DESIGN.md §5).
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import console
from edgekit.artifact import (
    Artifact,
    Lineage,
    Manifest,
    cache_key,
    finalize,
    installed_version,
    library_versions,
    staging,
)
from edgekit.errors import ArtifactError, BadInputError, ParityError
from edgekit.metrics import agreement, max_abs_error, max_rel_error
from edgekit.targets.base import BuildOptions, Runtime, Shape, run_batched
from edgekit.targets.catalog import CATALOG, TargetInfo, check_precision, load_target, resolve

# max |error| relative to the output scale, per precision; INT8 also needs top-1 agreement
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 6e-2, "int8": 0.1}
INT8_MIN_AGREEMENT = 0.95
# An INT8 output may differ from the QDQ graph by the larger of INT8_STEPS of its quantization step
# and INT8_QUANT_FACTOR x the graph's own error against float. Integer kernels round near-ties their
# own way at every requantization, and those differences grow through depth as quantization noise
# does. Measured on x86-amx (benchmarks/parity_steps.py): shallow nets (digits, a depthwise net,
# EfficientNet-Lite0) <= 4.9 steps; ResNet-18 / MobileNetV3 at 224 up to 26 steps, 1.3 x their own
# error. A target that ignored the Q/DQ nodes is caught by check_integer_kernels, not by this.
INT8_STEPS = 8
INT8_QUANT_FACTOR = 1.5  # the factor INT8 parity always had; every build measured fits with it
PARITY_ROWS = 32
PLACEMENTS = ("latency", "int8")  # --placement: see plan()


@dataclass
class BuildPlan:
    info: TargetInfo
    opts: BuildOptions
    out: Path
    cached: bool


def _runtime_version(info: TargetInfo) -> str:
    return next((v for v in map(installed_version, (info.name, *info.modules)) if v is not None), "missing")


@functools.cache
def code_fingerprint() -> str:
    """A digest of the code that turns an ONNX graph into a build (targets, rewrites, this module): an
    edited checkout or a new release never reuses a build an older one made under the same version."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted([here / "build.py", here / "cpu.py", *(here / "targets").glob("*.py")]):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _gpu(info: TargetInfo) -> str | None:
    """The GPU an engine is built for (name and compute capability), or None where there is none."""
    if not info.needs_gpu:
        return None
    from edgekit.errors import EdgekitError

    try:
        from edgekit.targets.tensorrt import gpu_identity

        ident = gpu_identity()
    except (EdgekitError, ImportError, OSError):
        return None  # the build itself then says why it cannot run here
    return f"{ident['gpu']} sm {ident['compute_capability']}"


def _check_build_options(info: TargetInfo, shapes: dict[str, Shape] | None, hint: str, placement: str) -> None:
    """--shape, --hint and --placement only where the target reads them: elsewhere they would change
    the build's cache key and nothing else."""
    if shapes and "shape" not in info.build_options:
        users = [i.name for i in CATALOG.values() if "shape" in i.build_options]
        raise BadInputError(f"{info.name} takes no --shape: it runs any input shape as it comes",
                            hint=f"drop --shape (optimization profiles are for {', '.join(users)})")
    if hint != "latency" and "hint" not in info.build_options:
        users = [i.name for i in CATALOG.values() if "hint" in i.build_options]
        raise BadInputError(f"{info.name} takes no --hint: it has one way to run",
                            hint=f"drop --hint (it is for {', '.join(users)})")
    if placement not in PLACEMENTS:
        raise BadInputError(f"unknown placement '{placement}'", hint=" or ".join(PLACEMENTS))
    if placement != "latency" and "placement" not in info.build_options:
        users = [i.name for i in CATALOG.values() if "placement" in i.build_options]
        raise BadInputError(f"{info.name} takes no --placement: it places INT8 kernels itself",
                            hint=f"drop --placement (it is for {', '.join(users)})")


def default_precision(art: Artifact) -> str:
    return "int8" if art.manifest.quantized else "fp32"


def plan(art: Artifact, target: str, precision: str | None = None, device: str | None = None,
         shapes: dict[str, Shape] | None = None, hint: str = "latency", max_batch: int | None = None,
         placement: str = "latency") -> BuildPlan:
    """Validate the request against the catalog and the artifact; no compute, no imports of runtimes.
    ``max_batch``: the largest batch the caller will run, for targets whose shapes are fixed at build.
    ``placement``: for INT8 on a CPU target that measures it, "latency" (layers faster in float on
    this CPU run float) or "int8" (every layer as quantized)."""
    if art.kind not in ("checkpoint", "compressed"):
        raise ArtifactError(f"{art.path} is a {art.kind} artifact; build takes a checkpoint or compressed one")
    if art.onnx_path is None:
        raise ArtifactError(f"{art.path} has no ONNX graph", hint="run `edgekit export` on it first")
    info = resolve(target)
    precision = precision or default_precision(art)
    dev = check_precision(info, precision, device)
    if precision == "int8" and not art.manifest.quantized:
        raise BadInputError(
            f"{art.path} has no QDQ INT8 graph, so it cannot be built as int8",
            hint=f"run `edgekit compress {art.path} --recipe int8` first, then build that artifact",
        )
    if art.manifest.quantized and precision != "int8":
        raise BadInputError(
            f"{art.path} is an INT8 (QDQ) artifact; build it with --precision int8",
            hint="build the parent artifact for float precisions",
        )
    if info.name == "tensorrt" and art.manifest.metrics.get("quantize", {}).get("tensorrt_portable") is False:
        raise BadInputError(
            f"{art.path} was quantized with the cpu profile (asymmetric U8), which TensorRT cannot take",
            hint="compress with the portable profile (recipe int8) for TensorRT",
        )
    if hint not in ("latency", "throughput"):
        raise BadInputError(f"unknown hint '{hint}'", hint="latency or throughput")
    _check_build_options(info, shapes, hint, placement)
    if shapes:
        names = set(art.io.input_names)
        for name in shapes:
            if name not in names:
                raise BadInputError(f"--shape names '{name}', which is not a model input ({', '.join(sorted(names))})")
    profiled = "shape" in info.build_options
    placed = precision == "int8" and dev == "cpu" and "placement" in info.build_options
    # the IO spec's axis ranges: TensorRT's profiles; the latency shapes a placement times
    ranges = {i.name: i.axis_ranges() for i in art.io.inputs if i.ranges} if profiled or placed else {}
    opts = BuildOptions(precision=precision, device=dev, shapes=dict(shapes or {}), hint=hint,
                        max_batch=max_batch if profiled else None, ranges=ranges,
                        placement=placement if placed else None)
    from edgekit import __version__
    from edgekit.cpu import detect

    # the CPU kind: an OpenVINO INT8 build carries a VNNI variant only when built where it is right;
    # the GPU: an engine is for one GPU model; the build code: a changed rewrite is a new build
    hardware = detect().kind if dev == "cpu" else _gpu(info)
    key = cache_key(art.sha256, opts.key(), _runtime_version(info), __version__, code_fingerprint(), hardware)
    out = art.path / "builds" / f"{info.name}-{precision}-{key}"
    cached = (out / "manifest.json").is_file()
    return BuildPlan(info, opts, out, cached)


def build(art: Artifact, target: str, precision: str | None = None, device: str | None = None,
          shapes: dict[str, Shape] | None = None, hint: str = "latency", dry_run: bool = False,
          max_batch: int | None = None, placement: str = "latency") -> Artifact | None:
    """The built artifact (from cache when it exists); None for a dry run."""
    p = plan(art, target, precision, device, shapes, hint, max_batch, placement)
    target_obj = load_target(p.info)
    target_obj.check(p.opts.device)
    if dry_run:
        console.info(f"dry run: {art.path} -> {p.info.name} {p.opts.precision} on {p.opts.device}: ok")
        return None
    if p.cached:
        try:
            cached = Artifact.load(p.out)
            console.info(f"using cached build {p.out}")
            return cached
        except ArtifactError:
            console.warn(f"cached build {p.out} is damaged; rebuilding")
    console.info(f"building {p.info.name} {p.opts.precision} ({p.opts.device}) from {art.path}")
    started = time.perf_counter()
    if art.onnx_path is None:  # pragma: no cover - every checkpoint and compressed artifact has its graph
        raise ArtifactError(f"{art.path} has no ONNX graph to build")
    with staging(p.out, overwrite=True) as tmp:
        built = target_obj.build(art.onnx_path, art.manifest.quantized, p.opts, tmp)
        if p.opts.device == "cpu":
            from edgekit.cpu import detect

            built.record.hardware = {**built.record.hardware, "cpu": detect().record()}
        build_s = time.perf_counter() - started
        runtime = target_obj.load(tmp, built.record, threads=None)
        parity = check_parity(art, runtime, p.opts.precision)
        if p.opts.precision == "int8":
            parity["integer_layers"] = check_integer_kernels(art, runtime, built.record)
        if built.record.options.get("vnni_model"):  # the CPU-portable OpenVINO IR beside it is checked too
            from edgekit.targets.openvino import OvRuntime

            parity["portable_model"] = check_parity(art, OvRuntime(tmp / built.record.model_file, built.record),
                                                    p.opts.precision)["max_error"]
        manifest = Manifest(
            kind="built",
            name=f"{art.manifest.name}-{p.info.name}-{p.opts.precision}",
            model=None,
            onnx=None,
            quantized=art.manifest.quantized,
            io=art.io,
            data=art.manifest.data,
            lineage=Lineage(parent="../..", parent_sha256=art.sha256, step="build",
                            config={"target": p.info.name, **p.opts.key()}, versions=library_versions()),
            metrics={"parity": parity, "build_s": build_s, **built.metrics},
            target=built.record,
        )
        finalize(tmp, manifest, owned=built.files)
    console.info(f"[green]built[/green] {p.out} (precision ran: {built.record.precision}; "
                 f"parity {parity['max_error']:.2e} vs {parity['reference']})")
    return Artifact.load(p.out)


def load_built(built: Artifact, threads: int | None = None) -> Runtime:
    """The runtime of a built artifact, as its target loads it on this machine."""
    record = built.manifest.target
    if record is None:
        raise ArtifactError(f"{built.path} is not a built artifact")
    target = load_target(resolve(record.name))
    runtime: Runtime = target.load(built.path, record, threads=threads)
    return runtime


def parity_samples(art: Artifact, rows: int = PARITY_ROWS) -> tuple[dict[str, np.ndarray], bool]:
    """(samples, real?): the test split of the artifact's data, else synthetic inputs."""
    from edgekit.data import evaluation_samples

    x, _, real = evaluation_samples(art.io, art.manifest.data, rows, synthetic_rows=rows)
    return x, real


def reference_runtime(art: Artifact, precision: str) -> tuple[Runtime, str]:
    """INT8: the QDQ graph on ONNX Runtime's reference kernels; float: torch, else the ONNX graph."""
    from edgekit.targets.onnxruntime import OrtRuntime

    assert art.onnx_path is not None  # noqa: S101 - checked by plan()
    if precision == "int8":
        return OrtRuntime(art.onnx_path, ["CPUExecutionProvider"], threads=None, optimization="disabled"), "qdq-reference"
    if art.manifest.model is not None:
        from edgekit.checkpoint import load_module
        from edgekit.targets.torch import TorchRuntime

        return TorchRuntime(load_module(art), art.io.output_names), "torch"
    return OrtRuntime(art.onnx_path, ["CPUExecutionProvider"], threads=None), "onnxruntime-fp32"


def _quantization_error(art: Artifact, samples: dict[str, np.ndarray], ref_all: dict[str, np.ndarray]) -> dict[str, float]:
    """How far the QDQ graph itself is from the float model, per output (max absolute error); empty
    when there is no float model to ask."""
    from edgekit.targets.onnxruntime import OrtRuntime

    if art.manifest.model is not None:
        from edgekit.checkpoint import load_module
        from edgekit.targets.torch import TorchRuntime

        float_rt: Runtime = TorchRuntime(load_module(art), art.io.output_names)
    else:
        parent = art.parent()
        if parent is None or parent.onnx_path is None or parent.manifest.quantized:
            return {}
        float_rt = OrtRuntime(parent.onnx_path, ["CPUExecutionProvider"], threads=None)
    float_out = run_batched(float_rt, samples, 8)
    return {n: max_abs_error(ref_all[n], float_out[n]) for n in art.io.output_names if n in float_out}


def check_integer_kernels(art: Artifact, runtime: Runtime, record: Any) -> int | None:
    """How many weighted layers the built runtime runs on integer kernels, as the runtime itself
    reports it (OpenVINO's runtime model, ONNX Runtime's optimized graph, TensorRT's engine
    inspector). Output parity alone would pass a target that ignored the Q/DQ nodes and ran in float:
    a build expected to run integer layers and running none fails (exit 4)."""
    counter = getattr(runtime, "integer_layers", None)
    found = counter() if callable(counter) else None
    if found is None:
        return None
    quantized = int((art.manifest.metrics.get("quantize") or {}).get("quantized_layers") or 0)
    rewrites = record.options.get("rewrites") or {}
    # layers a rewrite runs in float: placement's, ORT's convs with no quantizer after them, OpenVINO's wide ones
    kept_float = sum(int(rewrites.get(k) or 0) for k in ("wide_layers_float", "keep_float", "fold_float_weights"))
    expected = quantized - kept_float
    if expected > 0 and found == 0:
        raise ParityError(f"the INT8 build runs no integer kernels ({expected} quantized layers expected): "
                          f"{record.name} computed the model in float",
                          hint="the runtime may not support these Q/DQ patterns; report it with --debug output")
    return int(found)


def check_parity(art: Artifact, runtime: Runtime, precision: str) -> dict[str, Any]:
    """Compare a fresh build with its reference at batch 1 and batch 8 (dynamic batch from one build).

    An INT8 output may differ from the QDQ graph by the larger of INT8_STEPS of its quantization step
    (``output_steps``; without one, TOLERANCE relative to its scale) and INT8_QUANT_FACTOR x the
    graph's own error against float. Float outputs are judged relative to their scale."""
    samples, real = parity_samples(art)
    ref_rt, ref_name = reference_runtime(art, precision)
    tol = TOLERANCE[precision]
    worst: dict[str, float] = {}
    worst_abs: dict[str, float] = {}
    agree = None
    ref_all = run_batched(ref_rt, samples, 8)
    for batch in (1, 8):
        got = run_batched(runtime, samples, batch)
        for name in art.io.output_names:
            if name not in got:
                raise ParityError(f"the build has no output '{name}' (it has {', '.join(got)})")
            if not np.isfinite(got[name]).all() and np.isfinite(ref_all[name]).all():
                raise ParityError(f"build output '{name}' has NaN or infinite values where {ref_name} has none",
                                  hint="the target may compute this model differently; report it with --debug output")
            worst[name] = max(worst.get(name, 0.0), max_rel_error(got[name], ref_all[name]))
            worst_abs[name] = max(worst_abs.get(name, 0.0), max_abs_error(got[name], ref_all[name]))
        if art.io.task == "classification":
            main = art.io.output_names[0]
            a = agreement(got[main], ref_all[main])
            agree = a if agree is None else min(agree, a)
    steps: dict[str, float] = {}
    bounds: dict[str, float] = {}  # INT8: per output, the absolute difference allowed
    if precision == "int8":
        from edgekit.steps.qdq_graph import output_steps

        assert art.onnx_path is not None  # noqa: S101 - checked by plan()
        steps = {n: s for n, s in output_steps(art.onnx_path).items() if n in worst}
        quant_err = _quantization_error(art, samples, ref_all)
        for name in worst:
            scale = max(float(np.abs(ref_all[name]).max()) if ref_all[name].size else 1.0, 1.0)
            own = INT8_QUANT_FACTOR * quant_err[name] if name in quant_err else 0.0
            # with no step (e.g. a Softmax after the last layer) the relative floor stays
            bounds[name] = max(INT8_STEPS * steps[name] if name in steps else tol * scale, own)
    for name, err in worst.items():
        if name in bounds:
            if worst_abs[name] > bounds[name]:
                off = f", {worst_abs[name] / steps[name]:.1f} output steps of {steps[name]:.3g}" if name in steps else ""
                raise ParityError(
                    f"build output '{name}' differs from {ref_name} by {worst_abs[name]:.3g}{off} (tolerance "
                    f"{bounds[name]:.3g}: the larger of {INT8_STEPS} steps and {INT8_QUANT_FACTOR:g} x the QDQ graph's own error)",
                    hint="the target may compute this model differently; report it with --debug output")
        elif err > tol:
            raise ParityError(
                f"build output '{name}' differs from {ref_name} by {err:.3g} (tolerance {tol:g} for {precision})",
                hint="the target may compute this model differently; report it with --debug output",
            )
    if precision == "int8" and agree is not None and agree < INT8_MIN_AGREEMENT:
        raise ParityError(f"INT8 build agrees with the QDQ reference on only {agree:.1%} of samples")
    record: dict[str, Any] = {"reference": ref_name, "samples": "real" if real else "synthetic", "tolerance": tol,
                              "max_error": max(worst.values()), "per_output": worst, "agreement": agree}
    if bounds:
        record.update(abs_tolerance=bounds, steps=steps, per_output_steps={n: worst_abs[n] / s for n, s in steps.items()})
    return record
