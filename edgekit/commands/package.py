"""edgekit package"""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.commands._common import (
    announce,
    artifact_argument,
    emit,
    json_option,
    overwrite_option,
    trust_option,
)


@click.command("package")
@artifact_argument
@click.option("--target", "-t", required=True, help="onnxruntime | openvino | tensorrt")
@click.option("--precision", default=None, help="Default: int8 for INT8 artifacts, else fp32.")
@click.option("--out", type=click.Path(), default=None, help="Bundle path (default dist/<name>.tar.gz).")
@click.option("--dir", "as_dir", is_flag=True, help="Write a directory instead of a .tar.gz.")
@overwrite_option
@trust_option
@json_option
def command(artifact: str | None, target: str, precision: str | None, out: str | None, as_dir: bool, overwrite: bool,
            trust_code: bool, as_json: bool) -> None:
    """Write a deployable bundle of ARTIFACT for a target (builds it first if needed)."""
    from edgekit.artifact import resolve_artifact
    from edgekit.commands._common import trust
    from edgekit.package import package

    trust(trust_code)
    art = resolve_artifact(artifact, ("compressed", "checkpoint"), announce)
    path = package(art, target, precision, Path(out) if out else None, overwrite, as_dir)
    emit({"bundle": str(path)}, as_json)
