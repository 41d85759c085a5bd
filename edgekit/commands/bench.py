"""edgekit bench"""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.commands._common import (
    announce,
    artifact_argument,
    emit,
    json_option,
    out_option,
    overwrite_option,
    trust_option,
)


def _batches(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise click.BadParameter("comma-separated batch sizes, e.g. 1,8") from None


@click.command("bench")
@artifact_argument
@click.option("--target", "-t", "targets", multiple=True, help="Target (repeatable); default: onnxruntime and openvino.")
@click.option("--batch", "batch", default="1,8", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--threads", type=int, default=None, help="Threads per runtime (default: the cores available).")
@click.option("--warmup", type=int, default=5, show_default=True)
@click.option("--min-runs", type=int, default=30, show_default=True)
@click.option("--min-time", type=float, default=1.0, show_default=True, help="Seconds of timed runs per row and process.")
@click.option("--processes", type=int, default=3, show_default=True,
              help="Fresh processes to time in, one after another, samples pooled (0: time in this one).")
@click.option("--device", default=None, help="Device for targets that have it (cpu, cuda, tensorrt: ONNX Runtime's TensorRT EP, "
              "gpu/npu: OpenVINO's); GPU rows are sped up against torch on CUDA.")
@click.option("--data", default=None, help="Evaluation data (default: the full model's data, test split).")
@click.option("--samples", type=int, default=None, help="Evaluate on at most N samples.")
@click.option("--dry-run", is_flag=True, help="Validate artifact, targets and data; run nothing.")
@out_option
@overwrite_option
@trust_option
@json_option
def command(artifact: str | None, targets: tuple[str, ...], batch: str, threads: int | None, warmup: int, min_runs: int,
            min_time: float, processes: int, device: str | None, data: str | None, samples: int | None, dry_run: bool, out: str | None,
            overwrite: bool, trust_code: bool, as_json: bool) -> None:
    """Accuracy, latency and size of ARTIFACT against the full model, on torch and each target."""
    from edgekit.artifact import resolve_artifact
    from edgekit.bench.compare import BenchRequest, bench
    from edgekit.bench.harness import TimingConfig
    from edgekit.commands._common import trust

    trust(trust_code)
    art = resolve_artifact(artifact, ("compressed", "checkpoint"), announce)
    report, code = bench(art, BenchRequest(
        targets=targets, batches=tuple(_batches(batch)), threads=threads,
        timing=TimingConfig(warmup=warmup, min_runs=min_runs, min_time=min_time), processes=processes, device=device,
        data=data, samples=samples, out=Path(out) if out else None, overwrite=overwrite, dry_run=dry_run))
    if report is None:
        emit({"dry_run": True, "artifact": str(art.path), "ok": True}, as_json)
        return
    emit(report.model_dump(mode="json"), as_json)
    if code:
        from edgekit.errors import ParityError

        failed = [f"{r.variant} on {r.target}" for r in report.rows if r.status == "failed"]
        raise ParityError(f"a requested build failed its parity check ({', '.join(dict.fromkeys(failed)) or 'see the report'}); "
                          "the report marks its rows failed", hint="edgekit build ARTIFACT --target T shows the error")
