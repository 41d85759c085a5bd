"""edgekit bench: the table, the JSON schema, the plot, unavailable targets, ONNX-only roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.artifact import Artifact
from edgekit.bench.report import BenchReport

from ..conftest import copy_artifact, run_cli


@pytest.mark.slow
def test_bench_int8_on_ov_ort_and_trt(digits_int8: Artifact, tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = run_cli("bench", str(digits_int8.path), "--target", "openvino", "--target", "onnxruntime", "--target", "trt",
                  "--batch", "1,32", "--min-time", "0.1", "--min-runs", "10", "--processes", "2", "--out", str(out), "--json",
                  cwd=tmp_path)
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
            assert r.latency_ms is not None and r.runs and r.runs >= 2 * 10 and r.sequential_throughput_per_s  # pooled: 2 processes
            assert 0.0 <= r.accuracy <= 1.0 and r.agreement is not None and r.speedup is not None
            assert r.size_bytes and r.params and r.macs
            assert r.precision == r.precision_requested  # an OpenVINO fp32 row runs f32, not bf16
        assert r.threads >= 1
    assert report.config.processes == 2
    assert rows[0].speedup == pytest.approx(1.0)
    for batch in (1, 32):  # an interval around every speedup but the baseline's own; memory per row and batch
        for r in rows:
            if r.batch == batch and r.latency_ms is not None:
                assert r.latency_ms.min is not None and r.latency_ms.min <= r.latency_ms.p50 <= r.latency_ms.p90
                assert r.memory_mb is not None and r.load_memory_mb is not None and r.memory_mb >= r.load_memory_mb >= 0
                if r.is_baseline:
                    assert r.speedup_interval is None
                else:
                    assert r.speedup is not None and r.speedup_interval is not None
                    low, high = r.speedup_interval
                    assert low <= r.speedup <= high
    for r in rows:
        if r.batch == 32 and r.status == "ok":
            one = next(o for o in rows if o.batch == 1 and (o.variant, o.target) == (r.variant, r.target))
            assert r.memory_mb >= one.memory_mb  # a larger batch never needs less: no process-wide figure
    # each row's memory is measured where it was loaded first (in the bench process, a second row of a
    # runtime found its libraries loaded and counted ~5-15 % of what the first did)
    assert report.config.memory == "own process per row"
    for target in ("openvino", "onnxruntime"):
        fp32, int8 = (next(r for r in rows if r.batch == 1 and r.target == target and r.variant == v) for v in ("full", "int8"))
        assert int8.load_memory_mb >= 0.5 * fp32.load_memory_mb, (target, int8.load_memory_mb, fp32.load_memory_mb)
    assert "95% interval" in (out / "bench.md").read_text() and "seq. items/s" in (out / "bench.md").read_text()
    int8_rows = [r for r in rows if r.variant == "int8" and r.status == "ok"]
    assert all(r.size_bytes < rows[0].size_bytes for r in int8_rows)
    assert "unavailable" in res.err and "edgekit bench" in res.err  # the table went to stderr


def test_bench_onnx_only_root_without_data(tmp_path: Path, digits_ckpt: Artifact) -> None:
    res = run_cli("import", str(digits_ckpt.path / "model.onnx"), "--out", "runs/o", cwd=tmp_path)
    assert res.code == 0, res.err
    res = run_cli("bench", "runs/o", "--target", "ov", "--batch", "1", "--min-time", "0.05", "--min-runs", "5",
                  "--processes", "0", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    report = BenchReport.model_validate_json(res.out)
    base = report.rows[0]
    assert base.is_baseline and base.target == "onnxruntime" and base.precision == "fp32"
    assert all(r.accuracy is None and r.agreement_inputs == "synthetic" for r in report.rows)
    assert report.config.split == "synthetic"
    assert report.config.processes == 0 and all(r.runs and r.runs >= 5 and r.speedup for r in report.rows)


def test_bench_dry_run(digits_int8: Artifact, tmp_path: Path) -> None:
    before = sorted(p for p in digits_int8.path.rglob("*"))
    res = run_cli("bench", str(digits_int8.path), "--target", "trt", "--dry-run", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    assert json.loads(res.out)["dry_run"] is True
    assert "unavailable" in res.err
    assert sorted(p for p in digits_int8.path.rglob("*")) == before  # a dry run writes nothing
    assert not list(tmp_path.iterdir())


def test_bench_unknown_target(digits_int8: Artifact, tmp_path: Path) -> None:
    res = run_cli("bench", str(digits_int8.path), "--target", "openvno", cwd=tmp_path)
    assert res.code == 2 and "did you mean 'openvino'" in res.err


def test_bench_runtimes_do_not_spin_between_calls(digits_ckpt: Artifact) -> None:
    """ONNX Runtime loaded for a benchmark stops its workers' spinning after each run (they took the
    cores from the variant timed next); loaded for an application it keeps ONNX Runtime's default."""
    from edgekit.build import build
    from edgekit.targets.onnxruntime import OnnxRuntimeTarget

    built = build(digits_ckpt, "onnxruntime", "fp32")
    assert built is not None and built.manifest.target is not None
    for shared, expected in ((True, "1"), (False, None)):
        rt = OnnxRuntimeTarget().load(built.path, built.manifest.target, threads=2, shared=shared)
        entries = rt.session.get_session_options().get_session_config_entry
        try:
            value: str | None = entries("session.force_spinning_stop")
        except RuntimeError:  # not set
            value = None
        assert value == expected


