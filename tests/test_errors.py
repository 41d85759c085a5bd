"""Bad input: one clear line, exit code 2, no traceback (DESIGN.md §8)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.artifact import Artifact

from .conftest import assert_user_error, run_cli


def test_unknown_model_name(tmp_path: Path) -> None:
    assert_user_error(run_cli("train", "--model", "small_cn", cwd=tmp_path), "did you mean 'small_cnn'")


def test_malformed_factory_path(tmp_path: Path) -> None:
    assert_user_error(run_cli("train", "--model", "my-pkg.models:build net", cwd=tmp_path), "not a valid factory path")


def test_factory_module_missing(tmp_path: Path) -> None:
    res = run_cli("train", "--model", "nosuchpkg.models:net", cwd=tmp_path)
    assert_user_error(res, "cannot import module")
    assert any(line.startswith("hint:") and "PYTHONPATH" in line for line in res.lines), res.err


def test_the_edgekit_script_finds_a_factory_in_the_working_directory(tmp_path: Path) -> None:
    """``python -m edgekit`` puts the working directory on the import path and the ``edgekit`` script
    does not; a factory next to where the user runs either must be found by both."""
    import subprocess  # noqa: S404
    import sys

    from .conftest import env

    (tmp_path / "mynet.py").write_text(
        "import torch.nn as nn\n\n"
        "def build(num_classes=10, **_):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))\n")
    script = Path(sys.executable).parent / "edgekit"
    proc = subprocess.run([str(script), "train", "--model", "mynet:build", "--epochs", "1", "--out", "runs/u"],  # noqa: S603
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert Artifact.load(tmp_path / "runs" / "u").manifest.model.source == "mynet:build"  # type: ignore[union-attr]


def test_factory_returns_non_module(tmp_path: Path) -> None:
    assert_user_error(run_cli("import", "userzoo:not_a_module", "--input", "x:batch,4", cwd=tmp_path), "not a torch.nn.Module")


def test_missing_npz(tmp_path: Path) -> None:
    assert_user_error(run_cli("train", "--data", "npz:nope.npz", cwd=tmp_path), "does not exist")


def test_corrupt_npz(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    assert_user_error(run_cli("train", "--data", "npz:bad.npz", cwd=tmp_path), "not a readable .npz")


def test_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}] * 30, dtype=object), y=np.zeros(30))
    assert_user_error(run_cli("train", "--data", "npz:obj.npz", cwd=tmp_path), "not a readable .npz")


def test_npz_without_x(tmp_path: Path) -> None:
    np.savez(tmp_path / "nox.npz", features=np.zeros((30, 4), np.float32))
    assert_user_error(run_cli("train", "--data", "npz:nox.npz", cwd=tmp_path), "no 'x'")


def test_wrong_shapes(tmp_path: Path) -> None:
    """Data that does not fit the declared input."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(40, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 40))
    res = run_cli("train", "--data", "npz:d.npz", "--input", "input:batch,3,8,8:float32", "--epochs", "1", cwd=tmp_path)
    assert_user_error(res, "has shape (")


def test_nan_in_data(tmp_path: Path) -> None:
    x = np.ones((40, 1, 8, 8), np.float32)
    x[3, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.zeros(40, np.int64))
    assert_user_error(run_cli("train", "--data", "npz:nan.npz", cwd=tmp_path), "NaN")


def test_epochs_zero(tmp_path: Path) -> None:
    assert_user_error(run_cli("train", "--epochs", "0", cwd=tmp_path), "--epochs must be at least 1")


def test_unwritable_output(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    assert_user_error(run_cli("train", "--epochs", "1", "--out", "afile/run", cwd=tmp_path), "cannot write")


def test_unwritable_output_proc(tmp_path: Path) -> None:
    assert_user_error(run_cli("train", "--epochs", "1", "--out", "/proc/edgekit-run", cwd=tmp_path), "cannot write")


@pytest.fixture
def copied(tmp_path: Path, digits_ckpt: Artifact) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(digits_ckpt.path, dst, ignore=shutil.ignore_patterns("builds", "bench", "exports", "int8*"))
    return dst


def test_tampered_weights_fail_checksum(tmp_path: Path, copied: Path) -> None:
    data = bytearray((copied / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (copied / "model.safetensors").write_bytes(bytes(data))
    assert_user_error(run_cli("build", str(copied), "--target", "ort", cwd=tmp_path), "checksum mismatch")


def test_newer_schema_version(tmp_path: Path, copied: Path) -> None:
    manifest = json.loads((copied / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (copied / "manifest.json").write_text(json.dumps(manifest))
    assert_user_error(run_cli("build", str(copied), "--target", "ort", cwd=tmp_path), "newer than this edgekit reads")


def test_untrusted_factory_in_manifest(tmp_path: Path, copied: Path) -> None:
    """A manifest naming code outside edgekit is refused unless the user vouches for it."""
    manifest = json.loads((copied / "manifest.json").read_text())
    manifest["model"]["source"] = "userzoo:pretrained_cnn"
    manifest["model"]["kwargs"] = {}
    (copied / "manifest.json").write_text(json.dumps(manifest))
    assert_user_error(run_cli("build", str(copied), "--target", "ort", cwd=tmp_path), "will not import it unasked")


def test_pickle_given_to_import(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    assert_user_error(run_cli("import", "model.pt", cwd=tmp_path), "never unpickles")


def test_pickle_renamed_onnx_is_not_unpickled(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    assert_user_error(run_cli("import", "model.onnx", cwd=tmp_path), "never unpickles")


def test_no_artifact_under_runs(tmp_path: Path) -> None:
    assert_user_error(run_cli("build", "--target", "ort", cwd=tmp_path), "no compressed or checkpoint artifact")


def test_not_an_artifact(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    assert_user_error(run_cli("build", "d", "--target", "ort", cwd=tmp_path), "not an edgekit artifact")


def test_bad_model_kwargs(tmp_path: Path) -> None:
    assert_user_error(run_cli("train", "--model-kwargs", "{width: 3}", cwd=tmp_path), "not valid JSON")
