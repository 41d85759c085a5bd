"""The CPU as a fact: kinds from /proc/cpuinfo text, what doctor says, and the INT8 re-expressions
that keep every CPU kind right (exact against the QDQ graph)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.artifact import Artifact
from edgekit.cpu import classify, detect, parse_cpuinfo

from .conftest import run_cli

EPYC_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse4_1 sse4_2 avx f16c avx2 fma\n"
ICELAKE = "model name\t: Intel(R) Xeon(R) Platinum 8375C\nflags\t: sse4_1 avx2 avx512f avx512bw avx512_vnni\n"
SKYLAKE = "model name\t: Intel(R) Xeon(R) Gold 6148\nflags\t: sse4_1 avx2 avx512f avx512bw\n"
ALDER = "model name\t: 12th Gen Intel(R) Core(TM) i7\nflags\t: sse4_1 avx2 avx_vnni\n"
SAPPHIRE = "model name\t: Intel(R) Xeon(R) 8480+\nflags\t: avx2 avx512f avx512_vnni amx_int8 amx_bf16\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics asimddp\nCPU implementer\t: 0x41\n"
PI3 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"


@pytest.mark.parametrize(("text", "arch", "kind", "saturates"), [
    (EPYC_AVX2, "x86_64", "x86-avx2", True),
    (SKYLAKE, "x86_64", "x86-avx512", True),
    (ICELAKE, "x86_64", "x86-avx512-vnni", False),
    (ALDER, "x86_64", "x86-avx-vnni", False),
    (SAPPHIRE, "x86_64", "x86-amx", False),
    (GRAVITON2, "aarch64", "aarch64-dotprod", False),
    (PI3, "aarch64", "aarch64", False),
])
def test_kinds_from_cpuinfo(text: str, arch: str, kind: str, saturates: bool) -> None:
    info = parse_cpuinfo(text, arch)
    assert info.kind == kind and info.u8s8_saturates is saturates
    assert info.record()["kind"] == kind and set(info.targets()) == {"onnxruntime", "openvino", "tensorrt"}
    assert "saturate" in info.meaning or not saturates


def test_unknown_arch_is_unknown() -> None:
    assert classify("riscv64", {"avx2"}) == "unknown"


def test_doctor_reports_the_cpu_kind_and_what_it_means_per_target() -> None:
    res = run_cli("doctor", "--json")
    assert res.code == 0, res.err
    checks = {c["component"]: c for c in json.loads(res.out)}
    assert checks["cpu"]["detail"].startswith(detect().kind)
    assert "x64quantprecision" in checks["int8 on onnxruntime"]["detail"] or not detect().u8s8_saturates
    assert "int8 on openvino" in checks


def _reference(path: Path, x: dict[str, np.ndarray], precise: bool | None = None) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if precise is None
                                     else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if precise:
        opts.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, x)[0]


@pytest.mark.parametrize("steps", [("fold_relu_pairs", "nonnegative_to_u8", "u8_to_7bit"),
                                   ("fold_relu_pairs", "nonnegative_to_u8", "u8_to_7bit", "wide_layers_float")])
def test_openvino_safe_rewrites_are_exact(digits_int8: Artifact, tmp_path: Path, steps: tuple[str, ...]) -> None:
    """u8 kept to 0..127 and signed-input layers in float compute exactly what the QDQ graph does."""
    from edgekit.data import resolve_source
    from edgekit.targets.qdq_rewrite import rewrite

    x, _ = resolve_source("digits")("test")
    assert digits_int8.onnx_path is not None
    counts = rewrite(digits_int8.onnx_path, tmp_path / "r.onnx", steps)
    assert counts["u8_to_7bit"] > 0
    if "wide_layers_float" in steps:
        assert counts["wide_layers_float"] >= 1  # the first conv reads the normalised (signed) image
    a, b = _reference(digits_int8.onnx_path, x), _reference(tmp_path / "r.onnx", x)
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(a).max()))


def test_u8_to_7bit_clips_what_u8_alone_would_not(tmp_path: Path) -> None:
    """A value above the calibrated range: U8 alone keeps up to 255 s, the 7-bit form 127 s (as the
    portable S8 graph does)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.targets.qdq_rewrite import rewrite

    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    x = {"x": np.array([[-1.0, 5.0, 12.7, 20.0]], np.float32)}
    rewrite(tmp_path / "m.onnx", tmp_path / "u8.onnx", ("nonnegative_to_u8",))
    rewrite(tmp_path / "m.onnx", tmp_path / "u7.onnx", ("nonnegative_to_u8", "u8_to_7bit"))
    portable = _reference(tmp_path / "m.onnx", x)
    assert _reference(tmp_path / "u8.onnx", x)[0, 3] == pytest.approx(20.0)
    np.testing.assert_allclose(_reference(tmp_path / "u7.onnx", x), portable, atol=1e-6)
    assert portable[0, 3] == pytest.approx(12.7)
    # a quantizer that is U8 in the stored graph (asymmetric profiles) means 0..255: left as it is
    graph.initializer[1].CopyFrom(numpy_helper.from_array(np.array(0, np.uint8), "z"))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "n.onnx"))
    counts = rewrite(tmp_path / "n.onnx", tmp_path / "n7.onnx", ("nonnegative_to_u8", "u8_to_7bit"))
    assert counts == {"nonnegative_to_u8": 0, "u8_to_7bit": 0}
    assert _reference(tmp_path / "n7.onnx", x)[0, 3] == pytest.approx(20.0)


@pytest.mark.skipif(not detect().u8s8_saturates, reason="this CPU has VNNI/AMX or is not x86: u8 x s8 kernels are exact here")
def test_saturating_cpu_needs_the_precision_entry(digits_int8: Artifact, tmp_path: Path) -> None:
    """On AVX2/AVX-512 without VNNI, ONNX Runtime's fused u8 x s8 kernels saturate on this trained model;
    the session entry edgekit sets gives the QDQ graph's own predictions back."""
    from edgekit.data import resolve_source
    from edgekit.targets.qdq_rewrite import rewrite

    x, _ = resolve_source("digits")("test")
    assert digits_int8.onnx_path is not None
    ref = _reference(digits_int8.onnx_path, x)
    path = tmp_path / "ort-int8.onnx"
    rewrite(digits_int8.onnx_path, path, ("fold_relu_pairs", "nonnegative_to_u8", "s8_to_u8"))
    fused = _reference(path, x, precise=False)
    exact = _reference(path, x, precise=True)
    assert (fused.argmax(1) == ref.argmax(1)).mean() < 0.99  # saturation changes predictions
    assert (exact.argmax(1) == ref.argmax(1)).mean() >= 0.99
