"""Regenerate the calibration sets shipped in calibration/ (deterministic).

    python tools/make_calibration_sets.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.data import resolve_source, take

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    x, y = take(resolve_source("digits")("train"), 300, seed=0)
    out = ROOT / "calibration" / "digits-calib.npz"
    np.savez_compressed(out, x=x["input"], y=y, split=np.zeros(len(y), dtype=np.int8),
                        labels=np.array([str(i) for i in range(10)]))
    print(f"wrote {out} ({len(y)} samples)")


if __name__ == "__main__":
    main()
