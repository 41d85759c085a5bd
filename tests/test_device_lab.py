"""The device lab: the same INT8 bundles give the reference predictions, and pass `edgekit verify`, on
this host and on an emulated x86 CPU without AVX-512 or VNNI (user-mode `qemu-x86_64 -cpu Haswell`,
set up by tools/device_lab.sh). Each bundle runs in a torch-free device venv from the wheelhouse.

Under emulation ``/proc/cpuinfo`` still describes the host; edgekit reads the CPU by CPUID (through
numpy), so the emulated run reports, and decides for, the emulated CPU. qemu cannot emulate VNNI or
AVX-512 (TCG), so the VNNI case runs natively where the host has it. Emulated aarch64 (``-cpu
cortex-a72``: NEON only; ``-cpu max``: dot product) runs Debian 12's arm64 Python with the aarch64
wheels of the light runtime and onnxruntime 1.22.0 (1.32 crashes under qemu 7.2); OpenVINO's CPU
plugin cannot start under user-mode qemu (it reads a sysfs entry qemu lacks), so those cases skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.artifact import Artifact
from edgekit.cpu import detect

from .conftest import ROOT

WHEELHOUSE = ROOT / "wheelhouse"
QEMU = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
QEMU_ARM = shutil.which("qemu-aarch64-static")
LAB = ROOT / ".venv" / "lab"
ARM_PY = LAB / "arm64-root" / "usr" / "bin" / "python3.11"
ARM_READY = QEMU_ARM is not None and ARM_PY.is_file() and (LAB / "arm64-site" / ".done").is_file()

pytestmark = [pytest.mark.skipif(not WHEELHOUSE.is_dir(), reason="no wheelhouse: `make test` fills it before the suite"),
              pytest.mark.slow]  # emulated devices: minutes; `make test` runs them, `make test-fast` does not


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A device: the light edgekit with onnxruntime and openvino, no torch (its python)."""
    venv = tmp_path_factory.mktemp("lab") / "device"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(WHEELHOUSE), "edgekit[onnxruntime,openvino]"], check=True, env={**os.environ, "PIP_CONSTRAINT": ""})
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def lab_bundles(digits_ckpt: Artifact, workdir: Path) -> dict[str, tuple[Path, Artifact]]:
    """INT8 bundles of two trained models: the digits CNN and a depthwise net with linear bottlenecks
    (its 1x1 expand convolutions read signed sums: where CPUs without VNNI saturate)."""
    from edgekit.compress import compress
    from edgekit.package import package
    from edgekit.train import TrainConfig, train

    mb = train(TrainConfig(model="userzoo:mbnet", epochs=12), out=workdir / "runs" / "mbnet", overwrite=True)
    assert mb is not None
    out = {}
    for name, ckpt in (("digits", digits_ckpt), ("mbnet", mb)):
        art = compress(ckpt, "int8", out=ckpt.path / "lab-int8", overwrite=True)
        assert art is not None
        for target in ("onnxruntime", "openvino"):
            out[f"{name}-{target}"] = (package(art, target, out=workdir / f"lab-{name}-{target}.tar.gz", overwrite=True), art)
    return out


@pytest.fixture(scope="module")
def arm_edgekit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This edgekit's wheel, unpacked for the emulated arm64 Python (pure Python: the same files)."""
    import zipfile

    wheel = next(WHEELHOUSE.glob("edgekit-*.whl"))
    out = tmp_path_factory.mktemp("arm-edgekit")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(out)
    return out


def _run(python: Path, args: list[str], emulate: str | None, cwd: Path, arm: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(python), "-m", "edgekit", *args]
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache"), "OMP_NUM_THREADS": "2"}
    if arm is not None:
        cmd = [str(QEMU_ARM), "-cpu", str(emulate), "-L", str(LAB / "arm64-root"), str(ARM_PY), "-m", "edgekit", *args]
        env["PYTHONPATH"] = os.pathsep.join([str(arm), str(LAB / "arm64-site")])
        env.pop("VIRTUAL_ENV", None)
    elif emulate:
        cmd = [str(QEMU), "-cpu", emulate, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, cwd=cwd, env=env)


