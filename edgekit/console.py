"""Where human output goes: stderr, through rich. stdout is kept for ``--json``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_state = {"quiet": False}
err = Console(stderr=True, highlight=False)
if not err.is_terminal:  # logs and pipes: wide enough for the bench table
    err = Console(stderr=True, highlight=False, width=220)


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


def info(message: str) -> None:
    """A status line on stderr (suppressed by --quiet)."""
    if not _state["quiet"]:
        err.print(message)


def log(message: str) -> None:
    """A plain milestone line (such as a saved checkpoint) for logs and scripts that wait for it.

    On a terminal the progress bar already shows it, so it is printed only when stderr is not one.
    """
    if not _state["quiet"] and not err.is_terminal:
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}")


@contextmanager
def progress(transient: bool = True) -> Iterator[Progress]:
    """A rich progress display on stderr; disabled under --quiet or without a terminal."""
    columns: list[Any] = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    disable = _state["quiet"] or not err.is_terminal
    with Progress(*columns, console=err, transient=transient, disable=disable) as bar:
        yield bar
