"""Issue 13 probes: bad input is exit 2 with one line (never "internal error"), and nothing is left behind.

Each test is one probe from the issue, the repro turned into the test: crafted .npy/.npz/PNG inputs and
edited bundles for ``predict``, hostile recipes for ``compress --dry-run``, an edited manifest for
``export``/``build``, a tmpfs (or a file-size limit where mounting is not allowed) for a full disk,
and kills (SIGKILL) for the leftovers: stale temporary names, an orphaned bench worker, a ``.partial``
that blocks or misleads the next ``train``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgekit.artifact import Artifact

from .conftest import Result, assert_user_error, copy_artifact, env, run_cli

TARGETS = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") is not None else [])
# a line Python's warnings module prints ("...py:12: UserWarning: ...", then the source line "  warnings.warn(")
WARNING_LINE = re.compile(r"\b\w*Warning: |^\s*warnings\.warn\(", re.MULTILINE)


# --------------------------------------------------------------------------- helpers


def user_error(res: Result, *needles: str) -> None:
    """``assert_user_error`` with any one of several (loose) words in the error line."""
    assert_user_error(res, "")
    line = next(line for line in res.lines if line.startswith("error:")).lower()
    assert any(n.lower() in line for n in needles), (needles, line)
    assert not WARNING_LINE.search(res.err), res.err


def option_error(res: Result, needle: str) -> None:
    """A bad option value: exit 2, no traceback, one error line naming the option (edgekit's ``error:``
    line or click's usage error, ``Error: Invalid value for '--top-k' ...``, both count)."""
    assert res.code == 2, (res.code, res.err)
    assert "Traceback" not in res.err, res.err
    errors = [line for line in res.lines if line.lower().startswith("error:")]
    assert len(errors) == 1, res.err
    assert needle.lower() in errors[0].lower(), (needle, errors[0])


def no_warnings(res: Result) -> None:
    assert not WARNING_LINE.search(res.err), res.err


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])  # noqa: S607
    proc.wait()
    return proc.pid


def edit_manifest(art: Path, edit: Callable[[dict], None]) -> None:
    path = art / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def leftovers(root: Path) -> list[str]:
    """Temporary names under ``root``: anything dotted, or with '.tmp' in its name."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if any(part.startswith(".") or ".tmp" in part for part in p.relative_to(root).parts))


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """A version-1 .npy header declaring ``shape`` (the data need not follow)."""
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (descr, shape)  # noqa: UP031
    text += " " * ((-(10 + len(text) + 1)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


# --------------------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def probe_bundles(digits_ckpt: Artifact, workdir: Path) -> dict[str, Path]:
    """FP32 bundles of the digits model, one per installed device runtime."""
    from edgekit.package import package

    return {t: package(digits_ckpt, t, out=workdir / f"probes-{t}.tar.gz", overwrite=True) for t in TARGETS}


@pytest.fixture
def bundle(probe_bundles: dict[str, Path], tmp_path: Path) -> Path:
    """The onnxruntime bundle as ``b.tar.gz`` in the test's directory (run with relative names)."""
    return Path(shutil.copyfile(probe_bundles["onnxruntime"], tmp_path / "b.tar.gz"))


def predict(tmp_path: Path, *args: str) -> Result:
    return run_cli("predict", "b.tar.gz", *args, cwd=tmp_path, timeout=120)


def good_input() -> np.ndarray:
    return np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)


def test_predict_good_input_works_without_warnings(bundle: Path, tmp_path: Path) -> None:
    """The control for the probes below: a well-formed input predicts, and prints no Python warning."""
    np.save(tmp_path / "x.npy", good_input())
    res = predict(tmp_path, "x.npy")
    assert res.code == 0, res.err
    assert len(res.out.splitlines()) == 2
    no_warnings(res)


def _object_array() -> np.ndarray:
    arr = np.empty((2, 1, 8, 8), dtype=object)
    arr.fill({"a": 1})
    return arr


