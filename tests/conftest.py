"""Shared fixtures: small models trained once per session, and a CLI runner in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from edgekit.artifact import Artifact

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))  # the stand-in user package `userzoo`
CACHE = Path(tempfile.mkdtemp(prefix="edgekit-test-cache-"))
os.environ.setdefault("XDG_CACHE_HOME", str(CACHE))


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), e.get("PYTHONPATH", "")])
    e.setdefault("OMP_NUM_THREADS", "2")
    e.setdefault("XDG_CACHE_HOME", str(CACHE))  # predict's verification cache: not the user's
    e.update(extra)
    return e


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, **extra: str) -> Result:
    """``edgekit ARGS`` in a fresh process (as a user runs it)."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit", *args], cwd=cwd, env=env(**extra), capture_output=True, text=True,
        timeout=timeout, check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_user_error(res: Result, needle: str, code: int = 2) -> None:
    """One clear error line (plus an optional hint), the right exit code, no traceback."""
    assert res.code == code, (res.code, res.err)
    assert "Traceback" not in res.err, res.err
    errors = [line for line in res.lines if line.startswith("error:")]
    assert len(errors) == 1, res.err
    assert needle.lower() in errors[0].lower(), (needle, errors[0])


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def digits_ckpt(workdir: Path):
    """The default small CNN trained on digits (shared by most tests)."""
    from edgekit.train import TrainConfig, train

    art = train(TrainConfig(epochs=20), out=workdir / "runs" / "digits")
    assert art is not None
    return art


@pytest.fixture(scope="session")
def digits_int8(digits_ckpt: Artifact) -> Artifact:
    """digits_ckpt compressed once by recipe int8: every test that reads it sees the same artifact,
    whatever the order tests run in (tests that compress for themselves write to their tmp_path)."""
    from edgekit.compress import compress

    art = compress(digits_ckpt, "int8", out=digits_ckpt.path.parent / "digits-int8")
    assert art is not None
    return art


def copy_artifact(src: Path, dst: Path, builds: bool = False) -> Path:
    """An artifact's own files (manifest + what it lists), optionally with its build cache; no children."""
    dst.mkdir(parents=True)
    manifest = json.loads((src / "manifest.json").read_text())
    for name in ["manifest.json", *manifest["files"]]:
        shutil.copyfile(src / name, dst / name)
    if builds and (src / "builds").is_dir():
        shutil.copytree(src / "builds", dst / "builds")
    return dst
