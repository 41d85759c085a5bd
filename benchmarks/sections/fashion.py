"""fashion: INT8 and prune+KD+INT8 accuracy on real data (Fashion-MNIST, 10,000 test images).

FP32 small_cnn trained by edgekit; INT8 by edgekit's portable recipe (symmetric activations, one graph
for every target) and its ``int8-cpu`` profile (asymmetric U8 activations), each run by OpenVINO and
ONNX Runtime; beside them NNCF's own INT8 of the same FP32 graph (its default preset, and the mixed
preset with asymmetric activations) with the same 300 calibration samples; and ``prune50-kd-int8``. Accuracy and agreement with FP32 on
all 10,000 test images, through the compiled runtimes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import (
    THREADS,
    Ctx,
    OvModelRuntime,
    Section,
    Table,
    built_runtime,
    count,
    goal,
    log,
    pct,
    pts,
    run_all,
)

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
SOURCE = f"idx:{DATA_DIR}"
HINT = "apt-get install dataset-fashion-mnist   (Debian/Ubuntu: MNIST-format files in /usr/share/datasets/fashion-mnist)"
WIDTH, EPOCHS = 16, 8  # FP32 ~92% test top-1 in a few minutes on 2 cores
NNCF = "NNCF INT8 (peer, default preset)"
NNCF_MIXED = "NNCF INT8 (peer, mixed preset)"
NNCF_FULL_BC = "NNCF INT8 (peer, full bias correction)"
# Why NNCF's default loses ~3.8 pts here (measured, 2026-12-04): its fast bias correction estimates
# each conv's output shift by running the conv on a "mean blob" (every pixel set to the channel's
# mean). Fashion-MNIST's black borders and the convs' zero padding make that estimate wrong at the
# edges, and the shift it applies is mostly that edge error (correlation 0.99 with it, 2-6x the
# shift full bias correction finds). Adding only those shifts to the unquantized FP32 model costs
# 3.84 pts; NNCF's full bias correction (fast_bias_correction=False) keeps FP32 accuracy.
FBC_CAUSE = ("NNCF's default fast bias correction runs each conv on a per-channel mean image, which "
             "zero padding and Fashion-MNIST's black borders make wrong at the edges: the shifts it adds "
             "are mostly that error (alone, on the unquantized FP32 model, they cost ~3.8 pts); its full "
             "bias correction (fast_bias_correction=False) does not have it")


def run(ctx: Ctx) -> Section:
    from benchmarks.peers import calibration_samples, nncf_available, nncf_int8
    from edgekit.checkpoint import load_module
    from edgekit.data import match_inputs, resolve_source
    from edgekit.metrics import agreement, top1
    from edgekit.torchutil import predict
    from edgekit.train import TrainConfig

    sec = Section("fashion", f"fashion: INT8 on real data (small_cnn width {WIDTH}, Fashion-MNIST, 10,000 test images)")
    if not any(DATA_DIR.glob("t10k-images*")):
        sec.status, sec.reason = "skipped", f"Fashion-MNIST not found in {DATA_DIR}; install it with: {HINT}"
        log(sec.reason)
        return sec
    cfg = TrainConfig(data=SOURCE, epochs=EPOCHS, model_kwargs={"width": WIDTH}, batch_size=128)
    full = ctx.train(ctx.section_dir("fashion") / "small_cnn", cfg)
    x_raw, y = resolve_source(SOURCE)("test")
    assert y is not None
    x = match_inputs(x_raw, full.io)
    ref = predict(load_module(full), x)  # FP32 torch: the reference for Δ and agreement
    full_top1, full_macs = top1(ref, y), int(full.manifest.metrics["macs"])
    log(f"fashion: FP32 test top-1 {full_top1:.4f}")

    arts = {name: ctx.compress(full, ctx.recipe(name), name) for name in ("int8", "int8-cpu", "prune50-kd-int8")}
    plan: list[tuple[str, str, Any]] = [("FP32", "torch", None)]
    plan += [("FP32", t, full) for t in ("onnxruntime", "openvino")]
    plan += [(f"edgekit {n}", t, arts[n]) for n in ("int8", "int8-cpu") for t in ("openvino", "onnxruntime")]
    rows: list[dict[str, Any]] = []
    for variant, target, art in plan:
        if art is None:
            out = ref
        else:
            log(f"fashion: {variant} on {target}")
            rt, _ = built_runtime(art, target, threads=THREADS)
            out = run_all(rt, x)
        rows.append({"variant": variant, "target": target, "top1": top1(out, y), "agreement": agreement(out, ref),
                     "macs_ratio": 1.0})
    if ctx.peers and nncf_available() is None:
        calib = calibration_samples(SOURCE, full.io, 300)
        for label, preset, fast in ((NNCF, None, True), (NNCF_MIXED, "mixed", True), (NNCF_FULL_BC, None, False)):
            log(f"fashion: {label} on openvino")
            model, secs = nncf_int8(full.onnx_path, calib, preset=preset, fast_bias_correction=fast)
            out = run_all(OvModelRuntime(model, THREADS), x)
            rows.append({"variant": label, "target": "openvino", "top1": top1(out, y),
                         "agreement": agreement(out, ref), "macs_ratio": 1.0, "quantize_s": secs})
    pk = arts["prune50-kd-int8"]
    pk_macs = pk.manifest.metrics.get("macs")
    for target in ("openvino", "onnxruntime"):
        rt, _ = built_runtime(pk, target, threads=THREADS)
        out = run_all(rt, x)
        rows.append({"variant": "edgekit prune50-kd-int8", "target": target, "top1": top1(out, y),
                     "agreement": agreement(out, ref), "macs_ratio": pk_macs / full_macs if pk_macs else None})
    for r in rows:
        r["delta"] = r["top1"] - full_top1
    sec.data.update(rows=rows, fp32_top1=full_top1, fp32_macs=full_macs, width=WIDTH, epochs=EPOCHS,
                    budget_met=pk.manifest.metrics.get("budget_met"),
                    activations={n: arts[n].manifest.metrics.get("quantize", {}).get("profile") for n in ("int8", "int8-cpu")})
    sec.tables.append(Table(
        "Test top-1 and agreement with FP32 (torch) on all 10,000 test images",
        ["variant", "target", "top-1 %", "Δ pts", "agreement %", "MACs vs full"],
        [[r["variant"], r["target"], pct(r["top1"]), pts(r["delta"]), pct(r["agreement"]),
          pct(r["macs_ratio"], 1) + " %"] for r in rows],
        note=f"FP32: {count(full_macs)} MACs. edgekit int8 = portable profile (symmetric S8 activations, zero point 0; "
             "TensorRT-portable); int8-cpu = asymmetric U8 activations; NNCF = nncf.quantize on "
             "ov.convert_model(model.onnx) with the same 300 calibration samples, compiled with INFERENCE_PRECISION_HINT "
             "f32: its default for CNNs is the performance preset (symmetric activations, unsigned where they cannot "
             "be negative), the mixed preset has asymmetric activations; full bias correction = "
             "fast_bias_correction=False. " + FBC_CAUSE + "."))

    by = {(r["variant"], r["target"]): r for r in rows}
    for target in ("openvino", "onnxruntime"):
        r = by[("edgekit int8", target)]
        sec.goals.append(goal(f"edgekit int8 on {target} loses <= 0.5 points", "Δ >= -0.50 pts", r["delta"] * 100,
                              r["delta"] * 100 >= -0.5 - 1e-9, "{:+.2f} pts"))
        sec.goals.append(goal(f"edgekit int8 on {target} agrees with FP32 on >= 99% of test images", ">= 99.00 %",
                              r["agreement"] * 100, r["agreement"] >= 0.99, "{:.2f} %"))
    for target in ("openvino", "onnxruntime"):
        r = by[("edgekit prune50-kd-int8", target)]
        sec.goals.append(goal(f"prune50-kd-int8 on {target} within 1.5 points of FP32", "Δ >= -1.50 pts", r["delta"] * 100,
                              r["delta"] * 100 >= -1.5 - 1e-9, "{:+.2f} pts"))
    ratio = by[("edgekit prune50-kd-int8", "openvino")]["macs_ratio"]
    sec.goals.append(goal("prune50-kd-int8 has >= 50% fewer MACs", "<= 50.0 % of full MACs",
                          None if ratio is None else ratio * 100, ratio is not None and ratio <= 0.5 + 1e-9, "{:.1f} %"))
    parts = [f"{v} {pts(by[(v, 'openvino')]['delta'])} pts / {pct(by[(v, 'openvino')]['agreement'])} % agreement"
             for v in ("edgekit int8", "edgekit int8-cpu", NNCF, NNCF_MIXED, NNCF_FULL_BC) if (v, "openvino") in by]
    sec.notes.append("What the activation scheme costs, on OpenVINO (Δ top-1 / agreement with FP32): "
                     + "; ".join(parts) + ".")
    sec.notes.append(f"prune50-kd-int8 accuracy budget met on val: {sec.data['budget_met']}.")
    return sec