def _truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def _saved(fn: Callable[[Path], None], tmp: Path, name: str) -> bytes:
    """The bytes numpy writes for ``fn(path)`` (``name`` ends in .npy or .npz, so numpy keeps it)."""
    path = tmp / f"src-{name}"
    fn(path)
    return path.read_bytes()


INPUT_PROBES: dict[str, tuple[Callable[[Path], bytes], tuple[str, ...]]] = {
    # name: (bytes of the file, words a sensible message would contain: any one)
    "strings.npy": (lambda t: _saved(lambda p: np.save(p, np.full((2, 1, 8, 8), "abc")), t, "s.npy"),
                    ("strings.npy", "string", "dtype", "numeric", "number")),
    "objects.npy": (lambda t: _saved(lambda p: np.save(p, _object_array(), allow_pickle=True), t, "o.npy"),
                    ("objects.npy", "object", "pickle")),
    "pickle.npy": (lambda t: pickle.dumps({"x": [1, 2, 3]}), ("pickle.npy", "pickle")),
    "empty.npy": (lambda t: b"", ("empty.npy", "empty")),
    "truncated.npy": (lambda t: _truncated(_saved(lambda p: np.save(p, good_input()), t, "t.npy")),
                      ("truncated.npy", "truncated")),
    "cut-header.npy": (lambda t: _saved(lambda p: np.save(p, good_input()), t, "h.npy")[:30],
                       ("cut-header.npy", "header", "truncated")),
    "huge.npy": (lambda t: npy_header((10**12, 1, 8, 8)) + b"\0" * 256, ("huge.npy", "large", "shape")),
    "huge3.npy": (lambda t: npy_header((10**12, 8, 8)) + b"\0" * 256, ("huge3.npy", "large", "shape")),
    "complex.npy": (lambda t: _saved(lambda p: np.save(p, np.full((2, 1, 8, 8), 1 + 2j, np.complex64)), t, "c.npy"),
                    ("complex.npy", "complex", "dtype")),
    "strings.npz": (lambda t: _saved(lambda p: np.savez(p, x=np.full((2, 1, 8, 8), "abc")), t, "s.npz"),
                    ("strings.npz", "string", "dtype", "numeric", "number")),
    "objects.npz": (lambda t: _saved(lambda p: np.savez(p, x=_object_array()), t, "o.npz"),
                    ("objects.npz", "object", "pickle")),
    "truncated.npz": (lambda t: _truncated(_saved(lambda p: np.savez(p, x=good_input()), t, "t.npz")),
                      ("truncated.npz", "truncated", "zip")),
    "huge.npz": (lambda t: _zip({"x.npy": npy_header((10**12, 1, 8, 8)) + b"\0" * 256}), ("huge.npz", "large", "shape")),
}


