"""Post-training quantization machinery shared by the ``quantize`` and ``qat`` steps: calibration
(ONNX Runtime's calibrators, and the MSE range choice), the QDQ graph for fixed ranges, layer
selection and overrides. Not a step itself: steps import it, it imports no step.
"""

from __future__ import annotations

import copy
import fnmatch
import io
import logging
import math
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import resolve_source, take
from edgekit.errors import DataError, ModelError
from edgekit.iospec import IOSpec
from edgekit.recipe import QuantizeStep
from edgekit.steps import Context, State
from edgekit.steps import qdq_graph as g

CNN_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "AveragePool",
           "GlobalAveragePool", "Flatten", "Reshape"]
TRANSFORMER_OPS = ["MatMul", "Gemm"]
CHUNK = 32  # calibration samples per collect_data call (fixed: histogram merging depends on it)


# --------------------------------------------------------------------------- calibration data


def calibration_set(opts: QuantizeStep, ctx: Context, io: IOSpec) -> dict[str, np.ndarray]:
    """``samples`` seeded train samples of the calibration source, checked against the IO spec."""
    from edgekit.data import match_inputs

    source = opts.calibration or ctx.data
    batch = resolve_source(source)("train")
    x, _ = take(batch, opts.samples, seed=opts.seed)
    n = next(iter(x.values())).shape[0]
    if n < opts.min_samples:
        raise DataError(f"calibration data '{source}' has {n} samples; at least {opts.min_samples} are needed",
                        hint="give more samples, or lower min_samples in the recipe")
    return match_inputs(x, io, where=f"calibration data '{source}'")


def chunks(x: dict[str, np.ndarray], size: int = CHUNK) -> Iterator[dict[str, np.ndarray]]:
    n = next(iter(x.values())).shape[0]
    for i in range(0, n, size):
        yield {k: np.ascontiguousarray(v[i : i + size]) for k, v in x.items()}


class _Reader:
    """ONNX Runtime's CalibrationDataReader over one chunk."""

    def __init__(self, feed: dict[str, np.ndarray]) -> None:
        self.feeds = [feed]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return self.feeds.pop() if self.feeds else None

    def rewind(self) -> None:  # pragma: no cover - part of ORT's protocol
        return None


def calibrate(model: Path, x: dict[str, np.ndarray], opts: QuantizeStep, ops: list[str], work: Path) -> Any:
    """Activation ranges from ORT's calibrators, collected chunk by chunk (bounded memory)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator

    symmetric = opts.profile == "portable"
    method, extra = {
        "minmax": (CalibrationMethod.MinMax, {"symmetric": symmetric}),
        "percentile": (CalibrationMethod.Percentile, {"num_bins": 2048, "percentile": opts.percentile, "symmetric": symmetric}),
        "entropy": (CalibrationMethod.Entropy, {"num_bins": opts.entropy_bins, "num_quantized_bins": 128}),
        # mse: the percentile calibrator's histograms (|x| when symmetric), then our own range choice
        "mse": (CalibrationMethod.Percentile, {"num_bins": 2048, "percentile": 100.0, "symmetric": symmetric}),
    }[opts.method]

    class Reader(_Reader, CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no types
        pass

    with redirect_stdout(io.StringIO()):  # ORT's calibrators print progress to stdout (which --json owns)
        calibrator = create_calibrator(model, ops, augmented_model_path=str(work / "augmented.onnx"),
                                       calibrate_method=method, extra_options=extra)
        for feed in chunks(x):
            calibrator.collect_data(Reader(feed))
        ranges = mse_ranges(calibrator.collector.histogram_dict, symmetric) if opts.method == "mse" else calibrator.compute_data()
    del calibrator
    return ranges


MSE_CANDIDATES = 160  # thresholds tried per tensor
MSE_POINTS = 8  # points per histogram bin where the rounding error is evaluated


def mse_ranges(histograms: dict[str, tuple[Any, ...]], symmetric: bool) -> Any:
    """Per tensor, the range whose INT8 quantization has the least expected squared error on the
    calibration histogram (rounding inside the range, clipping outside), from the 90th percentile of
    the data up to its maximum: TensorRT's and pytorch-quantization's "mse" calibration. Symmetric
    (zero point 0) on the histogram of |x|; else an asymmetric U8 range with equal tails cut."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    data = {}
    for name, (hist, edges, low, high, *_) in histograms.items():
        hist, edges = np.asarray(hist, np.float64), np.asarray(edges, np.float64)
        lo, hi = (-1.0, 1.0) if symmetric else (float(low), float(high))
        if hist.sum() > 0:
            lo, hi = _best_range(hist, edges, symmetric, float(low), float(high))
        data[name] = TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32),
                                hist=hist, hist_edges=edges.astype(np.float32))
    return TensorsData(CalibrationMethod.Percentile, data)


