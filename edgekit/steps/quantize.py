"""The ``quantize`` step: INT8 post-training quantization to one portable QDQ graph.

Calibration runs once with ONNX Runtime's calibrators (minmax; percentile; entropy with TensorRT's
2048/128 histogram, since ORT's default 128/128 returns plain minmax), then the graph is quantized
as often as the accuracy budget needs without calibrating again. The stored graph is symmetric INT8
(zero point 0) with per-channel weights stored as INT8 initializers, per-tensor activations and float
biases, and is checked against TensorRT's rules. Transformer graphs keep LayerNorm / Softmax / GELU
in float, quantize only MatMuls with constant weights, and get SmoothQuant-style smoothing.
"""

from __future__ import annotations

import copy
import fnmatch
import io
import json
import logging
import math
import shutil
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import console
from edgekit.data import resolve_source, take
from edgekit.errors import DataError, ModelError, require
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


def _overrides(opts: QuantizeStep, nodes: list[tuple[str, str]], pre: Path) -> tuple[set[str], dict[str, Any]]:
    """Per-layer overrides: ``skip`` keeps a layer in float; ``activation_range`` fixes its input range."""
    skip: set[str] = set()
    tq: dict[str, Any] = {}
    if not opts.overrides:
        return skip, tq
    graph = g._load(pre).graph
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


# --------------------------------------------------------------------------- evaluation


def _evaluate(model: Path, x: dict[str, np.ndarray], y: np.ndarray | None, io: IOSpec, ref: np.ndarray) -> tuple[float, float]:
    """(task metric on val, MSE of outputs vs the float graph) for one candidate graph."""
    from edgekit.evaluate import predict_qdq
    from edgekit.metrics import task_metric

    out = predict_qdq(model, x)  # the graph's own accuracy, the same on every CPU
    _, value = task_metric(io, out, y, ref)
    return float(value if value is not None else 0.0), float(((out - ref) ** 2).mean())


# --------------------------------------------------------------------------- the step


def run(state: State, opts: QuantizeStep, ctx: Context) -> State:
    require("onnxruntime", "onnxruntime", "INT8 quantization")
    require("onnx", "full", "INT8 quantization")
    from edgekit.evaluate import predict_onnx, split_inputs
    from edgekit.steps.qdq_check import assert_tensorrt_portable

    work = ctx.scratch("quantize")
    fp32 = _float_graph(state, ctx, work)
    pre = work / "pre.onnx"
    g.preprocess(fp32, pre)
    transformer = g.is_transformer(pre)
    x_cal = calibration_set(opts, ctx, state.io)
    smoothed = 0
    if transformer and opts.smooth_quant in (True, "auto"):
        smoothed = g.smooth(pre, chunks(x_cal), opts.smooth_alpha)
    elif opts.smooth_quant is True:
        smoothed = g.smooth(pre, chunks(x_cal), opts.smooth_alpha)
    ops = TRANSFORMER_OPS if transformer else CNN_OPS
    nodes = g.weighted_nodes(pre)
    if not nodes:
        raise ModelError("the graph has no Conv/Gemm/MatMul with constant weights to quantize")
    all_nodes = [(n.name, n.op_type) for n in g._load(pre).graph.node]
    ignored = select(opts.ignore, all_nodes)
    skip, overrides = _overrides(opts, all_nodes, pre)
    console.info(f"  calibrating: {opts.method} on {next(iter(x_cal.values())).shape[0]} samples"
                 f"{', transformer graph (MatMul/Gemm only)' if transformer else ''}"
                 f"{f', {smoothed} inputs smoothed' if smoothed else ''}")
    ranges = calibrate(pre, x_cal, opts, ops, work)

    eval_source = ctx.data or opts.calibration  # a model imported without data: judge on the calibration set
    if not eval_source:
        raise DataError("the quantize step needs calibration data", hint="pass --calib SOURCE")
    x_val, y_val = split_inputs(eval_source, "val", state.io)
    ref_val = predict_onnx(pre, x_val)
    float_metric, _ = _evaluate(pre, x_val, y_val, state.io, ref_val)

    def make(exclude: set[str], path: Path) -> tuple[float, float]:
        quantize_graph(pre, path, ranges, exclude, ops, opts, overrides, transformer)
        if opts.bias_correction == "full":
            g.full_bias_correction(path, pre, chunks(x_cal))
        elif opts.bias_correction:
            g.bias_correction(path, pre, chunks(x_cal))
        return _evaluate(path, x_val, y_val, state.io, ref_val)

    squeeze_excite = g.squeeze_excite_nodes(pre) if opts.squeeze_excite_float and not transformer else set()
    base_exclude = ignored | skip | squeeze_excite
    candidate = work / "int8.onnx"
    metric, mse = make(base_exclude, candidate)
    console.info(f"  INT8 val {state.io.task == 'classification' and 'top-1' or 'score'}: {metric:.4f} "
                 f"(float {float_metric:.4f}, drop {float_metric - metric:+.4f})")
    fallback: list[dict[str, Any]] = []
    budget = None
    if opts.max_accuracy_drop is not None:
        groups = g.fallback_groups(pre, ops)
        limit = max(1, int(len(groups) * opts.max_fallback_fraction))
        def noise(path: Path, names: list[str]) -> dict[str, float]:
            return g.quant_noise(path, {n: groups[n] for n in names}, chunks(x_val))

        budget_info = _fit_budget(make, groups, base_exclude, float_metric, metric, mse, opts.max_accuracy_drop, work, limit,
                                  noise)
        fallback, best_path, metric = budget_info["fallback"], budget_info["path"], budget_info["metric"]
        if best_path != candidate:
            shutil.copyfile(best_path, candidate)
        budget = {"max_accuracy_drop": opts.max_accuracy_drop, "float_val": float_metric, "int8_val": metric,
                  "plain_int8_val": budget_info["plain"], "met": float_metric - metric <= opts.max_accuracy_drop + 1e-12,
                  "fallback": fallback}
        if not budget["met"]:
            budget["explanation"] = (f"with {len(fallback)} of {len(groups)} layers in float (the most max_fallback_fraction "
                                     f"{opts.max_fallback_fraction} allows) the val metric is {metric:.4f}, "
                                     f"{float_metric - metric:.4f} below float (budget {opts.max_accuracy_drop})")
    if opts.profile == "portable":
        assert_tensorrt_portable(candidate)
    note = {
        "method": opts.method, "samples": int(next(iter(x_cal.values())).shape[0]), "calibration": opts.calibration or ctx.data,
        "profile": opts.profile, "tensorrt_portable": opts.profile == "portable", "transformer": transformer,
        "smoothed_inputs": smoothed, "squeeze_excite_float_nodes": len(squeeze_excite), "bias_correction": opts.bias_correction, "float_val": float_metric, "int8_val": metric,
        "float_layers": sorted(base_exclude | {f["node"] for f in fallback}),
        "float_nodes": sorted(base_exclude | {n for f in fallback for n in f["nodes"]}),
        "quantized_layers": len({n for n, _ in nodes} - base_exclude - {f["node"] for f in fallback}),
    }
    notes: dict[str, Any] = {"quantize": note}
    if budget is not None:
        notes["budget"] = budget
    (work / "ranges.json").write_text(json.dumps(range_table(ranges), indent=0))
    return State(module=state.module, spec=state.spec, io=state.io, onnx=candidate, quantized=True, reference=pre,
                 notes=notes)


