"""OpenVINO target: ONNX -> IR (``model.xml`` / ``model.bin``), compiled with honest precision.

On CPUs with bf16, OpenVINO runs an f32 model in bf16 unless ``INFERENCE_PRECISION_HINT`` says f32,
so a row called fp32 runs f32 and bf16 is its own precision. INT8 (QDQ) graphs keep their float
fallback regions in f32 for the same reason: an accuracy budget checked once holds here too. The
precision that actually ran is read back from the compiled model.

INT8 on x86 CPUs without VNNI (``edgekit.cpu``): OpenVINO's kernels add u8 x s8 product pairs into
saturating 16-bit sums. ``model.xml`` is the build that is right on every CPU: u8 activations kept
to 0..127 and layers with a signed (or full-range u8) input in float (both exact re-expressions of
the QDQ graph).
Built on a CPU that does not saturate, the bundle also carries ``model-vnni.xml`` (those layers in
INT8 as well), which the runtime picks only where the device it runs on has VNNI or AMX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekit.artifact import TargetRecord
from edgekit.errors import BadInputError, MissingExtraError, TargetUnavailableError
from edgekit.targets.base import BuildOptions, Built, compile_failure, default_threads

# the precision OpenVINO computes float ops in, per edgekit precision
INFERENCE_PRECISION = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
OV_PRECISION_NAME = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def _core() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise MissingExtraError("openvino", "openvino", "the openvino target") from None
    return ov.Core()


def compile_config(record: TargetRecord, threads: int | None) -> dict[str, str]:
    return device_config(record.precision_requested, str(record.options.get("hint", "latency")), threads, record.device)


def device_config(precision: str, hint: str = "latency", threads: int | None = None, device: str = "cpu") -> dict[str, str]:
    """How edgekit compiles a model on an OpenVINO device (benchmarks compile their peers' models
    with this too, so every row runs like with like)."""
    config = {"PERFORMANCE_HINT": hint.upper(), "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if device.upper() == "CPU":
        config["ENABLE_CPU_PINNING"] = "NO"  # let the OS place threads: fairer beside other runtimes
    return config


# u8 x s8 kernels: the graph that is right on every CPU, and the one for CPUs whose pair sums do not saturate
# fold_passthrough_pairs only where pairs cannot saturate: a layer reading Flatten(DQ(x)) instead of
# DQ(x) is hidden from wide_layers_float, which must see a signed input to keep the layer float
SAFE_INT8_REWRITES = ("fold_relu_pairs", "nonnegative_to_u8", "u8_to_7bit", "wide_layers_float")
VNNI_INT8_REWRITES = ("fold_relu_pairs", "fold_passthrough_pairs", "nonnegative_to_u8", "u8_to_7bit")
VNNI_MODEL = "model-vnni.xml"


def model_for_this_cpu(record: TargetRecord) -> str:
    """The IR file this device runs: the VNNI variant only where pair sums cannot saturate."""
    from edgekit.cpu import detect

    vnni = record.options.get("vnni_model")
    if vnni and detect().has_vnni:
        return str(vnni)
    return record.model_file


class OvRuntime:
    def __init__(self, xml: Path, record: TargetRecord, threads: int | None = None) -> None:
        core = _core()
        self.model_file = xml.name
        self.compiled = core.compile_model(str(xml), record.device.upper(), compile_config(record, threads or default_threads()))
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]

    @property
    def precision(self) -> str:
        """What the compiled model computes float ops in (fp32 / bf16 / fp16)."""
        value = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        return OV_PRECISION_NAME.get(name, name)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.request.infer(inputs, share_inputs=True)
        return {name: np.array(result[out]) for name, out in zip(self.output_names, self.compiled.outputs, strict=True)}

    def integer_layers(self) -> int:
        """Weighted layers the compiled model runs on u8/i8 kernels (from OpenVINO's runtime model)."""
        count = 0
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" not in info or "runtimePrecision" not in info:
                continue
            if info["layerType"].astype(str) in WEIGHTED_LAYERS and info["runtimePrecision"].astype(str) in ("u8", "i8"):
                count += 1
        return count


# OpenVINO CPU plugin layer types that carry weights (what INT8 is for)
WEIGHTED_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")


class OpenVinoTarget:
    name: ClassVar[str] = "openvino"

    def describe(self) -> str:
        import openvino as ov

        core = _core()
        devices = ", ".join(f"{d} ({core.get_property(d, 'FULL_DEVICE_NAME')})" for d in core.available_devices)
        return f"openvino {ov.get_version().split('-')[0]}; devices: {devices}"

    def check(self, device: str) -> None:
        core = _core()
        dev = device.upper()
        if not any(d == dev or d.startswith(dev + ".") for d in core.available_devices):
            raise TargetUnavailableError(
                f"OpenVINO sees no {dev} device here (it has {', '.join(core.available_devices)})",
                hint="install the device's OpenVINO driver, or use --device cpu",
            )

    def check_precision(self, device: str, precision: str) -> None:
        if device.upper() == "CPU" and precision == "bf16":
            caps = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if "BF16" not in caps:
                raise TargetUnavailableError("this CPU has no bf16 support", hint="use --precision fp32 or int8")

    def build(self, onnx_path: Path, quantized: bool, opts: BuildOptions, out: Path) -> Built:
        import openvino as ov
        from openvino import _pyopenvino as ov_errors

        self.check_precision(opts.device, opts.precision)
        failures = (ov_errors.OpConversionFailure, ov_errors.GeneralFailure, ov_errors.NotImplementedFailure,
                    ov_errors.OpValidationFailure, RuntimeError)
        from edgekit.cpu import detect

        rewrites: dict[str, int] = {}
        files = ["model.xml", "model.bin"]
        extra: dict[str, Any] = {}
        if opts.precision == "int8" and opts.device.upper() == "CPU":
            rewrites = self._convert(onnx_path, out / "model.xml", SAFE_INT8_REWRITES, failures)
            if rewrites.get("wide_layers_float") and detect().has_vnni:
                self._convert(onnx_path, out / VNNI_MODEL, VNNI_INT8_REWRITES, failures)
                files += [VNNI_MODEL, VNNI_MODEL.replace(".xml", ".bin")]
                extra["vnni_model"] = VNNI_MODEL
        else:
            self._convert(onnx_path, out / "model.xml", (), failures)
        record = TargetRecord(
            name=self.name,
            device=opts.device,
            precision_requested=opts.precision,
            precision=opts.precision,
            runtime_version=ov.get_version().split("-")[0],
            model_file="model.xml",
            options={"hint": opts.hint, "inference_precision": INFERENCE_PRECISION[opts.precision], "rewrites": rewrites,
                     **extra},
        )
        runtime = OvRuntime(out / "model.xml", record)
        ran = runtime.precision
        record.precision = "int8" if opts.precision == "int8" else ran
        return Built(record, files, {"ov_inference_precision": ran})

    @staticmethod
    def _convert(onnx_path: Path, xml: Path, steps: tuple[str, ...], failures: tuple[type[BaseException], ...]) -> dict[str, int]:
        import openvino as ov

        counts: dict[str, int] = {}
        source = onnx_path
        if steps:
            from edgekit.targets.qdq_rewrite import rewrite

            source = xml.with_name(f".{xml.stem}.rewritten.onnx")
            counts = rewrite(onnx_path, source, steps)
        try:
            model = ov.convert_model(str(source))
        except failures as exc:
            raise compile_failure("openvino", exc, onnx_path) from None
        finally:
            if source != onnx_path:
                source.unlink(missing_ok=True)
        try:
            ov.save_model(model, str(xml), compress_to_fp16=False)
        except RuntimeError as exc:  # OpenVINO reports a failed write as "basic_ios::clear: iostream error"
            raise BadInputError(f"cannot write the OpenVINO IR {xml.name}: {str(exc).strip().splitlines()[-1][:200]}",
                                hint="the disk is full or a file size limit was hit; free space and run again") from None
        return counts

    def load(self, directory: Path, record: TargetRecord, threads: int | None = None,
             shared: bool = False) -> OvRuntime:  # TBB's workers sleep soon after a call: nothing to change
        return OvRuntime(directory / model_for_this_cpu(record), record, threads)
