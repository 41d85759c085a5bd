"""Checkpoint artifacts (train / import) and loading torch modules back from artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.artifact import (
    Artifact,
    Lineage,
    Manifest,
    ModelSpec,
    cache_key,
    finalize,
    library_versions,
    relative_parent,
    staging,
)
from edgekit.data import evaluation_samples
from edgekit.errors import ArtifactError, BadInputError
from edgekit.iospec import IOSpec

if TYPE_CHECKING:
    from torch import nn

SAMPLE_ROWS = 8


def sample_inputs(io: IOSpec, data: str | None, rows: int = SAMPLE_ROWS) -> dict[str, np.ndarray]:
    """A few real inputs (test split of the data source) or, without data, synthetic ones."""
    return evaluation_samples(io, data, rows, synthetic_rows=rows)[0]


def model_stats(model: nn.Module, samples: dict[str, np.ndarray]) -> dict[str, Any]:
    from edgekit.torchutil import count_macs, count_params

    return {"params": count_params(model), "macs": count_macs(model, samples)}


def write_checkpoint(
    out: Path,
    model: nn.Module,
    spec: ModelSpec,
    io: IOSpec,
    *,
    data: str | None,
    metrics: dict[str, Any],
    step: str,
    config: dict[str, Any],
    overwrite: bool = False,
    opset: int = 17,
    inputs: list[Path] | None = None,
) -> Artifact:
    """model.safetensors + model.onnx (FP32, dynamic batch, parity-checked) + manifest.json."""
    from edgekit.export import export_onnx
    from edgekit.models import save_weights

    samples = sample_inputs(io, data)
    with staging(out, overwrite, inputs or ()) as tmp:
        save_weights(model, tmp / "model.safetensors")
        io, export_metrics = export_onnx(model, io, tmp / "model.onnx", samples, opset=opset)
        metrics = {**metrics, **model_stats(model, samples), **export_metrics}
        metrics["size_bytes"] = (tmp / "model.onnx").stat().st_size
        manifest = Manifest(
            kind="checkpoint",
            name=out.name,
            model=spec,
            onnx="model.onnx",
            io=io,
            data=data,
            lineage=Lineage(step=step, config=config, versions=library_versions()),
            metrics=metrics,
        )
        finalize(tmp, manifest)
    return Artifact.load(out)


def load_module(art: Artifact) -> nn.Module:
    """The torch module of an artifact (rebuilt from its spec and safetensors), in eval mode."""
    from edgekit.models import build

    spec = art.manifest.model
    if spec is None:
        raise BadInputError(
            f"{art.path} has no torch module (it is an ONNX-only model)",
            hint="prune and distill need a torch model: import one with `edgekit import pkg.mod:factory`",
        )
    weights = art.path / spec.weights
    if spec.weights not in art.manifest.files:
        raise ArtifactError(f"{art.path} lists no weights file '{spec.weights}'")
    return build(spec, art.io, weights)


def reexport(art: Artifact, *, opset: int | None = None, inputs: list[Any] | None = None, io: IOSpec | None = None,
             slim: bool = False, out: Path | None = None, overwrite: bool = False) -> Any:
    """Export an artifact's torch module again with other options, into its cache (or --out).

    The result is an artifact of the same kind with the same weights, so it builds like its parent.
    """
    import shutil

    from edgekit.export import DEFAULT_OPSET, export_onnx

    opset = opset or DEFAULT_OPSET
    if art.manifest.model is None:
        raise BadInputError(f"{art.path} is an ONNX-only model; there is no torch module to export again")
    new_io = io or art.io
    if inputs:
        new_io = new_io.model_copy(update={"inputs": inputs})
    key = cache_key(art.sha256, opset, new_io.model_dump(), slim)
    target = out or (art.path / "exports" / f"opset{opset}-{key}")
    if out is None and (target / "manifest.json").is_file():
        return Artifact.load(target)
    module = load_module(art)
    samples = sample_inputs(new_io, art.manifest.data)
    with staging(target, overwrite=overwrite or out is None, inputs=art.chain_paths()) as tmp:
        shutil.copyfile(art.path / art.manifest.model.weights, tmp / art.manifest.model.weights)
        new_io, metrics = export_onnx(module, new_io, tmp / "model.onnx", samples, opset=opset, slim=slim)
        manifest = Manifest(
            kind=art.manifest.kind, name=f"{art.manifest.name}-export", model=art.manifest.model, onnx="model.onnx",
            io=new_io, data=art.manifest.data,
            lineage=Lineage(parent=relative_parent(target, art.path), parent_sha256=art.sha256, step="export",
                            config={"opset": opset, "slim": slim}, versions=library_versions()),
            metrics={**{k: v for k, v in art.manifest.metrics.items() if k not in ("onnx_parity", "opset")},
                     **metrics, "size_bytes": (tmp / "model.onnx").stat().st_size},
        )
        finalize(tmp, manifest)
    return Artifact.load(target)
