"""``edgekit compress``: run a recipe's steps on an artifact and write a ``compressed`` artifact.

The output goes in a subdirectory of the input artifact (``runs/x/int8/`` by default) that the
input's manifest never lists, and records its lineage: parent, the effective recipe, versions. The
report holds params, MACs, size and accuracy before and after each step. A missed accuracy budget
keeps the best artifact (``metrics.budget_met = false``) and is exit 3.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import console, trust
from edgekit.artifact import (
    REFERENCE_ONNX,
    Artifact,
    Lineage,
    Manifest,
    check_output,
    finalize,
    library_versions,
    relative_parent,
    staging,
)
from edgekit.errors import ArtifactError, BadInputError, BudgetError, DataError
from edgekit.recipe import QuantizeStep, Recipe, load_recipe, with_calibration
from edgekit.steps import NEEDS_TORCH, STEPS, Context, State


def plan(art: Artifact, recipe_name: str, calib: str | None) -> tuple[Recipe, Path, str]:
    """Validate the recipe against the artifact, before any compute."""
    trust.vouch_named(calib)  # named by the caller: theirs to run (the recipe's own names are not)
    recipe, path = load_recipe(recipe_name)
    recipe = with_calibration(recipe, calib)
    if art.kind not in ("checkpoint", "compressed"):
        raise ArtifactError(f"{art.path} is a {art.kind} artifact; compress takes a checkpoint or compressed one")
    if art.manifest.quantized:
        raise BadInputError(f"{art.path} is already INT8", hint="compress its parent (the float model) instead")
    needs_torch = [s.kind for s in recipe.steps if s.kind in NEEDS_TORCH]
    if needs_torch and art.manifest.model is None:
        raise BadInputError(
            f"the {needs_torch[0]} step needs a torch module, but {art.path} is an ONNX-only model",
            hint="import the model as package.module:factory, or use an INT8-only recipe",
        )
    root = art.root()
    data = root.manifest.data or art.manifest.data
    for step in recipe.steps:
        source = getattr(step, "calibration", None) or getattr(step, "data", None) or data
        if source is None:
            what = "calibration data (--calib SOURCE)" if isinstance(step, QuantizeStep) else "training data (data: in the step)"
            raise DataError(f"the {step.kind} step needs {what}: the model was imported without --data")
    return recipe, path, str(data) if data else ""


def _dry_run(art: Artifact, recipe: Recipe, data: str) -> None:
    """Check data, IO spec and that the model rebuilds and exports, with no training or calibration."""
    import tempfile

    from edgekit.evaluate import split_inputs

    if data:
        split_inputs(data, "val", art.io)
    for step in recipe.steps:
        source = getattr(step, "calibration", None) or getattr(step, "data", None)
        if source:
            from edgekit.data import match_inputs, resolve_source

            x, _ = resolve_source(source)("train")
            match_inputs(x, art.io, where=f"data '{source}'")
    if art.manifest.model is not None:
        from edgekit.checkpoint import load_module, sample_inputs
        from edgekit.export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(load_module(art), art.io, Path(tmp) / "m.onnx", sample_inputs(art.io, data or None))


def measure(label: str, state: State, ctx: Context) -> dict[str, Any]:
    """params, MACs, weight bytes and test accuracy of a state, for the compress report."""
    from edgekit.evaluate import predict_state, root_outputs, score, split_inputs

    row: dict[str, Any] = {"step": label}
    if state.module is not None:
        from edgekit.torchutil import count_macs, count_params

        row["params"] = count_params(state.module)
        row["weight_bytes"] = int(sum(p.numel() * p.element_size() for p in state.module.parameters()))
    if state.onnx is not None and state.onnx.is_file():
        row["onnx_bytes"] = state.onnx.stat().st_size
    if ctx.data:
        inputs, labels = split_inputs(ctx.data, "test", state.io)
        if state.module is not None:
            row["macs"] = count_macs(state.module, inputs)
        use_graph = state.quantized or state.module is None
        outputs = predict_state(None if use_graph else state.module, state.onnx if use_graph else None, inputs,
                                quantized=state.quantized)
        ref = root_outputs(ctx.root, ctx.data, "test") if state.io.task != "classification" or labels is None else None
        name, value = score(state.io, outputs, labels, ref)
        row[name] = value
    return row


def compress(art: Artifact, recipe_name: str, *, calib: str | None = None, out: Path | None = None,
             overwrite: bool = False, dry_run: bool = False) -> Artifact | None:
    recipe, recipe_path, data = plan(art, recipe_name, calib)
    if dry_run:
        _dry_run(art, recipe, data)
        console.info(f"dry run: recipe '{recipe.name}' on {art.path}: recipe, data, IO spec and export are ok")
        return None
    out = out or art.path / recipe.name
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and rank > 0:  # under torchrun: every rank trains, rank 0 alone writes the artifact
        with tempfile.TemporaryDirectory(prefix="edgekit-rank-") as scratch:
            run_steps(art, recipe, data, Path(scratch) / "out")
        return None
    check_output(out, overwrite, art.chain_paths())
    return _finish(art, recipe, recipe_path, data, out, overwrite)


def run_steps(art: Artifact, recipe: Recipe, data: str, tmp: Path) -> tuple[State, list[dict[str, Any]], dict[str, Any]]:
    from edgekit.checkpoint import load_module

    tmp.mkdir(parents=True, exist_ok=True)
    module = load_module(art) if art.manifest.model is not None else None
    state = State(module=module, spec=art.manifest.model, io=art.io, onnx=art.onnx_path)
    ctx = Context(parent=art, root=art.root(), data=data, workdir=tmp)
    report = [measure("input", state, ctx)]
    notes: dict[str, Any] = {}
    for i, step in enumerate(recipe.steps):
        ctx.step_index = i
        console.info(f"step {i + 1}/{len(recipe.steps)}: {step.kind}")
        state = STEPS[step.kind](state, step, ctx)
        notes.update(state.notes)
        report.append(measure(step.kind, state, ctx))
    return state, report, notes


def _finish(art: Artifact, recipe: Recipe, recipe_path: Path, data: str, out: Path, overwrite: bool) -> Artifact:
    console.info(f"compressing {art.path} with recipe '{recipe.name}' ({' -> '.join(s.kind for s in recipe.steps)})")
    with staging(out, overwrite, art.chain_paths()) as tmp:
        state, report, notes = run_steps(art, recipe, data, tmp)
        files = _write_model(state, tmp, data)
        shutil.rmtree(tmp / ".work", ignore_errors=True)
        metrics = _metrics(report, notes, tmp, state)
        manifest = Manifest(
            kind="compressed",
            name=f"{art.manifest.name}-{recipe.name}",
            model=state.spec if state.module is not None else None,
            onnx="model.onnx",
            quantized=state.quantized,
            io=state.io,
            data=data or None,
            lineage=Lineage(parent=relative_parent(out, art.path), parent_sha256=art.sha256, step=f"compress:{recipe.name}",
                            config={"recipe": recipe.model_dump(mode="json"), "recipe_file": str(recipe_path)},
                            versions=library_versions()),
            metrics=metrics,
        )
        finalize(tmp, manifest, owned=files)
    result = Artifact.load(out)
    _print_report(report)
    if metrics.get("budget_met") is False:
        raise BudgetError(
            f"accuracy budget missed: {notes.get('budget', {}).get('explanation', 'see the report')}; "
            f"the best model is kept at {out}",
            hint="raise max_accuracy_drop, calibrate with more samples, or keep more layers in float (ignore:)",
        )
    return result


def _write_model(state: State, tmp: Path, data: str) -> list[str]:
    files = []
    if state.module is not None:
        from edgekit.models import save_weights

        save_weights(state.module, tmp / "model.safetensors")
        files.append("model.safetensors")
    if state.onnx is None:
        from edgekit.checkpoint import sample_inputs
        from edgekit.export import export_onnx

        state.io, _ = export_onnx(state.module, state.io, tmp / "model.onnx", sample_inputs(state.io, data or None))
    else:
        _copy_onnx(state.onnx, tmp / "model.onnx")
    files.append("model.onnx")
    if state.quantized and state.reference is not None:  # what `edgekit explain` compares the QDQ graph with
        _copy_onnx(state.reference, tmp / REFERENCE_ONNX)
        files.append(REFERENCE_ONNX)
    return files


def _copy_onnx(src: Path, dst: Path) -> None:
    """Copy a graph as one self-contained file (external data folded in) when it fits."""
    import onnx

    model = onnx.load(str(src))
    if model.ByteSize() < 1_900_000_000:
        onnx.save(model, str(dst))
    else:
        onnx.save(model, str(dst), save_as_external_data=True, location=dst.name + ".data")


def _metrics(report: list[dict[str, Any]], notes: dict[str, Any], tmp: Path, state: State) -> dict[str, Any]:
    first, last = report[0], report[-1]
    metric = next((k for k in ("top1", "cosine", "neg_mse") if k in last), None)
    metrics: dict[str, Any] = {"report": report, "size_bytes": (tmp / "model.onnx").stat().st_size, **notes}
    if metric:
        metrics["task_metric"] = metric
        metrics["test"] = {metric: last[metric]}
        if first.get(metric) is not None and last.get(metric) is not None:
            metrics["test_delta"] = float(np.float64(last[metric]) - np.float64(first[metric]))
    for key in ("params", "macs"):
        if key in last:
            metrics[key] = last[key]
    if "budget" in notes:
        metrics["budget_met"] = bool(notes["budget"]["met"])
    return metrics


def _print_report(report: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if console.is_quiet():
        return
    cols = ["step", "params", "macs", "weight_bytes", "onnx_bytes", "top1", "cosine"]
    cols = [c for c in cols if any(c in r for r in report)]
    table = Table(title="compress report (test split)")
    for c in cols:
        table.add_column(c, justify="left" if c == "step" else "right")
    for r in report:
        table.add_row(*[_fmt(r.get(c)) for c in cols])
    console.err.print(table)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
