"""Files that ship with edgekit: built-in recipes and calibration sets."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def resource_dir(name: str) -> Path:
    """``recipes`` or ``calibration``: inside the wheel as edgekit.<name>, or the source tree's folder."""
    spec = importlib.util.find_spec(f"edgekit.{name}")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[1] / name
