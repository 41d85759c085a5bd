"""edgekit doctor"""

from __future__ import annotations

import click

from edgekit.commands._common import emit, json_option


@click.command("doctor")
@json_option
def command(as_json: bool) -> None:
    """Report what can run here (torch, CUDA, runtimes, devices) and how to install what is missing."""
    from rich.markup import escape
    from rich.table import Table

    from edgekit import console
    from edgekit.doctor import as_dicts, run

    checks = run()
    if as_json:
        emit(as_dicts(checks), as_json)
        return
    table = Table(title="edgekit doctor")
    for col in ("component", "status", "detail", "install"):
        table.add_column(col, overflow="fold")
    marks = {"ok": "[green]ok[/green]", "missing": "[yellow]missing[/yellow]", "unavailable": "[red]unavailable[/red]"}
    for c in checks:
        table.add_row(c.component, marks.get(c.status, c.status), escape(c.detail), escape(c.install))
    console.err.print(table)
