"""The external-data rule shared by `edgekit import` and the device runtime, read without onnx."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data

from edgekit import external_data
from edgekit.errors import ArtifactError


def _model(tmp_path: Path, location: str) -> Path:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph)
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path))
    model = onnx.load(str(path), load_external_data=False)
    for e in model.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = location
    onnx.save_model(model, str(path))
    return path


def test_a_file_beside_the_model_is_inside(tmp_path: Path) -> None:
    path = _model(tmp_path, "w.bin")
    assert external_data.locations(path) == ["w.bin"]
    assert external_data.outside(path) is None
    assert external_data.outside(path, allowed={"w.bin", "m.onnx"}) is None
    assert external_data.outside(path, allowed={"m.onnx"}) == "w.bin"  # a bundle lists every file it holds


@pytest.mark.parametrize("location", ["../w.bin", "/etc/passwd", "missing.bin", "", "sub\\..\\..\\w.bin"])
def test_anything_else_is_outside(tmp_path: Path, location: str) -> None:
    (tmp_path / "w.bin").write_bytes(b"\0" * 64)
    inner = tmp_path / "inner"
    inner.mkdir()
    path = _model(inner, location)
    assert external_data.outside(path) == location


def test_a_model_without_external_data_has_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save_model(helper.make_model(graph), str(path))
    assert external_data.locations(path) == [] and external_data.outside(path) is None


def test_garbage_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x0f\xff\xff\xff\xff")
    with pytest.raises(ArtifactError, match="not a valid ONNX file"):
        external_data.locations(path)
