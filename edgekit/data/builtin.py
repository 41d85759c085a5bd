"""The built-in data sources: digits, npz:PATH, idx:DIR and images:DIR."""

from __future__ import annotations

import gzip
import importlib.util
import os
import warnings
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgekit.data.source import Batch, Source, seeded_split
from edgekit.errors import DataError, MissingExtraError

FASHION_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


@lru_cache(maxsize=1)
def _digits_all() -> tuple[np.ndarray, np.ndarray]:
    if importlib.util.find_spec("sklearn") is None:
        raise MissingExtraError("scikit-learn", "full", "the embedded digits data set")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images[:, None, :, :] / 16.0).astype(np.float32)
    return x, bunch.target.astype(np.int64)


def digits(split: str) -> Batch:
    """scikit-learn's bundled 8x8 digits (1,797 images), a fixed seeded 60/20/20 split."""
    x, y = _digits_all()
    idx = seeded_split(len(y), split)
    return {"input": x[idx]}, y[idx]


def calibration_file(name: str) -> Path | None:
    """A calibration set shipped with edgekit, by name (``digits-calib`` -> calibration/digits-calib.npz)."""
    from edgekit.resources import resource_dir

    cand = resource_dir("calibration") / f"{name}.npz"
    return cand if cand.is_file() else None


MAX_PIXELS = 64_000_000  # an image file larger than this is refused before it is decoded


def max_array_bytes() -> int:
    """The largest array data a .npy/.npz file may unpack to (EDGEKIT_MAX_ARRAY_BYTES, default 4 GiB)."""
    try:
        return int(os.environ.get("EDGEKIT_MAX_ARRAY_BYTES", 4 << 30))
    except ValueError:
        return 4 << 30


_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, MemoryError, KeyError)
_NPZ_HINT = "write it with numpy.savez(path, x=..., y=...); pickled object arrays are refused"


def _numeric(arr: np.ndarray, where: str, text: bool = False) -> np.ndarray:
    """Numbers only; ``text`` also lets a 1-D array of short strings through (an npz's class names)."""
    if text and arr.dtype.kind == "U" and arr.ndim == 1 and arr.dtype.itemsize <= 4 * 1024:
        return arr
    if arr.dtype.kind not in "biuf" or arr.dtype.itemsize > 8:
        raise DataError(f"{where} has dtype {arr.dtype}", hint="inputs are numbers: bool, integer or float arrays")
    return arr


def _too_large(path: Path, size: int) -> DataError:
    return DataError(f"{path} unpacks to {size} bytes, more than the limit of {max_array_bytes()}",
                     hint="split the input, or raise EDGEKIT_MAX_ARRAY_BYTES")


