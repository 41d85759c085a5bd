"""Self-verifying bundles: golden samples checked on the device by `edgekit verify` and before predict."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgekit.artifact import Artifact
from edgekit.cpu import detect

from .conftest import assert_user_error, run_cli


@pytest.fixture(scope="module")
def int8_bundles(digits_int8: Artifact, workdir: Path) -> dict[str, Path]:
    from edgekit.package import package

    return {t: package(digits_int8, t, out=workdir / f"verify-{t}.tar.gz", overwrite=True) for t in ("onnxruntime", "openvino")}


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_verify_passes_here_and_says_where(int8_bundles: dict[str, Path], target: str) -> None:
    res = run_cli("verify", str(int8_bundles[target]), "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["cpu"]["kind"] == detect().kind and out["target"] == target
    assert out["max_error"] <= out["tolerance"] and out["agreement"] >= 0.95 and out["samples"] >= 8
    text = run_cli("verify", str(int8_bundles[target]))
    assert text.code == 0 and "verified" in text.err and detect().kind in text.err


def test_bundle_records_where_it_was_verified(int8_bundles: dict[str, Path]) -> None:
    from edgekit.runtime import Bundle

    spec = Bundle.open(int8_bundles["openvino"]).manifest.metrics["verify"]
    assert spec["reference"] == "qdq-reference" and spec["inputs"] == "real"
    assert spec["verified_on"][0]["cpu"]["kind"] == detect().kind


def _tamper_golden(src: Path, dst: Path) -> None:
    """Change the golden outputs and re-sign the bundle (manifest and SHA256SUMS agree with the files)."""
    with tarfile.open(src) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    files = {m.name.split("/")[-1]: d for m, d in members if d is not None}
    with np.load(io.BytesIO(files["golden.npz"]), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["y.output"] = arrays["y.output"] + 3.0 * np.abs(arrays["y.output"]).max()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    files["golden.npz"] = buf.getvalue()
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["golden.npz"] = {"sha256": hashlib.sha256(files["golden.npz"]).hexdigest(), "size": len(files["golden.npz"])}
    files["manifest.json"] = json.dumps(manifest).encode()
    files["SHA256SUMS"] = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files.items())
                                  if n != "SHA256SUMS").encode()
    with tarfile.open(dst, "w:gz") as out:
        for m, _ in members:
            data = files.get(m.name.split("/")[-1]) if m.isfile() else None
            if data is not None:
                m.size = len(data)
            out.addfile(m, io.BytesIO(data) if data is not None else None)


def test_tampered_golden_outputs_exit_4_with_one_line(int8_bundles: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    _tamper_golden(int8_bundles["onnxruntime"], bad)
    res = run_cli("verify", str(bad))
    assert_user_error(res, "bundle verification failed: output 'output'", code=4)
    line = next(x for x in res.lines if x.startswith("error:"))
    assert "onnxruntime" in line and detect().kind in line and "tolerance" in line


def test_predict_checks_once_refuses_a_failing_bundle_and_can_skip(int8_bundles: dict[str, Path], tmp_path: Path) -> None:
    from edgekit.data import resolve_source

    x, _ = resolve_source("digits")("test")
    np.save(tmp_path / "x.npy", x["input"][:4])
    cache = tmp_path / "cache"
    ok = run_cli("predict", str(int8_bundles["openvino"]), str(tmp_path / "x.npy"), XDG_CACHE_HOME=str(cache))
    assert ok.code == 0, ok.err
    assert len(list((cache / "edgekit" / "verified").glob("*.json"))) == 1  # checked once, remembered
    bad = tmp_path / "bad.tar.gz"
    _tamper_golden(int8_bundles["onnxruntime"], bad)
    refused = run_cli("predict", str(bad), str(tmp_path / "x.npy"), XDG_CACHE_HOME=str(cache))
    assert_user_error(refused, "bundle verification failed", code=4)
    assert refused.out == ""
    skipped = run_cli("predict", str(bad), str(tmp_path / "x.npy"), "--no-verify", XDG_CACHE_HOME=str(cache))
    assert skipped.code == 0 and skipped.out.count("\n") == 4
