"""Latency-aware placement: the regions a QDQ graph splits into, the float re-expression of chosen
layers (exact where it should be), and the choice an ONNX Runtime INT8 build measures and records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.artifact import Artifact
from edgekit.build import build
from edgekit.targets.qdq_rewrite import keep_float, layer_regions, rewrite
from tests.conftest import assert_user_error, run_cli

W1 = np.array([[2, -3], [5, 1], [-4, 7]], np.int8).reshape(3, 2, 1, 1)  # 1x1 convs: 2 -> 3 -> 2 channels
W2 = np.array([[1, -2, 3], [6, 0, -5]], np.int8).reshape(2, 3, 1, 1)
SW1, SW2, SX, SA = np.float32(0.05), np.float32(0.02), np.float32(0.1), np.float32(0.07)


def _two_convs(path: Path) -> Path:
    """x -> Q/DQ -> conv1 (DQ w1) -> Relu -> Q/DQ -> conv2 (DQ w2) -> y."""
    inits = [numpy_helper.from_array(v, n) for v, n in (
        (W1, "w1_q"), (SW1, "w1_s"), (W2, "w2_q"), (SW2, "w2_s"), (SX, "x_s"), (SA, "a_s"), (np.int8(0), "z"))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "z"], ["xq"], name="x_q"),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "z"], ["xd"], name="x_dq"),
             helper.make_node("DequantizeLinear", ["w1_q", "w1_s", "z"], ["w1"], name="w1_dq"),
             helper.make_node("Conv", ["xd", "w1"], ["c1"], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("QuantizeLinear", ["r1", "a_s", "z"], ["aq"], name="a_q"),
             helper.make_node("DequantizeLinear", ["aq", "a_s", "z"], ["ad"], name="a_dq"),
             helper.make_node("DequantizeLinear", ["w2_q", "w2_s", "z"], ["w2"], name="w2_dq"),
             helper.make_node("Conv", ["ad", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    from edgekit.onnx_graph import cpu_session

    return np.asarray(cpu_session(path).run(None, {"x": x})[0])


def _conv1x1(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("oi,nihw->nohw", w[:, :, 0, 0], x)


X = np.random.default_rng(0).normal(size=(1, 2, 2, 2)).astype(np.float32)


def test_layer_regions(tmp_path: Path) -> None:
    """A layer owns its weight's DQ, its activation and the quantizer after it; the input's quantizer
    comes before any layer."""
    regions = layer_regions(onnx.load(str(_two_convs(tmp_path / "m.onnx"))).graph)
    assert regions == {"x_q": "", "x_dq": "", "w1_dq": "conv1", "conv1": "conv1", "relu1": "conv1", "a_q": "conv1",
                       "a_dq": "conv1", "w2_dq": "conv2", "conv2": "conv2"}


def test_keep_float_of_the_last_layer_is_exact(tmp_path: Path) -> None:
    """Only conv2's weight is dequantized at build time: its input still comes from INT8 conv1
    through the quantizer, so the numbers are the QDQ graph's."""
    src = _two_convs(tmp_path / "m.onnx")
    model = onnx.load(str(src))
    assert keep_float(model, {"conv2"}) == 1
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) == 2
    onnx.save(model, str(tmp_path / "f.onnx"))
    np.testing.assert_array_equal(_run(tmp_path / "f.onnx", X), _run(src, X))