def read_arrays(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """A .npy file (one array) or .npz file (name -> array), never unpickled, sizes checked against the
    file before anything is allocated, numeric dtypes only (an npz's ``labels`` may be strings). Any damage is a DataError."""
    if not path.is_file():
        raise DataError(f"input file {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(6)
    limit = max_array_bytes()
    try:
        if magic == b"\x93NUMPY":
            # mapped, not read: numpy checks the header's shape against the file's size
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.nbytes > limit:
                raise _too_large(path, arr.nbytes)
            return _numeric(np.array(arr), str(path))
        if magic[:2] == b"PK":
            with zipfile.ZipFile(path) as zf:
                declared = sum(i.file_size for i in zf.infolist())
            if declared > limit:
                raise _too_large(path, declared)
            with np.load(path, allow_pickle=False) as z:
                return {k: _numeric(z[k], f"{path}: array '{k}'", text=k == "labels") for k in z.files}
    except _READ_ERRORS as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        kind = ".npy" if magic == b"\x93NUMPY" else ".npz"
        raise DataError(f"{path} is not a readable {kind} file ({type(exc).__name__}{': ' + reason if reason else ''})",
                        hint=_NPZ_HINT) from None
    raise DataError(f"{path} is not a readable {path.suffix or '.npy/.npz'} file (neither .npy nor .npz data)", hint=_NPZ_HINT)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist")
    arrays = read_arrays(path)
    if isinstance(arrays, np.ndarray):
        raise DataError(f"{path} is a .npy file, not an .npz", hint=_NPZ_HINT)
    return arrays


def npz_source(spec: str, path: Path) -> Source:
    """Keys ``x`` (one input) or ``x.<input>`` (several), optional ``y``, optional ``split`` (0/1/2)."""
    arrays = _load_npz(path)
    xs = {k[2:]: v for k, v in arrays.items() if k.startswith("x.")}
    if "x" in arrays:
        xs["input"] = arrays["x"]
    if not xs:
        raise DataError(f"{path} has no 'x' or 'x.<input>' array (keys: {', '.join(arrays) or 'none'})",
                        hint="save the inputs as x=... (or x.input_ids=..., x.attention_mask=...)")
    n = next(iter(xs.values())).shape[0]
    y = arrays.get("y")
    split_arr = arrays.get("split")
    if split_arr is not None and split_arr.shape != (n,):
        raise DataError(f"{path}: 'split' must have one entry (0/1/2) per sample")
    names = arrays.get("labels")
    labels = [str(s) for s in names.tolist()] if names is not None else None

    def fn(split: str) -> Batch:
        if split_arr is not None:
            idx = np.flatnonzero(split_arr == {"train": 0, "val": 1, "test": 2}[split])
            if idx.size == 0:  # a calibration set holds one split only: use all of it
                idx = np.arange(n)
        elif n < 20:
            idx = np.arange(n)
        else:
            idx = seeded_split(n, split, fractions=(0.7, 0.15))
        out = {k: (v[idx].astype(np.float32) / 255.0 if v.dtype == np.uint8 and v.ndim == 4 else v[idx])
               for k, v in xs.items()}
        return out, (y[idx] if y is not None else None)

    return Source(spec, fn, labels=labels, mean=[0.0], std=[1.0])


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def _find(directory: Path, prefix: str, kind: str) -> Path:
    for pattern in (f"{prefix}-{kind}-idx*-ubyte.gz", f"{prefix}-{kind}-idx*-ubyte", f"{prefix}-{kind}.idx*-ubyte*"):
        hits = sorted(directory.glob(pattern))
        if hits:
            return hits[0]
    raise DataError(f"{directory} has no {prefix}-{kind}-idx*-ubyte[.gz] file",
                    hint="idx:DIR wants the MNIST-format files, e.g. from Debian's dataset-fashion-mnist")


@lru_cache(maxsize=2)
def _idx_all(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not directory.is_dir():
        raise DataError(f"idx directory {directory} does not exist")
    out = {}
    for prefix in ("train", "t10k"):
        x = _read_idx(_find(directory, prefix, "images"))
        y = _read_idx(_find(directory, prefix, "labels")).astype(np.int64)
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{directory}: {prefix} has {x.shape[0]} images but {y.shape[0]} labels")
        out[prefix] = ((x[:, None].astype(np.float32) / 255.0), y)
    return out


def idx_source(spec: str, directory: Path) -> Source:
    """MNIST-format files: train = train minus a seeded 1/12 held out as val; test = t10k."""
    directory = directory.resolve()

    def fn(split: str) -> Batch:
        data = _idx_all(directory)
        if split == "test":
            x, y = data["t10k"]
            return {"input": x}, y
        x, y = data["train"]
        perm = np.random.default_rng(0).permutation(len(y))
        n_val = len(y) // 12
        idx = np.sort(perm[:n_val] if split == "val" else perm[n_val:])
        return {"input": x[idx]}, y[idx]

    labels = FASHION_LABELS if "fashion" in str(directory).lower() else None
    return Source(spec, fn, labels=labels, mean=[0.0], std=[1.0])


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def load_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file -> (channels, H, W) float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # refused below with our own limit, in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            src = Image.open(path)
        with src:
            if src.width * src.height > MAX_PIXELS:  # decided from the header, before any pixel is decoded
                raise DataError(f"image {path} is {src.width}x{src.height} pixels, more than {MAX_PIXELS}",
                                hint="resize it first: a file that large is refused (decompression bomb)")
            img = src.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read image {path}: {first}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def images_source(spec: str, directory: Path) -> Source:
    """One folder per class (optionally under train/ val/ test/); images resized to the first one's size."""
    if not directory.is_dir():
        raise DataError(f"image directory {directory} does not exist")
    split_dirs = {s: directory / s for s in ("train", "val", "test") if (directory / s).is_dir()}
    class_root = split_dirs.get("train", directory)
    classes = sorted(d.name for d in class_root.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{directory} has no class folders", hint="images:DIR wants DIR/<class>/<image files>")

    def files_of(root: Path) -> list[tuple[Path, int]]:
        return [(f, ci) for ci, c in enumerate(classes) for f in sorted((root / c).glob("*"))
                if f.suffix.lower() in IMAGE_SUFFIXES]

    all_files = files_of(class_root)
    if not all_files:
        raise DataError(f"{directory} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            first = Image.open(all_files[0][0])
        with first:
            size = (first.height, first.width)
            channels = 1 if first.mode in ("L", "1", "I", "I;16") else 3
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {all_files[0][0]}: {type(exc).__name__}") from None
    if size[0] * size[1] > MAX_PIXELS:
        raise DataError(f"image {all_files[0][0]} is {size[1]}x{size[0]} pixels, more than {MAX_PIXELS}")

    def fn(split: str) -> Batch:
        if split_dirs:
            files = files_of(split_dirs.get(split, class_root))
        else:
            files = [all_files[i] for i in seeded_split(len(all_files), split, fractions=(0.7, 0.15))]
        if not files:
            files = all_files
        x = np.stack([load_image(f, size, channels) for f, _ in files])
        return {"input": x}, np.array([c for _, c in files], dtype=np.int64)

    return Source(spec, fn, labels=classes, mean=[0.0], std=[1.0])
