"""edgekit explain: per-layer INT8 error, the layer behind a drop named first, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from edgekit.artifact import REFERENCE_ONNX, Artifact

from .conftest import assert_user_error, copy_artifact, run_cli


def _recipe(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nsteps:\n  - kind: quantize\n{body}")
    return path


def test_int8_artifact_keeps_its_float_reference(digits_int8: Artifact) -> None:
    """The graph explain compares with: float, and holding every layer the INT8 graph quantized."""
    assert REFERENCE_ONNX in digits_int8.manifest.files
    ref = onnx.load(str(digits_int8.path / REFERENCE_ONNX))
    q = onnx.load(str(digits_int8.path / "model.onnx"))
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in ref.graph.node)
    assert {n.name for n in q.graph.node if n.op_type == "Conv"} <= {n.name for n in ref.graph.node}


def test_explain_cli_on_an_int8_artifact(digits_int8: Artifact, tmp_path: Path) -> None:
    out = tmp_path / "ex"
    res = run_cli("explain", str(digits_int8.path), "--out", str(out), "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert {p.name for p in out.iterdir()} == {"explain.json", "explain.md", "explain.png"}
    assert json.loads((out / "explain.json").read_text())["layers"] == report["layers"]
    assert len(report["layers"]) == digits_int8.manifest.metrics["quantize"]["quantized_layers"]
    assert report["metric"] == "top1" and report["split"] == "val" and report["probed"]
    for layer in report["layers"]:
        assert layer["sqnr_alone_db"] > 20 and layer["sqnr_accumulated_db"] > 15, layer  # a trained CNN on digits
        assert 0.99 < layer["cosine_accumulated"] <= 1.0
        assert layer["weight_channel_absmax"]["max"] >= layer["weight_channel_absmax"]["median"] > 0
        assert layer["clipped_fraction"] is not None and 0 <= layer["clipped_fraction"] < 0.01
        assert layer["metric_gain"] is not None
    assert report["advice"] and report["culprits"]
    assert "explain" in res.err and "SQNR" in res.err  # the table on stderr
    again = run_cli("explain", str(digits_int8.path), "--out", str(out))
    assert_user_error(again, "exists")


def test_the_layer_behind_a_drop_comes_first(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """One layer's input range forced 100x too wide (its input rounds to a few levels): that layer
    alone causes the drop, and explain names it first with the recipe lines that fix it."""
    from edgekit.explain import explain

    ref = onnx.load(str(digits_ckpt.path / "model.onnx"))
    convs = [n for n in ref.graph.node if n.op_type == "Conv"]
    target = convs[len(convs) // 2].name
    recipe = _recipe(tmp_path, "broken", f"    overrides:\n      '{target}': {{activation_range: [-1000, 1000]}}\n")
    report = explain(digits_ckpt, recipe=str(recipe), out=tmp_path / "ex")
    assert report.drop is not None and report.drop > 0.02, report.drop
    first = report.layers[0]
    assert first.name == target, [(r.name, r.metric_gain) for r in report.layers[:3]]
    assert report.culprits[0] == target
    assert first.metric_gain is not None and first.metric_gain >= 0.5 * report.drop
    assert first.sqnr_alone_db is not None and first.sqnr_alone_db < 15
    others = [r.sqnr_alone_db for r in report.layers if r.name != target and r.sqnr_alone_db is not None]
    assert np.median(others) > 30
    assert first.calibrated_range is not None and first.calibrated_range[1] > 500
    assert f"ignore: ['{target}']" in report.advice and "activation_range" in report.advice
    md = (tmp_path / "ex" / "explain.md").read_text()
    assert target in md.split("\n| 1 |")[1].splitlines()[0]
    assert not (digits_ckpt.path / "broken").exists()  # quantized in memory: no artifact written


def test_explain_without_probe_ranks_by_error_alone(digits_int8: Artifact, tmp_path: Path) -> None:
    from edgekit.explain import explain

    report = explain(digits_int8, probe=False, samples=64, out=tmp_path / "ex")
    assert report.samples == 64 and not report.probed
    assert all(r.metric_gain is None for r in report.layers)
    alone = [r.sqnr_alone_db for r in report.layers]
    assert alone == sorted(alone)


def test_explain_reports_the_latency_placement_of_the_onnxruntime_build(digits_int8: Artifact, tmp_path: Path) -> None:
    """With an ONNX Runtime INT8 build of the artifact on this CPU kind, every layer's INT8 and float
    time and what the build runs it as stand beside its error: why INT8 is slower here, if it is."""
    from edgekit.build import build
    from edgekit.explain import explain

    built = build(digits_int8, "onnxruntime", "int8")
    assert built is not None and built.manifest.target is not None
    regions = {r["layer"]: r for r in built.manifest.target.options["placement"]["regions"]}
    report = explain(digits_int8, probe=False, samples=64, out=tmp_path / "ex")
    assert report.placement is not None and report.placement["build"] == str(built.path)
    assert {r.name for r in report.layers} == set(regions)
    for r in report.layers:
        assert (r.int8_ms, r.float_ms, r.placement) == (regions[r.name]["int8_ms"], regions[r.name]["float_ms"],
                                                         regions[r.name]["choice"])
    md = (tmp_path / "ex" / "explain.md").read_text()
    assert "ORT ms INT8/float" in md and "Latency on ONNX Runtime" in md


def test_explain_bad_input(digits_ckpt: Artifact, digits_int8: Artifact, tmp_path: Path) -> None:
    assert_user_error(run_cli("explain", str(digits_ckpt.path), "--out", str(tmp_path / "a")), "float model")
    assert_user_error(run_cli("explain", str(digits_int8.path), "--recipe", "int8", "--out", str(tmp_path / "b")),
                      "already INT8")
    prune = tmp_path / "p.yaml"
    prune.write_text("name: p\nsteps:\n  - kind: prune\n    target_macs_ratio: 0.5\n")
    assert_user_error(run_cli("explain", str(digits_ckpt.path), "--recipe", str(prune), "--out", str(tmp_path / "c")),
                      "no quantize step")
    copy_artifact(digits_ckpt.path, tmp_path / digits_ckpt.path.name)  # its lineage parent, beside it as it was
    old = copy_artifact(digits_int8.path, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["files"][REFERENCE_ONNX]
    (old / "manifest.json").write_text(json.dumps(manifest))
    (old / REFERENCE_ONNX).unlink()
    assert_user_error(run_cli("explain", str(old), "--out", str(tmp_path / "d")), "reference.onnx")
    assert not any((tmp_path / n).exists() for n in "abcd")
