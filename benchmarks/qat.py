"""Quantization-aware training against post-training INT8 where INT8 hurts (issue 15).

    python benchmarks/qat.py [--out benchmarks/results] [--epochs 6]

A depthwise-separable CNN (edgekit's zoo MobileNetV3-small: hard-swish, squeeze-excite) trained on
12,000 Fashion-MNIST images, then from the same checkpoint: recipe ``int8`` (post-training), recipe ``int8-qat``
(``--qat-epochs`` of QAT), each on all 10,000 test images; the QAT graph is built on ONNX Runtime and
OpenVINO (parity-checked against the QDQ graph) and checked against TensorRT's QDQ rules. Writes
``qat.json`` and ``qat.md`` into ``--out``. Needs ``apt-get install dataset-fashion-mnist``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

FASHION = "idx:/usr/share/datasets/fashion-mnist"
SUBSET = "benchmarks.qat:fashion_subset"
SIZES = {"train": 12_000, "val": 2_000, "test": None}  # a seeded part of train/val (2 cores); all 10,000 test images


def fashion_subset(split: str) -> tuple[dict[str, object], object]:
    """Fashion-MNIST with a seeded 12,000-image train split and 2,000-image val split: the float model
    and QAT train in minutes on 2 cores; test is all 10,000 images."""
    from edgekit.data import resolve_source, take

    return take(resolve_source(FASHION)(split), SIZES[split], seed=0)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    from edgekit.build import build, load_built
    from edgekit.compress import compress
    from edgekit.cpu import detect
    from edgekit.data import match_inputs, resolve_source
    from edgekit.evaluate import predict_onnx, predict_qdq
    from edgekit.metrics import agreement, top1
    from edgekit.steps.qdq_check import check_file
    from edgekit.targets.base import run_batched
    from edgekit.train import TrainConfig, train

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=8, help="training epochs of the float model")
    p.add_argument("--qat-epochs", type=int, default=2)
    args = p.parse_args(argv)
    work = args.work or args.out / "artifacts" / "qat"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    from edgekit.models import trust_module

    trust_module("benchmarks.qat")
    ckpt = train(TrainConfig(model="mobilenet_v3", model_kwargs={"mode": "small", "in_channels": 1}, data=SUBSET,
                             epochs=args.epochs, batch_size=128), out=work / "mbv3s-fashion", overwrite=True)
    train_s = time.perf_counter() - started
    x_raw, y = resolve_source(FASHION)("test")
    x = match_inputs(x_raw, ckpt.io)
    fp32 = predict_onnx(ckpt.onnx_path, x)
    rows: list[dict[str, Any]] = [{"variant": "FP32", "top1": top1(fp32, y), "agreement": 1.0}]
    qat_recipe = work / "int8-qat.yaml"  # the built-in recipe with --qat-epochs
    qat_recipe.write_text(f"name: int8-qat\nsteps:\n  - kind: qat\n    epochs: {args.qat_epochs}\n    lr: 0.0001\n  - kind: quantize\n")
    for recipe in ("int8", "int8-qat"):
        t0 = time.perf_counter()
        art = compress(ckpt, recipe if recipe == "int8" else str(qat_recipe), overwrite=True)
        seconds = time.perf_counter() - t0
        out = predict_qdq(art.onnx_path, x)
        row: dict[str, Any] = {"variant": f"edgekit {recipe} (QDQ graph)", "top1": top1(out, y), "agreement": agreement(out, fp32),
                               "compress_s": seconds, "tensorrt_rules": not check_file(art.path / "model.onnx")}
        rows.append(row)
        for target in ("onnxruntime", "openvino"):
            built = build(art, target, "int8")
            rt = load_built(built)
            got = run_batched(rt, x, 256)[ckpt.io.output_names[0]]
            rows.append({"variant": f"edgekit {recipe} on {target}", "top1": top1(got, y), "agreement": agreement(got, fp32),
                         "parity_abs_tolerance": built.manifest.metrics["parity"].get("abs_tolerance")})
    for r in rows:
        r["delta_pts"] = 100 * (r["top1"] - rows[0]["top1"])
    cpu = detect()
    report = {"cpu": cpu.record(), "epochs": args.epochs, "qat_epochs": args.qat_epochs, "train_s": train_s, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "qat.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    lines = [f"# QAT vs post-training INT8: MobileNetV3-small on Fashion-MNIST ({cpu.line()})", "",
             f"{args.epochs} training epochs ({train_s:.0f} s), {args.qat_epochs} of QAT; all 10,000 test images; "
             "QDQ graph = its own arithmetic (the same on every CPU); builds parity-checked against it.", "",
             "| variant | top-1 % | Δ pts vs FP32 | agreement with FP32 | compress s |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {100 * r['top1']:.2f} | {r['delta_pts']:+.2f} | {r['agreement']:.4f} | "
                     f"{r.get('compress_s', 0):.0f} |")
    (args.out / "qat.md").write_text("\n".join(lines) + "\n")
    sys.stderr.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
