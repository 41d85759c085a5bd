"""One contract, written once, run against every target (STYLE.md #10).

Each subclass names a target; where the target cannot run here its tests skip with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.artifact import Artifact
from edgekit.build import build
from edgekit.errors import BadInputError, EdgekitError
from edgekit.targets.base import Baseline, Runtime, Target
from edgekit.targets.catalog import CATALOG, load_baseline, load_target


def test_every_catalog_target_is_a_target() -> None:
    """Statically (mypy checks this file): each class the catalog names has the Target protocol's
    methods with its signatures; and the catalog names exactly these."""
    from edgekit.targets.onnxruntime import OnnxRuntimeTarget
    from edgekit.targets.openvino import OpenVinoTarget
    from edgekit.targets.tensorrt import TensorRtTarget
    from edgekit.targets.torch import TorchTarget

    compiling: list[type[Target]] = [OnnxRuntimeTarget, OpenVinoTarget, TensorRtTarget]
    baseline: list[type[Baseline]] = [TorchTarget]  # the one exception: it runs the module, builds nothing
    assert {f"{c.__module__}:{c.__name__}" for c in compiling} == {i.implementation for i in CATALOG.values() if i.compiles}
    assert {f"{c.__module__}:{c.__name__}" for c in baseline} == {i.implementation for i in CATALOG.values() if not i.compiles}


def _unavailable(name: str) -> str | None:
    target = load_baseline(CATALOG[name])
    try:
        target.check(next(iter(CATALOG[name].devices)))
    except EdgekitError as exc:
        return exc.message
    return None


@pytest.fixture(scope="session")
def two_input_ckpt(workdir: Path) -> Artifact:
    from edgekit.importer import import_model
    from edgekit.iospec import InputSpec

    return import_model("userzoo:two_input", out=workdir / "runs" / "two-input",
                        inputs=[InputSpec(name="left", dims=["batch", 6]), InputSpec(name="right", dims=["batch", 4])])


class TargetContract:
    target: str

    @pytest.fixture(autouse=True)
    def _skip_unavailable(self) -> None:
        reason = _unavailable(self.target)
        if reason:
            pytest.skip(f"{self.target} cannot run here: {reason}")

    def runtime(self, built: Artifact | None) -> Runtime:
        assert built is not None and built.manifest.target is not None
        target = load_target(CATALOG[self.target])
        return target.load(built.path, built.manifest.target, threads=2)

    def test_fp32_build_matches_torch(self, digits_ckpt: Artifact) -> None:
        built = build(digits_ckpt, self.target, "fp32")
        assert built is not None and built.kind == "built"
        rec = built.manifest.target
        assert rec is not None and rec.name == self.target
        assert rec.precision == "fp32", "a row called fp32 must run f32"
        parity = built.manifest.metrics["parity"]
        assert parity["reference"] == "torch" and parity["samples"] == "real"
        assert parity["max_error"] <= 1e-4

    def test_dynamic_batch_from_one_build(self, digits_ckpt: Artifact) -> None:
        built = build(digits_ckpt, self.target, "fp32")
        rt = self.runtime(built)
        x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
        whole = rt.infer({"input": x})["output"]
        ones = np.concatenate([rt.infer({"input": x[i : i + 1]})["output"] for i in range(8)])
        assert whole.shape == (8, 10)
        np.testing.assert_allclose(whole, ones, rtol=1e-4, atol=1e-5)

    def test_build_is_cached(self, digits_ckpt: Artifact) -> None:
        first = build(digits_ckpt, self.target, "fp32")
        second = build(digits_ckpt, self.target, "fp32")
        assert first is not None and second is not None
        assert first.path == second.path and first.sha256 == second.sha256

    def test_two_named_inputs_and_outputs(self, two_input_ckpt: Artifact) -> None:
        built = build(two_input_ckpt, self.target, "fp32")
        assert built is not None
        rt = self.runtime(built)
        rng = np.random.default_rng(1)
        out = rt.infer({"left": rng.random((3, 6), dtype=np.float32), "right": rng.random((3, 4), dtype=np.float32)})
        assert set(out) == {o.name for o in two_input_ckpt.io.outputs}
        assert built.manifest.metrics["parity"]["max_error"] <= 1e-4

    def test_int8_needs_a_qdq_artifact(self, digits_ckpt: Artifact) -> None:
        with pytest.raises(BadInputError, match="--recipe int8"):
            build(digits_ckpt, self.target, "int8")

    def test_unsupported_op_is_named(self, tmp_path: Path) -> None:
        import onnx
        from onnx import TensorProto, helper

        from edgekit.importer import import_model

        node = helper.make_node("FancyRelu", ["x"], ["y"], domain="com.example")
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
        onnx.save(model, str(tmp_path / "fancy.onnx"))
        art = import_model(str(tmp_path / "fancy.onnx"), out=tmp_path / "fancy")
        with pytest.raises(BadInputError, match="FancyRelu"):
            build(art, self.target, "fp32")


class TestOnnxRuntime(TargetContract):
    target = "onnxruntime"


class TestOpenVino(TargetContract):
    target = "openvino"

    def test_bf16_is_its_own_precision(self, digits_ckpt: Artifact) -> None:
        import openvino as ov

        if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            pytest.skip("this CPU has no bf16")
        built = build(digits_ckpt, self.target, "bf16")
        assert built is not None and built.manifest.target is not None
        assert built.manifest.target.precision == "bf16"
        assert built.manifest.metrics["parity"]["max_error"] <= 6e-2


@pytest.mark.tensorrt
class TestTensorRt(TargetContract):
    target = "tensorrt"
