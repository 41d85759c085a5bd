"""Runtime versions and providers come from what is installed under any distribution name: onnxruntime-gpu (the
package edgekit's own GPU hint names) provides the ``onnxruntime`` module but no ``onnxruntime``
distribution."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from edgekit.artifact import Artifact, installed_version, library_versions

from ..conftest import copy_artifact


@pytest.fixture
def onnxruntime_gpu(monkeypatch: pytest.MonkeyPatch) -> str:
    """The metadata an onnxruntime-gpu install has: no 'onnxruntime' distribution, an 'onnxruntime-gpu' one."""
    real_version, real_map = importlib.metadata.version, importlib.metadata.packages_distributions
    ort_version = real_version("onnxruntime")

    def version(name: str) -> str:
        if name == "onnxruntime":
            raise importlib.metadata.PackageNotFoundError(name)
        return ort_version if name == "onnxruntime-gpu" else real_version(name)

    def packages_distributions() -> dict[str, list[str]]:
        return {**real_map(), "onnxruntime": ["onnxruntime-gpu"]}

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(importlib.metadata, "packages_distributions", packages_distributions)
    return ort_version


def test_versions_under_another_distribution_name(onnxruntime_gpu: str) -> None:
    assert installed_version("onnxruntime") == onnxruntime_gpu
    assert library_versions()["onnxruntime"] == onnxruntime_gpu
    assert installed_version("no-such-library-here") is None


def test_onnxruntime_build_with_onnxruntime_gpu_installed(onnxruntime_gpu: str, digits_ckpt: Artifact, tmp_path: Path) -> None:
    from edgekit.build import build

    art = Artifact.load(copy_artifact(digits_ckpt.path, tmp_path / "a"))
    built = build(art, "onnxruntime", "fp32")
    assert built is not None and built.manifest.target is not None
    assert built.manifest.target.runtime_version == onnxruntime_gpu


@pytest.mark.filterwarnings("ignore:Specified provider")  # ONNX Runtime's own warning of the fallback
def test_a_provider_that_does_not_start_is_not_a_silent_cpu_run(digits_ckpt: Artifact) -> None:
    """ONNX Runtime runs on the next provider when the asked one does not load (here: CUDA on a CPU
    build); edgekit refuses instead of timing the CPU and calling it CUDA."""
    from edgekit.errors import TargetUnavailableError
    from edgekit.targets.onnxruntime import OrtRuntime

    assert digits_ckpt.onnx_path is not None
    with pytest.raises(TargetUnavailableError, match="could not start CUDAExecutionProvider"):
        OrtRuntime(digits_ckpt.onnx_path, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert OrtRuntime(digits_ckpt.onnx_path, ["CPUExecutionProvider"]).providers == ["CPUExecutionProvider"]


def test_tensorrt_ep_options_follow_the_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.targets.onnxruntime import _with_options

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"graph bytes")
    assert _with_options("CPUExecutionProvider", model, "fp32") == "CPUExecutionProvider"
    name, opts = _with_options("TensorrtExecutionProvider", model, "int8")
    assert name == "TensorrtExecutionProvider" and opts["trt_int8_enable"] == "True" and opts["trt_fp16_enable"] == "False"
    assert Path(opts["trt_engine_cache_path"]).is_dir() and str(tmp_path / "cache") in opts["trt_engine_cache_path"]
    assert _with_options("TensorrtExecutionProvider", model, "fp32")[1]["trt_int8_enable"] == "False"
