"""Post-training INT8 options measured against each other (issue 15): which range choice and bias
correction to use, on trained models and real data.

    python benchmarks/ptq_options.py [--out benchmarks/results] [--models digits,efficientnet-lite0]

For each model, recipe ``int8`` with one quantize option changed at a time (and ``int8-cpu`` for
contrast), compressed from the same float checkpoint: the QDQ graph's own top-1 agreement with FP32,
cosine to FP32 and, where the data has labels, top-1 on the test split (the graph's own arithmetic:
the same on every CPU). Writes ``ptq_options.json`` and ``.md`` into ``--out``.
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

VARIANTS: dict[str, dict[str, Any]] = {
    "int8 (percentile, bias correction)": {},
    "no bias correction": {"bias_correction": False},
    "bias_correction: full": {"bias_correction": "full"},
    "method: minmax": {"method": "minmax"},
    "method: entropy": {"method": "entropy"},
    "method: mse": {"method": "mse"},
    "method: mse, bias_correction: full": {"method": "mse", "bias_correction": "full"},
    "profile: cpu (U8, not TensorRT-portable)": {"profile": "cpu"},
    "rounding: adaround (no bias correction)": {"rounding": "adaround"},
    "rounding: adaround, bias_correction: full": {"rounding": "adaround", "bias_correction": "full"},
}


# the peer, from the same FP32 graph and the same 300 calibration samples (train split); its graph runs
# on OpenVINO (this CPU), edgekit's as the QDQ graph's own arithmetic
PEERS = {"NNCF (OpenVINO, its default fast bias correction)": True, "NNCF (OpenVINO, full bias correction)": False}


def _recipe(work: Path, name: str, options: dict[str, Any]) -> Path:
    import yaml

    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "steps": [{"kind": "quantize", **options}]}))
    return path


def run(model: str, work: Path, only: str | None = None) -> list[dict[str, Any]]:
    from benchmarks.explain_report import _artifact
    from edgekit.compress import compress
    from edgekit.data import match_inputs, resolve_source
    from edgekit.evaluate import predict_onnx, predict_qdq
    from edgekit.metrics import agreement, cosine, top1

    ckpt = _artifact(model, work)
    x_raw, y = resolve_source(str(ckpt.manifest.data))("test")
    x = match_inputs(x_raw, ckpt.io)
    fp32 = predict_onnx(ckpt.onnx_path, x)
    rows = []
    for k, (label, options) in enumerate(VARIANTS.items()):
        if only and not any(part in label for part in only.split(",")):
            continue
        started = time.perf_counter()
        art = compress(ckpt, str(_recipe(work, f"v{k}", options)), out=ckpt.path / f"v{k}", overwrite=True)
        out = predict_qdq(art.onnx_path, x)
        rows.append({"model": model, "variant": label, "options": options, "agreement": agreement(out, fp32),
                     "cosine": cosine(out, fp32), "top1": top1(out, y) if y is not None else None,
                     "fp32_top1": top1(fp32, y) if y is not None else None, "compress_s": time.perf_counter() - started})
        sys.stderr.write(f"{model}: {label}: {json.dumps(rows[-1], default=str)}\n")
    for label, fast in PEERS.items():
        if only and not any(part in label for part in only.split(",")):
            continue
        rows.append(_nncf_row(model, label, fast, ckpt, x, y, fp32))
        sys.stderr.write(f"{model}: {label}: {json.dumps(rows[-1], default=str)}\n")
    return rows


def _nncf_row(model: str, label: str, fast: bool, ckpt: Any, x: dict[str, Any], y: Any, fp32: Any) -> dict[str, Any]:
    from benchmarks.common import OvModelRuntime, run_all
    from benchmarks.peers import nncf_int8
    from edgekit.data import match_inputs, resolve_source, take
    from edgekit.metrics import agreement, cosine, top1

    calib_raw, _ = take(resolve_source(str(ckpt.manifest.data))("train"), 300, seed=0)  # what the quantize step draws
    calib = match_inputs(calib_raw, ckpt.io)
    quantized, seconds = nncf_int8(ckpt.onnx_path, calib, fast_bias_correction=fast)
    out = run_all(OvModelRuntime(quantized), x, batch=32)
    return {"model": model, "variant": label, "options": {"fast_bias_correction": fast}, "agreement": agreement(out, fp32),
            "cosine": cosine(out, fp32), "top1": top1(out, y) if y is not None else None,
            "fp32_top1": top1(fp32, y) if y is not None else None, "compress_s": seconds}


def main(argv: list[str] | None = None) -> int:
    from edgekit.cpu import detect

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--models", default="digits,efficientnet-lite0")
    p.add_argument("--variants", default=None, help="comma-separated parts of variant names to run (default: all)")
    args = p.parse_args(argv)
    work = args.work or args.out / "artifacts" / "ptq_options"
    work.mkdir(parents=True, exist_ok=True)
    rows = [r for m in args.models.split(",") for r in run(m.strip(), work, args.variants)]
    args.out.mkdir(parents=True, exist_ok=True)
    cpu = detect()
    (args.out / "ptq_options.json").write_text(json.dumps({"cpu": cpu.record(), "rows": rows}, indent=2, default=float) + "\n")
    lines = ["# Post-training INT8 options (QDQ graph's own outputs on the test split; the same on every CPU)", "",
             f"Measured with {cpu.line()}.", "",
             "| model | variant | top-1 agreement with FP32 | cosine to FP32 | top-1 (FP32) | compress s |", "|---|---|---|---|---|---|"]
    for r in rows:
        acc = "-" if r["top1"] is None else f"{100 * r['top1']:.2f} % ({100 * r['fp32_top1']:.2f} %)"
        lines.append(f"| {r['model']} | {r['variant']} | {r['agreement']:.3f} | {r['cosine']:.4f} | {acc} | {r['compress_s']:.0f} |")
    (args.out / "ptq_options.md").write_text("\n".join(lines) + "\n")
    sys.stderr.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
