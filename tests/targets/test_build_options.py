"""--shape and --hint only where a target reads them; the build cache key changes with the build code
and, for engines, with the GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit import build as build_mod
from edgekit.artifact import Artifact
from edgekit.targets.base import parse_shape

from ..conftest import assert_user_error, run_cli

SHAPE = "input:1x1x8x8:8x1x8x8:64x1x8x8"


@pytest.mark.parametrize(("target", "option", "needle"), [
    ("onnxruntime", ["--shape", SHAPE], "onnxruntime takes no --shape"),
    ("openvino", ["--shape", SHAPE], "openvino takes no --shape"),
    ("onnxruntime", ["--hint", "throughput"], "onnxruntime takes no --hint"),
])
def test_an_option_the_target_ignores_is_refused(digits_ckpt: Artifact, tmp_path: Path, target: str, option: list[str],
                                                 needle: str) -> None:
    before = sorted((digits_ckpt.path / "builds").rglob("*")) if (digits_ckpt.path / "builds").exists() else []
    res = run_cli("build", str(digits_ckpt.path), "--target", target, *option, "--dry-run", cwd=tmp_path)
    assert_user_error(res, needle)
    assert "drop --" in res.err
    after = sorted((digits_ckpt.path / "builds").rglob("*")) if (digits_ckpt.path / "builds").exists() else []
    assert after == before


def test_options_a_target_reads_are_taken(digits_ckpt: Artifact) -> None:
    a = build_mod.plan(digits_ckpt, "openvino", "fp32", hint="throughput")
    b = build_mod.plan(digits_ckpt, "openvino", "fp32")
    assert a.out != b.out and a.opts.hint == "throughput"
    trt = build_mod.plan(digits_ckpt, "tensorrt", "fp16", shapes=dict([parse_shape(SHAPE)]), hint="throughput")
    assert trt.opts.shapes["input"].max == (64, 1, 8, 8)


def test_the_cache_key_follows_the_build_code(digits_ckpt: Artifact, monkeypatch: pytest.MonkeyPatch) -> None:
    before = build_mod.plan(digits_ckpt, "onnxruntime", "fp32").out
    assert len(build_mod.code_fingerprint()) == 16
    monkeypatch.setattr(build_mod, "code_fingerprint", lambda: "an-edited-rewrite")
    assert build_mod.plan(digits_ckpt, "onnxruntime", "fp32").out != before


def test_an_engine_is_keyed_by_its_gpu(digits_ckpt: Artifact, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod, "_gpu", lambda info: "NVIDIA A100 sm 8.0")
    a100 = build_mod.plan(digits_ckpt, "tensorrt", "fp16").out
    monkeypatch.setattr(build_mod, "_gpu", lambda info: "NVIDIA L4 sm 8.9")
    assert build_mod.plan(digits_ckpt, "tensorrt", "fp16").out != a100  # rebuilt there, not refused at load
