"""INT8: accuracy, one portable graph on two runtimes, calibration methods, bias correction, budgets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit.artifact import Artifact
from edgekit.compress import compress
from edgekit.steps.qdq_check import check_file

from ..conftest import assert_user_error, run_cli


def _runtime_preds(art: Artifact, target: str, x: np.ndarray) -> np.ndarray:
    from edgekit.build import build
    from edgekit.targets.base import run_batched
    from edgekit.targets.catalog import CATALOG, load_target

    built = build(art, target, "int8")
    assert built is not None and built.manifest.target is not None
    rt = load_target(CATALOG[target]).load(built.path, built.manifest.target, threads=2)
    return run_batched(rt, {"input": x}, 64)["output"]


def test_int8_digits_accuracy_and_cross_runtime_agreement(digits_int8: Artifact, digits_ckpt: Artifact) -> None:
    from edgekit.data import resolve_source

    full = digits_ckpt.manifest.metrics["test"]["top1"]
    assert digits_int8.manifest.quantized
    assert digits_int8.manifest.metrics["test"]["top1"] >= full - 0.003
    x, y = resolve_source("digits")("test")
    ort_out = _runtime_preds(digits_int8, "onnxruntime", x["input"])
    ov_out = _runtime_preds(digits_int8, "openvino", x["input"])
    assert (ort_out.argmax(1) == ov_out.argmax(1)).mean() >= 0.995
    for out in (ort_out, ov_out):
        assert (out.argmax(1) == y).mean() >= full - 0.003


def test_qdq_graph_is_portable_and_int8(digits_int8: Artifact, digits_ckpt: Artifact) -> None:
    path = digits_int8.path / "model.onnx"
    assert check_file(path) == []
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weight_dqs and all(inits[n.input[0]].dtype == np.int8 for n in weight_dqs)
    assert all(np.all(inits[n.input[2]] == 0) for n in model.graph.node if n.op_type == "QuantizeLinear")
    assert digits_int8.manifest.files["model.onnx"].size < 0.4 * digits_ckpt.manifest.files["model.onnx"].size
    assert digits_int8.manifest.metrics["quantize"]["tensorrt_portable"] is True


@pytest.mark.parametrize("steps", [("s8_to_u8",), ("fold_relu_pairs",), ("fold_relu_pairs", "s8_to_u8")])
def test_exact_rewrites_change_no_value(digits_int8: Artifact, tmp_path: Path, steps: tuple[str, ...]) -> None:
    """Build-time re-expressions that claim exactness give identical outputs on the reference kernels."""
    from edgekit.targets.onnxruntime import OrtRuntime
    from edgekit.targets.qdq_rewrite import rewrite

    src = digits_int8.path / "model.onnx"
    counts = rewrite(src, tmp_path / "r.onnx", steps)
    assert all(n > 0 for n in counts.values()), counts
    x = {"input": np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)}
    a = OrtRuntime(src, ["CPUExecutionProvider"], 1, optimization="disabled").infer(x)["output"]
    b = OrtRuntime(tmp_path / "r.onnx", ["CPUExecutionProvider"], 1, optimization="disabled").infer(x)["output"]
    np.testing.assert_array_equal(a, b)


def test_nonnegative_u8_matches_within_calibrated_range(digits_int8: Artifact, tmp_path: Path) -> None:
    """U8 zero-point-0 for Relu outputs: same values on real data (in the calibrated range)."""
    from edgekit.data import resolve_source
    from edgekit.targets.onnxruntime import OrtRuntime
    from edgekit.targets.qdq_rewrite import rewrite

    src = digits_int8.path / "model.onnx"
    counts = rewrite(src, tmp_path / "r.onnx", ("fold_relu_pairs", "nonnegative_to_u8", "s8_to_u8"))
    assert counts["nonnegative_to_u8"] > 0
    x = {"input": resolve_source("digits")("test")[0]["input"][:64]}
    a = OrtRuntime(src, ["CPUExecutionProvider"], 1, optimization="disabled").infer(x)["output"]
    b = OrtRuntime(tmp_path / "r.onnx", ["CPUExecutionProvider"], 1, optimization="disabled").infer(x)["output"]
    assert (a.argmax(1) == b.argmax(1)).all()
    assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()
    model = onnx.load(str(tmp_path / "r.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    pooled = [q for q in model.graph.node if q.op_type == "QuantizeLinear"
              and producers.get(q.input[0]) is not None and producers[q.input[0]].op_type in ("GlobalAveragePool", "Flatten")]
    assert pooled and all(inits[q.input[2]].dtype == np.uint8 and not inits[q.input[2]].any() for q in pooled)  # pooled Relu


def test_float_weights_folded_where_a_conv_stays_float(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """A Conv with no quantized output gets its weights dequantized once at build time, same outputs."""
    from edgekit.targets.onnxruntime import OrtRuntime
    from edgekit.targets.qdq_rewrite import rewrite

    art = compress(digits_ckpt, _recipe_file(tmp_path, "relufloat", 'ignore: ["Relu"]'), out=tmp_path / "rf")
    assert art is not None
    src = art.path / "model.onnx"
    counts = rewrite(src, tmp_path / "r.onnx", ("fold_float_weights",))
    assert counts["fold_float_weights"] > 0
    x = {"input": np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)}
    a = OrtRuntime(src, ["CPUExecutionProvider"], 1, optimization="disabled").infer(x)["output"]
    b = OrtRuntime(tmp_path / "r.onnx", ["CPUExecutionProvider"], 1, optimization="disabled").infer(x)["output"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_calibration_methods_really_differ(digits_ckpt: Artifact, tmp_path: Path) -> None:
    from edgekit.recipe import QuantizeStep
    from edgekit.steps import Context
    from edgekit.steps.qdq_graph import preprocess
    from edgekit.steps.quantize import CNN_OPS, calibrate, calibration_set, range_table

    pre = tmp_path / "pre.onnx"
    preprocess(digits_ckpt.path / "model.onnx", pre)
    ctx = Context(parent=digits_ckpt, root=digits_ckpt, data="digits", workdir=tmp_path)
    ranges = {}
    for method in ("minmax", "entropy", "percentile"):
        opts = QuantizeStep(kind="quantize", method=method, samples=128)
        x = calibration_set(opts, ctx, digits_ckpt.io)
        r = calibrate(pre, x, opts, CNN_OPS, tmp_path)
        ranges[method] = range_table(r)
    names = sorted(ranges["minmax"])
    differ = {m: sum(ranges[m][n] != ranges["minmax"][n] for n in names) for m in ("entropy", "percentile")}
    assert differ["entropy"] >= len(names) // 2, differ
    assert differ["percentile"] >= len(names) // 2, differ
    # percentile and entropy clip: never wider than the observed min/max
    for m in ("entropy", "percentile"):
        assert all(ranges[m][n][1] <= ranges["minmax"][n][1] + 1e-6 for n in names)


def test_bias_correction_reduces_output_shift(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """With bias correction the INT8 model's mean output error per class is smaller."""
    from edgekit.data import resolve_source
    from edgekit.evaluate import predict_onnx

    shifts = {}
    x, _ = resolve_source("digits")("val")
    ref = predict_onnx(digits_ckpt.path / "model.onnx", x)
    for bc in (True, False):
        recipe = tmp_path / f"bc{bc}.yaml"
        recipe.write_text(f"name: bc{int(bc)}\nsteps:\n  - kind: quantize\n    method: minmax\n    bias_correction: {str(bc).lower()}\n")
        art = compress(digits_ckpt, str(recipe), out=tmp_path / f"out{bc}")
        assert art is not None
        out = predict_onnx(art.path / "model.onnx", x)
        shifts[bc] = float(np.abs((out - ref).mean(0)).mean())
    assert shifts[True] < shifts[False], shifts


