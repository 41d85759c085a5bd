"""The target protocol: ``check`` / ``build`` / ``load``, and one-method runtimes (STYLE.md #3).

Runtime classes of the onnxruntime, openvino and tensorrt targets import neither torch nor onnx,
so the bundle runtime (``edgekit.runtime``) reuses them on devices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from edgekit.artifact import TargetRecord
from edgekit.errors import BadInputError


class Runtime(Protocol):
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Shape:
    """An optimization profile for one input: min / opt / max shapes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp32"
    device: str = "cpu"
    shapes: dict[str, Shape] = field(default_factory=dict)
    hint: str = "latency"  # latency | throughput (OpenVINO performance hint, TensorRT's opt batch)
    max_batch: int | None = None  # the largest batch the caller will run (TensorRT's profile covers it)
    # per input, per axis: the IO spec's (min, opt, max) for a named dim, else None (TensorRT's profile)
    ranges: dict[str, list[tuple[int, int, int] | None]] = field(default_factory=dict)
    # INT8 on a CPU target that measures it: "latency" keeps float the layers measured faster in float
    # here (edgekit.targets.placement), "int8" every layer as quantized; None where it does not apply
    placement: str | None = None

    def key(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Built:
    """What a target's build returns: the record for the manifest and the files it wrote."""

    record: TargetRecord
    files: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)


class Baseline(Protocol):
    """What every catalog entry is: it can say whether it runs here. The torch baseline is only this
    (it runs the module itself, nothing is built): the one exception, named in the catalog
    (``TargetInfo.compiles``)."""

    name: ClassVar[str]

    def check(self, device: str) -> None:
        """Raise MissingExtraError / TargetUnavailableError when the target cannot run here."""

    def describe(self) -> str:
        """One line for doctor: version and devices."""


class Target(Baseline, Protocol):
    """A compiling target: ONNX in, a built directory out, and a runtime from it."""

    def build(self, onnx_path: Path, quantized: bool, opts: BuildOptions, out: Path) -> Built:
        """Compile ``onnx_path`` into ``out`` (a staging directory)."""

    def load(self, directory: Path, record: TargetRecord, threads: int | None = None,
             shared: bool = False) -> Runtime:
        """A runtime for a built directory. ``shared``: the runtime takes turns on the same cores with
        others (a benchmark alternating variants), so its thread pool must not keep spinning after a call."""


def parse_shape(text: str) -> tuple[str, Shape]:
    """``NAME:MIN:OPT:MAX`` with each shape as ``1x3x224x224``."""
    parts = text.split(":")
    if len(parts) != 4:
        raise BadInputError(f"--shape '{text}' is not NAME:MIN:OPT:MAX", hint="e.g. input:1x3x224x224:8x3x224x224:32x3x224x224")
    name, *dims = parts
    try:
        mn, opt, mx = (tuple(int(v) for v in d.lower().split("x")) for d in dims)
    except ValueError:
        raise BadInputError(f"--shape '{text}': shapes are like 1x3x224x224") from None
    if not (len(mn) == len(opt) == len(mx)) or any(a > b or b > c for a, b, c in zip(mn, opt, mx, strict=True)):
        raise BadInputError(f"--shape '{text}': need MIN <= OPT <= MAX in every dimension, same rank")
    return name, Shape(mn, opt, mx)


def default_threads() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def compile_failure(target: str, exc: BaseException, onnx_path: Path) -> BadInputError:
    """A runtime refused the graph: name the op it choked on when its message mentions one."""
    message = str(exc).strip()
    op_types: list[str] = []
    try:
        import onnx

        op_types = sorted({n.op_type for n in onnx.load(str(onnx_path), load_external_data=False).graph.node},
                          key=len, reverse=True)
    except ImportError:
        pass
    named = next((op for op in op_types if op in message), None)
    first = next((line.strip() for line in message.splitlines() if line.strip()), type(exc).__name__)
    if named:
        return BadInputError(f"{target} cannot compile op '{named}': {first[:300]}",
                             hint="replace the op in the model, or try another target")
    return BadInputError(f"{target} cannot compile the graph: {first[:300]}", hint="try another target or opset")


def run_batched(runtime: Runtime, inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """All of ``inputs`` through ``runtime``, ``batch`` rows per call, outputs concatenated by name."""
    n = next(iter(inputs.values())).shape[0]
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, n, batch):
        out = runtime.infer({k: np.ascontiguousarray(v[i : i + batch]) for k, v in inputs.items()})
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}
