"""``edgekit import``: a model that is already trained becomes a checkpoint artifact.

Torch models come from code (zoo name, ``package.module:factory`` that loads its own weights,
``torchvision:<name>``); ONNX files become ONNX-only lineage roots. Pickles are refused: a file a
user hands us is parsed (ONNX is protobuf), never unpickled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import console, external_data, trust
from edgekit.artifact import (
    Artifact,
    Lineage,
    Manifest,
    ModelSpec,
    finalize,
    library_versions,
    staging,
)
from edgekit.data import describe, match_inputs, resolve_source, source_paths
from edgekit.errors import BadInputError, ModelError, require
from edgekit.iospec import InputSpec, IOSpec, OutputSpec

PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".tar"}


def _default_out(model: str) -> Path:
    stem = Path(model).stem if model.endswith(".onnx") else model.split(":")[-1]
    return Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-")


def _refuse_pickle(path: Path) -> None:
    head = path.read_bytes()[:4] if path.is_file() else b""
    if path.suffix.lower() in PICKLE_SUFFIXES or head[:1] == b"\x80" or head[:2] == b"PK":
        raise BadInputError(
            f"{path} looks like a pickled / torch.save file; edgekit never unpickles files",
            hint="export the model to ONNX, or give a package.module:factory that builds it and loads its weights",
        )


def _io_for(model: str, data: str | None, inputs: list[InputSpec] | None, io: IOSpec | None) -> IOSpec | None:
    from edgekit.models import default_io

    base = io or (describe(resolve_source(data)) if data else None)
    if base is None and not model.endswith(".onnx") and ":" not in model:
        base = default_io(model)
    if inputs:
        base = (base or IOSpec(inputs=inputs)).model_copy(update={"inputs": inputs})
    return base


def import_model(model: str, *, data: str | None = None, inputs: list[InputSpec] | None = None,
                 io: IOSpec | None = None, kwargs: dict[str, Any] | None = None, out: Path | None = None,
                 overwrite: bool = False, opset: int = 17) -> Artifact:
    out = out or _default_out(model)
    if model.endswith(".onnx") or Path(model).is_file():
        path = Path(model)
        if not path.is_file():
            raise BadInputError(f"ONNX file {path} does not exist")
        _refuse_pickle(path)
        return _import_onnx(path, data, inputs, io, out, overwrite)
    return _import_torch(model, data, inputs, io, kwargs or {}, out, overwrite, opset)


def _import_torch(model: str, data: str | None, inputs: list[InputSpec] | None, io_given: IOSpec | None,
                  kwargs: dict[str, Any], out: Path, overwrite: bool, opset: int) -> Artifact:
    from edgekit.checkpoint import write_checkpoint
    from edgekit.models import create, factory_kwargs, parse_source
    from edgekit.torchutil import predict

    kind, _ = parse_source(model)
    trust.vouch_named(model, data)  # named by the caller: theirs to run
    io = _io_for(model, data, inputs, io_given)
    if io is None:
        raise BadInputError(f"cannot tell the inputs of '{model}'", hint="give --data, --input NAME:DIMS:DTYPE or --io-spec")
    spec = ModelSpec(source=model, kwargs=factory_kwargs(model, io, kwargs) if kind == "zoo" else kwargs)
    module = create(spec).eval()
    metrics: dict[str, Any] = {}
    if data:
        x, y = resolve_source(data)("test")
        out_arr = predict(module, match_inputs(x, io, where=f"data '{data}'"))
        metrics.update(_eval_metrics(io, out_arr, y))
    console.info(f"importing {model}")
    return write_checkpoint(out, module, spec, io, data=data, metrics=metrics, step="import",
                            config={"model": model, "kwargs": kwargs, "data": data}, overwrite=overwrite, opset=opset,
                            inputs=source_paths(data))


def _eval_metrics(io: IOSpec, outputs: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    from edgekit.metrics import top1

    if io.task == "classification" and labels is not None:
        if outputs.ndim != 2 or outputs.shape[1] < int(labels.max()) + 1:
            raise BadInputError(f"the model outputs shape {outputs.shape}, which does not fit {int(labels.max()) + 1} classes")
        return {"task_metric": "top1", "test": {"top1": top1(outputs, labels)}}
    return {}


_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 2: "uint8", 3: "int8", 9: "bool"}


def onnx_io(model_proto: Any) -> IOSpec:
    """Read the IO spec off an ONNX graph (dim_params become symbolic dims, the first is batch)."""
    graph = model_proto.graph
    inits = {i.name for i in graph.initializer}
    specs = []
    for value in graph.input:
        if value.name in inits:
            continue
        ttype = value.type.tensor_type
        dims: list[int | str] = []
        for i, d in enumerate(ttype.shape.dim):
            if d.HasField("dim_value") and not (i == 0 and d.dim_value <= 0):
                dims.append(int(d.dim_value))
            else:
                dims.append("batch" if i == 0 else (d.dim_param or f"d{i}"))
        dtype = _ONNX_DTYPES.get(ttype.elem_type)
        if dtype is None:
            raise ModelError(f"ONNX input '{value.name}' has an unsupported element type {ttype.elem_type}")
        specs.append(InputSpec(name=value.name, dtype=dtype, dims=dims, layout="NCHW" if len(dims) == 4 else None))
    if not specs:
        raise ModelError("the ONNX graph has no inputs")
    return IOSpec(inputs=specs, outputs=[OutputSpec(name=o.name) for o in graph.output])


def load_onnx_safely(path: Path) -> Any:
    require("onnx", "full", "importing ONNX files")
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise BadInputError(f"{path} is not a valid ONNX file ({type(exc).__name__})") from None
    loc = external_data.outside(path)
    if loc is not None:
        raise BadInputError(f"{path} points at external data '{loc}' outside the model's folder",
                            hint="keep external data files next to the .onnx file")
    onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent.resolve()))
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise BadInputError(f"{path} fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    return proto


def _import_onnx(path: Path, data: str | None, inputs: list[InputSpec] | None, io_given: IOSpec | None,
                 out: Path, overwrite: bool) -> Artifact:
    import onnx

    from edgekit.targets.base import run_batched
    from edgekit.targets.onnxruntime import OrtRuntime

    proto = load_onnx_safely(path)
    graph_io = onnx_io(proto)
    io = graph_io
    if data or io_given:
        described = io_given or describe(resolve_source(str(data)))
        io = described.model_copy(update={"outputs": graph_io.outputs})
        if len(described.inputs) == len(graph_io.inputs) == 1:
            io.inputs = [described.inputs[0].model_copy(update={"name": graph_io.inputs[0].name,
                                                               "dims": graph_io.inputs[0].dims})]
    if inputs:
        io = io.model_copy(update={"inputs": inputs})
    params = int(sum(np.prod(t.dims) for t in proto.graph.initializer))
    with staging(out, overwrite, [path, *source_paths(data)]) as tmp:
        onnx.save(proto, str(tmp / "model.onnx"))
        metrics: dict[str, Any] = {"params": params, "macs": None, "size_bytes": (tmp / "model.onnx").stat().st_size}
        if data:
            x, y = resolve_source(data)("test")
            runtime = OrtRuntime(tmp / "model.onnx", ["CPUExecutionProvider"], threads=2)
            outs = run_batched(runtime, match_inputs(x, io, where=f"data '{data}'"), 256)[io.output_names[0]]
            metrics.update(_eval_metrics(io, outs, y))
        manifest = Manifest(kind="checkpoint", name=out.name, model=None, onnx="model.onnx", io=io, data=data,
                            lineage=Lineage(step="import", config={"model": str(path), "data": data},
                                            versions=library_versions()), metrics=metrics)
        finalize(tmp, manifest)
    console.info(f"[green]saved[/green] {out} (ONNX-only root)")
    return Artifact.load(out)
