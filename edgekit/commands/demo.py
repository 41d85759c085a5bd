"""edgekit demo"""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.commands._common import emit, json_option


@click.command("demo")
@click.option("--out", type=click.Path(), default="runs/demo", show_default=True, help="Where the demo's artifacts go (replaced).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--batch", "batches", default="1,256", show_default=True, help="Batch sizes for the table.")
@json_option
def command(out: str, epochs: int, batches: str, as_json: bool) -> None:
    """Train -> compress int8 -> build -> bench on the embedded digits data, and print the table."""
    from edgekit.commands.bench import _batches
    from edgekit.demo import demo

    report = demo(Path(out), epochs=epochs, batches=tuple(_batches(batches)))
    emit(report.model_dump(mode="json"), as_json)