def _zip(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("name", list(INPUT_PROBES))
def test_predict_malformed_input_file(bundle: Path, tmp_path: Path, name: str) -> None:
    """Strings, objects, pickles, empty/truncated files and headers declaring 10^12 samples: exit 2."""
    make, needles = INPUT_PROBES[name]
    (tmp_path / name).write_bytes(make(tmp_path))
    user_error(predict(tmp_path, name), *needles)


def test_predict_png_decompression_bomb_is_refused(bundle: Path, tmp_path: Path) -> None:
    """A PNG whose header declares 30000x30000 (900 Mpx; a real one compresses to ~110 kB): PIL's
    DecompressionBombError becomes exit 2."""
    import io
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (8, 8)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    assert png[12:16] == b"IHDR"
    png[16:24] = struct.pack(">II", 30000, 30000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    (tmp_path / "bomb.png").write_bytes(bytes(png))
    with pytest.raises(Image.DecompressionBombError):  # the probe is what it claims to be
        Image.open(tmp_path / "bomb.png")
    user_error(predict(tmp_path, "bomb.png"), "bomb.png", "image", "pixels", "large")


def test_predict_png_over_the_warning_size_is_refused(bundle: Path, tmp_path: Path) -> None:
    """12000x12000 (144 Mpx): PIL only warns (DecompressionBombWarning) and decodes it; for an 8x8 model
    that is still a bomb: exit 2, and no warning text."""
    from PIL import Image

    Image.new("1", (12000, 12000)).save(tmp_path / "big.png")
    user_error(predict(tmp_path, "big.png"), "big.png", "image", "pixels", "large")


@pytest.mark.parametrize("fmt", ["npy", "npz"])
@pytest.mark.parametrize("bad", ["nan", "inf", "overflow"])
def test_predict_non_finite_input_is_refused(bundle: Path, tmp_path: Path, fmt: str, bad: str) -> None:
    """NaN, Inf, or float64 values that overflow float32: exit 2 instead of printing 'nan' scores."""
    x = good_input().astype(np.float64)
    x[1, 0, 3, 4] = {"nan": np.nan, "inf": np.inf, "overflow": 1e300}[bad]
    if fmt == "npy":
        np.save(tmp_path / "x.npy", x)
    else:
        np.savez(tmp_path / "x.npz", x=x)
    user_error(predict(tmp_path, f"x.{fmt}"), "nan", "finite", "inf", "overflow", "range")


def test_predict_zero_samples_is_refused(bundle: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((0, 1, 8, 8), np.float32))
    user_error(predict(tmp_path, "x.npy"), "sample", "empty")


@pytest.mark.parametrize("k", ["0", "-2"])
def test_predict_top_k_must_be_positive(bundle: Path, tmp_path: Path, k: str) -> None:
    np.save(tmp_path / "x.npy", good_input())
    option_error(predict(tmp_path, "x.npy", "--top-k", k), "top-k")


# --------------------------------------------------------------------------- edited bundles


def repack(src: Path, dst: Path, edit: Callable[[Path, dict], None]) -> Path:
    """Unpack bundle ``src``, let ``edit`` change files / the manifest, re-sum everything so only the edit
    is wrong, and pack it as ``dst``."""
    work = dst.with_suffix(".d")
    with tarfile.open(src) as tar:
        tar.extractall(work, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(work)  # noqa: S202
    (root,) = list(work.iterdir())
    manifest = json.loads((root / "manifest.json").read_text())
    edit(root, manifest)
    for name, entry in manifest["files"].items():
        data = (root / name).read_bytes()
        entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (root / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                                             for p in sorted(root.iterdir()) if p.name != "SHA256SUMS"))
    with tarfile.open(dst, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    shutil.rmtree(work)
    return dst


def _empty_model(root: Path, manifest: dict) -> None:
    (root / manifest["target"]["model_file"]).write_bytes(b"")


def _precision(root: Path, manifest: dict) -> None:
    manifest["target"]["precision"] = "int3"


def _dtype(value: str) -> Callable[[Path, dict], None]:
    def edit(root: Path, manifest: dict) -> None:
        manifest["io"]["inputs"][0]["dtype"] = value

    return edit


BUNDLE_EDITS = {
    "zero-byte-model": (_empty_model, ("empty", "0 bytes", "model")),
    "precision-int3": (_precision, ("precision", "int3")),
    "dtype-float128": (_dtype("float128"), ("dtype", "float128")),
    "dtype-str": (_dtype("str"), ("dtype", "str")),
}


def test_repacked_bundle_without_edits_still_predicts(probe_bundles: dict[str, Path], tmp_path: Path) -> None:
    """The control for the edits below: ``repack`` itself does not break a bundle."""
    repack(probe_bundles["onnxruntime"], tmp_path / "b.tar.gz", lambda root, m: None)
    np.save(tmp_path / "x.npy", good_input())
    res = predict(tmp_path, "x.npy")
    assert res.code == 0, res.err


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", list(BUNDLE_EDITS))
def test_bundle_with_bad_manifest_field_or_empty_model(probe_bundles: dict[str, Path], tmp_path: Path, target: str,
                                                        case: str) -> None:
    """Checksums all match; the model file is 0 bytes, or the manifest names a precision or input dtype
    that does not exist: exit 2 (not exit 1, not a silent run)."""
    edit, needles = BUNDLE_EDITS[case]
    repack(probe_bundles[target], tmp_path / "b.tar.gz", edit)
    np.save(tmp_path / "x.npy", good_input())
    user_error(predict(tmp_path, "x.npy"), *needles)


def test_truncated_bundle_is_exit_2(probe_bundles: dict[str, Path], tmp_path: Path) -> None:
    """A .tar.gz cut in half is a damaged bundle, exit 2: not "aborted" with exit 130."""
    data = probe_bundles["onnxruntime"].read_bytes()
    (tmp_path / "b.tar.gz").write_bytes(data[: len(data) // 2])
    np.save(tmp_path / "x.npy", good_input())
    res = predict(tmp_path, "x.npy")
    assert "aborted" not in res.err, res.err
    user_error(res, "bundle", "archive", "truncated", "b.tar.gz")


# --------------------------------------------------------------------------- recipes


def _quantize(body: str) -> str:
    return "name: r\nsteps:\n  - kind: quantize\n" + body


def _distill(body: str) -> str:
    return "name: r\nsteps:\n  - kind: distill\n" + body


def _prune(body: str) -> str:
    return "name: r\nsteps:\n  - kind: prune\n" + body


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


RECIPE_PROBES: dict[str, tuple[Callable[[], str | bytes], tuple[str, ...]]] = {
    # structure
    "nested-flow": (lambda: "[" * 5000, ("yaml", "nested", "deep")),
    "nested-steps": (lambda: "name: r\nsteps: " + "[" * 5000 + "]" * 5000 + "\n", ("yaml", "nested", "deep", "steps")),
    "nested-mapping": (lambda: "name: r\nsteps: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", ("yaml", "nested", "deep")),
    "random-bytes": (lambda: np.random.default_rng(13).bytes(4096), ("yaml", "text", "utf", "binary")),
    "png": (_png_bytes, ("yaml", "text", "utf", "binary")),
    "duplicate-steps": (lambda: "name: r\nsteps:\n  - kind: prune\nsteps:\n  - kind: quantize\n", ("steps", "duplicate")),
    "duplicate-method": (lambda: _quantize("    method: entropy\n    method: minmax\n"), ("method", "duplicate")),
    # values
    "entropy-bins-1e9": (lambda: _quantize("    method: entropy\n    entropy_bins: 1000000000\n"), ("entropy_bins",)),
    "percentile-nan": (lambda: _quantize("    percentile: .nan\n"), ("percentile",)),
    "max-accuracy-drop-nan": (lambda: _quantize("    max_accuracy_drop: .nan\n"), ("max_accuracy_drop",)),
    "activation-range-nan": (lambda: _quantize("    overrides:\n      '*':\n        activation_range: [.nan, 1.0]\n"),
                             ("activation_range",)),
    "activation-range-inf": (lambda: _quantize("    overrides:\n      '*':\n        activation_range: [-.inf, .inf]\n"),
                             ("activation_range",)),
    "activation-range-inverted": (lambda: _quantize("    overrides:\n      '*':\n        activation_range: [5.0, -5.0]\n"),
                                  ("activation_range",)),
    "samples-below-min-samples": (lambda: _quantize("    samples: 10\n    min_samples: 32\n"), ("samples",)),
    "distill-lr-inf": (lambda: _distill("    lr: .inf\n"), ("lr",)),
    "distill-temperature-inf": (lambda: _distill("    temperature: .inf\n"), ("temperature",)),
    "distill-alpha-nan": (lambda: _distill("    alpha: .nan\n"), ("alpha",)),
    "distill-feature-weight-inf": (lambda: _distill("    feature_weight: .inf\n"), ("feature_weight",)),
    "prune-lr-inf": (lambda: _prune("    lr: .inf\n"), ("lr",)),
    "prune-macs-ratio-above-1": (lambda: _prune("    target_macs_ratio: 1.5\n"), ("target_macs_ratio",)),
    "finetune-lr-nan": (lambda: "name: r\nsteps:\n  - kind: finetune\n    lr: .nan\n", ("lr",)),
}


@pytest.mark.parametrize("case", list(RECIPE_PROBES))
def test_bad_recipe_is_exit_2(digits_ckpt: Artifact, tmp_path: Path, case: str) -> None:
    """Deeply nested or binary files, duplicate keys, NaN / Inf / 1e9 / inverted values: refused when the
    recipe is read (``--dry-run`` suffices), naming the key."""
    make, needles = RECIPE_PROBES[case]
    content = make()
    path = tmp_path / "r.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    res = run_cli("compress", str(digits_ckpt.path), "--recipe", "r.yaml", "--dry-run", cwd=tmp_path, timeout=300)
    user_error(res, *needles)


# --------------------------------------------------------------------------- edited manifests


@pytest.mark.parametrize("command", ["export", "build"])
def test_manifest_width_200000_is_exit_2_quickly(digits_ckpt: Artifact, tmp_path: Path, command: str) -> None:
    """``model.kwargs.width`` is not covered by a checksum; 200000 asks for a 1.4 TB conv. The rebuild must
    be refused as bad input, fast, not fail as an internal error (or run out of memory)."""
    art = copy_artifact(digits_ckpt.path, tmp_path / "a")
    edit_manifest(art, lambda m: m["model"]["kwargs"].__setitem__("width", 200000))
    args = ["export", "a", "--out", "e"] if command == "export" else ["build", "a", "--target", "onnxruntime"]
    t0 = time.monotonic()
    res = run_cli(*args, cwd=tmp_path, timeout=120)
    assert time.monotonic() - t0 < 60
    user_error(res, "width", "large", "memory", "parameters", "size")


def test_weights_that_do_not_fit_are_one_plain_line(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """``width: 16`` with the width-32 weights: one line of our own, not torch's "Error(s) in loading
    state_dict ...:" header and its list of size mismatches."""
    art = copy_artifact(digits_ckpt.path, tmp_path / "a")
    edit_manifest(art, lambda m: m["model"]["kwargs"].__setitem__("width", 16))
    res = run_cli("export", "a", "--out", "e", cwd=tmp_path, timeout=120)
    user_error(res, "weights", "width", "fit", "match", "shape")
    line = next(line for line in res.lines if line.startswith("error:"))
    assert "state_dict" not in res.err and "size mismatch for" not in res.err, res.err
    assert not line.rstrip().endswith(":"), line


def test_weights_of_another_model_are_one_line(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """The manifest says ``mlp`` but the weights are small_cnn's: missing and unexpected keys, one line."""
    art = copy_artifact(digits_ckpt.path, tmp_path / "a")
    edit_manifest(art, lambda m: m["model"].update(source="mlp", kwargs={"num_classes": 10}))
    res = run_cli("export", "a", "--out", "e", cwd=tmp_path, timeout=120)
    user_error(res, "weights", "fit", "match", "missing")
    assert "Error(s) in loading" not in res.err, res.err


# --------------------------------------------------------------------------- a full disk


@dataclass
class SmallDisk:
    root: Path
    file_limit: int | None  # no tmpfs could be mounted: every file written is capped at this size instead

    def run(self, *args: str, timeout: float = 300) -> Result:
        if self.file_limit is None:
            return run_cli(*args, cwd=self.root, timeout=timeout)
        limit = self.file_limit

        def cap() -> None:  # writes past the limit fail with EFBIG instead of killing the process
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        proc = subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=self.root, env=env(), capture_output=True,  # noqa: S603
                              text=True, timeout=timeout, check=False, preexec_fn=cap)  # noqa: PLW1509
        return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int, int | None], SmallDisk]]:
    """``small_disk(bytes, file_limit)``: a tmpfs of that size (we run as root here), else a plain
    directory where the command runs under RLIMIT_FSIZE=file_limit (None: no limit at all)."""
    mounted: list[Path] = []

    def make(size: int, file_limit: int | None) -> SmallDisk:
        root = tmp_path / f"disk{len(mounted)}"
        root.mkdir()
        size = -(-size // 4096) * 4096
        if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount"):
            res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(root)],  # noqa: S603, S607
                                 capture_output=True, check=False)
            if res.returncode == 0:
                mounted.append(root)
                return SmallDisk(root, None)
        return SmallDisk(root, file_limit)

    yield make
    for root in mounted:
        subprocess.run(["umount", "-l", str(root)], check=False)  # noqa: S603, S607


FULL = ("space", "disk", "too large", "full")


def test_train_on_a_full_disk(small_disk: Callable[[int, int | None], SmallDisk]) -> None:
    """2 MiB: the weights fit, the 2.4 MB training state does not. Exit 2, one line, nothing half-written."""
    disk = small_disk(2 << 20, 1 << 20)
    res = disk.run("train", "--epochs", "1", "--out", "runs/x")
    user_error(res, *FULL)
    assert not (disk.root / "runs" / "x").exists()
    assert leftovers(disk.root) == []


def test_compress_on_a_full_disk(digits_ckpt: Artifact, small_disk: Callable[[int, int | None], SmallDisk]) -> None:
    size = sum(p.stat().st_size for p in digits_ckpt.path.iterdir() if p.is_file())
    disk = small_disk(size + (300 << 10), 300 << 10)
    art = copy_artifact(digits_ckpt.path, disk.root / "runs" / "a")
    res = disk.run("compress", "runs/a", "--recipe", "int8")
    user_error(res, *FULL)
    assert not (art / "int8").exists()
    assert leftovers(disk.root) == []
    Artifact.load(art)  # the input is intact


def test_build_on_a_full_disk(digits_ckpt: Artifact, small_disk: Callable[[int, int | None], SmallDisk]) -> None:
    size = sum(p.stat().st_size for p in digits_ckpt.path.iterdir() if p.is_file())
    disk = small_disk(size + (300 << 10), 300 << 10)
    art = copy_artifact(digits_ckpt.path, disk.root / "runs" / "a")
    res = disk.run("build", "runs/a", "--target", "onnxruntime")
    user_error(res, *FULL)
    assert not list(art.glob("builds/*/manifest.json")), "a build was written on a full disk"
    assert leftovers(disk.root) == []
    Artifact.load(art)


# --------------------------------------------------------------------------- train runs: warnings, stale temp names


STALE = 8 * "k"  # the random part of a temporary name (8 characters)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result, dict[str, Path]]:
    """A normal ``train --epochs 1 --out runs/x`` into a ``runs/`` that holds temporary names left by
    killed processes (dead pid), one of a running process (this one), and the user's own dot files."""
    root = tmp_path_factory.mktemp("trained")
    runs = root / "runs"
    runs.mkdir()
    dead, live = dead_pid(), os.getpid()
    planted = {
        "dead-same-name": runs / f".x.tmp-{dead}-a1b2c3d4",
        "dead-old": runs / f".x.old-{dead}-e5f6a7b8",
        "dead-other-output": runs / f".int8.tmp-{dead}-c9d0e1f2",
        "live": runs / f".x.tmp-{live}-0a1b2c3d",
        "user-dir": runs / ".keep-me",
    }
    for path in planted.values():
        path.mkdir()
    (planted["dead-same-name"] / "model.onnx").write_bytes(b"half a model")
    (planted["dead-old"] / "old").mkdir()
    (planted["live"] / "pid").write_text(str(live))
    (planted["user-dir"] / "notes.txt").write_text("mine")
    planted["user-file"] = runs / ".x.tmp-notes"
    planted["user-file"].write_text("mine too")
    res = run_cli("train", "--epochs", "1", "--out", "runs/x", cwd=root, timeout=300)
    return root, res, planted


def test_train_prints_no_python_warnings(trained: tuple[Path, Result, dict[str, Path]]) -> None:
    root, res, _ = trained
    assert res.code == 0, res.err
    Artifact.load(root / "runs" / "x")
    no_warnings(res)


def test_stale_temp_dirs_of_dead_processes_are_removed(trained: tuple[Path, Result, dict[str, Path]]) -> None:
    """``.<name>.tmp-<pid>-<random>`` (and ``.old-``) whose process is gone are removed by the next command
    writing there; a running process's, and names edgekit did not make, stay."""
    _, res, planted = trained
    assert res.code == 0, res.err
    gone = [k for k, p in planted.items() if not p.exists()]
    assert sorted(gone) == ["dead-old", "dead-other-output", "dead-same-name"], gone
    assert (planted["live"] / "pid").is_file() and (planted["user-dir"] / "notes.txt").is_file()
    assert planted["user-file"].read_text() == "mine too"


def test_stale_temp_names_are_removed_by_package(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """The same for ``package``: a dead build's ``.<target>-...tmp-`` under builds/ and a dead package's
    ``.b.tar.gz.tmp-`` file and directory under dist/."""
    art = copy_artifact(digits_ckpt.path, tmp_path / "a")
    dead, live = dead_pid(), os.getpid()
    (art / "builds").mkdir()
    (tmp_path / "dist").mkdir()
    stale = [art / "builds" / f".openvino-fp32-0123456789ab.tmp-{dead}-{STALE}", tmp_path / "dist" / f".b.tar.gz.tmp-{dead}-{STALE}"]
    stale_file = tmp_path / "dist" / f".b.tar.gz.tmp-{dead}-a0b1c2d3"
    kept = tmp_path / "dist" / f".b.tar.gz.tmp-{live}-{STALE}"
    for d in [*stale, kept]:
        d.mkdir()
        (d / "junk").write_bytes(b"x" * 1000)
    stale_file.write_bytes(b"\x1f\x8b half a gzip")
    res = run_cli("package", "a", "--target", "onnxruntime", "--out", "dist/b.tar.gz", cwd=tmp_path, timeout=300)
    assert res.code == 0, res.err
    assert (tmp_path / "dist" / "b.tar.gz").is_file()
    assert [p for p in [*stale, stale_file] if p.exists()] == []
    assert (kept / "junk").is_file()


# --------------------------------------------------------------------------- train: failed runs, kills, resume


def test_failed_train_leaves_no_partial(tmp_path: Path) -> None:
    """Bad data fails before anything is written: no ``runs/x.partial``, and running it again reports the
    data again, not an "interrupted run" (the issue's repro: the second run blamed the first one's leftover)."""
    x = np.ones((40, 1, 8, 8), np.float32)
    x[3, 0, 0, 0] = np.nan
    np.savez(tmp_path / "bad.npz", x=x, y=np.zeros(40, np.int64))
    args = ["train", "--data", "npz:bad.npz", "--epochs", "1", "--out", "runs/x"]
    user_error(run_cli(*args, cwd=tmp_path, timeout=300), "nan")
    assert not (tmp_path / "runs" / "x.partial").exists()
    again = run_cli(*args, cwd=tmp_path, timeout=300)
    assert "interrupted" not in again.err.lower(), again.err
    user_error(again, "nan")


@pytest.fixture(scope="module")
def killed(trained: tuple[Path, Result, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``runs/d`` (a complete run), then ``train --overwrite --out runs/d`` SIGKILLed once its first
    training state is saved: ``runs/d`` and ``runs/d.partial/state.pt`` both exist. Tests use copies."""
    src, res, _ = trained
    assert res.code == 0, res.err
    root = tmp_path_factory.mktemp("killed")
    shutil.copytree(src / "runs" / "x", root / "runs" / "d")
    state = root / "runs" / "d.partial" / "state.pt"
    with open(root / "train.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edgekit", "train", "--overwrite", "--out", "runs/d", "--epochs", "200"],  # noqa: S603
                                cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 300
            while not state.is_file():
                assert proc.poll() is None, (root / "train.log").read_text()
                assert time.monotonic() < deadline, "no training state after 300 s"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    return root


def _copy_killed(killed: Path, dst: Path) -> Path:
    shutil.copytree(killed / "runs", dst / "runs")
    return dst


def _state_epoch(partial: Path) -> int:
    import torch

    return int(torch.load(partial / "state.pt", map_location="cpu", weights_only=True)["epoch"])


def test_after_a_killed_overwrite_the_hint_says_resume(killed: Path, tmp_path: Path) -> None:
    root = _copy_killed(killed, tmp_path)
    res = run_cli("train", "--epochs", "1", "--out", "runs/d", cwd=root, timeout=300)
    assert_user_error(res, "")
    assert any("--resume" in line for line in res.lines), res.err


def test_resume_with_other_settings_is_one_line(killed: Path, tmp_path: Path) -> None:
    """The saved state is for width 32; resuming with width 8: one line, not torch's list of mismatches."""
    root = _copy_killed(killed, tmp_path)
    res = run_cli("train", "--resume", "--out", "runs/d", "--epochs", "3", "--model-kwargs", '{"width": 8}', cwd=root,
                  timeout=300)
    user_error(res, "resume", "state", "partial", "width")
    assert "size mismatch" not in res.err, res.err


def test_resume_from_damaged_state_is_one_line(killed: Path, tmp_path: Path) -> None:
    root = _copy_killed(killed, tmp_path)
    (root / "runs" / "d.partial" / "state.pt").write_bytes(b"not a torch file" * 100)
    res = run_cli("train", "--resume", "--out", "runs/d", "--epochs", "3", cwd=root, timeout=300)
    user_error(res, "resume", "state", "partial", "damaged")
    assert "weights_only" not in res.err, res.err


def test_stale_state_tmp_does_not_block_resume(killed: Path, small_disk: Callable[[int, int | None], SmallDisk]) -> None:
    """A disk that filled up mid-save left ``.state.pt.tmp``. On a disk with room for one more state but
    not for that leftover too, ``--resume`` still finishes: the stale file is reused or removed first."""
    partial = killed / "runs" / "d.partial"
    size = (partial / "state.pt").stat().st_size
    disk = small_disk(int(2.4 * size), None)  # state.pt + a new state fit; + 0.8 of a stale one does not
    shutil.copytree(partial, disk.root / "runs" / "e.partial")
    (disk.root / "runs" / "e.partial" / ".state.pt.tmp").write_bytes((partial / "state.pt").read_bytes()[: int(0.8 * size)])
    epochs = _state_epoch(partial) + 1  # one more epoch: one more save
    res = disk.run("train", "--resume", "--out", "runs/e", "--epochs", str(epochs))
    assert res.code == 0, res.err
    assert "resuming" in res.err, res.err
    Artifact.load(disk.root / "runs" / "e")
    assert not (disk.root / "runs" / "e.partial").exists()
    assert leftovers(disk.root) == []


# --------------------------------------------------------------------------- bench: no orphaned worker


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line), from /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(d.name)] = (int(fields[1]), fields[0], cmd)
    return out


def _descendants(pid: int) -> dict[int, str]:
    procs = _processes()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _, cmd) in procs.items():
            if ppid == parent and child not in found:
                found[child] = cmd
                frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from /proc")
def test_killing_bench_leaves_no_worker_running(digits_ckpt: Artifact, probe_bundles: dict[str, Path], tmp_path: Path) -> None:
    """SIGKILL ``edgekit bench`` while its worker process times: the worker is gone within ~10 s."""
    copy_artifact(digits_ckpt.path, tmp_path / "a", builds=True)  # the onnxruntime build is cached
    args = ["bench", "a", "--target", "onnxruntime", "--processes", "1", "--batch", "1", "--samples", "16",
            "--warmup", "1", "--min-time", "120", "--min-runs", "1000000"]
    workers: dict[int, str] = {}
    with open(tmp_path / "bench.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edgekit", *args], cwd=tmp_path, env=env(),  # noqa: S603
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 240
            while not workers:
                assert proc.poll() is None, (tmp_path / "bench.log").read_text()
                assert time.monotonic() < deadline, "no bench worker after 240 s"
                workers = {p: c for p, c in _descendants(proc.pid).items() if "edgekit.bench.worker" in c}
                time.sleep(0.1)
            time.sleep(1.0)  # it is loading or timing now
            workers |= {p: c for p, c in _descendants(proc.pid).items() if "edgekit.bench.worker" in c}
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            deadline = time.monotonic() + 10
            while any(_alive(p) for p in workers) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not [p for p in workers if _alive(p)], workers
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pid in workers:  # an orphan this test made: do not leave it spinning
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
