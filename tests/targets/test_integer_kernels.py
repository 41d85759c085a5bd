"""An INT8 build must run integer kernels: each runtime says how many weighted layers it runs in
integers, and a build that quietly computes in float fails (its outputs alone could pass parity)."""

from __future__ import annotations

import json

import pytest

from edgekit.artifact import Artifact
from edgekit.build import build, check_integer_kernels, load_built
from edgekit.errors import ParityError


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_int8_builds_run_integer_layers(digits_int8: Artifact, target: str) -> None:
    built = build(digits_int8, target, "int8")
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
