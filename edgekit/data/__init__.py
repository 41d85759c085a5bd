"""Data sources: numpy only, so calibration and bench need no torch (DESIGN.md §2).

A source is ``source(split) -> (dict[input name, ndarray], labels | None)`` with ``split`` in
train/val/test and the sample axis first. Built in: ``digits`` (default), ``npz:PATH``, ``idx:DIR``,
``images:DIR`` and ``package.module:function``. Arrays are model-ready (float32 images in [0, 1]).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

# the source model lives in edgekit.data.source (builtin builds on it); named here for every caller
from edgekit.data.source import SPLITS as SPLITS
from edgekit.data.source import Batch as Batch
from edgekit.data.source import Source as Source
from edgekit.data.source import SourceFn as SourceFn
from edgekit.data.source import seeded_split as seeded_split
from edgekit.data.source import validate_batch as validate_batch
from edgekit.errors import DataError, did_you_mean
from edgekit.iospec import InputSpec, IOSpec

BUILTIN_KINDS = ("digits", "npz", "idx", "images")


def resolve_source(spec: str | None) -> Source:
    """``digits`` | ``npz:PATH`` | ``idx:DIR`` | ``images:DIR`` | ``package.module:function``."""
    if spec is None:
        spec = "digits"
    if not spec.strip():
        raise DataError("empty data source", hint="use digits, npz:PATH, idx:DIR, images:DIR or package.module:function")
    from edgekit.data import builtin

    if spec == "digits":
        return Source(spec, builtin.digits, labels=[str(i) for i in range(10)], mean=[0.0], std=[1.0])
    kind, sep, rest = spec.partition(":")
    if sep and kind == "npz":
        return builtin.npz_source(spec, Path(rest))
    if sep and kind == "idx":
        return builtin.idx_source(spec, Path(rest))
    if sep and kind == "images":
        return builtin.images_source(spec, Path(rest))
    if sep and kind and rest and all(p.isidentifier() for p in kind.split(".")) and rest.isidentifier():
        return Source(spec, _import_function(spec))
    if spec.endswith(".npz") and Path(spec).is_file():
        return builtin.npz_source(spec, Path(spec))
    calib = builtin.calibration_file(spec)
    if calib is not None:
        return builtin.npz_source(spec, calib)
    raise DataError(
        f"unknown data source '{spec}'{did_you_mean(spec, ['digits'])}",
        hint="use digits, npz:PATH, idx:DIR, images:DIR or package.module:function",
    )


def source_paths(spec: str | None) -> list[Path]:
    """The files or folders a data source string reads (an --out must not hold them)."""
    if not spec:
        return []
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("npz", "idx", "images") and rest:
        return [Path(rest)]
    return [Path(spec)] if spec.endswith(".npz") else []


def _import_function(spec: str) -> SourceFn:
    from edgekit import trust  # no torch at import time

    return trust.load(spec, "data source", DataError)


def match_inputs(inputs: dict[str, np.ndarray], io: IOSpec, where: str = "data") -> dict[str, np.ndarray]:
    """Map a source's arrays onto the model's input names and dtypes, with clear errors."""
    names = io.input_names
    if len(inputs) == 1 and len(names) == 1:
        inputs = {names[0]: next(iter(inputs.values()))}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise DataError(
            f"{where} has no array for model input '{missing[0]}' (it has {', '.join(inputs)})",
            hint="name npz keys x.<input> after the model's inputs",
        )
    out = {}
    for spec in io.inputs:
        arr = inputs[spec.name]
        check_shape(arr, spec, where)
        out[spec.name] = arr.astype(spec.dtype, copy=False)
    return out


def check_shape(arr: np.ndarray, spec: InputSpec, where: str) -> None:
    want = spec.dims
    if arr.ndim != len(want) or any(isinstance(d, int) and i > 0 and arr.shape[i] != d for i, d in enumerate(want)):
        dims = ",".join(str(d) for d in want)
        raise DataError(
            f"{where}: input '{spec.name}' has shape {tuple(arr.shape)}, the model expects ({dims})",
            hint="check --data / --calib, or describe the model with --input NAME:DIMS:DTYPE",
        )
    if spec.dtype.startswith("float") and arr.dtype.kind not in "fiu":
        raise DataError(f"{where}: input '{spec.name}' has dtype {arr.dtype}, the model expects {spec.dtype}")
    if spec.dtype.startswith("int") and arr.dtype.kind not in "iu":
        raise DataError(
            f"{where}: input '{spec.name}' has dtype {arr.dtype}, the model expects {spec.dtype}",
            hint="token ids and masks must be integer arrays",
        )


def take(batch: Batch, n: int | None, seed: int = 0) -> Batch:
    """A seeded random subset of ``n`` samples (all of them when n is None or larger)."""
    inputs, labels = batch
    total = next(iter(inputs.values())).shape[0]
    if n is None or n >= total:
        return inputs, labels
    idx = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    return {k: v[idx] for k, v in inputs.items()}, (labels[idx] if labels is not None else None)


def evaluation_samples(io: IOSpec, data: str | None, rows: int | None, *, seed: int | None = None,
                 synthetic_rows: int = 64) -> tuple[dict[str, np.ndarray], np.ndarray | None, bool]:
    """(inputs, labels, real?): ``rows`` samples of the test split of ``data`` (the first ones, or a
    seeded random subset with ``seed``; all with rows=None), matched to the IO spec; without data,
    synthetic inputs from the IO spec (what checks and benchmarks fall back to)."""
    if not data:
        return io.sample_inputs(min(rows or synthetic_rows, synthetic_rows)), None, False
    x, y = resolve_source(data)("test")
    if seed is not None:
        x, y = take((x, y), rows, seed=seed)
    elif rows is not None:
        x, y = {k: v[:rows] for k, v in x.items()}, (y[:rows] if y is not None else None)
    return match_inputs(x, io, where=f"data '{data}'"), y, True


def describe(source: Source) -> IOSpec:
    """An IO spec read off the train split: dims (sample axis -> batch), dtype, task, labels."""
    inputs, labels = source("train")
    specs = []
    for name, arr in inputs.items():
        is_image = arr.ndim == 4 and arr.dtype.kind == "f"
        specs.append(
            InputSpec(
                name=name,
                dtype=str(arr.dtype) if arr.dtype.kind != "f" else "float32",
                dims=["batch", *[int(d) for d in arr.shape[1:]]],
                mean=source.mean if is_image else None,
                std=source.std if is_image else None,
                layout="NCHW" if is_image else None,
            )
        )
    task: Literal["classification", "embedding", "regression"] = "classification"
    label_names = source.labels
    if labels is None:
        task = "embedding"
    elif labels.dtype.kind == "f":
        task = "regression"
    elif label_names is None:
        label_names = [str(i) for i in range(int(labels.max()) + 1)]
    return IOSpec(inputs=specs, task=task, labels=label_names if task == "classification" else None)


def num_classes(io: IOSpec) -> int | None:
    return len(io.labels) if io.labels else None
