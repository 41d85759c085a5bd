"""The ``edgekit`` command: a click group whose subcommands are imported only when run.

This is the only place where errors become output and exit codes (DESIGN.md §2, §8). ``--help``
of the group and of every subcommand imports no heavy package (torch, onnx, runtimes).
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import traceback
from typing import Any, NoReturn

import click

from edgekit import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("edgekit.commands.train:command", "Train a model (default: small CNN on digits)."),
    "import": ("edgekit.commands.import_:command", "Turn a trained model or ONNX file into a checkpoint."),
    "export": ("edgekit.commands.export:command", "Re-export an artifact to ONNX with other options."),
    "compress": ("edgekit.commands.compress:command", "Apply a recipe (prune, distill, int8)."),
    "explain": ("edgekit.commands.explain:command", "Where an INT8 model loses accuracy, layer by layer."),
    "build": ("edgekit.commands.build:command", "Compile an artifact for a target."),
    "bench": ("edgekit.commands.bench:command", "Accuracy, latency and size against the full model."),
    "package": ("edgekit.commands.package:command", "Write a deployable bundle for a target."),
    "predict": ("edgekit.commands.predict:command", "Run a bundle on inputs (no torch needed)."),
    "verify": ("edgekit.commands.verify:command", "Check a bundle's golden samples on this machine."),
    "doctor": ("edgekit.commands.doctor:command", "Report what can run on this machine."),
    "demo": ("edgekit.commands.demo:command", "The whole path on the embedded default."),
}

_state: dict[str, Any] = {"debug": False}
# errno values that mean "the output cannot be written" (disk or quota full, file too large, read-only)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


class LazyGroup(click.Group):
    """Maps command names to ``module:attr`` and imports them on first use (click's recipe)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name][0].split(":")
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command)  # noqa: S101 - our own table, not user input
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS:
            from edgekit.errors import did_you_mean

            raise click.UsageError(f"no such command '{name}'{did_you_mean(name, COMMANDS)}")
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("--quiet", "-q", is_flag=True, help="Only errors and results.")
def cli(debug: bool, quiet: bool) -> None:
    """edgekit: train, compress, compile and benchmark PyTorch models for edge devices.

    \b
    edgekit train                    # small CNN on the embedded digits data
    edgekit compress --recipe int8   # INT8 QDQ model of the newest run
    edgekit bench --target openvino  # accuracy / latency / size vs the full model
    """
    _state["debug"] = debug or _state["debug"]
    from edgekit import console

    console.set_quiet(quiet)


def _print_error(exc: Any) -> None:
    sys.stderr.write(f"error: {exc.message}\n")
    if getattr(exc, "hint", None):
        sys.stderr.write(f"hint: {exc.hint}\n")


def main(argv: list[str] | None = None) -> None:
    from edgekit.errors import EdgekitError

    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = bool(os.environ.get("EDGEKIT_DEBUG")) or "--debug" in args
    if not _state["debug"] and not sys.warnoptions:
        import warnings

        warnings.simplefilter("ignore")  # library warnings are not our message; --debug shows them
    try:
        rv = cli.main(args=args, prog_name="edgekit", standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, EOFError):  # click turns every EOFError into Abort: a file ended early
            sys.stderr.write(f"error: a file ended before its end ({exc.__cause__ or 'EOFError'})\n")
            sys.stderr.write("hint: an input, artifact or bundle is truncated; copy or re-create it\n")
            sys.exit(2)
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgekitError as exc:
        if _state["debug"]:
            traceback.print_exc()
        _print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            _internal(exc)
        if _state["debug"]:
            traceback.print_exc()
        where = f" ({exc.filename})" if exc.filename else ""
        sys.stderr.write(f"error: cannot write{where}: {exc.strerror or exc}\n")
        sys.stderr.write("hint: free disk space or choose a writable --out; nothing half-written was kept\n")
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors become exit 1
        _internal(exc)


def _internal(exc: BaseException) -> NoReturn:
    if _state["debug"]:
        traceback.print_exc()
    first = (str(exc).strip().splitlines() or [""])[0]
    sys.stderr.write(f"internal error: {type(exc).__name__}: {first}\n")
    sys.stderr.write("hint: run with --debug for the traceback, and report it if it persists\n")
    sys.exit(1)
