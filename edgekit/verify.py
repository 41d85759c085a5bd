"""Bundles that check themselves on the device they land on.

A bundle carries ``golden.npz``: a few real inputs and the outputs the model should give for them,
computed by the reference (the QDQ graph with exact ONNX semantics for INT8, torch for float), and
the tolerance its build passed with. ``edgekit verify`` runs them with the bundle's own runtime on
this machine; ``edgekit predict`` does so once per bundle, runtime and CPU (the result is cached
under the user's cache directory) and refuses to predict when they do not match. A CPU whose INT8
kernels compute differently (``edgekit.cpu``) is caught here, not in the user's results.

Only numpy and the bundle's runtime are needed; ``golden.npz`` is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.cpu import detect
from edgekit.errors import ArtifactError, ParityError
from edgekit.metrics import agreement, max_abs_error, max_rel_error

GOLDEN = "golden.npz"
GOLDEN_MAX_SAMPLES = 16
GOLDEN_MAX_BYTES = 4 << 20  # of inputs: a bundle stays a bundle
INT8_MIN_AGREEMENT = 0.95


def golden_rows(inputs: dict[str, np.ndarray]) -> int:
    """How many samples to keep: up to 16, within 4 MiB of inputs, at least one."""
    per_sample = sum(v[:1].nbytes for v in inputs.values()) or 1
    n = next(iter(inputs.values())).shape[0]
    return int(max(1, min(n, GOLDEN_MAX_SAMPLES, GOLDEN_MAX_BYTES // per_sample)))


def write_golden(path: Path, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    """An .npz with ``x.<input>`` and ``y.<output>`` arrays and fixed member times (same bytes each time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for prefix, arrays in (("x", inputs), ("y", outputs)):
            for name in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
                info = zipfile.ZipInfo(f"{prefix}.{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, buf.getvalue())


def read_golden(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{path} is not a readable golden-sample file ({exc})",
                            hint="package the bundle again") from None
    x = {k[2:]: v for k, v in arrays.items() if k.startswith("x.")}
    y = {k[2:]: v for k, v in arrays.items() if k.startswith("y.")}
    if not x or not y:
        raise ArtifactError(f"{path} holds no golden inputs or outputs", hint="package the bundle again")
    return x, y


def runtime_version(target: str) -> str:
    """The installed runtime's own version (the module's, so onnxruntime-gpu counts too)."""
    import importlib

    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}.get(target)
    if module is None:
        return "unknown"
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return "missing"
    version = getattr(mod, "__version__", None) or (mod.get_version() if hasattr(mod, "get_version") else "unknown")
    return str(version).split("-")[0]


def compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray], spec: dict[str, Any], task: str,
            where: str) -> dict[str, Any]:
    """Check outputs against the golden ones; a miss is a one-line ParityError naming ``where``."""
    tol = float(spec["tolerance"])
    bounds = {str(k): float(v) for k, v in (spec.get("abs_tolerance") or {}).items()}
    errors: dict[str, float] = {}
    for name, ref in want.items():
        if name not in got:
            raise ParityError(f"bundle verification failed: the runtime gives no output '{name}' ({where})")
        if got[name].shape != ref.shape:
            raise ParityError(f"bundle verification failed: output '{name}' has shape {got[name].shape}, "
                              f"the golden one {ref.shape} ({where})")
        errors[name] = max_rel_error(got[name], ref)
    agree = None
    if task == "classification":
        first = next(iter(want))
        agree = agreement(got[first], want[first])
    for name, err in errors.items():
        if name in bounds and np.isfinite(err):
            off = max_abs_error(got[name], want[name])
            if off > bounds[name]:
                raise ParityError(f"bundle verification failed: output '{name}' differs from the golden outputs by "
                                  f"{off:.3g} (tolerance {bounds[name]:.3g}) ({where})",
                                  hint="this device computes the model differently: run `edgekit doctor` and report both lines")
            continue
        if not np.isfinite(err) or err > tol:
            raise ParityError(f"bundle verification failed: output '{name}' differs from the golden outputs by "
                              f"{err:.3g} (tolerance {tol:g}) ({where})",
                              hint="this device computes the model differently: run `edgekit doctor` and report both lines")
    need = float(spec.get("min_agreement", 0.0))
    if agree is not None and agree < need:
        raise ParityError(f"bundle verification failed: top-1 agrees with the golden outputs on {agree:.0%} of samples "
                          f"(need {need:.0%}) ({where})")
    return {"max_error": max(errors.values()), "per_output": errors, "agreement": agree, "tolerance": tol}


def check_runtime(runtime: Any, golden: Path, spec: dict[str, Any], task: str, target: str, device: str = "cpu") -> dict[str, Any]:
    """Run the golden samples through ``runtime`` here; raises a one-line ParityError on a miss."""
    x, y = read_golden(golden)
    cpu = detect()
    version = runtime_version(target)
    result = compare(runtime.infer(x), y, spec, task, f"{target} {version} on {device}, CPU {cpu.line()}")
    return {"target": target, "runtime_version": version, "model_file": getattr(runtime, "model_file", None),
            "cpu": cpu.record(), "samples": int(next(iter(x.values())).shape[0]), **result}


def verify_bundle(bundle: Any, threads: int | None = None) -> dict[str, Any]:
    """Run a bundle's golden samples on this machine; raises ParityError on a miss."""
    spec = bundle.manifest.metrics.get("verify")
    if not spec or GOLDEN not in bundle.manifest.files:
        raise ArtifactError(f"bundle {bundle.directory} carries no golden samples (packaged by an older edgekit)",
                            hint="package it again with this edgekit to make it self-verifying")
    record = bundle.manifest.target
    result = check_runtime(bundle.runtime(threads), bundle.directory / GOLDEN, spec, bundle.io.task, record.name,
                           record.device)
    return {"bundle": bundle.manifest.name, **result}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekit" / "verified"


def _cache_key(bundle: Any) -> str:
    record = bundle.manifest.target
    manifest = (bundle.directory / "manifest.json").read_bytes()
    blob = json.dumps([hashlib.sha256(manifest).hexdigest(), record.name, runtime_version(record.name),
                       detect().record(), __version__], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def ensure_verified(bundle: Any, threads: int | None = None) -> dict[str, Any] | None:
    """Verify a bundle once per bundle, runtime and CPU; None for a bundle without golden samples."""
    if "verify" not in bundle.manifest.metrics:
        return None
    path = cache_dir() / f"{_cache_key(bundle)}.json"
    if path.is_file():
        try:
            cached: dict[str, Any] = json.loads(path.read_text())
            return cached
        except (OSError, json.JSONDecodeError):
            pass
    result = verify_bundle(bundle, threads)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: verify again next time
    return result
