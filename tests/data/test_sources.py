"""Data sources: digits split, npz, idx, image folders, python functions."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from edgekit.data import describe, resolve_source, take
from edgekit.errors import DataError
from edgekit.trust import vouch


def test_digits_split_is_fixed_and_disjoint() -> None:
    src = resolve_source("digits")
    sizes = {s: len(src(s)[1]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    x_tr, _ = src("train")
    x_te, _ = src("test")
    assert x_tr["input"].shape[1:] == (1, 8, 8) and x_tr["input"].dtype == np.float32
    flat_tr = {row.tobytes() for row in x_tr["input"]}
    overlap = sum(row.tobytes() in flat_tr for row in x_te["input"])
    assert overlap < 5  # digits has a few duplicate images, not a leaked split
    assert np.array_equal(resolve_source("digits")("test")[1], src("test")[1])


def test_describe_digits() -> None:
    io = describe(resolve_source("digits"))
    assert io.inputs[0].dims == ["batch", 1, 8, 8]
    assert io.task == "classification" and io.labels == [str(i) for i in range(10)]


def test_npz_keys_and_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 50
    split = np.array([0] * 30 + [1] * 10 + [2] * 10)
    np.savez(tmp_path / "m.npz", **{"x.left": rng.normal(size=(n, 6)).astype(np.float32),
                                    "x.right": rng.normal(size=(n, 4)).astype(np.float32)},
             y=rng.integers(0, 3, n), split=split)
    src = resolve_source(f"npz:{tmp_path / 'm.npz'}")
    x, y = src("val")
    assert set(x) == {"left", "right"} and len(y) == 10
    io = describe(src)
    assert io.input_names == ["left", "right"]


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, size=(n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, size=n))
    src = resolve_source(f"idx:{tmp_path}")
    x, y = src("test")
    assert x["input"].shape == (20, 1, 28, 28) and x["input"].max() <= 1.0
    assert len(src("train")[1]) + len(src("val")[1]) == 120


def test_idx_truncated(tmp_path: Path) -> None:
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())[:-10]
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4))
    with pytest.raises(DataError, match="truncated"):
        resolve_source(f"idx:{tmp_path}")("train")


def test_images_folder(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    src = resolve_source(f"images:{tmp_path}")
    x, y = src("train")
    assert x["input"].shape[1:] == (3, 12, 10) and set(y.tolist()) <= {0, 1}
    assert describe(src).labels == ["cat", "dog"]


def test_python_function_source() -> None:
    vouch("userzoo:blobs")  # as typed on a command line
    src = resolve_source("userzoo:blobs")
    x, y = src("test")
    assert x["input"].shape == (300, 6) and y.shape == (300,)


def test_python_function_bad_return() -> None:
    vouch("userzoo:nope")
    with pytest.raises(DataError, match="no callable"):
        resolve_source("userzoo:nope")("train")


def test_take_is_seeded() -> None:
    batch = resolve_source("digits")("train")
    a, _ = take(batch, 300, seed=0)
    b, _ = take(batch, 300, seed=0)
    assert np.array_equal(a["input"], b["input"]) and len(a["input"]) == 300


def test_unknown_source_suggests() -> None:
    with pytest.raises(DataError, match="did you mean 'digits'"):
        resolve_source("digit")
