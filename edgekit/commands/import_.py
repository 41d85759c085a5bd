"""edgekit import"""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.commands._common import (
    emit,
    input_option,
    io_spec_option,
    json_option,
    out_option,
    overwrite_option,
    parse_json_kwargs,
)


@click.command("import")
@click.argument("model")
@click.option("--model-kwargs", default=None, metavar="JSON", help="Keyword arguments for the factory.")
@click.option("--data", default=None, help="Data source to describe the inputs and evaluate the model on.")
@input_option
@io_spec_option
@click.option("--opset", type=int, default=17, show_default=True)
@out_option
@overwrite_option
@json_option
def command(model: str, model_kwargs: str | None, data: str | None, inputs: tuple[str, ...], io_spec: str | None,
            opset: int, out: str | None, overwrite: bool, as_json: bool) -> None:
    """Make a checkpoint from a trained model: package.module:factory, torchvision:<name>, a zoo
    name, or an .onnx file (an ONNX-only root). The factory loads its own weights."""
    from edgekit.commands._common import input_specs
    from edgekit.importer import import_model

    specs, io = input_specs(inputs, io_spec)
    art = import_model(model, data=data, inputs=specs, io=io, kwargs=parse_json_kwargs(model_kwargs, "--model-kwargs"),
                       out=Path(out) if out else None, overwrite=overwrite, opset=opset)
    emit({"artifact": str(art.path), "metrics": art.manifest.metrics}, as_json)