def _best_range(hist: np.ndarray, edges: np.ndarray, symmetric: bool, low: float, high: float) -> tuple[float, float]:
    offsets = (np.arange(MSE_POINTS) + 0.5) / MSE_POINTS
    x = (edges[:-1, None] + np.diff(edges)[:, None] * offsets).ravel()  # points spread over each bin
    w = np.repeat(hist / MSE_POINTS, MSE_POINTS)
    keep = w > 0
    x, w = x[keep], w[keep]
    cdf = np.cumsum(hist) / hist.sum()
    if symmetric:  # x holds |values|: grid k*step, k in 0..127, step = t/127 (ONNX Runtime's symmetric int8)
        top = max(abs(low), abs(high), 1e-12)
        start = float(edges[min(int(np.searchsorted(cdf, 0.9)), len(edges) - 1)])
        best, best_t = math.inf, top
        for t in np.linspace(max(start, top / MSE_CANDIDATES), top, MSE_CANDIDATES):
            step = t / 127
            q = np.minimum(np.round(x / step), 127) * step
            err = float((w * (x - q) ** 2).sum())
            if err < best:
                best, best_t = err, float(t)
        return -best_t, best_t
    best, pair = math.inf, (min(low, 0.0), max(high, 0.0))
    for cut in np.concatenate([[0.0], np.geomspace(1e-6, 0.05, MSE_CANDIDATES - 1)]):
        lo = min(float(edges[int(np.searchsorted(cdf, cut))]) if cut else low, 0.0)
        hi = max(float(edges[min(int(np.searchsorted(cdf, 1 - cut)) + 1, len(edges) - 1)]) if cut else high, 0.0)
        if hi <= lo:
            continue
        step = (hi - lo) / 255
        zero = np.round(-lo / step)
        q = (np.clip(np.round(x / step) + zero, 0, 255) - zero) * step
        err = float((w * (x - q) ** 2).sum())
        if err < best:
            best, pair = err, (lo, hi)
    return pair


# --------------------------------------------------------------------------- quantize with fixed ranges


def select(patterns: list[str], nodes: list[tuple[str, str]]) -> set[str]:
    """Node names matched by names, glob patterns or op types."""
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {n for n, op in nodes if n == pattern or op == pattern or fnmatch.fnmatchcase(n, pattern)}
        if not hits:
            raise ModelError(f"quantize: '{pattern}' matches no node name, pattern or op type",
                             hint=f"nodes look like {', '.join(n for n, _ in nodes[:3])}")
        chosen |= hits
    return chosen


def quantize_graph(pre: Path, out: Path, ranges: Any, exclude: set[str], ops: list[str], opts: QuantizeStep,
                   overrides: dict[str, Any], transformer: bool) -> None:
    from onnxruntime.quantization import QDQQuantizer, QuantType
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    portable = opts.profile == "portable"
    extra: dict[str, Any] = {
        "ActivationSymmetric": portable,
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT: biases stay float
        "QDQDisableWeightAdjustForInt32Bias": True,  # else ORT inflates weight scales for a bias it never quantizes
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": -1},
        "MatMulConstBOnly": transformer,
        "TensorQuantOverrides": overrides,
    }
    if transformer:
        # Q/DQ on MatMul inputs only: an output feeding the float bias Add and residual gains nothing
        # and its per-tensor range is wrecked by a few outliers (TensorRT and OpenVINO fuse input Q/DQ).
        extra["OpTypesToExcludeOutputQuantization"] = ["MatMul", "Gemm"]
    model = load_model_with_shape_infer(pre)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        quantizer = QDQQuantizer(model, True, False, QuantType.QInt8,
                                 QuantType.QInt8 if portable else QuantType.QUInt8,
                                 copy.deepcopy(ranges), [], sorted(exclude), ops, extra)
        quantizer.quantize_model()
    finally:
        logging.getLogger().setLevel(quiet)
    quantizer.model.save_model_to_file(str(out), False)
    g.drop_graph_output_qdq(out)
    g.unquantize_excluded_inputs(out, exclude)
    g.float_consumers_read_float(out)


def layer_overrides(opts: QuantizeStep, nodes: list[tuple[str, str]], pre: Path) -> tuple[set[str], dict[str, Any]]:
    """Per-layer overrides: ``skip`` keeps a layer in float; ``activation_range`` fixes its input range."""
    skip: set[str] = set()
    tq: dict[str, Any] = {}
    if not opts.overrides:
        return skip, tq
    graph = g.load(pre).graph
    by_name = {n.name: n for n in graph.node}
    for pattern, override in opts.overrides.items():
        hit = select([pattern], nodes)
        if override.skip:
            skip |= hit
        if override.activation_range is not None:
            lo, hi = override.activation_range
            for name in hit:
                tq[by_name[name].input[0]] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
    return skip, tq


def range_table(ranges: Any) -> dict[str, tuple[float, float]]:
    """{tensor: (low, high)} from ORT's TensorsData."""
    return {k: (float(np.ravel(v.range_value[0])[0]), float(np.ravel(v.range_value[1])[0])) for k, v in ranges.data.items()}


def float_graph(state: State, ctx: Context, work: Path) -> Path:
    """The current float ONNX graph: the state's, or a fresh export of its (pruned / distilled) module."""
    if state.onnx is not None:
        return state.onnx
    from edgekit.checkpoint import sample_inputs
    from edgekit.export import export_onnx

    path = work / "float.onnx"
    state.io, _ = export_onnx(state.module, state.io, path, sample_inputs(state.io, ctx.data or None))
    return path
