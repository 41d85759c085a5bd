"""rounding: adaround re-rounds INT8 weights so each layer's output stays closest to float: on one
layer its held-out output error falls below nearest rounding's, and on a trained model the QDQ graph
keeps its form (only INT8 weight values change) with a smaller output error than nearest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.artifact import Artifact
from edgekit.compress import compress
from edgekit.steps.adaround import adaround


def _conv_pair(tmp_path: Path, w: np.ndarray, group: int) -> tuple[Path, Path]:
    """A float conv and its QDQ graph (symmetric per-channel INT8 weight, nearest; S8 input, scale 1/32)."""
    scale = np.abs(w).reshape(w.shape[0], -1).max(1) / 127
    q = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, w.shape[1] * group, 6, 6])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    attrs = {"group": group, "pads": [1, 1, 1, 1]}
    f_graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)], "f", [x_info], [y_info],
                                [numpy_helper.from_array(w, "w")])
    inits = [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(scale.astype(np.float32), "w_s"),
             numpy_helper.from_array(np.zeros(w.shape[0], np.int8), "w_z"),
             numpy_helper.from_array(np.array(1 / 32, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="x_q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="x_dq"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], axis=0, name="w_dq"),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", **attrs)]
    q_graph = helper.make_graph(nodes, "q", [x_info], [y_info], inits)
    paths = tmp_path / "f.onnx", tmp_path / "q.onnx"
    for graph, path in zip((f_graph, q_graph), paths, strict=True):
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return paths


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    from edgekit.onnx_graph import cpu_session

    return np.asarray(cpu_session(path).run(["y"], {"x": x})[0])


@pytest.mark.parametrize("group", [1, 2, 4])
def test_one_layer_output_error_falls_on_held_out_inputs(tmp_path: Path, group: int) -> None:
    """A dense, a grouped and a depthwise 3x3 conv, inputs with a per-channel offset (so rounding errors do not
    average out): the re-rounded weights give a lower output error than nearest on inputs it never saw,
    and only the INT8 weight values changed."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 4 // group, 3, 3)) * 0.3).astype(np.float32)
    f_path, q_path = _conv_pair(tmp_path, w, group)
    offset = rng.uniform(0.5, 2.0, (1, 4, 1, 1)).astype(np.float32)

    def inputs(n: int, seed: int) -> np.ndarray:
        return (np.random.default_rng(seed).standard_normal((n, 4, 6, 6)) * 0.5 + offset).astype(np.float32)

    held_out = inputs(64, 99)
    before = float(((_run(q_path, held_out) - _run(f_path, held_out)) ** 2).mean())
    nearest = numpy_helper.to_array(onnx.load(str(q_path)).graph.initializer[0]).copy()
    report = adaround(q_path, f_path, iter([{"x": inputs(32, s)} for s in range(4)]), iterations=300)
    after = float(((_run(q_path, held_out) - _run(f_path, held_out)) ** 2).mean())
    assert set(report) == {"conv"} and report["conv"]["mse_adaround"] < report["conv"]["mse_nearest"]
    assert after < 0.9 * before, (before, after)
    model = onnx.load(str(q_path))
    chosen = numpy_helper.to_array(model.graph.initializer[0])
    assert chosen.dtype == np.int8 and chosen.shape == nearest.shape and (chosen != nearest).any()
    assert np.abs(chosen.astype(int) - nearest).max() == 1  # one step up or down, never further
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "Conv"]


@pytest.mark.slow
def test_adaround_recipe_on_a_trained_model(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """On the digits CNN: the same QDQ graph structure as nearest rounding (TensorRT-portable: the step
    checks it), a smaller output error against float on the test split, and the rounding recorded."""
    from edgekit.data import match_inputs, resolve_source
    from edgekit.evaluate import predict_onnx, predict_qdq

    arts = {}
    for name, option in (("nearest", "rounding: nearest"), ("adaround", "rounding: adaround")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\nsteps:\n  - kind: quantize\n    bias_correction: false\n    {option}\n")
        art = compress(digits_ckpt, str(path), out=tmp_path / name)
        assert art is not None
        arts[name] = art
    x_raw, _ = resolve_source("digits")("test")
    x = match_inputs(x_raw, digits_ckpt.io)
    ref = predict_onnx(arts["nearest"].path / "reference.onnx", x)
    err = {k: float(((predict_qdq(a.onnx_path, x) - ref) ** 2).mean()) for k, a in arts.items()}
    assert err["adaround"] < 0.95 * err["nearest"], err
    graphs = {k: onnx.load(str(a.onnx_path)).graph for k, a in arts.items()}
    assert [n.op_type for n in graphs["adaround"].node] == [n.op_type for n in graphs["nearest"].node]
    note = arts["adaround"].manifest.metrics["quantize"]
    assert note["rounding"] == "adaround" and len(note["rounding_mse"]) == note["quantized_layers"]
