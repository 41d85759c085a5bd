"""edgekit build"""

from __future__ import annotations

import click

from edgekit.commands._common import announce, artifact_argument, emit, json_option, trust_option


@click.command("build")
@artifact_argument
@click.option("--target", "-t", required=True, help="onnxruntime (ort) | openvino (ov) | tensorrt (trt)")
@click.option("--precision", default=None, help="fp32 | fp16 | bf16 | int8 (default: int8 for INT8 artifacts, else fp32)")
@click.option("--device", default=None, help="Target device (default: the target's first, e.g. cpu).")
@click.option("--shape", "shapes", multiple=True, metavar="NAME:MIN:OPT:MAX", help="Dynamic shape range, e.g. input:1x1x8x8:8x1x8x8:64x1x8x8")
@click.option("--hint", type=click.Choice(["latency", "throughput"]), default="latency", show_default=True)
@click.option("--placement", type=click.Choice(["latency", "int8"]), default="latency", show_default=True,
              help="INT8 on onnxruntime's CPU: latency keeps float the layers measured faster in float on this "
                   "CPU (the choice is in the manifest); int8 runs every quantized layer in INT8.")
@click.option("--dry-run", is_flag=True, help="Validate the request and the target, build nothing.")
@trust_option
@json_option
def command(artifact: str | None, target: str, precision: str | None, device: str | None, shapes: tuple[str, ...],
            hint: str, placement: str, dry_run: bool, trust_code: bool, as_json: bool) -> None:
    """Compile ARTIFACT (default: newest under ./runs) for a target; cached in <artifact>/builds/."""
    from edgekit.artifact import resolve_artifact
    from edgekit.build import build
    from edgekit.commands._common import trust
    from edgekit.targets.base import parse_shape

    trust(trust_code)
    art = resolve_artifact(artifact, ("compressed", "checkpoint"), announce)
    shape_map = dict(parse_shape(s) for s in shapes)
    built = build(art, target, precision, device, shape_map, hint, dry_run=dry_run, placement=placement)
    if built is None:
        emit({"dry_run": True, "artifact": str(art.path), "target": target, "ok": True}, as_json)
        return
    emit({"artifact": str(built.path), "target": built.manifest.target.model_dump() if built.manifest.target else None,
          "metrics": built.manifest.metrics}, as_json)
