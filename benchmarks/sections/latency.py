"""resnet18 / mobilenet: batch-1 latency of every way to run one CNN, timed in one process.

The model is edgekit's zoo architecture with real BatchNorm statistics (``benchmarks.models``),
imported with ``import_model`` and an npz source of random images (calibration for INT8, parity
samples for builds). Rows: torch eager FP32, ONNX Runtime FP32, OpenVINO FP32, edgekit INT8 on
OpenVINO and on ONNX Runtime, NNCF's INT8 on OpenVINO and ONNX Runtime's quantize_static INT8 on
ONNX Runtime (peers) and, for ResNet-18, the model pruned to
half its MACs (no fine-tune: latency only) in FP32 and INT8 on OpenVINO. All rows alternate in blocks
under edgekit's harness, ``--repeats`` times; the table holds the median.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from benchmarks.common import (
    RECIPES,
    THREADS,
    Ctx,
    OrtPeerRuntime,
    OvModelRuntime,
    Section,
    Table,
    built_runtime,
    count,
    goal,
    log,
    mb,
    ms,
    ratio,
    speedup,
    time_rows,
    torch_runtime,
)
from benchmarks.models import EFFICIENTNET, MOBILENET, RESNET18, VIT, write_images

TORCH, ORT32, OV32 = "torch eager FP32", "ONNX Runtime FP32", "OpenVINO FP32"
OV8, ORT8, NNCF8 = "edgekit INT8 on OpenVINO", "edgekit INT8 on ONNX Runtime", "NNCF INT8 on OpenVINO (peer)"
ORTQ8 = "ONNX Runtime quantize_static INT8 (peer)"
ORT8ALL = "edgekit INT8 on ONNX Runtime, every layer INT8 (--placement int8)"
PR32, PR8 = "pruned 50% MACs, OpenVINO FP32", "pruned 50% MACs + INT8, OpenVINO"


def _cosine_to(ref: np.ndarray, out: np.ndarray) -> float:
    from edgekit.metrics import cosine

    return cosine(out, ref)


def run_model(ctx: Ctx, name: str, factory: str, kwargs: dict[str, Any], size: int, prune: bool,
              recipe: str = "int8") -> Section:
    from benchmarks.peers import calibration_samples, nncf_available, nncf_int8, ort_quantize_static
    from edgekit.data import match_inputs, resolve_source

    sec = Section(name, f"{name}: latency at batch 1, 1x3x{size}x{size}, {THREADS} threads")
    work = ctx.section_dir(name)
    n_train = 64 if ctx.smoke else 300
    data = f"npz:{write_images(work / f'images{size}-{n_train}.npz', size, train=n_train)}"
    full = ctx.import_model(work / "full", factory, data=data, kwargs=kwargs)
    log(f"{name}: compress {recipe}")
    int8 = ctx.compress(full, ctx.recipe(recipe), "int8")
    x_test = match_inputs(resolve_source(data)("test")[0], full.io)
    feeds = {k: np.ascontiguousarray(v[:1]) for k, v in x_test.items()}

    runtimes: list[tuple[str, Any]] = [(TORCH, torch_runtime(full))]
    info: dict[str, dict[str, Any]] = {TORCH: {"artifact": str(full.path), "macs": full.manifest.metrics.get("macs"),
                                              "params": full.manifest.metrics.get("params")}}
    for label, art, target, placement in ((ORT32, full, "onnxruntime", "latency"), (OV32, full, "openvino", "latency"),
                                          (OV8, int8, "openvino", "latency"), (ORT8, int8, "onnxruntime", "latency"),
                                          (ORT8ALL, int8, "onnxruntime", "int8")):
        log(f"{name}: build {label}")
        rt, built = built_runtime(art, target, placement=placement)
        runtimes.append((label, rt))
        info[label] = {"artifact": str(built.path), "macs": art.manifest.metrics.get("macs"),
                       "params": art.manifest.metrics.get("params"), "size_bytes": _size(built),
                       "precision_ran": built.manifest.target.precision, "parity": built.manifest.metrics.get("parity"),
                       "placement": built.manifest.metrics.get("placement")}
    if ctx.peers and nncf_available() is None:
        log(f"{name}: NNCF INT8 (peer)")
        model, secs = nncf_int8(full.onnx_path, calibration_samples(data, full.io, 300))
        runtimes.append((NNCF8, OvModelRuntime(model, THREADS)))
        info[NNCF8] = {"quantize_s": secs, "macs": full.manifest.metrics.get("macs"), "params": full.manifest.metrics.get("params")}
    if ctx.peers:
        log(f"{name}: ONNX Runtime quantize_static INT8 (peer)")
        path, secs = ort_quantize_static(full.onnx_path, calibration_samples(data, full.io, 300), work / "peers")
        runtimes.append((ORTQ8, OrtPeerRuntime(path, THREADS)))
        info[ORTQ8] = {"quantize_s": secs, "macs": full.manifest.metrics.get("macs"),
                       "params": full.manifest.metrics.get("params"), "size_bytes": path.stat().st_size}
    if prune:
        log(f"{name}: prune to 50% MACs (no fine-tune), then int8 of the pruned model")
        pruned = ctx.compress(full, ctx.recipe(RECIPES / "prune50-latency.yaml"), "prune50")
        pruned8 = ctx.compress(pruned, ctx.recipe("int8"), "int8")
        for label, art, in ((PR32, pruned), (PR8, pruned8)):
            rt, built = built_runtime(art, "openvino")
            runtimes.append((label, rt))
            info[label] = {"artifact": str(built.path), "macs": art.manifest.metrics.get("macs"),
                           "params": art.manifest.metrics.get("params"), "size_bytes": _size(built),
                           "precision_ran": built.manifest.target.precision}

    # numerics sanity check: each row's output vs torch FP32 on the test images (random weights, so no accuracy)
    ref = runtimes[0][1].infer(x_test)
    ref_out = next(iter(ref.values()))
    for label, rt in runtimes:
        info[label]["cosine_to_torch"] = _cosine_to(ref_out, next(iter(rt.infer(x_test).values())))

    log(f"{name}: timing {len(runtimes)} rows x {ctx.repeats} repeats at batch 1")
    timings = time_rows(ctx, runtimes, feeds)
    rows = []
    for label, _ in runtimes:
        t = timings[label]
        rows.append({"row": label, **info[label], **t, "speedup_vs_torch": speedup(timings, TORCH, label)})
    sec.data.update(rows=rows, input=[1, 3, size, size], factory=factory, kwargs=kwargs, repeats=ctx.repeats,
                    timing=asdict(ctx.timing))
    sec.tables.append(Table(
        f"Batch 1, 1x3x{size}x{size}, {THREADS} threads, median of {ctx.repeats} repeat(s)",
        ["row", "p50 ms", "p90 ms", "speedup vs torch", "MACs", "params", "size", "output cosine vs torch"],
        [[r["row"], ms(r["p50"]), ms(r["p90"]), ratio(r["speedup_vs_torch"]), count(r.get("macs")),
          count(r.get("params")), mb(r.get("size_bytes")), f"{r['cosine_to_torch']:.4f}"] for r in rows],
        note="Random weights with real BatchNorm statistics and random-image inputs: latency only (output cosine "
             "is a numerics sanity check, not accuracy). All rows alternate in blocks in one process."))
    _goals(sec, timings)
    return sec


def _size(built: Any) -> int:
    return sum(e.size for n, e in built.manifest.files.items() if n not in ("manifest.json", "timing.cache"))


def _goals(sec: Section, timings: dict[str, dict[str, Any]]) -> None:
    s = speedup(timings, TORCH, OV8)
    sec.goals.append(goal("edgekit INT8 on OpenVINO >= 4x torch eager FP32", ">= 4.00x", s, s is not None and s >= 4.0, "{:.2f}x"))
    for fp32, int8, target in ((OV32, OV8, "OpenVINO"), (ORT32, ORT8, "ONNX Runtime")):  # issue 16
        s = speedup(timings, fp32, int8)
        sec.goals.append(goal(f"edgekit INT8 on {target} faster than {target} FP32", "> 1.00x", s,
                              s is not None and s > 1.0, "{:.2f}x"))
    for peer, what in ((NNCF8, "NNCF OV INT8"), (ORTQ8, "ONNX Runtime quantize_static INT8")):
        mine = OV8 if peer == NNCF8 else ORT8
        r = timings[mine]["p50"] / timings[peer]["p50"] if peer in timings else None
        sec.goals.append(goal(f"edgekit {'OV' if peer == NNCF8 else 'ORT'} INT8 latency / {what} latency <= 0.95",
                              "<= 0.95", r, r is not None and r <= 0.95, "{:.3f}"))
    if ORT8ALL in timings:
        s = speedup(timings, ORT8ALL, ORT8)
        # where placement keeps every layer INT8 the two rows are one graph: their ratio is the noise
        sec.goals.append(goal("latency-aware placement: edgekit ORT INT8 not slower than every layer INT8", ">= 0.95x", s,
                              s is not None and s >= 0.95, "{:.2f}x"))
    if PR32 in timings:
        s = speedup(timings, OV32, PR32)
        sec.goals.append(goal("pruned OV FP32 >= 1.6x faster than unpruned OV FP32", ">= 1.60x", s,
                              s is not None and s >= 1.6, "{:.2f}x"))
        s = speedup(timings, TORCH, PR8)
        sec.goals.append(goal("pruned + INT8 on OpenVINO >= 8x torch eager FP32 (full)", ">= 8.00x", s,
                              s is not None and s >= 8.0, "{:.2f}x"))


# --smoke shrinks the models, not the inputs: at 32-128 px the random-weight nets are so sensitive that
# two correct INT8 kernels differ by more than edgekit's INT8 parity tolerance (see bench_issues.md).
def run_resnet18(ctx: Ctx) -> Section:
    kwargs = {"size": 224, "width": 16} if ctx.smoke else {"size": 224}
    return run_model(ctx, "resnet18", RESNET18, kwargs, 224, prune=True)


def run_mobilenet(ctx: Ctx) -> Section:
    size = 160 if ctx.smoke else 224
    kwargs = {"size": size, "mode": "small"} if ctx.smoke else {"size": size}
    return run_model(ctx, "mobilenet", MOBILENET, kwargs, size, prune=False)


def run_efficientnet(ctx: Ctx) -> Section:
    return run_model(ctx, "efficientnet", EFFICIENTNET, {"size": 224}, 224, prune=False)


def run_vit(ctx: Ctx) -> Section:
    """ViT-Tiny/16: a transformer encoder on images, quantized with the transformer recipe."""
    return run_model(ctx, "vit", VIT, {"size": 224}, 224, prune=False, recipe="int8-transformer")
