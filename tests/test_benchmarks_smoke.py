"""benchmarks/run.py --smoke: the one-command benchmark keeps working (DESIGN.md §6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("bench-smoke")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(out)],
                          cwd=out, env=env(), capture_output=True, text=True, timeout=600, check=False)
    return out, proc


def _section(out: Path, name: str) -> dict:
    data = json.loads((out / f"{name}.json").read_text())
    assert data["section"] == name and data["smoke"] is True
    assert data["status"] == "ok", data.get("reason")
    return data


def test_smoke_run_exits_0_and_writes_every_file(smoke: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = smoke
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("summary.md", "machine.json", "digits.json", "resnet18.json", "mobilenet.json"):
        assert (out / name).is_file(), name
    assert not (out / "fashion.json").exists() and not (out / "bert.json").exists()  # not part of --smoke
    machine = json.loads((out / "machine.json").read_text())
    assert machine["cores"] >= 1 and machine["cpu"] and "onnxruntime" in machine["versions"]
    assert "--smoke" in machine["command"]


def test_digits_rows_and_goals(smoke: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    data = _section(smoke[0], "digits")
    rows = {r["variant"]: r for r in data["data"]["rows"]}
    assert set(rows) == {"full", "int8", "prune50", "prune50-kd-int8", "prune50-int8", "prune50-ft-int8"}
    assert 0.5 < rows["full"]["top1"] <= 1.0
    assert rows["int8"]["macs_ratio"] == 1.0
    for name in ("prune50", "prune50-kd-int8", "prune50-int8"):
        assert rows[name]["macs_ratio"] <= 0.55, (name, rows[name]["macs_ratio"])  # the prune step ran
    assert len(data["goals"]) == 5 and all(g["verdict"] in ("pass", "FAIL") for g in data["goals"])
    bench = data["data"]["bench"]
    seen = {(r["variant"], r["target"], r["batch"]) for r in bench["rows"] if r["status"] == "ok"}
    for batch in (1, 256):
        assert {("full", "torch", batch), ("int8", "onnxruntime", batch), ("int8", "openvino", batch)} <= seen


@pytest.mark.parametrize("name", ["resnet18", "mobilenet"])
def test_latency_rows_are_timed(smoke: tuple[Path, subprocess.CompletedProcess[str]], name: str) -> None:
    data = _section(smoke[0], name)
    rows = {r["row"]: r for r in data["data"]["rows"]}
    want = {"torch eager FP32", "ONNX Runtime FP32", "OpenVINO FP32", "edgekit INT8 on OpenVINO",
            "edgekit INT8 on ONNX Runtime", "edgekit INT8 on ONNX Runtime, every layer INT8 (--placement int8)"}
    if name == "resnet18":
        want |= {"pruned 50% MACs, OpenVINO FP32", "pruned 50% MACs + INT8, OpenVINO"}
    assert set(rows) == want  # no NNCF peer row in --smoke
    for label, r in rows.items():
        assert r["p50"] > 0 and r["runs"] >= 5, label
        assert r["cosine_to_torch"] > 0.9 or "pruned" in label, (label, r["cosine_to_torch"])
    if name == "resnet18":
        assert rows["pruned 50% MACs, OpenVINO FP32"]["macs"] < 0.55 * rows["torch eager FP32"]["macs"]
    verdicts = {g["goal"]: g["verdict"] for g in data["goals"]}
    assert verdicts["edgekit OV INT8 latency / NNCF OV INT8 latency <= 0.95"] == "n/a"  # peers are off
    assert verdicts["latency-aware placement: edgekit ORT INT8 not slower than every layer INT8"] in ("pass", "FAIL")


def test_summary_has_every_section_and_goal_table(smoke: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    text = (smoke[0] / "summary.md").read_text()
    assert text.startswith("# edgekit benchmarks")
    assert "## Headline:" in text and "| section | goal | target | measured | result |" in text
    for title in ("## digits:", "## resnet18:", "## mobilenet:"):
        assert title in text
    assert "| int8 | INT8 PTQ |" in text
    assert "| edgekit INT8 on OpenVINO |" in text
    assert "Smoke run" in text


def test_the_nncf_peer_is_compiled_like_edgekits_own_int8(digits_int8) -> None:  # type: ignore[no-untyped-def]
    """The peer's OpenVINO model gets exactly the compile config the OpenVINO target gives an INT8 build."""
    import openvino as ov

    from edgekit.build import build
    from edgekit.targets.openvino import compile_config

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from common import THREADS, OvModelRuntime
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    built = build(digits_int8, "openvino", "int8")
    assert built is not None and built.manifest.target is not None
    peer = OvModelRuntime(ov.Core().read_model(str(built.path / built.manifest.target.model_file)), THREADS)
    assert peer.config == compile_config(built.manifest.target, THREADS)
