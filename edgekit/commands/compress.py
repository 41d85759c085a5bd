"""edgekit compress"""

from __future__ import annotations

import sys
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


@click.command("compress")
@artifact_argument
@click.option("--recipe", "-r", required=True, help="Built-in recipe name (int8, prune50, ...) or a YAML path.")
@click.option("--calib", default=None, help="Calibration data source (overrides the recipe's).")
@out_option
@overwrite_option
@click.option("--dry-run", is_flag=True, help="Validate recipe, data, IO spec and export; compute nothing.")
@click.option("--print-recipe", is_flag=True, help="Print the effective recipe (all defaults) and exit.")
@trust_option
@json_option
def command(artifact: str | None, recipe: str, calib: str | None, out: str | None, overwrite: bool, dry_run: bool,
            print_recipe: bool, trust_code: bool, as_json: bool) -> None:
    """Apply a recipe to ARTIFACT (default: newest under ./runs); writes <artifact>/<recipe>/."""
    from edgekit.commands._common import trust
    from edgekit.recipe import dump_recipe, load_recipe, with_calibration

    if print_recipe:
        loaded, _ = load_recipe(recipe)
        effective = with_calibration(loaded, calib)
        if as_json:
            emit(effective.model_dump(mode="json"), True)
        else:
            sys.stdout.write(dump_recipe(effective))
        return
    from edgekit.artifact import resolve_artifact
    from edgekit.compress import compress

    trust(trust_code)
    art = resolve_artifact(artifact, ("checkpoint", "compressed"), announce)
    result = compress(art, recipe, calib=calib, out=Path(out) if out else None, overwrite=overwrite, dry_run=dry_run)
    if result is None:
        emit({"dry_run": True, "artifact": str(art.path), "recipe": recipe, "ok": True}, as_json)
        return
    emit({"artifact": str(result.path), "metrics": result.manifest.metrics}, as_json)
