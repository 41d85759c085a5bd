"""Knowledge distillation: labelled, unlabelled (embeddings), feature KD, another student, torchrun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.artifact import Artifact
from edgekit.compress import compress

from ..conftest import env


def _recipe(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nsteps:\n{body}")
    return str(path)


@pytest.mark.slow
def test_distill_into_a_different_student_with_features(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """An MLP student learns from the CNN teacher; a feature pair is matched through a projection."""
    recipe = _recipe(tmp_path, "kd-mlp", "  - kind: distill\n    epochs: 15\n    student: mlp\n    lr: 0.003\n")
    art = compress(digits_ckpt, recipe, out=tmp_path / "mlp")
    assert art is not None and art.manifest.model is not None and art.manifest.model.source == "mlp"
    assert art.manifest.metrics["test"]["top1"] >= 0.9
    assert art.manifest.metrics["distill"]["labelled"] is True

    feat = _recipe(tmp_path, "kd-feat", "  - kind: distill\n    epochs: 2\n    features:\n"
                   "      - {student: block3, teacher: block3}\n    feature_weight: 0.5\n")
    art2 = compress(digits_ckpt, feat, out=tmp_path / "feat")
    assert art2 is not None and art2.manifest.metrics["test"]["top1"] >= 0.95


def test_distill_bad_feature_name(digits_ckpt: Artifact, tmp_path: Path) -> None:
    from edgekit.errors import ModelError

    recipe = _recipe(tmp_path, "kd-bad", "  - kind: distill\n    epochs: 1\n    features:\n      - {student: nope, teacher: block3}\n")
    with pytest.raises(ModelError, match="no module 'nope'"):
        compress(digits_ckpt, recipe, out=tmp_path / "bad")


def test_distill_embedding_model_on_unlabelled_data(tmp_path: Path) -> None:
    """With no labels the teacher's output is the only target (how an embedding model is distilled)."""
    from edgekit.importer import import_model

    root = import_model("tiny_transformer", data="userzoo:tokens", out=tmp_path / "tt")
    recipe = _recipe(tmp_path, "kd-small", "  - kind: distill\n    epochs: 3\n    student: tiny_transformer\n"
                     "    student_kwargs: {layers: 1, ffn: 128}\n    lr: 0.003\n")
    art = compress(root, recipe, out=tmp_path / "small")
    assert art is not None
    assert art.manifest.metrics["distill"]["labelled"] is False
    assert art.manifest.metrics["params"] < root.manifest.metrics["params"]
    assert art.manifest.metrics["test"]["cosine"] > 0.5


@pytest.mark.slow
def test_distill_under_torchrun(digits_ckpt: Artifact, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "edgekit",
           "compress", str(digits_ckpt.path), "--recipe", "distill", "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    art = Artifact.load(tmp_path / "ddp")
    assert art.manifest.metrics["test"]["top1"] >= digits_ckpt.manifest.metrics["test"]["top1"] - 0.01
