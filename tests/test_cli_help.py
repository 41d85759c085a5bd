"""--help must be fast: no heavy package may be imported by the group or any subcommand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgekit import __version__
from edgekit.cli import COMMANDS

from .conftest import env, run_cli

HEAVY = ["torch", "onnx", "onnxruntime", "openvino", "transformers", "torch_pruning", "tensorrt", "nncf", "sklearn"]
PROBE = """
import json, sys
from edgekit.cli import main
code = 0
try:
    main({args!r})
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}), file=sys.stderr)
"""


def _probe(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], env=env(),
                          capture_output=True, text=True, check=False, timeout=60)
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_nothing_heavy(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    result = _probe(args)
    assert result["code"] == 0
    assert result["heavy"] == []


def test_version() -> None:
    res = run_cli("--version")
    assert res.code == 0 and __version__ in res.out


def test_unknown_command_suggests() -> None:
    res = run_cli("trian")
    assert res.code == 2
    assert "did you mean 'train'" in res.err