def test_budget_fallback_then_holds(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """A budget that plain INT8 misses triggers fallback; the report names the layers and their cost."""
    recipe = tmp_path / "tight.yaml"
    recipe.write_text("name: tight\nsteps:\n  - kind: quantize\n    method: percentile\n    percentile: 93\n"
                      "    max_accuracy_drop: 0.005\n    max_fallback_fraction: 1.0\n")
    res = run_cli("compress", str(digits_ckpt.path), "--recipe", str(recipe), "--out", str(tmp_path / "t"), "--json",
                  cwd=tmp_path)
    assert res.code == 0, res.err
    budget = json.loads(res.out)["metrics"]["budget"]
    assert budget["float_val"] - budget["plain_int8_val"] > 0.005, "plain INT8 must miss the budget first"
    assert budget["met"] and budget["float_val"] - budget["int8_val"] <= 0.005
    assert budget["fallback"] and all({"node", "sensitivity", "val_after"} <= set(f) for f in budget["fallback"])


def test_budget_ranks_by_quantization_noise_when_layers_are_many(digits_ckpt: Artifact, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Past PROBE_LIMIT layers the fallback order comes from one quantization-noise pass, and still meets the budget."""
    from edgekit.steps import quantize

    monkeypatch.setattr(quantize, "PROBE_LIMIT", 0)
    recipe = tmp_path / "tight.yaml"
    recipe.write_text("name: tight\nsteps:\n  - kind: quantize\n    method: percentile\n    percentile: 93\n"
                      "    max_accuracy_drop: 0.005\n    max_fallback_fraction: 1.0\n")
    art = compress(digits_ckpt, str(recipe), out=tmp_path / "n")
    assert art is not None
    budget = art.manifest.metrics["budget"]
    assert budget["float_val"] - budget["plain_int8_val"] > 0.005 and budget["met"]
    noise = [f["sensitivity"] for f in budget["fallback"]]
    assert noise and all(f["ranking"] == "noise" for f in budget["fallback"])
    assert noise == sorted(noise, reverse=True) and noise[-1] > 0  # noisiest input first


def test_impossible_budget_exits_3_and_keeps_best(digits_ckpt: Artifact, tmp_path: Path) -> None:
    recipe = tmp_path / "impossible.yaml"
    recipe.write_text("name: impossible\nsteps:\n  - kind: quantize\n    method: percentile\n    percentile: 51\n"
                      "    max_accuracy_drop: 0.0\n")
    res = run_cli("compress", str(digits_ckpt.path), "--recipe", str(recipe), "--out", str(tmp_path / "i"), cwd=tmp_path)
    assert res.code == 3, res.err
    assert "budget missed" in res.err and "Traceback" not in res.err
    art = Artifact.load(tmp_path / "i")
    assert art.manifest.metrics["budget_met"] is False


def test_cpu_profile_is_u8_and_not_tensorrt_portable(digits_ckpt: Artifact, tmp_path: Path) -> None:
    art = compress(digits_ckpt, "int8-cpu", out=tmp_path / "cpu")
    assert art is not None and art.manifest.metrics["quantize"]["tensorrt_portable"] is False
    assert {v.rule for v in check_file(art.path / "model.onnx")} & {"int8", "zero-point"}
    res = run_cli("build", str(art.path), "--target", "trt", cwd=tmp_path)
    assert_user_error(res, "cpu profile")
    # its U8 activations use 0..255: OpenVINO's model.xml must not clip them to the portable 0..127
    from edgekit.build import build

    built = build(art, "openvino", "int8")
    assert built is not None and built.manifest.target is not None
    rewrites = built.manifest.target.options["rewrites"]
    assert rewrites["u8_to_7bit"] == 0 and rewrites["wide_layers_float"] > 0
    parity = built.manifest.metrics["parity"]
    assert parity["max_error"] <= parity["tolerance"] and parity.get("portable_model", 0.0) <= parity["tolerance"]


def test_shipped_calibration_set(digits_ckpt: Artifact, tmp_path: Path) -> None:
    res = run_cli("compress", str(digits_ckpt.path), "--recipe", "int8", "--calib", "digits-calib", "--out",
                  str(tmp_path / "c"), "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    assert json.loads(res.out)["metrics"]["quantize"]["calibration"] == "digits-calib"


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("few", "at least 32 are needed"),
        ("shape", "has shape"),
        ("dtype", "has dtype"),
        ("nan", "NaN"),
    ],
)
def test_bad_calibration_inputs(digits_ckpt: Artifact, tmp_path: Path, setup: str, needle: str) -> None:
    rng = np.random.default_rng(0)
    if setup == "few":
        x = rng.random((10, 1, 8, 8), dtype=np.float32)
    elif setup == "shape":
        x = rng.random((64, 1, 6, 6), dtype=np.float32)
    elif setup == "dtype":
        x = np.array([["a"] * 64] * 64).reshape(64, 1, 8, 8)
    else:
        x = rng.random((64, 1, 8, 8), dtype=np.float32)
        x[::4, 0, 0, 0] = np.nan  # in every split
    np.savez(tmp_path / "calib.npz", x=x)
    res = run_cli("compress", str(digits_ckpt.path), "--recipe", "int8", "--calib", f"npz:{tmp_path / 'calib.npz'}",
                  "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert_user_error(res, needle)
    assert not (tmp_path / "o").exists()


def _recipe_file(tmp_path: Path, name: str, option: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nsteps:\n  - kind: quantize\n    {option}\n")
    return str(path)


def test_transformer_int8_keeps_norms_float(tmp_path: Path) -> None:
    from edgekit.importer import import_model

    root = import_model("tiny_transformer", data="userzoo:tokens", out=tmp_path / "tt")
    art = compress(root, "int8", out=tmp_path / "tt-int8")
    assert art is not None
    note = art.manifest.metrics["quantize"]
    assert note["transformer"] and note["smoothed_inputs"] > 0
    model = onnx.load(str(art.path / "model.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "Erf"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input), node.name
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert matmuls and all("QuantizeLinear" not in consumers.get(n.output[0], []) for n in matmuls)  # inputs only
    assert art.manifest.metrics["test"]["cosine"] >= 0.99
    assert check_file(art.path / "model.onnx") == []
    plain = compress(root, _recipe_file(tmp_path, "nosmooth", "smooth_quant: false"), out=tmp_path / "tt-plain")
    assert plain is not None and plain.manifest.metrics["quantize"]["smoothed_inputs"] == 0
    assert check_file(plain.path / "model.onnx") == []  # shape-only consumers read the float tensor


def test_squeeze_excite_branches_are_found(tmp_path: Path) -> None:
    """Every SE branch of MobileNetV3 (pool, two 1x1 convs, ReLU, gate) is kept float by default."""
    import torch

    from edgekit.models.zoo import MobileNetV3, SqueezeExcite
    from edgekit.steps.qdq_graph import squeeze_excite_nodes

    model = MobileNetV3(num_classes=10, mode="small").eval()
    path = tmp_path / "mbv3.onnx"
    torch.onnx.export(model, (torch.rand(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17)
    blocks = sum(isinstance(m, SqueezeExcite) for m in model.modules())
    found = squeeze_excite_nodes(path)
    assert blocks > 0 and len(found) == 5 * blocks, (blocks, sorted(found))
    assert {n.split("/")[-1].rstrip("_0123456789") for n in found} <= {"GlobalAveragePool", "Conv", "Relu", "HardSigmoid"}


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_range_is_the_least_error_range(symmetric: bool) -> None:
    """method: mse picks, from ONNX Runtime's calibration histogram, the range whose INT8 rounding +
    clipping error on the data is (within histogram resolution) the least of all ranges tried."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    from edgekit.steps.quantize import mse_ranges

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(200_000), 40 * rng.standard_normal(20)]).astype(np.float32)  # rare outliers
    if not symmetric:
        x = np.maximum(x, -0.5) + 0.5  # skewed, nonnegative-ish
    collector = HistogramCollector("percentile", symmetric, 2048, 128, 100.0, "same")
    for part in np.array_split(x, 4):
        collector.collect({"t": [part]})
    lo, hi = (float(np.ravel(v)[0]) for v in mse_ranges(collector.histogram_dict, symmetric)["t"].range_value)

    def error(low: float, high: float) -> float:
        if symmetric:
            step = high / 127
            q = np.clip(np.round(x / step), -127, 127) * step
        else:
            step = (high - low) / 255
            zero = np.round(-low / step)
            q = (np.clip(np.round(x / step) + zero, 0, 255) - zero) * step
        return float(((x - q) ** 2).mean())

    chosen = error(lo, hi)
    absmax = float(np.abs(x).max())
    full = error(-absmax, absmax) if symmetric else error(min(float(x.min()), 0.0), float(x.max()))
    assert chosen < 0.9 * full  # the outliers no longer set the step alone
    grid = ([(-t, t) for t in np.linspace(0.5, absmax, 400)] if symmetric
            else [(min(float(x.min()), 0.0), t) for t in np.linspace(1.0, float(x.max()), 400)])
    assert chosen <= 1.02 * min(error(a, b) for a, b in grid)


