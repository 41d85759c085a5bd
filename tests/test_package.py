"""Bundles: reproducible, safe to extract, checked, and runnable without torch."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgekit.artifact import Artifact
from edgekit.external_data import locations as onnx_external_locations
from edgekit.runtime import Bundle

from .conftest import ROOT, assert_user_error, run_cli


@pytest.fixture(scope="session")
def bundles(digits_int8: Artifact, workdir: Path) -> dict[str, Path]:
    from edgekit.package import package

    return {t: package(digits_int8, t, out=workdir / f"digits-{t}.tar.gz", overwrite=True)
            for t in ("onnxruntime", "openvino")}


def test_same_input_same_bytes(digits_int8: Artifact, bundles: dict[str, Path], tmp_path: Path) -> None:
    res = run_cli("package", str(digits_int8.path), "--target", "onnxruntime", "--out", str(tmp_path / "again.tar.gz"),
                  cwd=tmp_path)
    assert res.code == 0, res.err
    assert (tmp_path / "again.tar.gz").read_bytes() == bundles["onnxruntime"].read_bytes()


def test_bundle_contents(bundles: dict[str, Path]) -> None:
    with tarfile.open(bundles["openvino"]) as tar:
        names = sorted(m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile())
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    from edgekit.cpu import detect

    vnni = ["model-vnni.bin", "model-vnni.xml"] if detect().has_vnni else []  # only where it was checked
    assert names in (["SHA256SUMS", "golden.npz", "manifest.json", "model.bin", "model.xml"],
                     sorted(["SHA256SUMS", "golden.npz", "manifest.json", "model.bin", "model.xml", *vnni]))
    b = Bundle.open(bundles["openvino"])
    m = b.manifest
    assert m.kind == "bundle" and m.target.name == "openvino" and m.target.precision == "int8"
    assert m.io.labels == [str(i) for i in range(10)] and m.io.inputs[0].mean is not None
    assert m.metrics["parity"]["max_error"] < 0.1 and "test" in m.metrics
    assert "created" not in json.dumps(m.model_dump())


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_predict_matches_torch(bundles: dict[str, Path], digits_ckpt: Artifact, target: str, tmp_path: Path) -> None:
    from edgekit.checkpoint import load_module
    from edgekit.data import resolve_source
    from edgekit.torchutil import predict

    x, _ = resolve_source("digits")("test")
    np.save(tmp_path / "x.npy", x["input"])
    res = run_cli("predict", str(bundles[target]), str(tmp_path / "x.npy"), "--json", "--top-k", "1", cwd=tmp_path)
    assert res.code == 0, res.err
    got = [int(p[0]["label"]) for p in json.loads(res.out)["predictions"]]
    want = predict(load_module(digits_ckpt), x).argmax(1)
    assert (np.array(got) == want).mean() >= 0.99


def test_predict_image_file(bundles: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    from edgekit.data import resolve_source

    x, y = resolve_source("digits")("test")
    Image.fromarray((x["input"][0, 0] * 255).astype(np.uint8)).resize((32, 32)).save(tmp_path / "digit.png")
    res = run_cli("predict", str(bundles["openvino"]), str(tmp_path / "digit.png"), "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    assert json.loads(res.out)["predictions"][0][0]["label"] == str(y[0])


def _repack(src: Path, dst: Path, edit) -> None:
    with tarfile.open(src) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(dst, "w:gz") as out:
        for m, data in edit(members):
            out.addfile(m, io.BytesIO(data) if data is not None else None)


def test_tampered_model_byte_fails_checksum(bundles: dict[str, Path], tmp_path: Path) -> None:
    def flip(members):
        for m, data in members:
            if m.name.endswith("model.bin"):
                data = bytearray(data)
                data[len(data) // 2] ^= 0x01
                data = bytes(data)
            yield m, data

    _repack(bundles["openvino"], tmp_path / "bad.tar.gz", flip)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    res = run_cli("predict", str(tmp_path / "bad.tar.gz"), str(tmp_path / "x.npy"), cwd=tmp_path)
    assert_user_error(res, "checksum mismatch for model.bin")


def test_path_traversal_member_is_refused(bundles: dict[str, Path], tmp_path: Path) -> None:
    def evil(members):
        yield from members
        m = tarfile.TarInfo("../evil.txt")
        m.size = 4
        yield m, b"evil"

    _repack(bundles["onnxruntime"], tmp_path / "evil.tar.gz", evil)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    res = run_cli("predict", str(tmp_path / "evil.tar.gz"), str(tmp_path / "x.npy"), cwd=tmp_path)
    assert_user_error(res, "unsafe member path")
    assert not (tmp_path.parent / "evil.txt").exists()


def test_symlink_member_is_refused(bundles: dict[str, Path], tmp_path: Path) -> None:
    def link(members):
        yield from members
        m = tarfile.TarInfo(members[0][0].name + "/passwd")
        m.type, m.linkname = tarfile.SYMTYPE, "/etc/passwd"
        yield m, None

    _repack(bundles["onnxruntime"], tmp_path / "link.tar.gz", lambda ms: link(list(ms)))
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    assert_user_error(run_cli("predict", str(tmp_path / "link.tar.gz"), str(tmp_path / "x.npy"), cwd=tmp_path), "link member")


def test_newer_schema_bundle(bundles: dict[str, Path], tmp_path: Path) -> None:
    import hashlib

    def newer(members):
        members = list(members)
        files = {m.name.split("/")[-1]: d for m, d in members if d is not None}
        manifest = json.loads(files["manifest.json"])
        manifest["schema_version"] = 7
        files["manifest.json"] = json.dumps(manifest).encode()
        files["SHA256SUMS"] = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files.items())
                                      if n != "SHA256SUMS").encode()
        for m, _ in members:
            name = m.name.split("/")[-1]
            if m.isfile():
                m.size = len(files[name])
                yield m, files[name]
            else:
                yield m, None

    _repack(bundles["onnxruntime"], tmp_path / "new.tar.gz", newer)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    assert_user_error(run_cli("predict", str(tmp_path / "new.tar.gz"), str(tmp_path / "x.npy"), cwd=tmp_path), "schema version 7")


def test_onnx_pointing_outside_the_bundle_is_refused(digits_int8: Artifact, tmp_path: Path) -> None:
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    from edgekit.artifact import ArtifactError, Manifest, finalize
    from edgekit.package import package, write_sums

    bundle = package(digits_int8, "onnxruntime", out=tmp_path / "b", as_dir=True)
    assert onnx_external_locations(bundle / "model.onnx") == []
    model = onnx.load(str(bundle / "model.onnx"))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    onnx.save_model(model, str(tmp_path / "ext.onnx"))
    model = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../../outside.bin"
    onnx.save_model(model, str(bundle / "model.onnx"))
    assert set(onnx_external_locations(bundle / "model.onnx")) == {"../../outside.bin"}
    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").unlink()
    finalize(bundle, manifest, owned=["model.onnx"])  # a well-formed bundle whose ONNX reaches outside
    (bundle / "SHA256SUMS").unlink()
    write_sums(bundle)
    with pytest.raises(ArtifactError, match="outside the bundle"):
        Bundle.open(bundle)


WHEELHOUSE = ROOT / "wheelhouse"


@pytest.mark.skipif(not WHEELHOUSE.is_dir(), reason="no wheelhouse: `make test` fills it before the suite")
def test_light_install_runs_bundles_without_torch(bundles: dict[str, Path], digits_ckpt: Artifact, tmp_path: Path) -> None:
    """edgekit's light base + onnxruntime + openvino from the local wheelhouse: no torch, same predictions."""
    venv = tmp_path / "device"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(WHEELHOUSE)]
    subprocess.run([*pip, "edgekit[onnxruntime,openvino]"], check=True, env={**os.environ, "PIP_CONSTRAINT": ""})
    listing = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"], capture_output=True,
                             text=True, check=True).stdout.lower()
    assert "torch" not in listing and "onnx==" not in listing
    from edgekit.data import resolve_source

    x, _ = resolve_source("digits")("test")
    np.save(tmp_path / "x.npy", x["input"])
    from edgekit.checkpoint import load_module
    from edgekit.package import package
    from edgekit.torchutil import predict

    want = predict(load_module(digits_ckpt), x).argmax(1)
    # the FP32 bundles must give torch's predictions exactly; the INT8 ones agree on >= 99%
    cases = [("int8", t, b) for t, b in bundles.items()]
    cases += [("fp32", t, package(digits_ckpt, t, out=tmp_path / f"fp32-{t}.tar.gz")) for t in ("onnxruntime", "openvino")]
    for kind, target, bundle in cases:
        res = subprocess.run([str(venv / "bin" / "edgekit"), "predict", str(bundle), str(tmp_path / "x.npy"), "--json",
                              "--top-k", "1"], capture_output=True, text=True, check=False, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        got = np.array([int(p[0]["label"]) for p in json.loads(res.stdout)["predictions"]])
        agree = (got == want).mean()
        assert agree == 1.0 if kind == "fp32" else agree >= 0.99, (kind, target, agree)
