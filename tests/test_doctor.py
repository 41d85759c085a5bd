"""edgekit doctor, runtime-module imports, parity failures, torchvision models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.artifact import Artifact
from edgekit.errors import ParityError

from .conftest import env, run_cli


def test_doctor_reports_every_target_with_install_hints(tmp_path: Path) -> None:
    res = run_cli("doctor", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    checks = {c["component"]: c for c in json.loads(res.out)}
    for target in ("onnxruntime", "openvino", "tensorrt"):
        assert f"target {target}" in checks
    assert checks["target onnxruntime"]["status"] == "ok" and "CPUExecutionProvider" in checks["target onnxruntime"]["detail"]
    assert checks["target openvino"]["status"] == "ok" and "CPU" in checks["target openvino"]["detail"]
    trt = checks["target tensorrt"]
    assert trt["status"] in ("missing", "unavailable") and "pip install" in trt["install"]
    assert checks["torch"]["status"] == "ok"


@pytest.mark.parametrize("module", ["edgekit.targets.onnxruntime", "edgekit.targets.openvino", "edgekit.targets.tensorrt",
                                    "edgekit.runtime"])
def test_runtime_modules_import_no_torch_or_onnx(module: str) -> None:
    """The bundle runtime reuses these classes on devices that have neither torch nor onnx."""
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'onnx', 'torch_pruning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_parity_miss_is_exit_4_and_writes_nothing(digits_ckpt: Artifact, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit import build as build_mod

    monkeypatch.setitem(build_mod.TOLERANCE, "fp32", 0.0)
    plan = build_mod.plan(digits_ckpt, "openvino", "fp32", hint="throughput")
    assert not plan.out.exists()
    with pytest.raises(ParityError) as info:
        build_mod.build(digits_ckpt, "openvino", "fp32", hint="throughput")
    assert info.value.exit_code == 4 and "differs from torch" in info.value.message
    assert not plan.out.exists()


@pytest.mark.torchvision
def test_torchvision_model(tmp_path: Path) -> None:
    pytest.importorskip("torchvision", reason="torchvision lives in the optional environment only")
    res = run_cli("import", "torchvision:resnet18", "--model-kwargs", '{"num_classes": 10}', "--input",
                  "input:batch,3,64,64:float32", "--out", "runs/tv", cwd=tmp_path)
    assert res.code == 0, res.err
    assert Artifact.load(tmp_path / "runs/tv").manifest.model.source == "torchvision:resnet18"


def test_torchvision_missing_is_clear(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    res = run_cli("import", "torchvision:resnet18", "--input", "input:batch,3,64,64:float32", cwd=tmp_path)
    assert res.code == 2 and "torchvision is not installed" in res.err


@pytest.mark.parametrize("init", [
    "raise OSError('libnvinfer.so.10: cannot open shared object file: No such file or directory')",
    "raise ImportError('libcudart.so.12: cannot open shared object file')",
    "",  # a package with no runtime in it (stubs, a half-removed install)
    "class Builder: pass\n__version__ = '10.13.0'",  # the runtime's names, a cuda-python that does not load
])
def test_doctor_on_a_partial_tensorrt_install(tmp_path: Path, init: str) -> None:
    """A TensorRT that imports badly or only in part is 'unavailable' with the reason, not an internal error."""
    fake = tmp_path / "site"
    (fake / "tensorrt").mkdir(parents=True)
    (fake / "tensorrt" / "__init__.py").write_text(init + "\n")
    (fake / "cuda" / "bindings").mkdir(parents=True)  # found by find_spec, but has no runtime module
    (fake / "cuda" / "__init__.py").write_text("")
    (fake / "cuda" / "bindings" / "__init__.py").write_text("")
    res = run_cli("doctor", "--json", cwd=tmp_path, PYTHONPATH=os.pathsep.join([str(fake), env()["PYTHONPATH"]]))
    assert res.code == 0, res.err
    trt = {c["component"]: c for c in json.loads(res.out)}["target tensorrt"]
    assert trt["status"] == "unavailable", trt
    assert "pip install" in trt["install"], trt
    if "libnvinfer" in init:
        assert "libnvinfer" in trt["detail"]
    if "Builder" in init:
        assert "cuda-python" in trt["detail"]
