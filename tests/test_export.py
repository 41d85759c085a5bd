"""edgekit export: other opsets, slimming, new input descriptions, and a parity miss named."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from edgekit.artifact import Artifact

from .conftest import assert_user_error, run_cli


def test_reexport_opset_and_slim_into_cache(digits_ckpt: Artifact, tmp_path: Path) -> None:
    res = run_cli("export", str(digits_ckpt.path), "--opset", "18", "--slim", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    out = Path(json.loads(res.out)["artifact"])
    assert out.parent == digits_ckpt.path / "exports"
    art = Artifact.load(out)
    model = onnx.load(str(art.path / "model.onnx"))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 18
    assert art.manifest.metrics["onnx_parity"]["output"] <= 1e-4
    assert art.manifest.lineage.step == "export" and art.parent().sha256 == digits_ckpt.sha256
    res = run_cli("build", str(out), "--target", "ov", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    again = run_cli("export", str(digits_ckpt.path), "--opset", "18", "--slim", "--json", cwd=tmp_path)
    assert json.loads(again.out)["artifact"] == str(out)  # cached


def test_export_mismatch_names_the_output(tmp_path: Path) -> None:
    res = run_cli("import", "userzoo:noisy", "--input", "x:batch,4", cwd=tmp_path)
    assert res.code == 4, res.err
    assert "ONNX output 'output' differs from torch" in res.err and "Traceback" not in res.err


def test_export_old_opset_refused(digits_ckpt: Artifact, tmp_path: Path) -> None:
    assert_user_error(run_cli("export", str(digits_ckpt.path), "--opset", "13", cwd=tmp_path), "too old")
