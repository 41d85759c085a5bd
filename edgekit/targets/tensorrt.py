"""TensorRT 10 target: ONNX parser -> serialized engine; a runtime with CUDA device buffers.

Written against the real TensorRT 10 Python API and checked with ``mypy --strict`` against our
patched copy of ``tensorrt-stubs`` (``typings/``, made by ``tools/make_trt_stubs.py``), because
TensorRT cannot be installed where our CI runs. INT8 is explicit quantization: the QDQ graph of the
quantize step carries the scales, so no calibrator runs here, and float regions stay f32 (only the
INT8 flag is set). The engine file records the TensorRT version and the GPU (name, compute
capability) it was built for; loading it elsewhere is refused with a clear message instead of a
failed deserialisation. Device memory moves through cuda-python (no torch on devices).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from edgekit.artifact import TargetRecord
from edgekit.errors import CudaError, ModelError, TargetUnavailableError
from edgekit.targets.base import BuildOptions, Built, Shape

if TYPE_CHECKING:
    import tensorrt as trt
    from cuda.bindings import runtime as cudart

T = TypeVar("T")

INSTALL = "pip install 'edgekit[tensorrt]' on a machine with an NVIDIA GPU and a CUDA 12 driver"
WORKSPACE_BYTES = 1 << 30
DEFAULT_MAX_BATCH = 32
DEFAULT_SEQ = (1, 128, 512)  # min / opt / max for dynamic dims other than the batch


def _check(result: tuple[cudart.cudaError_t]) -> None:
    _raise(result[0])


def _value(result: tuple[cudart.cudaError_t, T]) -> T:
    _raise(result[0])
    return result[1]


def _raise(err: cudart.cudaError_t) -> None:
    from cuda.bindings import runtime

    if err != runtime.cudaError_t.cudaSuccess:
        _, name = runtime.cudaGetErrorName(err)
        raise CudaError(f"CUDA call failed: {name.decode(errors='replace')} ({int(err)})")


def gpu_identity(index: int = 0) -> dict[str, str]:
    """Name and compute capability of a CUDA device; raises TargetUnavailableError if none."""
    try:
        from cuda.bindings import runtime
    except (ImportError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TargetUnavailableError(f"cuda-python is installed but does not load: {first}",
                                     hint="pip install 'cuda-python>=12.6,<13'") from None
    err, count = runtime.cudaGetDeviceCount()
    if err != runtime.cudaError_t.cudaSuccess or not count:
        reason = runtime.cudaGetErrorName(err)[1].decode(errors="replace") if err else "no device"
        raise TargetUnavailableError(f"TensorRT needs an NVIDIA GPU; CUDA reports {reason}", hint=INSTALL)
    prop = _value(runtime.cudaGetDeviceProperties(index))
    return {"gpu": prop.name.split(b"\0", 1)[0].decode(errors="replace"), "compute_capability": f"{prop.major}.{prop.minor}"}


def _logger() -> trt.ILogger:
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


# the lowest compute capability whose tensor cores run each precision (TensorRT's support matrix)
MIN_COMPUTE_CAPABILITY = {"fp32": (5, 0), "fp16": (5, 3), "int8": (6, 1), "bf16": (8, 0)}


def require_compute_capability(precision: str, capability: str, gpu: str = "this GPU") -> None:
    """Refuse a precision the GPU has no kernels for (bf16 before Ampere, INT8 before Pascal)."""
    major, minor = (int(p) for p in capability.split(".")[:2])
    need = MIN_COMPUTE_CAPABILITY.get(precision, (0, 0))
    if (major, minor) < need:
        raise TargetUnavailableError(f"{gpu} (sm {capability}) has no {precision} kernels; TensorRT {precision} needs sm "
                                     f"{need[0]}.{need[1]} or newer", hint="use --precision fp16 or fp32")


def builder_config(builder: trt.Builder, opts: BuildOptions) -> trt.IBuilderConfig:
    """The builder config for ``opts``: the precision's flag, and TF32 cleared (TensorRT sets it by
    default on Ampere and newer, which makes an "fp32" engine miss FP32 parity), so FP32 and the
    float regions of FP16/INT8 engines compute in FP32."""
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.clear_flag(trt.BuilderFlag.TF32)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then names each layer's types
    if opts.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif opts.precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    elif opts.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit: scales come from the QDQ graph
    return config


def _profile_shapes(name: str, dims: tuple[int, ...], given: dict[str, Shape], hint: str,
                    max_batch: int | None = None, ranges: list[tuple[int, int, int] | None] | None = None) -> Shape:
    """min / opt / max for one input: what --shape gave, else batch 1..max(32, the largest batch the
    caller runs) with opt 1 (latency) or 8 (throughput), and for other dynamic dims DEFAULT_SEQ; a
    dim the IO spec gives a range (``seq=1..128..512``) takes that range."""
    if name in given:
        return given[name]
    top = max(DEFAULT_MAX_BATCH, max_batch or 0)
    mn, opt, mx = [], [], []
    for i, d in enumerate(dims):
        spec = ranges[i] if ranges is not None and i < len(ranges) else None
        if d >= 0:
            mn.append(d)
            opt.append(d)
            mx.append(d)
        elif spec is not None:  # the batch too, when the IO spec ranges it: still up to what the caller runs
            mn.append(spec[0])
            opt.append(spec[1])
            mx.append(max(spec[2], max_batch or 0) if i == 0 else spec[2])
        elif i == 0:
            mn.append(1)
            opt.append(1 if hint == "latency" else min(8, top))
            mx.append(top)
        else:
            mn.append(DEFAULT_SEQ[0])
            opt.append(DEFAULT_SEQ[1])
            mx.append(DEFAULT_SEQ[2])
    return Shape(tuple(mn), tuple(opt), tuple(mx))


def count_int8_layers(engine_json: str) -> int:
    """Layers of an engine inspector's JSON whose inputs or outputs are Int8 tensors (Q/DQ nodes
    themselves, "Reformat" layers, do not count)."""
    import json

    try:
        layers = json.loads(engine_json).get("Layers", [])
    except (ValueError, AttributeError):
        return 0
    count = 0
    for layer in layers:
        if not isinstance(layer, dict) or "Reformat" in str(layer.get("LayerType", "")):
            continue
        tensors = [*layer.get("Inputs", []), *layer.get("Outputs", [])]
        if any("Int8" in str(t.get("Format/Datatype", "")) for t in tensors if isinstance(t, dict)):
            count += 1
    return count


def parser_errors(parser: trt.OnnxParser) -> str:
    """TensorRT's ONNX parser errors, one per node: 'node 12 (Conv_3, Conv): message'."""
    lines = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        lines.append(f"node {e.node()} ({e.node_name()}, {e.node_operator()}): {e.desc()} [{e.code()}]")
    return "; ".join(lines) or "unknown parser error"