def _agrees_where_decisive(got: np.ndarray, art: Artifact, x: np.ndarray, case: tuple[object, ...]) -> None:
    """The device's top-1 is the reference's (the QDQ graph the bundle was built from, with exact ONNX
    semantics) on every image where the reference's top-2 margin exceeds what a build may differ by
    (INT8_STEPS output steps): a near-tie may go either way on any correct integer kernel. Three in
    four images must be decisive, or the check says little."""
    from edgekit.build import INT8_STEPS, reference_runtime
    from edgekit.steps.qdq_graph import output_steps

    assert art.onnx_path is not None
    ref_rt, _ = reference_runtime(art, "int8")
    logits = ref_rt.infer({"input": x})["output"]
    top2 = np.sort(logits, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > INT8_STEPS * output_steps(art.onnx_path)["output"]
    assert decisive.mean() >= 0.75, (case, decisive.mean())
    assert (got == logits.argmax(1))[decisive].all(), (case, np.flatnonzero((got != logits.argmax(1)) & decisive))


CASES = [pytest.param(None, id="host"),
         pytest.param("Haswell", id="emulated-avx2", marks=pytest.mark.skipif(
             QEMU is None, reason="qemu-x86_64 is not installed (tools/device_lab.sh installs it with apt, as root)"))]


@pytest.mark.parametrize("emulate", CASES)
@pytest.mark.parametrize("bundle", ["digits-onnxruntime", "digits-openvino", "mbnet-onnxruntime", "mbnet-openvino"])
def test_bundle_verifies_and_predicts_the_reference(device: Path, lab_bundles: dict[str, tuple[Path, Artifact]],
                                                    bundle: str, emulate: str | None, tmp_path: Path) -> None:
    from edgekit.data import resolve_source

    if detect().arch not in ("x86_64", "amd64") and emulate:
        pytest.skip("x86 emulation on a non-x86 host is not part of the lab")
    path, art = lab_bundles[bundle]
    res = _run(device, ["verify", str(path), "--json"], emulate, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    verified = json.loads(res.stdout)
    if emulate:
        assert verified["cpu"]["kind"] == "x86-avx2" and verified["cpu"]["u8s8_saturates"], verified["cpu"]
    x, _ = resolve_source("digits")("test")
    x = x["input"][:48]
    np.save(tmp_path / "x.npy", x)
    pred = _run(device, ["predict", str(path), str(tmp_path / "x.npy"), "--json", "--top-k", "1"],
                emulate, tmp_path)
    assert pred.returncode == 0, pred.stderr[-2000:]
    got = np.array([int(p[0]["label"]) for p in json.loads(pred.stdout)["predictions"]])
    # the reference: the QDQ graph the bundle was built from, with exact ONNX semantics
    _agrees_where_decisive(got, art, x, (bundle, emulate))


ARM_CASES = [pytest.param("cortex-a72", "aarch64", id="aarch64-neon"), pytest.param("max", "aarch64-dotprod", id="aarch64-dotprod")]


@pytest.mark.skipif(not ARM_READY, reason="no emulated aarch64 here: tools/device_lab.sh needs root, apt and qemu-user-static")
@pytest.mark.parametrize(("cpu", "kind"), ARM_CASES)
@pytest.mark.parametrize("bundle", ["digits-onnxruntime", "mbnet-onnxruntime", "digits-openvino"])
def test_bundle_on_emulated_aarch64(lab_bundles: dict[str, tuple[Path, Artifact]], arm_edgekit: Path, bundle: str,
                                    cpu: str, kind: str, tmp_path: Path) -> None:
    if bundle.endswith("openvino"):
        pytest.skip("OpenVINO's CPU plugin cannot start under user-mode qemu-aarch64 (it reads MIDR_EL1 from sysfs)")
    from edgekit.data import resolve_source

    path, art = lab_bundles[bundle]
    res = _run(ARM_PY, ["verify", str(path), "--json"], cpu, tmp_path, arm=arm_edgekit)
    assert res.returncode == 0, res.stderr[-2000:]
    verified = json.loads(res.stdout)
    assert verified["cpu"]["kind"] == kind and verified["runtime_version"] == "1.22.0", verified
    x, _ = resolve_source("digits")("test")
    x = x["input"][:24]
    np.save(tmp_path / "x.npy", x)
    pred = _run(ARM_PY, ["predict", str(path), str(tmp_path / "x.npy"), "--json", "--top-k", "1"], cpu, tmp_path,
                arm=arm_edgekit)
    assert pred.returncode == 0, pred.stderr[-2000:]
    got = np.array([int(p[0]["label"]) for p in json.loads(pred.stdout)["predictions"]])
    _agrees_where_decisive(got, art, x, (bundle, cpu))
