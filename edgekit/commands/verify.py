"""edgekit verify"""

from __future__ import annotations

import click

from edgekit.commands._common import emit, json_option


@click.command("verify")
@click.argument("bundle", type=click.Path())
@click.option("--threads", type=int, default=None)
@json_option
def command(bundle: str, threads: int | None, as_json: bool) -> None:
    """Run BUNDLE's golden samples on this machine: exit 0 when its outputs match, 4 when they do not.

    Needs no torch. The line names the runtime and the CPU kind (see `edgekit doctor`)."""
    from edgekit import console
    from edgekit.runtime import Bundle
    from edgekit.verify import verify_bundle

    result = verify_bundle(Bundle.open(bundle), threads)
    if as_json:
        emit(result, True)
        return
    agree = f", top-1 agreement {result['agreement']:.0%}" if result["agreement"] is not None else ""
    console.info(f"[green]verified[/green] {bundle}: {result['samples']} golden samples, max error "
                 f"{result['max_error']:.2e} (tolerance {result['tolerance']:g}){agree} on {result['target']} "
                 f"{result['runtime_version']}, CPU {result['cpu']['kind']}")
