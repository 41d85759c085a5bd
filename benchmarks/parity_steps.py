"""How far do INT8 builds land from the QDQ graph? The measurement behind edgekit's INT8 parity bound.

    python benchmarks/parity_steps.py [--out benchmarks/results] [--models digits,mbnet,efficientnet-lite0,resnet18,mobilenet]

For each model and INT8 profile (portable ``int8``, asymmetric ``int8-cpu``), each target's build is
compared with the QDQ graph on ONNX Runtime's reference kernels on the parity samples, at batch 1
and 8. Reported per build: the largest difference in steps of the output's quantization step
(``edgekit.steps.qdq_graph.output_steps``), relative to the output's scale, and as a multiple of the
QDQ graph's own error against float. edgekit's bound is the larger of INT8_STEPS steps and
INT8_QUANT_FACTOR x that error (``edgekit/build.py``); the bound is lifted while measuring so that
builds past it are measured too. Writes ``parity_steps-<cpu kind>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

MODELS = ("digits", "mbnet", "efficientnet-lite0", "resnet18", "mobilenet")


def checkpoint(name: str, work: Path) -> Any:
    from edgekit.importer import import_model
    from edgekit.iospec import InputSpec
    from edgekit.models import trust_module
    from edgekit.train import TrainConfig, train

    if name == "digits":
        return train(TrainConfig(), out=work / name, overwrite=True)
    if name == "mbnet":  # the trained depthwise net with linear bottlenecks of the test suite
        sys.path.insert(0, str(HERE.parent / "tests"))
        trust_module("userzoo")
        return train(TrainConfig(model="userzoo:mbnet", epochs=12), out=work / name, overwrite=True)
    if name == "efficientnet-lite0":
        trust_module("benchmarks.efficientnet_lite")
        return import_model("benchmarks.efficientnet_lite:factory", data="benchmarks.efficientnet_lite:photos",
                            inputs=[InputSpec(name="input", dtype="float32", dims=["batch", 3, 224, 224])],
                            out=work / name, overwrite=True)
    from benchmarks.models import MOBILENET, RESNET18, write_images

    trust_module("benchmarks.models")
    data = f"npz:{write_images(work / 'images224.npz', 224, train=300)}"
    return import_model(RESNET18 if name == "resnet18" else MOBILENET, data=data, out=work / name, overwrite=True)


def model_rows(name: str, work: Path) -> list[dict[str, Any]]:
    import edgekit.build as b
    from edgekit.compress import compress
    from edgekit.steps.qdq_graph import output_steps
    from edgekit.targets.base import run_batched

    ckpt = checkpoint(name, work)
    rows = []
    for recipe in ("int8", "int8-cpu"):
        art = compress(ckpt, recipe, out=work / f"{name}-{recipe}", overwrite=True)
        assert art is not None and art.onnx_path is not None
        samples, _ = b.parity_samples(art)
        ref = run_batched(b.reference_runtime(art, "int8")[0], samples, 8)["output"]
        own = b._quantization_error(art, samples, {"output": ref})["output"]
        step = output_steps(art.onnx_path)["output"]
        scale = max(float(np.abs(ref).max()), 1.0)
        for target in ("onnxruntime", "openvino"):
            built = b.build(art, target, "int8")
            assert built is not None
            err = max(float(np.abs(run_batched(b.load_built(built), samples, n)["output"] - ref).max()) for n in (1, 8))
            rows.append({"model": name, "profile": recipe, "target": target, "steps": err / step, "relative": err / scale,
                         "vs_own_error": err / own, "own_error_steps": own / step, "step": step})
            sys.stderr.write(json.dumps(rows[-1]) + "\n")
    return rows


INT8_STEPS, INT8_QUANT_FACTOR = 0, 0.0  # set from edgekit.build in main()


def write(out: Path, report: dict[str, Any]) -> None:
    """``parity_steps-<kind>.json`` and ``.md``; "within bound" follows the report's bound."""
    steps, factor = report["int8_steps"], report["int8_quant_factor"]
    for r in report["rows"]:
        r["within_bound"] = r["steps"] <= max(steps, factor * r["own_error_steps"])
    kind = report["cpu"]["kind"]
    (out / f"parity_steps-{kind}.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    lines = [f"# INT8 builds against the QDQ graph on {report['cpu_line']}", "",
             f"Bound: the larger of {steps} output steps and {factor:g} x the QDQ graph's own error against float.", "",
             "| model | profile | target | steps off | relative | x own error | own error in steps | within bound |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['profile']} | {r['target']} | {r['steps']:.1f} | {r['relative']:.4f} | "
              f"{r['vs_own_error']:.2f} | {r['own_error_steps']:.1f} | {'yes' if r['within_bound'] else 'NO'} |"
              for r in report["rows"]]
    (out / f"parity_steps-{kind}.md").write_text("\n".join(lines) + "\n")
    sys.stderr.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    global INT8_STEPS, INT8_QUANT_FACTOR
    import edgekit.build as b
    from edgekit.cpu import detect

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args(argv)
    INT8_STEPS, INT8_QUANT_FACTOR = b.INT8_STEPS, b.INT8_QUANT_FACTOR
    b.INT8_STEPS, b.INT8_QUANT_FACTOR = 10**9, 1e9  # measure builds past the bound too
    work = args.work or args.out / "artifacts" / "parity_steps"
    work.mkdir(parents=True, exist_ok=True)
    cpu = detect()
    rows = [r for m in args.models.split(",") for r in model_rows(m.strip(), work)]
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out, {"cpu": cpu.record(), "cpu_line": cpu.line(), "int8_steps": INT8_STEPS,
                     "int8_quant_factor": INT8_QUANT_FACTOR, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
