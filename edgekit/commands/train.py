"""edgekit train"""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.commands._common import (
    emit,
    input_option,
    json_option,
    out_option,
    overwrite_option,
    parse_json_kwargs,
)


@click.command("train")
@click.option("--model", default="small_cnn", show_default=True, help="Zoo name, package.module:factory or torchvision:<name>.")
@click.option("--model-kwargs", default=None, metavar="JSON", help="Keyword arguments for the model factory.")
@click.option("--data", default="digits", show_default=True, help="digits | npz:PATH | idx:DIR | images:DIR | package.module:function")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Global batch (split across torchrun ranks).")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@input_option
@out_option
@click.option("--resume", is_flag=True, help="Continue an interrupted run from runs/NAME.partial/.")
@overwrite_option
@json_option
def command(model: str, model_kwargs: str | None, data: str, epochs: int, lr: float, batch_size: int,
            weight_decay: float, device: str, seed: int, inputs: tuple[str, ...], out: str | None,
            resume: bool, overwrite: bool, as_json: bool) -> None:
    """Train a model and write a checkpoint artifact (weights + FP32 ONNX)."""
    from edgekit.commands._common import input_specs
    from edgekit.train import TrainConfig, train

    specs, _ = input_specs(inputs)
    cfg = TrainConfig(model=model, model_kwargs=parse_json_kwargs(model_kwargs, "--model-kwargs"), data=data,
                      epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, device=device,
                      seed=seed, inputs=specs)
    art = train(cfg, Path(out) if out else None, resume=resume, overwrite=overwrite)
    if art is not None:
        emit({"artifact": str(art.path), "metrics": {k: v for k, v in art.manifest.metrics.items() if k != "history"}}, as_json)