class TrtRuntime:
    """Runs a serialized engine: one execution context, one stream, device buffers reused by size."""

    def __init__(self, engine_path: Path, record: TargetRecord) -> None:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        check_compatible(record)
        self._trt_runtime = trt.Runtime(_logger())
        engine = self._trt_runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            raise TargetUnavailableError(f"TensorRT could not deserialize {engine_path}",
                                         hint="rebuild it on this device: edgekit build --target tensorrt")
        self.engine: trt.ICudaEngine = engine
        context = engine.create_execution_context()
        if context is None:
            raise CudaError("TensorRT could not create an execution context (out of GPU memory?)")
        self.context: trt.IExecutionContext = context
        self.stream = _value(cudart.cudaStreamCreate())
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes: dict[str, type[np.generic]] = {n: trt.nptype(engine.get_tensor_dtype(n)) for n in names}
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device(self, name: str, nbytes: int) -> int:
        from cuda.bindings import runtime as cudart

        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(cudart.cudaFree(ptr))
            ptr = int(_value(cudart.cudaMalloc(max(nbytes, 1))))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def infer(self, inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        from cuda.bindings import runtime as cudart

        keep: list[npt.NDArray[Any]] = []  # host arrays must live until the stream syncs
        for name in self.inputs:
            host = np.ascontiguousarray(inputs[name], dtype=self.dtypes[name])
            keep.append(host)
            if not self.context.set_input_shape(name, tuple(host.shape)):
                raise ModelError(f"input '{name}' shape {host.shape} is outside the engine's optimization profile",
                                 hint="rebuild with --shape NAME:MIN:OPT:MAX covering it")
            ptr = self._device(name, host.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, host, host.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
            self.context.set_tensor_address(name, ptr)
        results: dict[str, npt.NDArray[Any]] = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = np.empty(shape, dtype=self.dtypes[name])
            results[name] = out
            self.context.set_tensor_address(name, self._device(name, out.nbytes))
        if not self.context.execute_async_v3(int(self.stream)):
            raise CudaError("TensorRT failed to run the engine")
        for name, out in results.items():
            ptr = self._buffers[name][0]
            _check(cudart.cudaMemcpyAsync(out, ptr, out.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        del keep
        return results

    def integer_layers(self) -> int:
        """Engine layers with INT8 tensors, from TensorRT's engine inspector (built DETAILED)."""
        import tensorrt as trt

        info = self.engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        return count_int8_layers(info)

    def close(self) -> None:
        from cuda.bindings import runtime as cudart

        for ptr, _ in self._buffers.values():
            cudart.cudaFree(ptr)
        self._buffers.clear()
        cudart.cudaStreamDestroy(self.stream)

    def __del__(self) -> None:
        if getattr(self, "_buffers", None):
            self.close()


def check_compatible(record: TargetRecord) -> None:
    """Refuse an engine built for another GPU or TensorRT version, naming both."""
    import tensorrt as trt

    here = gpu_identity()
    built_for = record.hardware
    problems = []
    if built_for.get("tensorrt") and built_for["tensorrt"] != trt.__version__:
        problems.append(f"TensorRT {built_for['tensorrt']} (this device has {trt.__version__})")
    if built_for.get("gpu") and (built_for["gpu"], built_for.get("compute_capability")) != (here["gpu"], here["compute_capability"]):
        problems.append(f"GPU {built_for['gpu']} sm {built_for.get('compute_capability')} "
                        f"(this device has {here['gpu']} sm {here['compute_capability']})")
    if problems:
        raise TargetUnavailableError(
            f"this TensorRT engine was built for {' and '.join(problems)}",
            hint="rebuild it on this device: edgekit build --target tensorrt (or package it here)",
        )


class TensorRtTarget:
    name: ClassVar[str] = "tensorrt"

    def describe(self) -> str:
        import tensorrt as trt

        ident = gpu_identity()
        return f"tensorrt {trt.__version__}; GPU {ident['gpu']} (sm {ident['compute_capability']})"

    def check(self, device: str) -> None:
        """Fail at once, with the install command, where TensorRT, cuda-python or a GPU is missing."""
        if importlib.util.find_spec("tensorrt") is None:
            raise TargetUnavailableError("TensorRT is not installed (it needs an NVIDIA GPU and CUDA)", hint=INSTALL)
        try:
            import tensorrt as trt
        except (ImportError, OSError) as exc:  # a wheel without its libnvinfer, a driver without CUDA
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TargetUnavailableError(f"TensorRT is installed but does not load: {first}", hint=INSTALL) from None
        if not hasattr(trt, "Builder") or not hasattr(trt, "__version__"):  # e.g. only type stubs are installed
            raise TargetUnavailableError("the installed 'tensorrt' package has no runtime (stubs only?)", hint=INSTALL)
        if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
            raise TargetUnavailableError("cuda-python is not installed (TensorRT's buffers need it)",
                                         hint="pip install 'cuda-python>=12.6,<13'")
        gpu_identity()

    def build(self, onnx_path: Path, quantized: bool, opts: BuildOptions, out: Path) -> Built:
        import tensorrt as trt

        ident = gpu_identity()
        require_compute_capability(opts.precision, ident["compute_capability"], ident["gpu"])
        logger = _logger()
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch always
        parser = trt.OnnxParser(network, logger)
        if quantized:  # fewer requantizations, same values (see edgekit.targets.qdq_rewrite)
            from edgekit.targets.qdq_rewrite import rewrite

            lowered = out / ".lowered.onnx"
            rewrite(onnx_path, lowered, ("fold_relu_pairs",))
            onnx_path = lowered
        if not parser.parse_from_file(str(onnx_path)):
            raise ModelError(f"TensorRT cannot parse the ONNX graph: {parser_errors(parser)}",
                             hint="the op named may need a newer TensorRT or a plugin")
        config = builder_config(builder, opts)
        profile = builder.create_optimization_profile()
        profiles: dict[str, dict[str, list[int]]] = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = tuple(int(d) for d in tensor.shape)
            if any(d < 0 for d in dims) or tensor.name in opts.shapes:
                shape = _profile_shapes(tensor.name, dims, opts.shapes, opts.hint, opts.max_batch,
                                        opts.ranges.get(tensor.name))
                profile.set_shape(tensor.name, shape.min, shape.opt, shape.max)
                profiles[tensor.name] = {"min": list(shape.min), "opt": list(shape.opt), "max": list(shape.max)}
        if profiles and config.add_optimization_profile(profile) < 0:
            raise ModelError(f"TensorRT rejected the optimization profile {profiles}")
        shared_cache = out.parent / "tensorrt.timing-cache"  # shared by builds of this artifact
        cache = config.create_timing_cache(shared_cache.read_bytes() if shared_cache.is_file() else b"")
        config.set_timing_cache(cache, False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ModelError("TensorRT could not build an engine for this graph (see its log above)")
        (out / "model.engine").write_bytes(bytes(plan))
        if quantized:
            onnx_path.unlink(missing_ok=True)
        files = ["model.engine"]
        final_cache = config.get_timing_cache()
        if final_cache is not None:
            blob = bytes(final_cache.serialize())
            (out / "timing.cache").write_bytes(blob)
            shared_cache.write_bytes(blob)
            files.append("timing.cache")
        record = TargetRecord(
            name=self.name,
            device="cuda",
            precision_requested=opts.precision,
            precision=opts.precision,
            runtime_version=trt.__version__,
            model_file="model.engine",
            options={"profiles": profiles, "workspace_bytes": WORKSPACE_BYTES, "tf32": False},
            hardware={**ident, "tensorrt": trt.__version__},
        )
        return Built(record, files)

    def load(self, directory: Path, record: TargetRecord, threads: int | None = None,
             shared: bool = False) -> TrtRuntime:
        return TrtRuntime(directory / record.model_file, record)
