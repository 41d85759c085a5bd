"""ONNX Runtime target: CPU here; CUDA and TensorRT execution providers where present.

The build copies the graph and saves the session options beside it. For INT8 it re-expresses the
portable QDQ graph for ONNX Runtime's CPU kernels, which are fast on U8 activations and slow on S8
ones: an S8 activation with scale s and zero point 0 is exactly a U8 one with scale s and zero point
128 (DESIGN.md §4). Weights stay S8. The rewrite is parity-checked like any build.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekit.artifact import TargetRecord
from edgekit.errors import MissingExtraError, TargetUnavailableError, require
from edgekit.targets.base import BuildOptions, Built, compile_failure, default_threads

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
GPU_HINT = "pip install onnxruntime-gpu (in place of onnxruntime) on a machine with an NVIDIA GPU and CUDA"


class OrtRuntime:
    """One InferenceSession; ``infer`` maps input names to arrays and returns outputs by name."""

    def __init__(self, model: Path, providers: list[str], threads: int | None = None,
                 optimization: str = "all") -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[optimization]
        self.session = ort.InferenceSession(str(model), opts, providers=providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, outs, strict=True))


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
        rewritten = 0
        if opts.precision == "int8" and opts.device == "cpu":
            rewritten = rewrite_s8_activations_to_u8(onnx_path, model)
        elif opts.precision == "fp16":
            _to_fp16(onnx_path, model)
        else:
            shutil.copyfile(onnx_path, model)
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        try:
            OrtRuntime(model, PROVIDERS[opts.device], threads=1)
        except (ort_errors.Fail, ort_errors.NotImplemented, ort_errors.InvalidGraph, ort_errors.InvalidArgument,
                ort_errors.RuntimeException) as exc:
            raise compile_failure("onnxruntime", exc, model) from None
        record = TargetRecord(
            name=self.name,
            device=opts.device,
            precision_requested=opts.precision,
            precision=opts.precision,
            runtime_version=importlib.metadata.version("onnxruntime"),
            model_file="model.onnx",
            options={"providers": PROVIDERS[opts.device], "graph_optimization_level": "all",
                     "u8_activations": rewritten},
        )
        return Built(record, ["model.onnx"], {"u8_rewritten_activations": rewritten} if rewritten else {})

    def load(self, directory: Path, record: TargetRecord, threads: int | None = None) -> OrtRuntime:
        return OrtRuntime(directory / record.model_file, list(record.options.get("providers", PROVIDERS["cpu"])), threads)


def _to_fp16(src: Path, dst: Path) -> None:
    require("onnx", "full", "fp16 conversion")
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


def rewrite_s8_activations_to_u8(src: Path, dst: Path) -> int:
    """Give every symmetric S8 activation Q/DQ pair a U8 zero point of 128; returns how many.

    Exact: clamp(round(x/s), -128, 127) + 128 == clamp(round(x/s) + 128, 0, 255), and DQ subtracts
    the same 128. Weight DQs (INT8 initializers) keep S8, which is what the u8s8 kernels want.
    """
    require("onnx", "full", "the INT8 build for onnxruntime")
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    u8_zero: dict[str, str] = {}
    count = 0
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[0] in inits:
            continue
        zp = inits.get(node.input[2])
        if zp is None:
            continue
        arr = numpy_helper.to_array(zp)
        if arr.dtype != np.int8 or np.any(arr != 0):
            continue
        if zp.name not in u8_zero:
            new = numpy_helper.from_array(np.full(arr.shape, 128, dtype=np.uint8), f"{zp.name}__u8")
            graph.initializer.append(new)
            u8_zero[zp.name] = new.name
        node.input[2] = u8_zero[zp.name]
        for dq in consumers.get(node.output[0], []):
            if dq.op_type == "DequantizeLinear" and len(dq.input) >= 3:
                dq.input[2] = u8_zero[zp.name]
        count += 1
    onnx.save(model, str(dst))
    return count
