"""ONNX Runtime target: CPU here; CUDA and TensorRT execution providers where present.

The build copies the graph and saves the session options beside it. For INT8 it re-expresses the
portable QDQ graph for ONNX Runtime's CPU kernels, which are fast on U8 activations and slow on S8
ones: an S8 activation with scale s and zero point 0 is exactly a U8 one with scale s and zero point
128 (DESIGN.md §4). Weights stay S8. The rewrite is parity-checked like any build.

On x86 CPUs without VNNI those u8 x s8 kernels add product pairs into saturating 16 bits
(``edgekit.cpu``). Every session sets ``session.x64quantprecision=1``: ONNX Runtime checks the CPU it
runs on and, only where pairs can saturate, uses exact u8 x u8 kernels; elsewhere the entry changes
nothing. It is set at load, so a bundle decides on the device, not on the build machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekit.artifact import TargetRecord
from edgekit.errors import MissingExtraError, TargetUnavailableError, require
from edgekit.onnx_graph import cpu_session
from edgekit.targets.base import BuildOptions, Built, compile_failure, default_threads

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
# ONNX Runtime's CPU kernels: u8 activations x s8 weights, Relu folded into the quantizer
CPU_INT8_REWRITES = ("fold_relu_pairs", "nonnegative_to_u8", "s8_to_u8", "fold_float_weights")
# exact integer kernels on CPUs where u8 x s8 can saturate (ONNX Runtime checks the CPU itself)
EXACT_INT8 = {"session.x64quantprecision": "1"}
# ONNX Runtime ops that compute a weighted layer in integers (after its graph optimizations)
INTEGER_OPS = ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "QGemm",
               "DynamicQuantizeMatMul", "QAttention", "QLinearConvTranspose")
GPU_HINT = "pip install onnxruntime-gpu (in place of onnxruntime) on a machine with an NVIDIA GPU and CUDA"


def _with_options(provider: str, model: Path, precision: str) -> str | tuple[str, dict[str, str]]:
    """A provider with the options edgekit runs it with. TensorRT's EP: its engines cached per model
    (a first run builds for minutes), FP16 kernels for fp16, INT8 kernels (explicit QDQ scales) for int8."""
    if provider != "TensorrtExecutionProvider":
        return provider
    import hashlib
    import os

    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit" / "ort-tensorrt" / digest
    cache.mkdir(parents=True, exist_ok=True)
    return provider, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
                      "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache),
                      "trt_fp16_enable": str(precision == "fp16"), "trt_int8_enable": str(precision == "int8")}


class OrtRuntime:
    """One InferenceSession; ``infer`` maps input names to arrays and returns outputs by name."""

    def __init__(self, model: Path, providers: list[str], threads: int | None = None,
                 optimization: str = "all", shared: bool = False, precision: str = "fp32") -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        for key, value in EXACT_INT8.items():
            opts.add_session_config_entry(key, value)
        if shared:  # workers spin after each run by default, taking the cores from whoever runs next
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[optimization]
        self.session = ort.InferenceSession(str(model), opts, providers=[_with_options(p, model, precision) for p in providers])
        running = self.session.get_providers()
        if not running or running[0] != providers[0]:
            # ONNX Runtime falls back to the next provider (in the end the CPU) when one does not load
            raise TargetUnavailableError(
                f"onnxruntime could not start {providers[0]} here and fell back to {running[0] if running else 'nothing'}",
                hint=GPU_HINT if providers[0] != "CPUExecutionProvider" else "reinstall onnxruntime")
        self.providers = running
        self.model: Path | None = model
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, outs, strict=True))

    def integer_layers(self) -> int | None:
        """Weighted layers ONNX Runtime's optimized graph runs as integer kernels (QLinearConv,
        MatMulInteger, ...): the graph is optimized once more into a temporary file and read with onnx
        (None without onnx, as on a device)."""
        import importlib.util
        import tempfile

        if importlib.util.find_spec("onnx") is None or self.model is None or self.providers[0] != "CPUExecutionProvider":
            return None  # GPU providers take whole subgraphs: their kernels are not ONNX ops to count
        import onnx

        with tempfile.TemporaryDirectory(prefix="edgekit-ort-opt-") as tmp:
            optimized = Path(tmp) / "optimized.onnx"
            cpu_session(self.model, optimization="all", config=EXACT_INT8, optimized_path=optimized)
            graph = onnx.load(str(optimized), load_external_data=False).graph
        return sum(n.op_type in INTEGER_OPS for n in graph.node)


class OnnxRuntimeTarget:
    name: ClassVar[str] = "onnxruntime"

    def describe(self) -> str:
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__}; providers: {', '.join(ort.get_available_providers())}"

    def check(self, device: str) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingExtraError("onnxruntime", "onnxruntime", "the onnxruntime target") from None
        want = PROVIDERS[device][0]
        if want not in ort.get_available_providers():
            raise TargetUnavailableError(
                f"onnxruntime here has no {want} (it has {', '.join(ort.get_available_providers())})", hint=GPU_HINT
            )

    def build(self, onnx_path: Path, quantized: bool, opts: BuildOptions, out: Path) -> Built:
        model = out / "model.onnx"
        rewritten: dict[str, int] = {}
        placed: dict[str, Any] | None = None
        if opts.precision == "int8" and opts.device == "cpu":
            from edgekit.targets.qdq_rewrite import rewrite

            float_layers: set[str] = set()
            if opts.placement == "latency":
                placed = _place(onnx_path, out, opts.ranges)
                float_layers = set(placed["float_layers"])
            rewritten = rewrite(onnx_path, model, CPU_INT8_REWRITES, float_layers=float_layers)
        elif opts.precision == "fp16":
            _to_fp16(onnx_path, model)
        else:
            shutil.copyfile(onnx_path, model)
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        try:
            OrtRuntime(model, PROVIDERS[opts.device], threads=1, precision=opts.precision)
        except (ort_errors.Fail, ort_errors.NotImplemented, ort_errors.InvalidGraph, ort_errors.InvalidArgument,
                ort_errors.RuntimeException) as exc:
            raise compile_failure("onnxruntime", exc, model) from None
        record = TargetRecord(
            name=self.name,
            device=opts.device,
            precision_requested=opts.precision,
            precision=opts.precision,  # an INT8 build, as TensorRT's is, whichever kernels placement chose
            runtime_version=ort.__version__,  # the module's own: onnxruntime-gpu has no "onnxruntime" distribution
            model_file="model.onnx",
            options={"providers": PROVIDERS[opts.device], "graph_optimization_level": "all", "rewrites": rewritten,
                     "session_config": EXACT_INT8, **({"placement": placed} if placed else {})},
        )
        metrics: dict[str, Any] = {"rewrites": rewritten} if rewritten else {}
        if placed:
            metrics["placement"] = {k: placed[k] for k in ("chosen", "cpu", "int8_ms", "chosen_ms", "float_ms")}
            metrics["placement"]["float_layers"] = len(placed["float_layers"])
        return Built(record, ["model.onnx"], metrics)

    def load(self, directory: Path, record: TargetRecord, threads: int | None = None,
             shared: bool = False) -> OrtRuntime:
        return OrtRuntime(directory / record.model_file, list(record.options.get("providers", PROVIDERS["cpu"])), threads,
                          shared=shared, precision=record.precision)


def _place(onnx_path: Path, out: Path, ranges: dict[str, list[tuple[int, int, int] | None]]) -> dict[str, Any]:
    """Latency-aware placement on this CPU (``edgekit.targets.placement``): its record, with the layers
    to keep float. The sessions it times spin no threads between runs (they take turns on the cores)."""
    import functools
    import tempfile

    from edgekit import console
    from edgekit.cpu import detect
    from edgekit.targets.placement import place

    factory = functools.partial(cpu_session, threads=default_threads(), optimization="all",
                                config={**EXACT_INT8, "session.force_spinning_stop": "1"})
    with console.progress() as bar, tempfile.TemporaryDirectory(prefix="edgekit-place-", dir=out) as tmp:
        task = bar.add_task("placement: INT8 vs float per layer", total=4, status="")
        placement = place(onnx_path, CPU_INT8_REWRITES, Path(tmp), factory, cpu=detect().kind,
                          on_step=lambda done: bar.update(task, advance=1, status=done), ranges=ranges)
    record = placement.record()
    n, total = len(record["float_layers"]), len(placement.regions)
    console.info(f"placement: {n}/{total} layers run float on this CPU ({placement.cpu}): INT8 "
                 f"{placement.int8_ms:.3f} ms, all float {placement.float_ms:.3f} ms, "
                 f"chosen {placement.chosen} {placement.chosen_ms:.3f} ms")
    return record


def _to_fp16(src: Path, dst: Path) -> None:
    require("onnx", "full", "fp16 conversion")
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
