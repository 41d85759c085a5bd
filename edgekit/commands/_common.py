"""Options and output helpers shared by the command modules (light imports only)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from edgekit.errors import BadInputError

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
out_option = click.option("--out", type=click.Path(), default=None, help="Output path (exit 2 if it exists).")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
trust_option = click.option("--trust-code", is_flag=True, help="Import code (package.module:attr) named in the artifact's manifest or the recipe.")
artifact_argument = click.argument("artifact", required=False, type=click.Path())
input_option = click.option(
    "--input", "inputs", multiple=True, metavar="NAME:DIMS:DTYPE",
    help="Describe a model input, e.g. input:batch,3,224,224:float32 (repeatable).",
)
io_spec_option = click.option("--io-spec", type=click.Path(), default=None, help="IO spec JSON file.")


def emit(data: Any, as_json: bool) -> None:
    """The command's result as JSON on stdout (only with --json)."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def announce(message: str) -> None:
    from edgekit import console

    console.info(f"[dim]{message}[/dim]")


def parse_json_kwargs(text: str | None, option: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{option} is not valid JSON: {exc.msg}", hint='for example {"width": 64}') from None
    if not isinstance(value, dict):
        raise BadInputError(f"{option} must be a JSON object", hint='for example {"width": 64}')
    return value


def trust(flag: bool) -> None:
    if flag:
        from edgekit.trust import trust_all

        trust_all()


def input_specs(inputs: tuple[str, ...], io_spec: str | None = None) -> Any:
    """(list of InputSpec or None, IOSpec or None) from --input / --io-spec."""
    from edgekit.iospec import load_io_spec_file, parse_input_option

    if inputs and io_spec:
        raise BadInputError("give --input or --io-spec, not both")
    specs = [parse_input_option(t) for t in inputs] or None
    return specs, (load_io_spec_file(io_spec) if io_spec else None)
