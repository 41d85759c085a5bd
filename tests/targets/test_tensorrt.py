"""The TensorRT target, as far as a machine without TensorRT or a GPU can check it.

mypy --strict against the patched tensorrt-stubs makes a misspelt TensorRT method or enum fail the
suite; the CLI fails at check() with the install command; the CPU-visible helpers are tested.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.artifact import Artifact
from edgekit.targets.base import Shape
from edgekit.targets.tensorrt import _profile_shapes

from ..conftest import ROOT, assert_user_error, run_cli

TRT_SOURCE = ROOT / "edgekit" / "targets" / "tensorrt.py"


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)], cwd=ROOT,
                          capture_output=True, text=True, check=False)


def test_tensorrt_target_passes_mypy_strict() -> None:
    res = _mypy(TRT_SOURCE)
    assert res.returncode == 0, res.stdout


@pytest.mark.parametrize(
    ("real", "typo", "message"),
    [
        ("build_serialized_network", "build_serialised_network", "has no attribute"),
        ("trt.BuilderFlag.INT8", "trt.BuilderFlag.INT9", "has no attribute"),
        ("execute_async_v3", "execute_async_v4", "has no attribute"),
        ("cudaMemcpyAsync", "cudaMemcpyAsnc", "has no attribute"),
    ],
)
def test_mypy_catches_a_misspelt_tensorrt_api(tmp_path: Path, real: str, typo: str, message: str) -> None:
    """So the check cannot pass against Any: a misspelling must fail."""
    source = TRT_SOURCE.read_text()
    assert real in source
    bad = tmp_path / "tensorrt_target_typo.py"
    bad.write_text(source.replace(real, typo, 1))
    res = _mypy(bad)
    assert res.returncode != 0 and message in res.stdout, res.stdout


def test_build_tensorrt_here_is_exit_2_with_install_hint(tmp_path: Path, digits_ckpt: Artifact) -> None:
    res = run_cli("build", str(digits_ckpt.path), "--target", "trt", cwd=tmp_path)
    assert_user_error(res, "TensorRT is not installed")
    assert "pip install 'edgekit[tensorrt]'" in res.err


def test_stub_only_tensorrt_package_is_not_mistaken_for_tensorrt(tmp_path: Path, digits_ckpt: Artifact) -> None:
    """tensorrt-stubs installs an importable but empty `tensorrt`: check() must see through it."""
    fake = tmp_path / "site" / "tensorrt"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    res = run_cli("build", str(digits_ckpt.path), "--target", "tensorrt", cwd=tmp_path,
                  PYTHONPATH=f"{tmp_path / 'site'}:{ROOT}")
    assert_user_error(res, "has no runtime")


def test_profile_defaults_cover_dynamic_dims() -> None:
    shape = _profile_shapes("input", (-1, 3, 224, 224), {}, "latency")
    assert shape == Shape((1, 3, 224, 224), (1, 3, 224, 224), (32, 3, 224, 224))
    tokens = _profile_shapes("input_ids", (-1, -1), {}, "throughput")
    assert tokens.min == (1, 1) and tokens.opt == (8, 128) and tokens.max == (32, 512)
    given = Shape((1, 3), (4, 3), (8, 3))
    assert _profile_shapes("x", (-1, 3), {"x": given}, "latency") == given


def test_stub_generator_reproduces_committed_stub(tmp_path: Path) -> None:
    stubs = ROOT / ".venv" / "trt-stubs"
    if not stubs.is_dir():
        pytest.skip("tensorrt-stubs not downloaded (make stubs)")
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_trt_stubs.py"), "--from", str(stubs), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    assert (tmp_path / "tensorrt" / "__init__.pyi").read_bytes() == (ROOT / "typings" / "tensorrt" / "__init__.pyi").read_bytes()


@pytest.mark.tensorrt
def test_engine_for_another_gpu_is_refused(digits_ckpt: Artifact) -> None:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("needs an NVIDIA GPU and TensorRT")
    from edgekit.build import build
    from edgekit.errors import TargetUnavailableError
    from edgekit.targets.tensorrt import TrtRuntime

    built = build(digits_ckpt, "tensorrt", "fp16")
    assert built is not None and built.manifest.target is not None
    record = built.manifest.target.model_copy(update={"hardware": {**built.manifest.target.hardware, "gpu": "Other GPU"}})
    with pytest.raises(TargetUnavailableError, match="built for"):
        TrtRuntime(built.path / record.model_file, record)
