"""The static table of targets: what each supports and what it needs (STYLE.md #7).

Nothing else hard-codes what a target supports: argument checks, ``doctor`` and ``bench`` read this
table. It imports nothing heavy, so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.errors import BadInputError, did_you_mean

if TYPE_CHECKING:
    from edgekit.targets.base import Baseline, Target

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class TargetInfo:
    name: str
    aliases: tuple[str, ...]
    summary: str
    # device -> precisions it can run there; the first device is the default
    devices: dict[str, tuple[str, ...]]
    dynamic_shapes: bool
    extra: str  # pip extra that installs its runtime
    modules: tuple[str, ...]  # Python modules the runtime needs
    implementation: str  # module:class of the Target
    needs_gpu: bool = False
    note: str = ""
    # build options it reads: "shape" (an optimization profile per input), "hint" (latency/throughput);
    # the others take any shape as it comes and have one way to run, so they refuse them
    build_options: tuple[str, ...] = ()
    compiles: bool = True  # False only for the torch baseline: it runs the module, nothing is built

    @property
    def install(self) -> str:
        return f"pip install 'edgekit[{self.extra}]'"

    @property
    def precisions(self) -> tuple[str, ...]:
        out: list[str] = []
        for precs in self.devices.values():
            out += [p for p in precs if p not in out]
        return tuple(p for p in PRECISIONS if p in out)

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)


CATALOG: dict[str, TargetInfo] = {
    "torch": TargetInfo(
        name="torch",
        aliases=("pytorch", "eager"),
        summary="PyTorch eager: the FP32 baseline every comparison starts from",
        devices={"cpu": ("fp32",), "cuda": ("fp32", "fp16", "bf16")},
        dynamic_shapes=True,
        extra="full",
        modules=("torch",),
        implementation="edgekit.targets.torch:TorchTarget",
        compiles=False,
    ),
    "onnxruntime": TargetInfo(
        name="onnxruntime",
        aliases=("ort", "onnx"),
        summary="ONNX Runtime: CPU here; CUDA and TensorRT execution providers where present",
        devices={"cpu": ("fp32", "int8"), "cuda": ("fp32", "fp16", "int8"), "tensorrt": ("fp32", "fp16", "int8")},
        dynamic_shapes=True,
        extra="onnxruntime",
        modules=("onnxruntime",),
        implementation="edgekit.targets.onnxruntime:OnnxRuntimeTarget",
        build_options=("placement",),
    ),
    "openvino": TargetInfo(
        name="openvino",
        aliases=("ov",),
        summary="OpenVINO: ONNX -> IR for Intel/AMD CPUs (GPU/NPU where present)",
        devices={"cpu": ("fp32", "bf16", "int8"), "gpu": ("fp32", "fp16", "int8"), "npu": ("fp16", "int8")},
        dynamic_shapes=True,
        extra="openvino",
        modules=("openvino",),
        implementation="edgekit.targets.openvino:OpenVinoTarget",
        build_options=("hint",),
        note="fp32 runs f32 (OpenVINO would run bf16 on CPUs that have it); bf16 is its own precision",
    ),
    "tensorrt": TargetInfo(
        name="tensorrt",
        aliases=("trt",),
        summary="NVIDIA TensorRT 10: engine with FP16 / INT8 (explicit QDQ) for NVIDIA GPUs",
        devices={"cuda": ("fp32", "fp16", "bf16", "int8")},
        dynamic_shapes=True,
        extra="tensorrt",
        modules=("tensorrt", "cuda"),
        implementation="edgekit.targets.tensorrt:TensorRtTarget",
        needs_gpu=True,
        build_options=("shape", "hint"),
    ),
}

ALIASES = {alias: info.name for info in CATALOG.values() for alias in (info.name, *info.aliases)}


def resolve(name: str) -> TargetInfo:
    """A target by name or alias; an unknown name gets a did-you-mean, never a silent pick."""
    key = name.strip().lower()
    if key not in ALIASES:
        raise BadInputError(
            f"unknown target '{name}'{did_you_mean(key, ALIASES)}",
            hint=f"targets: {', '.join(CATALOG)} (aliases: {', '.join(a for i in CATALOG.values() for a in i.aliases)})",
        )
    return CATALOG[ALIASES[key]]


def check_precision(info: TargetInfo, precision: str, device: str | None = None) -> str:
    """Validate ``precision`` (and ``device``) against the catalog; returns the device to use."""
    dev = (device or next(iter(info.devices))).lower()
    if dev not in info.devices:
        raise BadInputError(
            f"target {info.name} has no device '{device}'{did_you_mean(dev, info.devices)}",
            hint=f"devices: {', '.join(info.devices)}",
        )
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown precision '{precision}'{did_you_mean(precision, PRECISIONS)}",
                            hint=f"one of {', '.join(PRECISIONS)}")
    if precision not in info.devices[dev]:
        raise BadInputError(
            f"target {info.name} cannot run {precision} on {dev}",
            hint=f"{info.name} on {dev} runs {', '.join(info.devices[dev])}",
        )
    return dev


def load_target(info: TargetInfo) -> Target:
    """Instantiate a compiling target's class (this imports its module, not its runtime)."""
    if not info.compiles:
        raise BadInputError(f"{info.name} is the eager baseline: it runs the model itself, there is nothing to build",
                            hint="build for onnxruntime, openvino or tensorrt")
    target: Target = _instance(info)
    return target


def load_baseline(info: TargetInfo) -> Baseline:
    """Any catalog entry, the torch baseline included, for ``check`` and ``describe``."""
    baseline: Baseline = _instance(info)
    return baseline


def _instance(info: TargetInfo) -> Any:
    import importlib

    module, cls = info.implementation.split(":")
    return getattr(importlib.import_module(module), cls)()