def test_keep_float_of_every_layer_drops_every_activation_quantizer(tmp_path: Path) -> None:
    """Both layers float: no quantize round trip is left, the build computes the float network on the
    stored (quantized) weights; conv1 alone float drops only the input's pair (conv2 still reads INT8)."""
    src = _two_convs(tmp_path / "m.onnx")
    counts = rewrite(src, tmp_path / "f.onnx", (), float_layers={"conv1", "conv2"})
    assert counts == {"keep_float": 2}
    graph = onnx.load(str(tmp_path / "f.onnx")).graph
    assert not [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    want = _conv1x1(np.maximum(_conv1x1(X, W1.astype(np.float32) * SW1), 0), W2.astype(np.float32) * SW2)
    np.testing.assert_allclose(_run(tmp_path / "f.onnx", X), want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(_run(src, X), want, atol=1e-3)  # the QDQ graph itself rounds its activations

    model = onnx.load(str(src))
    keep_float(model, {"conv1"})
    assert [n.name for n in model.graph.node if n.op_type == "QuantizeLinear"] == ["a_q"]


def test_an_int8_onnxruntime_build_measures_and_records_its_placement(digits_int8: Artifact) -> None:
    built = build(digits_int8, "onnxruntime", "int8")
    assert built is not None and built.manifest.target is not None
    placed = built.manifest.target.options["placement"]
    quantized = digits_int8.manifest.metrics["quantize"]["quantized_layers"]
    assert len(placed["regions"]) == quantized
    assert all(r["int8_ms"] >= 0 and r["float_ms"] >= 0 and r["choice"] in ("int8", "float") for r in placed["regions"])
    assert sum(r["int8_ms"] for r in placed["regions"]) > 0 and sum(r["float_ms"] for r in placed["regions"]) > 0
    times = {c["name"]: c["ms"] for c in placed["candidates"]}
    assert {"int8", "float"} <= set(times) and all(t > 0 for t in times.values())
    assert placed["chosen_ms"] <= placed["int8_ms"]  # never slower than every layer INT8, as measured
    n_float = len(placed["float_layers"])
    assert placed["chosen"] == ("int8" if n_float == 0 else "float" if n_float == quantized else "mixed")
    assert (built.manifest.target.options["rewrites"].get("keep_float") or 0) == n_float
    assert built.manifest.metrics["placement"]["float_layers"] == n_float
    parity = built.manifest.metrics["parity"]
    assert parity["max_error"] <= parity["tolerance"] and parity["agreement"] >= 0.95


def test_placement_int8_runs_every_quantized_layer_in_int8(digits_int8: Artifact) -> None:
    latency, every = build(digits_int8, "onnxruntime", "int8"), build(digits_int8, "onnxruntime", "int8", placement="int8")
    assert latency is not None and every is not None and every.manifest.target is not None
    assert latency.path != every.path  # a different build, cached apart
    assert "placement" not in every.manifest.target.options
    assert "keep_float" not in every.manifest.target.options["rewrites"]
    assert every.manifest.metrics["parity"]["integer_layers"] > 0


def test_bad_placement(digits_int8: Artifact, tmp_path: Path) -> None:
    from edgekit.build import plan
    from edgekit.errors import BadInputError

    assert_user_error(run_cli("build", str(digits_int8.path), "--target", "ov", "--placement", "int8", cwd=tmp_path),
                      "takes no --placement")
    with pytest.raises(BadInputError, match="unknown placement 'fastest'"):
        plan(digits_int8, "onnxruntime", "int8", placement="fastest")
    assert plan(digits_int8, "onnxruntime", "int8", placement="int8").opts.placement == "int8"
    assert plan(digits_int8, "openvino", "int8").opts.placement is None  # not a choice OpenVINO reads


def test_placement_times_the_latency_shape(tmp_path: Path) -> None:
    """A dynamic batch is 1; another dynamic axis takes the IO range's opt (a transformer's sequence
    length), else 16; token ids and masks are valid ones."""
    from edgekit.onnx_graph import cpu_session
    from edgekit.targets.placement import _feeds

    nodes = [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["ids"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", 4]),
                                           helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "t"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("z", TensorProto.INT64, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    session = cpu_session(tmp_path / "m.onnx")
    feeds = _feeds(session, {"x": [(1, 8, 64), (1, 128, 512), None]})
    assert feeds["x"].shape == (1, 128, 4) and feeds["ids"].shape == (1, 16) and (feeds["ids"] == 1).all()
