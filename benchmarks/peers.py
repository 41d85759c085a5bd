"""Peer tools beside edgekit: NNCF's own post-training INT8 for OpenVINO, and ONNX Runtime's own
static quantization for ONNX Runtime.

Each peer gets the same FP32 graph (the checkpoint's ``model.onnx``), the same 300 calibration
samples from the train split, and runs with the same runtime settings as edgekit's builds
(``common.OvModelRuntime``; ``common.OrtPeerRuntime`` with the same threads), so a row compares quantizers,
not configurations.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np


def nncf_available() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("nncf") is not None else "nncf (pip install nncf)"


def nncf_int8(onnx_path: Path, calib: dict[str, np.ndarray], *, transformer: bool = False,
              subset_size: int = 300, preset: str | None = None,
              fast_bias_correction: bool = True) -> tuple[Any, float]:
    """(quantized openvino.Model, seconds): ``nncf.quantize(ov.convert_model(onnx), dataset)``.

    NNCF's defaults: the ``performance`` preset (symmetric activations, unsigned where they cannot be
    negative) for CNNs, ``mixed`` (asymmetric activations) with ``model_type=TRANSFORMER``;
    ``preset`` ("performance" | "mixed") overrides it. ``fast_bias_correction=False`` is NNCF's full
    bias correction (on the calibration data) instead of its default fast one."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    n = next(iter(calib.values())).shape[0]
    items = [{k: np.ascontiguousarray(v[i:i + 1]) for k, v in calib.items()} for i in range(n)]
    started = time.perf_counter()
    model = ov.convert_model(str(onnx_path))
    extra: dict[str, Any] = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    if preset is not None:
        extra["preset"] = nncf.QuantizationPreset(preset)
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=min(subset_size, n),
                              fast_bias_correction=fast_bias_correction, **extra)
    return quantized, time.perf_counter() - started


def ort_quantize_static(onnx_path: Path, calib: dict[str, np.ndarray], out_dir: Path) -> tuple[Path, float]:
    """(quantized model path, seconds): ONNX Runtime's recommended CPU recipe, ``quant_pre_process``
    then ``quantize_static`` in QDQ format, U8 activations, S8 per-channel weights, MinMax ranges
    (what Olive runs for a CPU target); symbolic shape inference skipped on transformer graphs."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    n = next(iter(calib.values())).shape[0]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{k: np.ascontiguousarray(v[i:i + 1]) for k, v in calib.items()} for i in range(n)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pre, out = out_dir / "ort-pre.onnx", out_dir / "ort-quantize-static.onnx"
    from edgekit.steps.qdq_graph import is_transformer

    # on a transformer graph its symbolic shape inference leaves a model ONNX Runtime refuses to load
    # ("Attempt to replace the existing tensor", ViT-Tiny); ONNX's own shape inference is enough there
    quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=is_transformer(onnx_path))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out, time.perf_counter() - started


def calibration_samples(data: str, io: Any, samples: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """The samples edgekit's quantize step calibrates on: ``samples`` seeded train samples."""
    from edgekit.data import match_inputs, resolve_source, take

    x, _ = take(resolve_source(data)("train"), samples, seed=seed)
    return match_inputs(x, io, where=f"data '{data}'")
