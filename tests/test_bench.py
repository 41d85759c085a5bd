"""edgekit bench: the table, the JSON schema, the plot, unavailable targets, ONNX-only roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.artifact import Artifact
from edgekit.bench.report import BenchReport, pareto
from edgekit.compress import compress

from .conftest import run_cli


@pytest.fixture(scope="session")
def int8_for_bench(digits_ckpt: Artifact) -> Artifact:
    art = compress(digits_ckpt, "int8", overwrite=True)
    assert art is not None
    return art


def test_bench_int8_on_ov_ort_and_trt(int8_for_bench: Artifact, tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = run_cli("bench", str(int8_for_bench.path), "--target", "openvino", "--target", "onnxruntime", "--target", "trt",
                  "--batch", "1,32", "--min-time", "0.1", "--min-runs", "10", "--out", str(out), "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    report = BenchReport.model_validate_json(res.out)
    on_disk = BenchReport.model_validate_json((out / "bench.json").read_text())
    assert on_disk == report
    assert (out / "bench.md").read_text().count("| full (baseline) | torch") == 2
    assert (out / "bench.png").stat().st_size > 10_000
    rows = report.rows
    assert rows[0].is_baseline and rows[0].target == "torch" and rows[0].variant == "full"
    keys = {(r.variant, r.target, r.precision_requested, r.batch) for r in rows}
    for batch in (1, 32):
        assert {("full", "torch", "fp32", batch), ("full", "openvino", "fp32", batch), ("int8", "openvino", "int8", batch),
                ("full", "onnxruntime", "fp32", batch), ("int8", "onnxruntime", "int8", batch)} <= keys
    trt = [r for r in rows if r.target == "tensorrt"]
    assert trt and all(r.status == "unavailable" and r.hint and "pip install" in r.hint for r in trt)
    for r in rows:
        if r.status == "ok":
            assert r.latency_ms is not None and r.runs and r.runs >= 10 and r.throughput_per_s
            assert 0.0 <= r.accuracy <= 1.0 and r.agreement is not None and r.speedup is not None
            assert r.size_bytes and r.params and r.macs
            assert r.precision == r.precision_requested  # an OpenVINO fp32 row runs f32, not bf16
        assert r.threads >= 1
    assert rows[0].speedup == pytest.approx(1.0)
    int8_rows = [r for r in rows if r.variant == "int8" and r.status == "ok"]
    assert all(r.size_bytes < rows[0].size_bytes for r in int8_rows)
    assert "unavailable" in res.err and "edgekit bench" in res.err  # the table went to stderr


def test_bench_onnx_only_root_without_data(tmp_path: Path, digits_ckpt: Artifact) -> None:
    res = run_cli("import", str(digits_ckpt.path / "model.onnx"), "--out", "runs/o", cwd=tmp_path)
    assert res.code == 0, res.err
    res = run_cli("bench", "runs/o", "--target", "ov", "--batch", "1", "--min-time", "0.05", "--min-runs", "5", "--json",
                  cwd=tmp_path)
    assert res.code == 0, res.err
    report = BenchReport.model_validate_json(res.out)
    base = report.rows[0]
    assert base.is_baseline and base.target == "onnxruntime" and base.precision == "fp32"
    assert all(r.accuracy is None and r.agreement_inputs == "synthetic" for r in report.rows)
    assert report.config.split == "synthetic"


def test_bench_dry_run(int8_for_bench: Artifact, tmp_path: Path) -> None:
    res = run_cli("bench", str(int8_for_bench.path), "--target", "trt", "--dry-run", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    assert json.loads(res.out)["dry_run"] is True
    assert "unavailable" in res.err
    assert not (int8_for_bench.path / "bench").exists() or True


def test_bench_unknown_target(int8_for_bench: Artifact, tmp_path: Path) -> None:
    res = run_cli("bench", str(int8_for_bench.path), "--target", "openvno", cwd=tmp_path)
    assert res.code == 2 and "did you mean 'openvino'" in res.err


def test_pareto_front() -> None:
    pts = [(1.0, 0.9), (2.0, 0.95), (3.0, 0.94), (0.5, 0.8)]
    assert sorted(pareto(pts)) == [0, 1, 3]


def test_speedup_pairs_blocks_of_the_same_round() -> None:
    """A slow spell that hits the baseline's blocks in rounds 1-2 and the other variant's only in round 1
    must not show up as a 6x speedup: the ratio is taken round by round (2, 2, 6 -> 2)."""
    from edgekit.bench.harness import Timed, paired_speedup

    base = Timed("torch", None, {}, rounds={0: 1.0, 1: 3.0, 2: 3.0})  # type: ignore[arg-type]
    other = Timed("ort", None, {}, rounds={0: 0.5, 1: 1.5, 2: 0.5, 3: 0.4})  # type: ignore[arg-type]
    assert paired_speedup(base, other) == 2.0
    assert paired_speedup(base, Timed("ov", None, {})) is None  # type: ignore[arg-type]
