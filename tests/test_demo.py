"""edgekit demo: the whole path on the embedded default from one command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_cli


@pytest.mark.slow
def test_demo_runs_the_whole_path(tmp_path: Path) -> None:
    res = run_cli("demo", "--epochs", "10", "--batch", "1,64", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    report = json.loads(res.out)
    targets = {(r["variant"], r["target"], r["status"]) for r in report["rows"]}
    assert ("full", "torch", "ok") in targets
    assert ("int8", "onnxruntime", "ok") in targets and ("int8", "openvino", "ok") in targets
    assert ("int8", "tensorrt", "unavailable") in targets
    assert sorted({r["batch"] for r in report["rows"]}) == [1, 64]
    assert (tmp_path / "runs/demo/int8/manifest.json").is_file()
    assert "edgekit bench - batch 1" in res.err and "edgekit bench - batch 64" in res.err
    first = (tmp_path / "runs/demo/int8/manifest.json").read_bytes()

    # `make demo` again replaces the demo's own tree (its INT8 child included), and nothing else
    (tmp_path / "runs/keep.txt").write_text("a user's file beside the demo")
    again = run_cli("demo", "--epochs", "1", "--batch", "1", "--json", cwd=tmp_path)
    assert again.code == 0, again.err
    assert (tmp_path / "runs/demo/int8/manifest.json").read_bytes() != first
    assert (tmp_path / "runs/keep.txt").is_file()
