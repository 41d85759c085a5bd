"""``edgekit package``: a deployable bundle for one target.

A bundle is a directory (or a ``.tar.gz`` of one) holding the built model for the target, a
``manifest.json`` (IO spec with preprocessing and labels, precision, metrics, lineage, versions) and
``SHA256SUMS`` over every file. The same input gives byte-identical bundles: members are sorted,
mtimes and owners are fixed, gzip carries no name or time, and the manifest has no timestamps or
absolute paths.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import console
from edgekit.artifact import (
    SUMS,
    Artifact,
    Lineage,
    Manifest,
    check_output,
    finalize,
    staging,
    staging_file,
)
from edgekit.build import build


def _bench_metrics(art: Artifact, target: str, precision: str) -> dict[str, Any]:
    """The newest bench row of this artifact on this target at batch 1, if one was measured."""
    bench_dir = art.path / "bench"
    if not bench_dir.is_dir():
        return {}
    for run in sorted(bench_dir.iterdir(), reverse=True):
        report = run / "bench.json"
        if not report.is_file():
            continue
        try:
            data = json.loads(report.read_text())
            rows = list(data.get("rows", []))
        except (OSError, ValueError, AttributeError, TypeError):
            continue  # a damaged report is not a measurement
        for row in rows:
            if not isinstance(row, dict):
                continue
            if (row.get("sha256") == art.sha256 and row.get("target") == target and row.get("status") == "ok"
                    and row.get("precision_requested") == precision and row.get("batch") == 1):
                keep = ("latency_ms", "accuracy", "accuracy_metric", "agreement", "speedup", "size_bytes")
                return {"bench": {k: row.get(k) for k in keep} | {"machine": data.get("machine", {}).get("cpu")}}
    return {}


def package(art: Artifact, target: str, precision: str | None = None, out: Path | None = None,
            overwrite: bool = False, as_dir: bool = False) -> Path:
    inputs = art.chain_paths()
    if out is not None:  # before the build: a refused --out costs nothing
        check_output(out, overwrite, inputs, directory=as_dir)
    built = build(art, target, precision)
    assert built is not None and built.manifest.target is not None  # noqa: S101 - not a dry run
    record = built.manifest.target
    variant = art.recipe_name or "full"
    name = f"{art.root().manifest.name}-{variant}-{record.name}-{record.precision}"
    out = out or Path("dist") / (name if as_dir else f"{name}.tar.gz")
    check_output(out, overwrite, inputs, directory=as_dir)
    metrics: dict[str, Any] = {
        "parity": built.manifest.metrics.get("parity"),
        **{k: art.manifest.metrics[k] for k in ("test", "task_metric", "params", "macs") if k in art.manifest.metrics},
        **_bench_metrics(art, record.name, record.precision_requested),
    }
    if as_dir:
        with staging(out, overwrite, inputs) as tmp:
            _fill(tmp, built, art, name, variant, metrics)
    else:
        with staging_file(out, overwrite, inputs) as tar_tmp, \
                tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent) as td:
            _fill(Path(td), built, art, name, variant, metrics)
            write_tar(Path(td), tar_tmp, root=name)
    console.info(f"[green]packaged[/green] {out}")
    return out


def golden(art: Artifact, built: Artifact, directory: Path) -> dict[str, Any]:
    """Write ``golden.npz`` (real test inputs and the reference's outputs for them) into ``directory``
    and return the bundle's verify spec: the tolerance the build passed with."""
    from edgekit.build import parity_samples, reference_runtime
    from edgekit.targets.base import run_batched
    from edgekit.verify import GOLDEN, INT8_MIN_AGREEMENT, golden_rows, write_golden

    record = built.manifest.target
    assert record is not None  # noqa: S101
    samples, real = parity_samples(art)
    n = golden_rows(samples)
    x = {k: np.ascontiguousarray(v[:n]) for k, v in samples.items()}
    ref_rt, ref_name = reference_runtime(art, record.precision_requested)
    y = run_batched(ref_rt, x, 8)
    y = {k: v for k, v in y.items() if k in art.io.output_names}
    write_golden(directory / GOLDEN, x, y)
    parity = built.manifest.metrics.get("parity") or {}
    spec = {"file": GOLDEN, "samples": n, "inputs": "real" if real else "synthetic", "reference": ref_name,
            "tolerance": float(parity.get("tolerance", 1e-4)),
            "min_agreement": INT8_MIN_AGREEMENT if record.precision_requested == "int8" else 1.0}
    if parity.get("abs_tolerance"):  # INT8 outputs: the absolute bound the build was held to
        spec["abs_tolerance"] = parity["abs_tolerance"]
    return spec


def _fill(tmp: Path, built: Artifact, art: Artifact, name: str, variant: str, metrics: dict[str, Any]) -> None:
    from edgekit.verify import GOLDEN, check_runtime

    record = built.manifest.target
    assert record is not None  # noqa: S101
    files = [f for f in built.manifest.files if f != "timing.cache"]
    for f in files:
        shutil.copyfile(built.path / f, tmp / f)
    spec = golden(art, built, tmp)
    files.append(GOLDEN)
    # checked here, on the machine that packages it: the first place the bundle was verified
    from edgekit.build import load_built

    result = check_runtime(load_built(built), tmp / GOLDEN, spec, art.io.task, record.name, record.device)
    spec["verified_on"] = [{k: result[k] for k in ("cpu", "runtime_version", "model_file", "max_error", "agreement")}]
    metrics = {**metrics, "verify": spec}
    manifest = Manifest(
        kind="bundle",
        name=name,
        io=art.io,
        data=None,
        quantized=art.manifest.quantized,
        lineage=Lineage(
            step="package",
            config={"artifact": art.manifest.name, "artifact_sha256": art.sha256, "variant": variant,
                    "target": record.name, "precision": record.precision},
            versions=built.manifest.lineage.versions,
        ),
        metrics=metrics,
        target=record,
    )
    finalize(tmp, manifest, owned=files)
    write_sums(tmp)


def write_sums(directory: Path) -> None:
    lines = []
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.name != SUMS):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    (directory / SUMS).write_text("".join(lines))


def write_tar(directory: Path, out: Path, root: str) -> None:
    """A reproducible .tar.gz: sorted members, fixed mtime/owner/mode, no gzip name or time."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo(root)
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(d)
        for path in sorted(p for p in directory.iterdir() if p.is_file()):
            info = tarfile.TarInfo(f"{root}/{path.name}")
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        gz.write(buf.getvalue())
