"""Evaluate a model state (torch module or ONNX graph) on a data split with the task's metric."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import Artifact
from edgekit.data import match_inputs, resolve_source
from edgekit.iospec import IOSpec
from edgekit.metrics import task_metric


def split_inputs(data: str, split: str, io: IOSpec) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    x, y = resolve_source(data)(split)
    return match_inputs(x, io, where=f"data '{data}' [{split}]"), y


def predict_onnx(path: Path, inputs: dict[str, np.ndarray], batch: int = 256, threads: int = 2,
                 optimization: str = "all") -> np.ndarray:
    """The first output of an ONNX graph over all samples, on ONNX Runtime's CPU provider."""
    from edgekit.targets.base import run_batched
    from edgekit.targets.onnxruntime import OrtRuntime

    rt = OrtRuntime(path, ["CPUExecutionProvider"], threads=threads, optimization=optimization)
    out = run_batched(rt, inputs, batch)
    return out[rt.output_names[0]]


def predict_qdq(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """A QDQ INT8 graph's own outputs: exact ONNX semantics (no fused integer kernels), the same on
    every CPU. What a target computes from it is measured by build and bench, on that target."""
    return predict_onnx(path, inputs, optimization="disabled")


def predict_state(module: Any, onnx: Path | None, inputs: dict[str, np.ndarray], quantized: bool = False) -> np.ndarray:
    if module is not None and not quantized:
        from edgekit.torchutil import predict

        return predict(module, inputs)
    assert onnx is not None  # noqa: S101 - a state has a module or a graph
    return predict_qdq(onnx, inputs) if quantized else predict_onnx(onnx, inputs)


@lru_cache(maxsize=8)
def _root_outputs(root_path: str, data: str, split: str) -> np.ndarray:
    root = Artifact.load(root_path)
    inputs, _ = split_inputs(data, split, root.io)
    if root.manifest.model is not None:
        from edgekit.checkpoint import load_module

        return predict_state(load_module(root), None, inputs)
    return predict_onnx(root.path / str(root.manifest.onnx), inputs)


def root_outputs(root: Artifact, data: str, split: str) -> np.ndarray:
    """The full model's outputs on a split (the reference for embedding metrics and agreement)."""
    return _root_outputs(str(root.path.resolve()), data, split)


def score(io: IOSpec, outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None) -> tuple[str, float | None]:
    return task_metric(io, outputs, labels, reference)