def range_table(ranges: Any) -> dict[str, tuple[float, float]]:
    """{tensor: (low, high)} from ORT's TensorsData."""
    return {k: (float(np.ravel(v.range_value[0])[0]), float(np.ravel(v.range_value[1])[0])) for k, v in ranges.data.items()}


def _float_graph(state: State, ctx: Context, work: Path) -> Path:
    """The current float ONNX graph: the state's, or a fresh export of its (pruned / distilled) module."""
    if state.onnx is not None:
        return state.onnx
    from edgekit.checkpoint import sample_inputs
    from edgekit.export import export_onnx

    path = work / "float.onnx"
    state.io, _ = export_onnx(state.module, state.io, path, sample_inputs(state.io, ctx.data or None))
    return path


PROBE_LIMIT = 16  # up to this many layers, each is probed; beyond, they are ranked by quantization noise


def _fit_budget(make: Any, groups: dict[str, set[str]], base_exclude: set[str], float_metric: float, metric: float,
                mse: float, budget: float, work: Path, limit: int, noise: Any) -> dict[str, Any]:
    """Keep the most sensitive layers in float until the val drop fits the budget.

    Sensitivity of a layer = what the val metric gains (then how much output error falls) when only
    that layer stays float. With many layers, probing each costs a quantization and an evaluation
    apiece, so they are ranked instead by the noise-to-signal ratio of their quantized activations
    (one pass). Layers are added to the float set in that order; the best graph seen is kept whether or
    not the budget is met.
    """
    plain = metric
    best = {"path": work / "int8.onnx", "metric": metric, "fallback": [], "plain": plain}
    if float_metric - metric <= budget:
        return best
    candidates = [n for n in groups if n not in base_exclude]
    ranking = "probe" if len(candidates) <= PROBE_LIMIT else "noise"
    console.info(f"  budget {budget} missed (drop {float_metric - metric:.4f}); ranking {len(candidates)} layers "
                 f"({'probing each' if ranking == 'probe' else 'by quantization noise'})")
    scores = []
    if ranking == "probe":
        for name in candidates:
            m, e = make(base_exclude | groups[name], work / "probe.onnx")
            scores.append((m - metric, mse - e, name))
    else:
        ratios = noise(work / "int8.onnx", candidates)
        scores = [(ratios.get(name, 0.0), 0.0, name) for name in candidates]
    scores.sort(key=lambda s: (-s[0], -s[1]))
    exclude = set(base_exclude)
    fallback: list[dict[str, Any]] = []
    for gain, err_drop, name in scores[:limit]:
        exclude |= groups[name]
        path = work / f"fallback-{len(fallback) + 1}.onnx"
        m, _ = make(exclude, path)
        fallback.append({"node": name, "nodes": sorted(groups[name]), "ranking": ranking, "sensitivity": float(gain),
                         "mse_reduction": float(err_drop), "val_after": float(m)})
        console.info(f"    float: {name} ({ranking} {gain:.4g}) -> val {m:.4f}")
        if m > best["metric"] or (float_metric - m <= budget and best["metric"] < m + 1e-12):
            best = {"path": path, "metric": m, "fallback": list(fallback), "plain": plain}
        if float_metric - m <= budget:
            return {"path": path, "metric": m, "fallback": list(fallback), "plain": plain}
    return best
