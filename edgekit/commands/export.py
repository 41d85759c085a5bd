"""edgekit export"""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.commands._common import (
    announce,
    artifact_argument,
    emit,
    input_option,
    io_spec_option,
    json_option,
    out_option,
    overwrite_option,
    trust_option,
)


@click.command("export")
@artifact_argument
@click.option("--opset", type=int, default=17, show_default=True)
@input_option
@io_spec_option
@click.option("--slim", is_flag=True, help="Optimise the graph with onnxslim after export.")
@out_option
@overwrite_option
@trust_option
@json_option
def command(artifact: str | None, opset: int, inputs: tuple[str, ...], io_spec: str | None, slim: bool,
            out: str | None, overwrite: bool, trust_code: bool, as_json: bool) -> None:
    """Export ARTIFACT's torch model to ONNX again (other opset, inputs, slimming); checked against torch."""
    from edgekit.artifact import resolve_artifact
    from edgekit.checkpoint import reexport
    from edgekit.commands._common import input_specs, trust

    trust(trust_code)
    art = resolve_artifact(artifact, ("checkpoint", "compressed"), announce)
    specs, io = input_specs(inputs, io_spec)
    result = reexport(art, opset=opset, inputs=specs, io=io, slim=slim, out=Path(out) if out else None, overwrite=overwrite)
    emit({"artifact": str(result.path), "metrics": result.manifest.metrics}, as_json)
