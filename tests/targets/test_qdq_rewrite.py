"""The build-time rewrites of the portable QDQ graph are exact: each small graph here runs on ONNX
Runtime's reference kernels before and after, and the outputs must match."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.targets.qdq_rewrite import rewrite


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def _save(tmp_path: Path, nodes: list, inits: list, inputs: list, outputs: list) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _qdq(name: str, src: str) -> list:
    return [helper.make_node("QuantizeLinear", [src, "s", "z"], [f"{name}_q"], name=f"{name}_q"),
            helper.make_node("DequantizeLinear", [f"{name}_q", "s", "z"], [name], name=f"{name}_dq")]


@pytest.mark.parametrize(("constant", "to_u8"), [(-0.5, 0), (0.5, 1)])
def test_a_relu_plus_a_constant_is_u8_only_when_never_negative(tmp_path: Path, constant: float, to_u8: int) -> None:
    """Relu(x) - 0.5 is negative where x <= 0.5: its quantizer must stay S8 (U8 clamps to 0); Relu(x) +
    0.5 never is, so the exact U8 form applies."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.full((1, 4), constant, np.float32), "c")]
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "c"], ["a"]), *_qdq("y", "a")]
    path = _save(tmp_path, nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    counts = rewrite(path, tmp_path / "u8.onnx", ("nonnegative_to_u8",))
    x = {"x": np.array([[-1.0, 0.0, 0.25, 3.0]], np.float32)}
    np.testing.assert_array_equal(_run(tmp_path / "u8.onnx", x)[0], _run(path, x)[0])
    assert counts["nonnegative_to_u8"] == to_u8


def test_fold_float_weights_keeps_a_dequantized_weight_that_is_a_graph_output(tmp_path: Path) -> None:
    """A float Conv's weight DQ is folded into a float initializer; when the DQ's output is also a graph
    output, that output is still produced, with the same values."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (2, 1, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.array([0.01, 0.02], np.float32), "w_s"),
             numpy_helper.from_array(np.zeros(2, np.int8), "w_z")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0, name="w_dq"),
             helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    path = _save(tmp_path, nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3]),
                  helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 1, 3, 3])])
    counts = rewrite(path, tmp_path / "f.onnx", ("fold_float_weights",))
    assert counts["fold_float_weights"] == 1
    x = {"x": rng.random((1, 1, 5, 5), dtype=np.float32)}
    before, after = _run(path, x), _run(tmp_path / "f.onnx", x)
    assert len(after) == 2
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("second_scale", "folded"), [(0.05, 1), (0.04, 0)])
def test_a_requantization_after_maxpool_with_the_same_scale_is_dropped(tmp_path: Path, second_scale: float,
                                                                      folded: int) -> None:
    """Q -> DQ -> MaxPool -> Q -> DQ with one scale: the second pair changes nothing and goes (exact);
    with another scale it rounds again and stays."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.array(second_scale, np.float32), "s2")]
    nodes = [*_qdq("a", "x"), helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["p", "s2", "z"], ["pq"], name="p_q"),
             helper.make_node("DequantizeLinear", ["pq", "s2", "z"], ["pd"], name="p_dq"),
             helper.make_node("Relu", ["pd"], ["y"])]
    path = _save(tmp_path, nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    counts = rewrite(path, tmp_path / "f.onnx", ("fold_passthrough_pairs",))
    assert counts["fold_passthrough_pairs"] == folded
    x = {"x": np.random.default_rng(0).normal(size=(1, 2, 4, 4)).astype(np.float32)}
    np.testing.assert_array_equal(_run(tmp_path / "f.onnx", x)[0], _run(path, x)[0])
    quantizers = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(tmp_path / "f.onnx")).graph.node)
    assert quantizers == 2 - folded
