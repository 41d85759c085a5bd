"""OpenVINO target: ONNX -> IR (``model.xml`` / ``model.bin``), compiled with honest precision.

On CPUs with bf16, OpenVINO runs an f32 model in bf16 unless ``INFERENCE_PRECISION_HINT`` says f32,
so a row called fp32 runs f32 and bf16 is its own precision. INT8 (QDQ) graphs keep their float
fallback regions in f32 for the same reason: an accuracy budget checked once holds here too. The
precision that actually ran is read back from the compiled model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekit.artifact import TargetRecord
from edgekit.errors import MissingExtraError, TargetUnavailableError
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
    config = {
        "PERFORMANCE_HINT": str(record.options.get("hint", "latency")).upper(),
        "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[record.precision_requested],
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if record.device.upper() == "CPU":
        config["ENABLE_CPU_PINNING"] = "NO"  # let the OS place threads: fairer beside other runtimes
    return config


class OvRuntime:
    def __init__(self, xml: Path, record: TargetRecord, threads: int | None = None) -> None:
        core = _core()
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
        rewrites: dict[str, int] = {}
        source = onnx_path
        if opts.precision == "int8" and opts.device.upper() == "CPU":
            from edgekit.targets.qdq_rewrite import rewrite

            source = out / ".rewritten.onnx"
            rewrites = rewrite(onnx_path, source, ("fold_relu_pairs", "nonnegative_to_u8"))  # u8 x s8 oneDNN kernels
        try:
            model = ov.convert_model(str(source))
        except failures as exc:
            raise compile_failure("openvino", exc, onnx_path) from None
        finally:
            if source != onnx_path:
                source.unlink(missing_ok=True)
        ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)
        record = TargetRecord(
            name=self.name,
            device=opts.device,
            precision_requested=opts.precision,
            precision=opts.precision,
            runtime_version=ov.get_version().split("-")[0],
            model_file="model.xml",
            options={"hint": opts.hint, "inference_precision": INFERENCE_PRECISION[opts.precision], "rewrites": rewrites},
        )
        runtime = OvRuntime(out / "model.xml", record)
        ran = runtime.precision
        record.precision = "int8" if opts.precision == "int8" else ran
        return Built(record, ["model.xml", "model.bin"], {"ov_inference_precision": ran})

    def load(self, directory: Path, record: TargetRecord, threads: int | None = None,
             shared: bool = False) -> OvRuntime:  # TBB's workers sleep soon after a call: nothing to change
        return OvRuntime(directory / record.model_file, record, threads)
