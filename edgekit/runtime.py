"""Run a bundle on a device: numpy + one inference runtime, no torch, no onnx.

``Bundle.open`` extracts a ``.tar.gz`` safely (no absolute paths, ``..``, links or devices; sizes
checked), verifies every checksum, refuses a newer schema and ONNX external data that points outside
the bundle, and loads the target's own torch-free Runtime class (the same one ``edgekit build``
uses). ``predict`` applies the manifest's preprocessing and returns outputs plus labels.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edgekit import external_data
from edgekit.artifact import SUMS, Artifact
from edgekit.errors import ArtifactError, BadInputError, DataError, EdgekitError, MissingExtraError
from edgekit.iospec import InputSpec, normalise_image

MAX_BUNDLE_BYTES = 8 << 30  # absolute; EDGEKIT_MAX_BUNDLE_BYTES lowers or raises it
# A bundle's files (weights, an engine, an IR) barely compress: one that claims to unpack to much more
# than its archive is a decompression bomb. Allowed: this slack plus RATIO x the archive's size.
BOMB_SLACK, BOMB_RATIO = 64 << 20, 20


def bundle_limit(archive_bytes: int) -> int:
    import os

    try:
        absolute = int(os.environ.get("EDGEKIT_MAX_BUNDLE_BYTES", MAX_BUNDLE_BYTES))
    except ValueError:
        absolute = MAX_BUNDLE_BYTES
    return min(absolute, BOMB_SLACK + BOMB_RATIO * archive_bytes)
RUNTIMES = {  # target -> (module providing the Runtime, python module it needs, extra)
    "onnxruntime": ("edgekit.targets.onnxruntime", "onnxruntime", "onnxruntime"),
    "openvino": ("edgekit.targets.openvino", "openvino", "openvino"),
    "tensorrt": ("edgekit.targets.tensorrt", "tensorrt", "tensorrt"),
}


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a bundle archive into ``dest``; returns the bundle directory inside it."""
    import zlib

    damaged = (tarfile.TarError, OSError, EOFError, zlib.error)
    try:
        tar = tarfile.open(archive, "r:*")
    except damaged as exc:
        raise ArtifactError(f"{archive} is not a readable bundle archive ({type(exc).__name__})",
                            hint="the file is damaged or incomplete; copy or package it again") from None
    limit = bundle_limit(archive.stat().st_size)
    with tar:
        try:
            members = tar.getmembers()  # headers only: nothing is written before every size is checked
        except damaged as exc:
            raise ArtifactError(f"{archive} is damaged or truncated ({type(exc).__name__})",
                                hint="copy or package it again") from None
        total = 0
        roots = set()
        for m in members:
            path = PurePosixPath(m.name)
            if m.name.startswith(("/", "\\")) or path.is_absolute() or ".." in path.parts or ":" in m.name:
                raise ArtifactError(f"bundle {archive} has an unsafe member path '{m.name}'", hint="refusing to extract it")
            if not (m.isfile() or m.isdir()):
                kind = "link" if (m.issym() or m.islnk()) else "device or special file"
                raise ArtifactError(f"bundle {archive} has a {kind} member '{m.name}'", hint="refusing to extract it")
            if len(path.parts) > 2 or (m.isdir() and len(path.parts) != 1):
                raise ArtifactError(f"bundle {archive} has an unexpected member '{m.name}'")
            total += max(m.size, 0)
            if total > limit:
                raise ArtifactError(
                    f"bundle {archive} declares {total} bytes of contents, too large for its "
                    f"{archive.stat().st_size}-byte archive (limit {limit})",
                    hint="refusing to extract a likely decompression bomb; EDGEKIT_MAX_BUNDLE_BYTES sets the limit")
            roots.add(path.parts[0])
        if len(roots) != 1:
            raise ArtifactError(f"bundle {archive} must hold exactly one top-level folder (found {len(roots)})")
        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python < 3.10.12 / 3.11.4 (Debian 12's 3.11.2): members were checked above, files and dirs only
                tar.extractall(dest)  # noqa: S202
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise ArtifactError(f"{archive} is damaged or truncated ({type(exc).__name__})",
                                hint="copy or package it again") from None
    return dest / roots.pop()


def _verify_sums(directory: Path) -> None:
    sums = directory / SUMS
    if not sums.is_file():
        raise ArtifactError(f"bundle {directory} has no {SUMS}")
    listed = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    present = {p.name for p in directory.iterdir() if p.is_file() and p.name != SUMS}
    if present - set(listed):
        raise ArtifactError(f"bundle {directory} has files not in {SUMS}: {', '.join(sorted(present - set(listed)))}")
    for name, digest in listed.items():
        path = directory / name
        if "/" in name or not path.is_file():
            raise ArtifactError(f"bundle {directory}: {name} is missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ArtifactError(f"checksum mismatch for {name} in bundle {directory}: the file was changed",
                                hint="the bundle is damaged or was tampered with; package it again")


@dataclass
class Prediction:
    outputs: dict[str, np.ndarray]
    labels: list[list[tuple[str, float]]] | None  # top-k (label, score) per sample, for classifiers


class Bundle:
    def __init__(self, directory: Path, manifest: Any, keep: Any = None) -> None:
        self.directory = directory
        self.manifest = manifest
        self._keep = keep  # the temporary directory of an extracted archive
        self._runtime: Any = None

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        path = Path(path)
        if not path.exists():
            raise BadInputError(f"bundle {path} does not exist")
        keep = None
        if path.is_file():
            keep = tempfile.TemporaryDirectory(prefix="edgekit-bundle-")
            directory = safe_extract(path, Path(keep.name))
        else:
            directory = path
        _verify_sums(directory)
        art = Artifact.load(directory)
        if art.kind != "bundle" or art.manifest.target is None:
            raise ArtifactError(f"{path} is a {art.kind} artifact, not a bundle", hint="make one with edgekit package")
        record = art.manifest.target
        if record.model_file.endswith(".onnx"):
            loc = external_data.outside(directory / record.model_file, allowed=art.manifest.files)
            if loc is not None:
                raise ArtifactError(f"the bundle's ONNX points at external data '{loc}' outside the bundle",
                                    hint="refusing to load it")
        return cls(directory, art.manifest, keep)

    @property
    def io(self) -> Any:
        return self.manifest.io

    def runtime(self, threads: int | None = None) -> Any:
        if self._runtime is None:
            record = self.manifest.target
            if record.name not in RUNTIMES:
                raise BadInputError(f"bundle target '{record.name}' has no device runtime")
            module, needs, extra = RUNTIMES[record.name]
            if importlib.util.find_spec(needs) is None:
                raise MissingExtraError(needs, extra, f"running this {record.name} bundle")
            target = getattr(importlib.import_module(module), {
                "onnxruntime": "OnnxRuntimeTarget", "openvino": "OpenVinoTarget", "tensorrt": "TensorRtTarget",
            }[record.name])()
            model = self.directory / record.model_file
            if model.stat().st_size == 0:
                raise ArtifactError(f"the bundle's model file {record.model_file} is empty", hint="package the bundle again")
            try:
                self._runtime = target.load(self.directory, record, threads=threads)
            except EdgekitError:
                raise
            except Exception as exc:  # noqa: BLE001 - the runtime's own parser refused the file: the bundle is bad
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ArtifactError(f"{record.name} cannot load the bundle's {record.model_file}: {first[:300]}",
                                    hint="the bundle is damaged or was edited; package it again") from None
        return self._runtime

    def predict(self, inputs: dict[str, np.ndarray], top_k: int = 5) -> Prediction:
        outputs = self.runtime().infer(inputs)
        labels = None
        io = self.io
        if io.task == "classification" and io.labels:
            logits = outputs[io.output_names[0]].astype(np.float64)
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            order = np.argsort(-probs, axis=-1)[:, :top_k]
            labels = [[(io.labels[j] if j < len(io.labels) else str(j), float(p[j])) for j in row]
                      for p, row in zip(probs, order, strict=True)]
        return Prediction(outputs, labels)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def load_inputs(paths: list[Path], io: Any) -> dict[str, np.ndarray]:
    """.npy / .npz / image files -> model inputs (images resized and normalised per the manifest)."""
    specs: list[InputSpec] = io.inputs
    if all(p.suffix.lower() in IMAGE_SUFFIXES for p in paths):
        return {specs[0].name: np.concatenate([_image(p, specs[0]) for p in paths])}
    if len(paths) != 1:
        raise DataError("give one .npy/.npz file, or image files", hint="stack samples into one array")
    path = paths[0]
    from edgekit.data.builtin import read_arrays

    loaded = read_arrays(path)
    if isinstance(loaded, np.ndarray):
        if len(specs) != 1:
            raise DataError(f"the model has {len(specs)} inputs; give an .npz with keys {', '.join(s.name for s in specs)}")
        arrays = {specs[0].name: loaded}
    else:
        arrays = {k.removeprefix("x."): v for k, v in loaded.items()}
        if "x" in arrays and len(specs) == 1:
            arrays = {specs[0].name: arrays["x"]}
    out = {}
    for spec in specs:
        if spec.name not in arrays:
            raise DataError(f"{path} has no array for input '{spec.name}'")
        arr = arrays[spec.name]
        if arr.ndim == len(spec.dims) - 1:
            arr = arr[None]
        if arr.ndim != len(spec.dims) or any(isinstance(d, int) and i and arr.shape[i] != d for i, d in enumerate(spec.dims)):
            raise DataError(f"input '{spec.name}' has shape {arr.shape}; the model expects {spec.dims}")
        if arr.shape[0] == 0:
            raise DataError(f"{path}: input '{spec.name}' has no samples (shape {arr.shape})")
        if arr.dtype.kind not in "biuf":  # an npz's 'labels' may be text; an input never is
            raise DataError(f"{path}: input '{spec.name}' has dtype {arr.dtype}", hint="inputs are numbers: bool, integer or float arrays")
        if spec.dtype.startswith(("int", "uint")) and arr.dtype.kind == "f":
            raise DataError(f"{path}: input '{spec.name}' is {arr.dtype}; the model takes {spec.dtype}",
                            hint="token ids and masks are integer arrays")
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.ascontiguousarray(arr.astype(spec.dtype))
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # after the cast: 1e300 is inf in float32
            raise DataError(f"{path}: input '{spec.name}' contains NaN or infinite values (as {spec.dtype})",
                            hint="inputs must be finite numbers in the model's dtype")
        out[spec.name] = arr
    return out


def _image(path: Path, spec: InputSpec) -> np.ndarray:
    from edgekit.data.builtin import load_image

    if len(spec.dims) != 4 or not all(isinstance(d, int) for d in spec.dims[1:]):
        raise DataError("this model does not take images", hint="give .npy/.npz inputs")
    channels, h, w = (int(d) for d in spec.dims[1:])
    arr = load_image(path, (h, w), channels)[None]
    return normalise_image(arr, spec)
