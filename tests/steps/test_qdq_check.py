"""The TensorRT QDQ rule checker: a passing graph, and one failing graph per rule."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.steps.qdq_check import check_qdq


def graph(*, zp_dtype=np.int8, zp_value=0, w_axis=0, bias_int32=False, float_weight=False, q_scale=0.02,
          dq_scale=0.02, consumer="Conv", extra_q_user=False) -> onnx.ModelProto:
    w = np.random.default_rng(0).integers(-127, 127, size=(4, 3, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(q_scale, np.float32), "xs"),
        numpy_helper.from_array(np.array(dq_scale, np.float32), "xs2"),
        numpy_helper.from_array(np.array(zp_value, zp_dtype), "xz"),
        numpy_helper.from_array(np.full(4 if w_axis == 0 else 3, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(4 if w_axis == 0 else 3, np.int8), "wz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "xs2", "xz"], ["xdq"], name="dq_x"),
    ]
    if float_weight:
        inits.append(numpy_helper.from_array(w.astype(np.float32), "w"))
        wname = "w"
    else:
        inits.append(numpy_helper.from_array(w, "wq"))
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w_dq"], name="dq_w", axis=w_axis))
        wname = "w_dq"
    if bias_int32:
        inits += [numpy_helper.from_array(np.zeros(4, np.int32), "bq"), numpy_helper.from_array(np.full(4, 2e-4, np.float32), "bs"),
                  numpy_helper.from_array(np.zeros(4, np.int32), "bz")]
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["b"], name="dq_b", axis=0))
    else:
        inits.append(numpy_helper.from_array(np.zeros(4, np.float32), "b"))
    if consumer == "Conv":
        nodes.append(helper.make_node("Conv", ["xdq", wname, "b"], ["y"], name="conv", pads=[1, 1, 1, 1]))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    else:
        nodes.append(helper.make_node(consumer, ["xdq"], ["y"], name="other"))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    if extra_q_user:
        nodes.append(helper.make_node("Identity", ["xq"], ["leak"], name="leak"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])], [out], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def rules(model: onnx.ModelProto) -> set[str]:
    return {v.rule for v in check_qdq(model)}


def test_portable_graph_passes() -> None:
    assert check_qdq(graph()) == []


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"zp_dtype": np.uint8, "zp_value": 128}, "int8"),
        ({"zp_value": 3}, "zero-point"),
        ({"w_axis": 1}, "per-channel-axis"),
        ({"bias_int32": True}, "float-bias"),
        ({"float_weight": True}, "int8-weights"),
        ({"dq_scale": 0.05}, "placement"),
        ({"consumer": "LayerNormalization"}, "placement"),
        ({"extra_q_user": True}, "placement"),
        ({"q_scale": -0.02, "dq_scale": -0.02}, "scale"),
    ],
)
def test_each_rule_has_a_failing_graph(kwargs: dict, rule: str) -> None:
    assert rule in rules(graph(**kwargs))
