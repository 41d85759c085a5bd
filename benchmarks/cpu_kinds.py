"""INT8 on this CPU kind: does each target keep the QDQ graph's own accuracy? (issue: INT8 right on
every CPU)

    python benchmarks/cpu_kinds.py [--out benchmarks/results] [--models digits,efficientnet-lite0]

For each model: the INT8 QDQ graph's own agreement with FP32 (exact ONNX semantics, the same on every
CPU), then what edgekit's builds give on ONNX Runtime and OpenVINO here, and, for contrast, what the
same runtimes give without edgekit's CPU-kind handling (ONNX Runtime without
``session.x64quantprecision``; OpenVINO on the graph with only the u8 rewrite). Writes
``cpu_kinds-<kind>.json`` and ``.md`` into ``--out``: one file per CPU kind measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))


def _batched(fn, x: np.ndarray, batch: int = 16) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.concatenate([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def _ort(path: Path, precise: bool, level: str = "all"):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level == "all"
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if precise:
        opts.add_session_config_entry("session.x64quantprecision", "1")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"input": x})[0]


def _ov(path: Path):  # type: ignore[no-untyped-def]
    import openvino as ov

    compiled = ov.Core().compile_model(ov.convert_model(str(path)), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "2"})
    return lambda x: np.array(compiled(x)[0])


def _scores(out: np.ndarray, fp32: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    from edgekit.metrics import agreement, cosine

    return {"agreement_fp32": agreement(out, fp32), "cosine_fp32": cosine(out, fp32),
            "agreement_qdq": agreement(out, ref)}


def model_rows(name: str, work: Path) -> list[dict[str, object]]:
    from edgekit.build import build, load_built
    from edgekit.compress import compress
    from edgekit.data import resolve_source
    from edgekit.importer import import_model
    from edgekit.models import trust_module
    from edgekit.targets.qdq_rewrite import rewrite
    from edgekit.train import TrainConfig, train

    if name == "digits":
        ckpt = train(TrainConfig(), out=work / "digits", overwrite=True)
        x = resolve_source("digits")("test")[0]["input"]
    else:
        from edgekit.iospec import InputSpec

        trust_module("benchmarks.efficientnet_lite")
        ckpt = import_model("benchmarks.efficientnet_lite:factory", data="benchmarks.efficientnet_lite:photos",
                            inputs=[InputSpec(name="input", dtype="float32", dims=["batch", 3, 224, 224])],
                            out=work / name, overwrite=True)
        x = resolve_source("benchmarks.efficientnet_lite:photos")("test")[0]["input"]
    assert ckpt is not None and ckpt.onnx_path is not None
    int8 = compress(ckpt, "int8", overwrite=True)
    assert int8 is not None and int8.onnx_path is not None
    fp32 = _batched(_ort(ckpt.onnx_path, False), x)
    ref = _batched(_ort(int8.onnx_path, False, level="disabled"), x)
    rows: list[dict[str, object]] = [{"model": name, "run": "QDQ graph (exact ONNX semantics)", **_scores(ref, fp32, ref)}]
    for target in ("onnxruntime", "openvino"):
        built = build(int8, target)
        assert built is not None
        rt = load_built(built)
        started = time.perf_counter()
        out = _batched(lambda b: rt.infer({"input": b})["output"], x)  # noqa: B023 - used at once
        rows.append({"model": name, "run": f"edgekit INT8 on {target}", "seconds": time.perf_counter() - started,
                     "model_file": getattr(rt, "model_file", ""), **_scores(out, fp32, ref)})
    plain = work / f"{name}-ort-plain.onnx"
    rewrite(int8.onnx_path, plain, ("fold_relu_pairs", "nonnegative_to_u8", "s8_to_u8", "fold_float_weights"))
    rows.append({"model": name, "run": "ONNX Runtime without session.x64quantprecision",
                 **_scores(_batched(_ort(plain, False), x), fp32, ref)})
    u8 = work / f"{name}-ov-u8.onnx"
    rewrite(int8.onnx_path, u8, ("fold_relu_pairs", "nonnegative_to_u8"))
    rows.append({"model": name, "run": "OpenVINO, u8 rewrite only (no signed-layer handling)",
                 **_scores(_batched(_ov(u8), x), fp32, ref)})
    return rows


def main(argv: list[str] | None = None) -> int:
    from edgekit.cpu import detect

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--models", default="digits,efficientnet-lite0")
    args = p.parse_args(argv)
    work = args.work or args.out / "artifacts" / "cpu_kinds"
    work.mkdir(parents=True, exist_ok=True)
    cpu = detect()
    rows = [r for m in args.models.split(",") for r in model_rows(m.strip(), work)]
    report = {"cpu": cpu.record(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"cpu_kinds-{cpu.kind}.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    lines = [f"# INT8 per target on {cpu.line()}", "", cpu.meaning, "",
             "| model | run | top-1 agreement with FP32 | cosine to FP32 | agreement with the QDQ graph |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['run']} | {r['agreement_fp32']:.3f} | {r['cosine_fp32']:.4f} | {r['agreement_qdq']:.3f} |"
              for r in rows]
    (args.out / f"cpu_kinds-{cpu.kind}.md").write_text("\n".join(lines) + "\n")
    sys.stderr.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