def test_full_bias_correction_removes_each_layers_mean_shift(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """bias_correction: full measures each layer's shift on the QDQ graph (its real input, rounding and
    clipping included): per output channel of every quantized layer the mean error against float is
    under three quarters of what it is without correction, and within 10 % of the weights-only
    correction's."""
    from edgekit.data import resolve_source
    from edgekit.explain import _layers, _with_outputs
    from edgekit.onnx_graph import cpu_session

    x, _ = resolve_source("digits")("train")
    shift = {}
    for bc in ("false", "true", "full"):
        art = compress(digits_ckpt, _recipe_file(tmp_path, f"bc{bc}", f"bias_correction: {bc}"), out=tmp_path / f"o{bc}")
        assert art is not None
        q, f = onnx.load(str(art.path / "model.onnx")), onnx.load(str(art.path / "reference.onnx"))
        layers = _layers(q, f)
        _with_outputs(q, [la.q_out for la in layers], tmp_path / f"q{bc}.onnx")
        _with_outputs(f, [la.f_out for la in layers], tmp_path / f"f{bc}.onnx")
        qv = cpu_session(tmp_path / f"q{bc}.onnx").run([la.q_out for la in layers], {"input": x["input"][:300]})
        fv = cpu_session(tmp_path / f"f{bc}.onnx").run([la.f_out for la in layers], {"input": x["input"][:300]})
        per_layer = [np.abs((a.astype(np.float64) - b).swapaxes(1, -1).reshape(-1, a.shape[1]).mean(0)).mean() / np.abs(b).mean()
                     for a, b in zip(qv, fv, strict=True)]
        shift[bc] = float(np.mean(per_layer))
    # both corrections remove much of the shift; full, which corrects each layer's own shift (upstream
    # ones are theirs), is as good as weights-only on what accumulates here: below it on x86-amx, 4 %
    # above on x86-avx512-vnni's training of the same model. How much is left depends on the trained
    # model, so on the CPU kind that trained it: weights-only left 0.62 of the shift and full 0.50 on
    # x86-avx2, under half on the other kinds
    assert shift["true"] < 0.75 * shift["false"] and shift["full"] < 0.75 * shift["false"], shift
    assert shift["full"] < 1.1 * shift["true"], shift
