"""qat: the QDQ graph trained in torch is the QDQ graph; it recovers a post-training drop; the
stored graph computes what was trained and builds everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.artifact import Artifact
from edgekit.compress import compress


def _recipe(tmp_path: Path, name: str, steps: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nsteps:\n{steps}")
    return str(path)


def _test_top1(art: Artifact) -> float:
    from edgekit.data import resolve_source
    from edgekit.evaluate import predict_qdq

    x, y = resolve_source("digits")("test")
    assert art.onnx_path is not None and y is not None
    return float((predict_qdq(art.onnx_path, x).argmax(1) == y).mean())


def test_the_graph_torch_trains_is_the_qdq_graph(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """QdqGraph (the QDQ graph run by torch, weights as float parameters) gives the QDQ graph's own
    outputs: its difference to ONNX Runtime's reference kernels is a tiny fraction of INT8's error."""
    import torch

    from edgekit.data import resolve_source
    from edgekit.evaluate import predict_onnx, predict_qdq
    from edgekit.steps.qdq_torch import QdqGraph

    art = compress(digits_ckpt, _recipe(tmp_path, "nobc", "  - kind: quantize\n    bias_correction: false\n"), out=tmp_path / "q")
    assert art is not None and art.onnx_path is not None
    x = resolve_source("digits")("test")[0]["input"]
    q = predict_qdq(art.onnx_path, {"input": x})
    f = predict_onnx(art.path / "reference.onnx", {"input": x})
    model = QdqGraph(onnx.load(str(art.onnx_path)), onnx.load(str(art.path / "reference.onnx")))
    assert sum(k.startswith("w") for k in model.trained) == art.manifest.metrics["quantize"]["quantized_layers"]
    with torch.no_grad():
        e = model(torch.from_numpy(x)).numpy()
    # torch and ONNX Runtime accumulate convolutions in other orders, so a value at a rounding tie may
    # land one step apart: 1.7e-3 on x86-avx512-vnni, under 1e-3 on x86-amx
    assert ((e - q) ** 2).mean() < 5e-3 * ((f - q) ** 2).mean()
    assert (e.argmax(1) == q.argmax(1)).mean() >= 0.997


@pytest.mark.slow
def test_qat_recovers_a_post_training_drop(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """Ranges deliberately tight (percentile 95 clips the top 5 % of every activation): post-training
    INT8 loses >= 1 point on test; qat with the same ranges brings it back near FP32, the stored graph
    computes what qat trained, passes TensorRT's QDQ rules and builds with parity on both CPU targets."""
    from edgekit.build import build
    from edgekit.steps.qdq_check import check_file

    fp32 = digits_ckpt.manifest.metrics["test"]["top1"]
    ptq = compress(digits_ckpt, _recipe(tmp_path, "tight", "  - kind: quantize\n    percentile: 95\n"), out=tmp_path / "ptq")
    qat = compress(digits_ckpt, _recipe(tmp_path, "tight-qat", "  - kind: qat\n    percentile: 95\n  - kind: quantize\n"),
                   out=tmp_path / "qat")
    assert ptq is not None and qat is not None
    assert fp32 - _test_top1(ptq) >= 0.01, (fp32, _test_top1(ptq))
    assert fp32 - _test_top1(qat) <= 0.006, (fp32, _test_top1(qat))  # 360 test images: at most 2 more wrong
    metrics = qat.manifest.metrics
    assert metrics["quantize"]["ranges"] == "qat" and metrics["quantize"]["bias_correction"] is False
    assert abs(metrics["qat"]["val_int8"] - metrics["quantize"]["int8_val"]) <= 1 / 359  # what was trained is stored
    assert metrics["qat"]["val_int8"] > metrics["qat"]["val_int8_before"]
    assert check_file(qat.path / "model.onnx") == []
    for target in ("onnxruntime", "openvino"):
        built = build(qat, target, "int8", placement="int8" if target == "onnxruntime" else "latency")
        assert built is not None and built.manifest.metrics["parity"]["integer_layers"] > 0


@pytest.mark.parametrize(("steps", "needle"), [
    ("  - kind: qat\n", "right before the quantize step"),
    ("  - kind: qat\n  - kind: prune\n  - kind: quantize\n", "right before the quantize step"),
    ("  - kind: qat\n  - kind: quantize\n    profile: cpu\n", "profile: portable"),
])
def test_qat_recipe_rules(tmp_path: Path, steps: str, needle: str) -> None:
    from edgekit.errors import RecipeError
    from edgekit.recipe import load_recipe

    with pytest.raises(RecipeError, match=needle):
        load_recipe(_recipe(tmp_path, "bad", steps))


def test_builtin_int8_qat_recipe_runs(digits_ckpt: Artifact, tmp_path: Path) -> None:
    art = compress(digits_ckpt, "int8-qat", out=tmp_path / "q")
    assert art is not None and art.manifest.quantized
    assert art.manifest.metrics["qat"]["epochs"] == 3
    assert np.isclose(_test_top1(art), art.manifest.metrics["test"]["top1"])
