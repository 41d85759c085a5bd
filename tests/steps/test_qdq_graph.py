"""The QDQ graph clean-ups and statistics on hand-made graphs, one job each: what each removes,
re-wires or measures, checked on ONNX Runtime's reference kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.steps import qdq_graph as g
from edgekit.steps import qdq_stats


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return [np.asarray(o) for o in ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, feeds)]


def _save(path: Path, nodes: list, inits: list, shape: list[int], outputs: list[str], opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _qdq(src: str, out: str, scale: str = "s") -> list:
    return [helper.make_node("QuantizeLinear", [src, scale, "z"], [f"{out}_q"], name=f"{out}_q"),
            helper.make_node("DequantizeLinear", [f"{out}_q", scale, "z"], [out], name=f"{out}_dq")]


SCALES = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
X = {"x": np.array([[0.123, -0.456, 1.234, 0.05]], np.float32)}


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_a_graph_output_stays_float(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["r"], name="relu"), *_qdq("r", "y")],
                 SCALES, [1, 4], ["y"])
    assert g.drop_graph_output_qdq(path) == 1
    assert _ops(path) == ["Relu"]
    np.testing.assert_array_equal(_run(path, X)[0], np.maximum(X["x"], 0))


def test_an_excluded_node_reads_the_float_tensor(tmp_path: Path) -> None:
    nodes = [*_qdq("x", "t"), helper.make_node("Relu", ["t"], ["a"], name="kept"),
             helper.make_node("Sigmoid", ["t"], ["b"], name="excluded")]
    path = _save(tmp_path / "m.onnx", nodes, SCALES, [1, 4], ["a", "b"])
    assert g.unquantize_excluded_inputs(path, {"excluded"}) == 1
    a, b = _run(path, X)
    np.testing.assert_allclose(b, 1 / (1 + np.exp(-X["x"])), rtol=1e-6)  # unrounded input
    assert not np.allclose(a, np.maximum(X["x"], 0))  # the quantized reader still reads rounded values


def test_float_ops_leave_a_pair_only_quantized_ops_keep(tmp_path: Path) -> None:
    """HardSigmoid (float) reads the float tensor; with no quantized reader left the pair goes."""
    nodes = [*_qdq("x", "t"), helper.make_node("HardSigmoid", ["t"], ["y"], name="gate")]
    path = _save(tmp_path / "m.onnx", nodes, SCALES, [1, 4], ["y"])
    assert g.float_consumers_read_float(path) == 1
    assert _ops(path) == ["HardSigmoid"]
    both = _save(tmp_path / "both.onnx", [*nodes, helper.make_node("Relu", ["t"], ["r"], name="relu")], SCALES, [1, 4], ["y", "r"])
    assert g.float_consumers_read_float(both) == 1
    assert _ops(both).count("DequantizeLinear") == 1  # the Relu's pair stays


def test_squeeze_excite_branch_is_found_and_not_the_multiply(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((4, 2, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"], name="pool"),
             helper.make_node("Conv", ["p", "w1"], ["c1"], name="fc1"), helper.make_node("Relu", ["c1"], ["r"], name="act"),
             helper.make_node("Conv", ["r", "w2"], ["c2"], name="fc2"),
             helper.make_node("HardSigmoid", ["c2"], ["gate"], name="gate"),
             helper.make_node("Mul", ["x", "gate"], ["y"], name="scale"),
             helper.make_node("Conv", ["y", "w2"], ["other"], name="not_se")]
    path = _save(tmp_path / "se.onnx", nodes[:-1], inits, [1, 4, 3, 3], ["y"])
    assert g.squeeze_excite_nodes(path) == {"pool", "fc1", "act", "fc2", "gate"}
    plain = _save(tmp_path / "plain.onnx", [helper.make_node("HardSigmoid", ["x"], ["h"], name="h"),
                                            helper.make_node("Mul", ["x", "h"], ["y"], name="m")], [], [1, 4, 3, 3], ["y"])
    assert g.squeeze_excite_nodes(plain) == set()  # a gate with no pool before it is no squeeze-excite


def test_pre_processing_puts_hardswish_back(tmp_path: Path) -> None:
    inits = [numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("HardSigmoid", ["c"], ["h"], alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["c", "h"], ["y"])]
    src = _save(tmp_path / "src.onnx", nodes, inits, [1, 2, 2, 2], ["y"], opset=17)
    g.preprocess(src, tmp_path / "pre.onnx")
    ops = _ops(tmp_path / "pre.onnx")
    assert "HardSwish" in ops and "HardSigmoid" not in ops
    assert all(n.name for n in onnx.load(str(tmp_path / "pre.onnx")).graph.node)  # every node named: exclusion is by name
    x = {"x": np.linspace(-4, 4, 8, dtype=np.float32).reshape(1, 2, 2, 2)}
    np.testing.assert_allclose(_run(tmp_path / "pre.onnx", x)[0], _run(src, x)[0], atol=1e-6)


def test_output_step_of_a_dequantized_output_and_of_a_conv(tmp_path: Path) -> None:
    w = np.array([[[[3.0]], [[4.0]]], [[[1.0]], [[0.0]]]], np.float32)  # rows of norm 5 and 1
    inits = [*SCALES, numpy_helper.from_array(np.round(w / 0.5).astype(np.int8), "w_q"),
             numpy_helper.from_array(np.array([0.5, 0.5], np.float32), "w_s"), numpy_helper.from_array(np.zeros(2, np.int8), "w_z")]
    nodes = [*_qdq("x", "xq"), helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0, name="w_dq"),
             helper.make_node("Conv", ["xq", "w"], ["y"], name="conv"), helper.make_node("Flatten", ["xq"], ["direct"])]
    path = _save(tmp_path / "m.onnx", nodes, inits, [1, 2, 1, 1], ["y", "direct"])
    assert g.output_steps(path) == pytest.approx({"y": 0.1 * 5.0, "direct": 0.1})


def test_tensor_stats_are_per_channel(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["r"], name="relu")], [], [1, 2, 1, 2], ["r"])
    x = np.array([[[[1, 3]], [[-1, 2]]], [[[5, 7]], [[-4, -2]]]], np.float32)
    stats = qdq_stats.tensor_stats(path, {"r": 1, "x": 1}, iter([{"x": x[:1]}, {"x": x[1:]}]))
    np.testing.assert_allclose(stats["r"]["mean"], [4.0, 0.5])
    np.testing.assert_allclose(stats["x"]["absmax"], [7.0, 4.0])


def test_bias_correction_cancels_the_rounding_shift(tmp_path: Path) -> None:
    """A 1x1 conv on constant inputs: the weights' rounding shifts its output by (W_q - W) . E[x]
    exactly, so after correction the INT8-weight graph computes the float output again."""
    w = np.array([[[[0.33]], [[-0.71]]]], np.float32)
    scale = np.array([0.25], np.float32)
    bias = numpy_helper.from_array(np.array([0.1], np.float32), "b")
    float_path = _save(tmp_path / "f.onnx", [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")],
                       [numpy_helper.from_array(w, "w"), bias], [1, 2, 1, 1], ["y"])
    q_inits = [bias, numpy_helper.from_array(np.round(w / 0.25).astype(np.int8), "w_q"),
               numpy_helper.from_array(scale, "w_s"), numpy_helper.from_array(np.zeros(1, np.int8), "w_z")]
    qdq_path = _save(tmp_path / "q.onnx", [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0, name="w_dq"),
                                           helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")], q_inits, [1, 2, 1, 1], ["y"])
    x = {"x": np.array([2.0, 3.0], np.float32).reshape(1, 2, 1, 1)}
    before = float(abs(_run(qdq_path, x)[0] - _run(float_path, x)[0]).max())
    shifts = qdq_stats.bias_correction(qdq_path, float_path, iter([x, x]))
    assert set(shifts) == {"conv"} and before > 0.05
    np.testing.assert_allclose(_run(qdq_path, x)[0], _run(float_path, x)[0], atol=1e-6)
