"""digits: accuracy of each compression recipe on the embedded default (small CNN, 8x8 digits).

Train the default small_cnn, then compress it with ``int8``, ``prune50``, ``prune50-kd-int8`` and the
same prune + INT8 without the distill step (``benchmarks/recipes/prune50-int8.yaml``). As a fairer
control for the distillation claim, ``prune50-ft-int8`` replaces the distill step by a plain
fine-tune of the same length. Then ``edgekit.bench.compare.bench`` on the INT8 artifact.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import RECIPES, THREADS, Ctx, Section, Table, count, goal, log, mb, pct, pts

VARIANTS = [
    # (variant, recipe, what it is)
    ("int8", "int8", "INT8 PTQ"),
    ("prune50", "prune50", "prune 50% MACs -> fine-tune"),
    ("prune50-kd-int8", "prune50-kd-int8", "prune -> distill -> INT8 (budget)"),
    ("prune50-int8", str(RECIPES / "prune50-int8.yaml"), "prune -> INT8 (budget), no distill"),
    ("prune50-ft-int8", str(RECIPES / "prune50-ft-int8.yaml"), "prune -> fine-tune (as long as the distill) -> INT8 (budget)"),
]


def _row_of(name: str, what: str, art: Any, full_top1: float, full_macs: int) -> dict[str, Any]:
    m = art.manifest.metrics
    top1 = m.get("test", {}).get("top1")
    macs = m.get("macs")
    return {
        "variant": name, "what": what, "artifact": str(art.path), "top1": top1,
        "delta": None if top1 is None else top1 - full_top1,
        "macs": macs, "macs_ratio": None if not macs else macs / full_macs, "params": m.get("params"),
        "size_bytes": m.get("size_bytes"), "budget_met": m.get("budget_met"),
        "float_layers": len(m.get("quantize", {}).get("float_layers", [])) if "quantize" in m else None,
    }


def run(ctx: Ctx) -> Section:
    from edgekit.bench.compare import BenchRequest, bench
    from edgekit.bench.report import COLUMNS, row_cells
    from edgekit.data import resolve_source
    from edgekit.train import TrainConfig

    sec = Section("digits", "digits: accuracy of the compression recipes (small_cnn, sklearn digits)")
    epochs = 3 if ctx.smoke else 30
    full = ctx.train(ctx.section_dir("digits") / "small_cnn", TrainConfig(epochs=epochs))
    fm = full.manifest.metrics
    full_top1, full_macs = float(fm["test"]["top1"]), int(fm["macs"])
    n_test = len(resolve_source("digits")("test")[0]["input"])
    rows = [{"variant": "full", "what": f"small_cnn, {epochs} epochs", "artifact": str(full.path), "top1": full_top1,
             "delta": 0.0, "macs": full_macs, "macs_ratio": 1.0, "params": fm.get("params"),
             "size_bytes": fm.get("size_bytes"), "budget_met": None, "float_layers": None}]
    arts = {}
    for name, recipe, what in VARIANTS:
        log(f"digits: compress {name}")
        arts[name] = ctx.compress(full, ctx.recipe(recipe), name)
        rows.append(_row_of(name, what, arts[name], full_top1, full_macs))
    sec.data["rows"] = rows
    sec.data["test_images"] = n_test
    sec.tables.append(Table(
        f"Test top-1 on the {n_test} held-out digits (one image = {100 / n_test:.2f} points)",
        ["variant", "steps", "top-1 %", "Δ pts", "MACs", "MACs vs full", "params", "ONNX size", "budget met"],
        [[r["variant"], r["what"], pct(r["top1"]), pts(r["delta"]), count(r["macs"]), pct(r["macs_ratio"], 1) + " %",
          count(r["params"]), mb(r["size_bytes"]), {True: "yes", False: "no", None: "-"}[r["budget_met"]]] for r in rows],
        note="top-1 of INT8 artifacts is the QDQ graph on ONNX Runtime (what compress reports); budget = the "
             "quantize step's max_accuracy_drop on the val split."))

    by = {r["variant"]: r for r in rows}
    d = by["int8"]["delta"] * 100
    sec.goals.append(goal("int8 loses <= 0.3 points of test top-1", "Δ >= -0.30 pts", d, d >= -0.3 - 1e-9, "{:+.2f} pts"))
    kd = by["prune50-kd-int8"]
    sec.goals.append(goal("prune50-kd-int8 within 1 point of full", "Δ >= -1.00 pts", kd["delta"] * 100,
                          kd["delta"] * 100 >= -1.0 - 1e-9, "{:+.2f} pts"))
    sec.goals.append(goal("prune50-kd-int8 has >= 50% fewer MACs", "<= 50.0 % of full MACs", kd["macs_ratio"] * 100,
                          kd["macs_ratio"] <= 0.5 + 1e-9, "{:.1f} %"))
    sec.goals.append(goal("with KD >= without KD (prune50-kd-int8 vs prune50-int8)", ">= 0 pts",
                          (kd["top1"] - by["prune50-int8"]["top1"]) * 100, kd["top1"] >= by["prune50-int8"]["top1"],
                          "{:+.2f} pts"))
    sec.goals.append(goal("(control) with KD >= same-length fine-tune (prune50-kd-int8 vs prune50-ft-int8)", ">= 0 pts",
                          (kd["top1"] - by["prune50-ft-int8"]["top1"]) * 100, kd["top1"] >= by["prune50-ft-int8"]["top1"],
                          "{:+.2f} pts"))

    log("digits: edgekit bench of the int8 artifact on onnxruntime and openvino, batch 1 and 256")
    report, code = bench(arts["int8"], BenchRequest(
        targets=("onnxruntime", "openvino"), batches=(1, 256), threads=THREADS,
        timing=ctx.timing, out=ctx.out / "digits-bench",
        overwrite=True, processes=1 if ctx.smoke else 3))
    assert report is not None
    sec.data["bench"] = report.model_dump(mode="json")
    sec.data["bench_exit_code"] = code
    for batch in (1, 256):
        sec.tables.append(Table(
            f"edgekit bench of the int8 artifact, batch {batch}, {THREADS} threads",
            [c for c in COLUMNS if c not in ("params",)],
            [[c for c, name in zip(row_cells(r), COLUMNS, strict=True) if name != "params"]
             for r in report.rows if r.batch == batch],
            note="`edgekit.bench.compare.bench(int8, BenchRequest(targets=('onnxruntime', 'openvino'), batches=(1, 256)))`; full report in "
                 "digits-bench/bench.md. At 8x8 pixels batch 1 is mostly call overhead."))
    return sec
