"""torch -> ONNX, driven by the IO spec, checked, and compared with torch (STYLE.md #9)."""

from __future__ import annotations

import io as _io
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ModelError, ParityError, require
from edgekit.iospec import IOSpec, OutputSpec
from edgekit.metrics import max_rel_error
from edgekit.onnx_graph import cpu_session

DEFAULT_OPSET = 17
FP32_TOLERANCE = 1e-4


def _dynamic_axes(io: IOSpec, n_outputs_rank: list[int]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for spec in io.inputs:
        named = {i: (d if isinstance(d, str) else "") for i, d in enumerate(spec.dims)}
        named[0] = "batch"
        axes[spec.name] = {i: n for i, n in named.items() if n}
    for out, rank in zip(io.outputs, n_outputs_rank, strict=True):
        axes[out.name] = {0: "batch"} if rank > 0 else {}
    return axes


def reference_outputs(model: Any, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    from edgekit.torchutil import call, flatten_outputs, to_tensors

    with torch.no_grad():
        out = call(model, to_tensors(inputs, torch.device("cpu")))
    return [t.float().numpy() for t in flatten_outputs(out)]


def export_onnx(
    model: Any,
    io: IOSpec,
    path: Path,
    samples: dict[str, np.ndarray],
    opset: int = DEFAULT_OPSET,
    slim: bool = False,
    tolerance: float = FP32_TOLERANCE,
) -> tuple[IOSpec, dict[str, Any]]:
    """Export ``model`` to ``path``; returns the IO spec with the output names used, and metrics.

    ``samples`` are real inputs (a few rows) used for tracing and for the parity check.
    """
    require("onnx", "full", "ONNX export")
    import onnx
    import torch

    from edgekit.torchutil import call_args, to_tensors

    if opset < 17:
        raise ModelError(f"opset {opset} is too old", hint="edgekit exports opset 17 or newer")
    model = model.eval().cpu()
    example = {k: v[:2] for k, v in samples.items()}
    ref = reference_outputs(model, example)
    names = io.output_names
    if len(ref) != len(names):
        base = names[0] if names else "output"
        names = [base] + [f"{base}_{i}" for i in range(1, len(ref))] if len(names) <= 1 else names
        if len(names) != len(ref):
            raise ModelError(f"the model returns {len(ref)} outputs but the IO spec names {len(io.outputs)}")
        io = io.model_copy(update={"outputs": [OutputSpec(name=n) for n in names]})
    bound = call_args(model, to_tensors({n: example[n] for n in io.input_names}, torch.device("cpu")))
    # several inputs go in as keywords: the graph's inputs are then in forward's order, each named for
    # the parameter it feeds (ONNX Runtime, OpenVINO and TensorRT all bind them by name)
    kwargs = bound if isinstance(bound, dict) else None
    args = () if kwargs is not None else bound if isinstance(bound, tuple) else (bound,)
    try:
        with warnings.catch_warnings(), redirect_stdout(_io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                args,
                str(path),
                kwargs=kwargs,
                input_names=list(kwargs) if kwargs is not None else io.input_names,
                output_names=io.output_names,
                dynamic_axes=_dynamic_axes(io, [r.ndim for r in ref]),
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except (torch.onnx.errors.UnsupportedOperatorError, torch.onnx.errors.OnnxExporterError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"ONNX export failed: {first}", hint="try another --opset, or simplify the model's forward") from None
    try:
        onnx.checker.check_model(str(path))
        onnx.shape_inference.infer_shapes_path(str(path), str(path))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"the exported ONNX model is invalid: {str(exc).splitlines()[0]}") from None
    if slim:
        slim_model(path)
    metrics = {"opset": opset, "onnx_parity": check_onnx_parity(path, model, io, samples, tolerance)}
    return io, metrics


def slim_model(path: Path) -> None:
    """Fold constants and fuse patterns with onnxslim (a maintained graph optimiser)."""
    require("onnxslim", "full", "--slim")
    import onnxslim

    with warnings.catch_warnings(), redirect_stdout(_io.StringIO()):
        warnings.simplefilter("ignore")
        onnxslim.slim(str(path), str(path))


def check_onnx_parity(path: Path, model: Any, io: IOSpec, samples: dict[str, np.ndarray], tolerance: float) -> dict[str, float]:
    """Max error of each ONNX output against torch, at batch 1 and at the sample batch."""
    sess = cpu_session(path, optimization="all")
    errors: dict[str, float] = {}
    for chunk in ({k: v[:1] for k, v in samples.items()}, {k: v[:8] for k, v in samples.items()}):
        ref = reference_outputs(model, chunk)
        got = sess.run(io.output_names, chunk)
        for name, a, b in zip(io.output_names, got, ref, strict=True):
            errors[name] = max(errors.get(name, 0.0), max_rel_error(a, b))
    for name, err in errors.items():
        if err > tolerance:
            raise ParityError(
                f"ONNX output '{name}' differs from torch by {err:.2e} (tolerance {tolerance:.0e})",
                hint="the model may use an op that exports inexactly; try another --opset",
            )
    return errors