def test_a_failed_timing_process_is_one_clear_error(tmp_path: Path) -> None:
    """The timing processes report a failure as an EdgekitError naming the process and the cause."""
    from types import SimpleNamespace

    import numpy as np

    from edgekit.bench.compare import time_in_processes
    from edgekit.bench.harness import TimingConfig
    from edgekit.errors import EdgekitError

    gone = SimpleNamespace(path=tmp_path / "deleted-artifact")
    feeds = {1: {"input": np.zeros((1, 1, 8, 8), np.float32)}}
    with pytest.raises(EdgekitError) as info:
        time_in_processes(gone, ["onnxruntime"], 1, [0], feeds, TimingConfig(), processes=1)  # type: ignore[arg-type]
    assert info.value.message.startswith("timing process 1 of 1 failed: ") and "\n" not in info.value.message
    assert "deleted-artifact" in info.value.message and "--processes 0" in (info.value.hint or "")


def test_gpu_rows_get_a_cuda_baseline(digits_int8: Artifact) -> None:
    """A TensorRT row is never sped up against CPU eager: a torch CUDA baseline stands beside the CPU one."""
    from edgekit.bench.compare import plan_rows

    plans = plan_rows(digits_int8, ["tensorrt", "openvino"])
    baselines = [i for i, p in enumerate(plans) if p.is_baseline]
    assert [(plans[i].target, plans[i].device) for i in baselines] == [("torch", "cpu"), ("torch", "cuda")]
    for p in plans:
        want = baselines[1] if p.target == "tensorrt" or p.device == "cuda" else baselines[0]
        assert p.against == want, (p.target, p.device)
    assert all(p.device == "cpu" for p in plan_rows(digits_int8, ["openvino"]))  # no GPU row, no CUDA baseline


@pytest.mark.slow
def test_bench_device_cuda_here_marks_rows_unavailable(digits_int8: Artifact, tmp_path: Path) -> None:
    res = run_cli("bench", str(digits_int8.path), "--target", "ort", "--target", "trt", "--device", "cuda", "--batch", "1",
                  "--min-time", "0.05", "--min-runs", "5", "--processes", "0", "--json", "--out", str(tmp_path / "b"),
                  cwd=tmp_path)
    assert res.code == 0, res.err
    rows = BenchReport.model_validate_json(res.out).rows
    cuda_base = [r for r in rows if r.is_baseline and r.device == "cuda"]
    assert len(cuda_base) == 1 and cuda_base[0].status == "unavailable" and "CUDA" in (cuda_base[0].reason or "")
    gpu_rows = [r for r in rows if r.target in ("onnxruntime", "tensorrt")]
    assert gpu_rows and all(r.device == "cuda" and r.status == "unavailable" and r.baseline == "torch cuda" for r in gpu_rows)
    cpu_base = next(r for r in rows if r.is_baseline and r.device == "cpu")
    assert cpu_base.status == "ok" and cpu_base.baseline == "torch cpu"
    assert "(baseline, cuda)" in (tmp_path / "b" / "bench.md").read_text()


def test_bench_device_no_target_has_is_one_line(digits_int8: Artifact, tmp_path: Path) -> None:
    res = run_cli("bench", str(digits_int8.path), "--target", "ort", "--device", "npu", "--dry-run", cwd=tmp_path)
    assert res.code == 2 and "none of the targets runs on device 'npu'" in res.err and "Traceback" not in res.err


def test_bench_parity_failure_is_exit_4_after_the_report(digits_ckpt: Artifact, digits_int8: Artifact, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A requested build that fails parity: the report is still written and printed, then one error
    line through the error tree and exit 4 (the command does not exit by itself)."""
    import edgekit.build
    from edgekit.cli import main
    from edgekit.errors import ParityError

    def broken(*args: object, **kwargs: object) -> dict[str, object]:
        raise ParityError("build output 'output' differs from the QDQ reference by 9.9 (tolerance 0.1)")

    monkeypatch.setattr(edgekit.build, "check_parity", broken)
    copy_artifact(digits_ckpt.path, tmp_path / digits_ckpt.path.name)  # a copy without builds: this one must build
    art = copy_artifact(digits_int8.path, tmp_path / digits_int8.path.name)
    out = tmp_path / "b"
    with pytest.raises(SystemExit) as exit_:
        main(["bench", str(art), "--target", "ort", "--batch", "1", "--processes", "0", "--min-runs", "3",
              "--min-time", "0.01", "--samples", "16", "--out", str(out), "--json", "--overwrite"])
    assert exit_.value.code == 4
    captured = capsys.readouterr()
    rows = json.loads(captured.out)["rows"]
    assert any(r["status"] == "failed" and "differs" in (r["reason"] or "") for r in rows)
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "failed its parity check" in errors[0] and "Traceback" not in captured.err
    assert (out / "bench.json").is_file()
