"""An INT8 build must run integer kernels: each runtime says how many weighted layers it runs in
integers, and a build that quietly computes in float fails (its outputs alone could pass parity)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.artifact import Artifact
from edgekit.build import build, check_integer_kernels, load_built
from edgekit.errors import ParityError


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_int8_builds_run_integer_layers(digits_int8: Artifact, target: str) -> None:
    # every layer INT8: ONNX Runtime's latency placement may run a layer float where it is faster here
    built = build(digits_int8, target, "int8", placement="int8" if target == "onnxruntime" else "latency")
    assert built is not None
    found = built.manifest.metrics["parity"]["integer_layers"]
    assert isinstance(found, int) and found > 0


def test_a_float_runtime_passed_off_as_int8_is_caught(digits_ckpt: Artifact, digits_int8: Artifact) -> None:
    """The FP32 OpenVINO build of the parent, checked as if it were the INT8 one: 0 integer layers."""
    float_build, int8_build = build(digits_ckpt, "openvino", "fp32"), build(digits_int8, "openvino", "int8")
    assert float_build is not None and int8_build is not None and int8_build.manifest.target is not None
    with pytest.raises(ParityError, match="runs no integer kernels"):
        check_integer_kernels(digits_int8, load_built(float_build), int8_build.manifest.target)
    assert check_integer_kernels(digits_int8, load_built(int8_build), int8_build.manifest.target)


def test_tensorrt_inspector_json_is_counted() -> None:
    from edgekit.targets.tensorrt import count_int8_layers

    info = {"Layers": [
        {"Name": "conv1", "LayerType": "CaskConvolution", "Inputs": [{"Format/Datatype": "Channel major INT8 format / Int8"}],
         "Outputs": [{"Format/Datatype": "Int8"}]},
        {"Name": "q", "LayerType": "Reformat", "Inputs": [{"Format/Datatype": "Float"}], "Outputs": [{"Format/Datatype": "Int8"}]},
        {"Name": "fc", "LayerType": "CaskGemm", "Inputs": [{"Format/Datatype": "Float"}], "Outputs": [{"Format/Datatype": "Float"}]},
    ]}
    assert count_int8_layers(json.dumps(info)) == 1
    assert count_int8_layers("not json") == 0


class _Offset:
    """A real INT8 runtime whose first output is moved by ``by`` (what a target rounding differently
    from the QDQ graph does, in a controlled amount)."""

    def __init__(self, runtime: object, output: str, by: float) -> None:
        self.runtime, self.output, self.by = runtime, output, by

    def infer(self, inputs: dict) -> dict:  # type: ignore[type-arg]
        out = dict(self.runtime.infer(inputs))  # type: ignore[attr-defined]
        out[self.output] = out[self.output] + np.float32(self.by)
        return out


def test_output_step_of_a_dequantized_gemm(tmp_path: Path) -> None:
    """scale_x * ||w_j||_2 for Gemm(DQ(x), DQ(w)); the DQ's scale for an output read from a DQ;
    nothing for an output behind a Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.steps.qdq_graph import output_steps

    w = np.array([[3, 4], [0, 1], [0, 0]], np.int8)  # (in 3, out 2): column norms 5 and sqrt(17)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (np.array(0.5, np.float32), "sx"), (np.array(0, np.int8), "zx"), (w, "w"),
        (np.array(0.1, np.float32), "sw"), (np.array(0, np.int8), "zw"), (np.zeros(2, np.float32), "b"))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["y"]),
             helper.make_node("Softmax", ["y"], ["p"])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "p", "xd")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])], outs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    steps = output_steps(tmp_path / "m.onnx")
    assert steps == pytest.approx({"y": 0.5 * 0.1 * np.sqrt(17.0), "xd": 0.5})
    assert "p" not in steps


def test_int8_parity_is_tied_to_the_output_step(digits_int8: Artifact) -> None:
    """A build 10 quantization steps off the QDQ graph fails (the old relative floor of 0.1 passed it);
    2 steps off passes, and the record says how many steps each output was off and the bound."""
    from edgekit.build import (
        INT8_STEPS,
        check_parity,
        parity_samples,
        reference_runtime,
    )
    from edgekit.targets.base import run_batched

    built = build(digits_int8, "onnxruntime", "int8")
    assert built is not None
    step = built.manifest.metrics["parity"]["steps"]["output"]
    ref = run_batched(reference_runtime(digits_int8, "int8")[0], parity_samples(digits_int8)[0], 8)["output"]
    assert 10 * step / max(float(np.abs(ref).max()), 1.0) < 0.1  # the old rule would have passed it
    with pytest.raises(ParityError, match=r"1\d\.\d output steps of"):
        check_parity(digits_int8, _Offset(load_built(built), "output", 10 * step), "int8")  # type: ignore[arg-type]
    ok = check_parity(digits_int8, _Offset(load_built(built), "output", 2 * step), "int8")  # type: ignore[arg-type]
    assert 1.5 <= ok["per_output_steps"]["output"] <= INT8_STEPS
    assert ok["abs_tolerance"]["output"] == pytest.approx(INT8_STEPS * step)  # digits: the steps bound is the larger


def test_verify_judges_int8_outputs_in_steps() -> None:
    from edgekit.verify import compare

    want = {"output": np.zeros((4, 10), np.float32)}
    spec = {"tolerance": 1.0, "abs_tolerance": {"output": 0.4}}  # the relative 1.0 alone would pass 0.45
    assert compare({"output": want["output"] + 0.3}, want, spec, "embedding", "here")["max_error"] > 0
    with pytest.raises(ParityError, match=r"by 0\.45 \(tolerance 0\.4\)"):
        compare({"output": want["output"] + 0.45}, want, spec, "embedding", "here")


def test_layers_a_rewrite_runs_in_float_are_not_expected_as_integer(digits_int8: Artifact) -> None:
    """A placement that keeps all layers but one float, and that one a Conv ONNX Runtime runs in float
    anyway (no quantizer after it): 0 integer kernels is what the build should run, not an error."""
    from edgekit.artifact import TargetRecord

    class NoIntegerKernels:
        def integer_layers(self) -> int:
            return 0

    quantized = digits_int8.manifest.metrics["quantize"]["quantized_layers"]
    record = TargetRecord(name="onnxruntime", device="cpu", precision_requested="int8", precision="int8",
                          runtime_version="x", model_file="model.onnx",
                          options={"rewrites": {"keep_float": quantized - 1, "fold_float_weights": 1}})
    assert check_integer_kernels(digits_int8, NoIntegerKernels(), record) == 0  # type: ignore[arg-type]
    record.options["rewrites"] = {"keep_float": quantized - 1}
    with pytest.raises(ParityError, match="runs no integer kernels"):
        check_integer_kernels(digits_int8, NoIntegerKernels(), record)  # type: ignore[arg-type]
