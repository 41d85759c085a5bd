"""Artifacts: atomic writes, checksums, lineage, newest-artifact lookup, wheel contents."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgekit.artifact import Artifact, Lineage, Manifest, finalize, find_latest, staging
from edgekit.errors import ArtifactError, OutputExistsError
from edgekit.iospec import InputSpec, IOSpec

from .conftest import ROOT

IO = IOSpec(inputs=[InputSpec(name="x", dims=["batch", 4])])


def _write(out: Path, payload: bytes = b"abc", overwrite: bool = False) -> Artifact:
    with staging(out, overwrite=overwrite) as tmp:
        (tmp / "data.bin").write_bytes(payload)
        finalize(tmp, Manifest(kind="checkpoint", name=out.name, io=IO, lineage=Lineage(step="test")))
    return Artifact.load(out)


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "a"
    with pytest.raises(RuntimeError), staging(out) as tmp:
        (tmp / "data.bin").write_bytes(b"half")
        raise RuntimeError("killed")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_whole(tmp_path: Path) -> None:
    out = tmp_path / "a"
    _write(out, b"one")
    with pytest.raises(OutputExistsError):
        _write(out, b"two")
    art = _write(out, b"two", overwrite=True)
    assert (art.path / "data.bin").read_bytes() == b"two"


def test_checksum_and_missing_file(tmp_path: Path) -> None:
    art = _write(tmp_path / "a")
    (art.path / "data.bin").write_bytes(b"abd")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        Artifact.load(art.path)
    (art.path / "data.bin").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Artifact.load(art.path)


def test_find_latest_skips_caches(tmp_path: Path) -> None:
    first = _write(tmp_path / "runs" / "first")
    _write(tmp_path / "runs" / "first" / "builds" / "x")
    assert find_latest(("checkpoint",), tmp_path / "runs") == first.path


def test_parent_change_is_detected(tmp_path: Path) -> None:
    parent = _write(tmp_path / "p")
    with staging(tmp_path / "p" / "child") as tmp:
        finalize(tmp, Manifest(kind="compressed", name="c", io=IO,
                               lineage=Lineage(parent="..", parent_sha256=parent.sha256, step="t")))
    child = Artifact.load(tmp_path / "p" / "child")
    assert child.root().path.resolve() == parent.path.resolve()
    manifest = (parent.path / "manifest.json").read_text().replace('"name": "p"', '"name": "q"')
    (parent.path / "manifest.json").write_text(manifest)
    with pytest.raises(ArtifactError, match="changed after"):
        child.root()


def test_wheel_ships_recipes_and_calibration(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("edgekit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("recipes", "calibration"):
        shipped = {n for n in names if n.startswith(f"edgekit/{folder}/")}
        expected = {f"edgekit/{folder}/{p.name}" for p in (ROOT / folder).iterdir() if p.is_file()}
        assert f"edgekit/{folder}/README.md" in shipped
        assert expected <= shipped, expected - shipped
