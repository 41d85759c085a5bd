"""edgekit explain"""

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


@click.command("explain")
@artifact_argument
@click.option("--recipe", "-r", default=None, help="Quantize a float ARTIFACT with this recipe first, in memory (nothing is kept but the report).")
@click.option("--calib", default=None, help="Calibration data for --recipe (default: the model's data).")
@click.option("--data", default=None, help="Data to measure on (default: the full model's data).")
@click.option("--split", default="val", show_default=True, type=click.Choice(["train", "val", "test"]),
              help="Split to measure on (val: the one the accuracy budget uses).")
@click.option("--samples", type=click.IntRange(min=1), default=1000, show_default=True, help="Measure on at most N samples.")
@click.option("--no-probe", is_flag=True, help="Skip the one-layer-in-float runs (one evaluation per layer): rank by error alone.")
@out_option
@overwrite_option
@trust_option
@json_option
def command(artifact: str | None, recipe: str | None, calib: str | None, data: str | None, split: str, samples: int,
            no_probe: bool, out: str | None, overwrite: bool, trust_code: bool, as_json: bool) -> None:
    """Where an INT8 ARTIFACT loses accuracy, layer by layer, and the recipe lines that would fix it."""
    from edgekit.artifact import resolve_artifact
    from edgekit.commands._common import trust
    from edgekit.explain import explain

    trust(trust_code)
    art = resolve_artifact(artifact, ("compressed", "checkpoint"), announce)
    report = explain(art, recipe=recipe, calib=calib, data=data, split=split, samples=samples, probe=not no_probe,
                     out=Path(out) if out else None, overwrite=overwrite)
    emit(report.model_dump(mode="json"), as_json)
