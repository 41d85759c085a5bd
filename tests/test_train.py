"""edgekit train: accuracy, reload in a new process, resume after a kill, torchrun, determinism."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.artifact import Artifact

from .conftest import env, run_cli

RELOAD = """
import sys, numpy as np
from edgekit.artifact import Artifact
from edgekit.checkpoint import load_module
from edgekit.data import resolve_source, match_inputs
from edgekit.torchutil import predict
art = Artifact.load(sys.argv[1])
x, _ = resolve_source("digits")("test")
np.save(sys.argv[2], predict(load_module(art), match_inputs(x, art.io)))
"""


def test_train_default_cli(tmp_path: Path) -> None:
    """`edgekit train` with no options: >= 97% on digits; the artifact reloads with identical outputs."""
    res = run_cli("train", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["metrics"]["test"]["top1"] >= 0.97
    art = Artifact.load(tmp_path / result["artifact"])
    assert art.kind == "checkpoint"
    assert set(art.manifest.files) == {"model.safetensors", "model.onnx"}
    assert not list(tmp_path.glob("runs/*.partial"))

    from edgekit.checkpoint import load_module
    from edgekit.data import match_inputs, resolve_source
    from edgekit.torchutil import predict

    x, y = resolve_source("digits")("test")
    here = predict(load_module(art), match_inputs(x, art.io))
    assert float((here.argmax(1) == y).mean()) == pytest.approx(result["metrics"]["test"]["top1"])
    subprocess.run([sys.executable, "-c", RELOAD, str(art.path), str(tmp_path / "o.npy")], env=env(), check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), here)


def _weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
def test_kill_and_resume_matches_straight_run(tmp_path: Path) -> None:
    """SIGKILL after epoch 3 is checkpointed; --resume finishes; the result equals an unbroken run."""
    args = ["train", "--epochs", "40", "--seed", "3"]
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", *args, "--out", "runs/k"], cwd=tmp_path,
                            env=env(OMP_NUM_THREADS="1"), stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "epoch 3/40" in line and "checkpoint saved" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "runs/k").exists(), "a killed run must not leave an artifact at --out"
    assert (tmp_path / "runs/k.partial/state.pt").is_file()

    res = run_cli(*args, "--out", "runs/k", "--resume", cwd=tmp_path, OMP_NUM_THREADS="1")
    assert res.code == 0, res.err
    assert "resuming" in res.err
    assert not (tmp_path / "runs/k.partial").exists()
    straight = run_cli(*args, "--out", "runs/straight", cwd=tmp_path, OMP_NUM_THREADS="1")
    assert straight.code == 0, straight.err
    a, b = _weights(tmp_path / "runs/k"), _weights(tmp_path / "runs/straight")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_existing_out_needs_overwrite(tmp_path: Path, digits_ckpt: Artifact) -> None:
    res = run_cli("train", "--epochs", "1", "--out", str(digits_ckpt.path), cwd=tmp_path)
    assert res.code == 2 and "already exists" in res.err


@pytest.mark.slow
def test_torchrun_two_ranks_matches_single_process(tmp_path: Path, digits_ckpt: Artifact) -> None:
    """DDP on CPU (gloo), 2 ranks: the artifact's test accuracy is within 1 point of one process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "edgekit", "train", "--epochs", "20", "--out", "runs/ddp", "--json"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env(OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    art = Artifact.load(tmp_path / "runs/ddp")
    assert art.manifest.lineage.config["world_size"] == 2
    single = digits_ckpt.manifest.metrics["test"]["top1"]
    assert abs(art.manifest.metrics["test"]["top1"] - single) <= 0.01


def test_device_cuda_without_gpu_is_clear_error(tmp_path: Path) -> None:
    res = run_cli("train", "--device", "cuda", "--epochs", "1", cwd=tmp_path)
    assert res.code == 2 and "no CUDA GPU" in res.err and "Traceback" not in res.err


def test_auto_device_picks_cpu_here() -> None:
    import torch

    from edgekit.torchutil import select_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert select_device("auto").type == "cpu"


@pytest.mark.gpu
def test_train_on_cuda(tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    res = run_cli("train", "--device", "cuda", "--epochs", "5", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    assert json.loads(res.out)["metrics"]["test"]["top1"] > 0.9
