"""``edgekit doctor``: what can run here, read from the target catalog, with install commands."""

from __future__ import annotations

import importlib
import platform
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.artifact import installed_version
from edgekit.targets.catalog import CATALOG


@dataclass
class Check:
    component: str
    status: str  # ok | missing | unavailable
    detail: str
    install: str = ""


_version = installed_version


def _probe(module: str) -> tuple[Any, str]:
    """Import a runtime inside a guard: (module or None, why not)."""
    try:
        return importlib.import_module(module), ""
    except (ImportError, OSError, RuntimeError) as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def run() -> list[Check]:
    from edgekit.cpu import detect

    cpu = detect()
    checks = [Check("python", "ok", f"{platform.python_version()} on {platform.machine()} ({platform.system()})"),
              Check("cpu", "ok", f"{cpu.line()}: {cpu.meaning}")]
    checks += [Check(f"int8 on {name}", "ok", note) for name, note in cpu.targets().items() if name != "tensorrt"]
    torch, why = _probe("torch")
    if torch is None:
        checks.append(Check("torch", "missing", why or "not installed", "pip install 'edgekit[full]'"))
    else:
        cuda = torch.cuda.is_available()
        detail = f"{torch.__version__}; CUDA {'available: ' + torch.cuda.get_device_name(0) if cuda else 'not available'}"
        checks.append(Check("torch", "ok", detail))
    for dist, extra in (("onnx", "full"), ("torch-pruning", "full"), ("onnxslim", "full")):
        v = _version(dist)
        checks.append(Check(dist, "ok" if v else "missing", v or "not installed", "" if v else f"pip install 'edgekit[{extra}]'"))
    for info in CATALOG.values():
        if info.name == "torch":
            continue
        checks.append(_target_check(info))
    return checks


def _target_check(info: Any) -> Check:
    if not info.installed():
        return Check(f"target {info.name}", "missing", "runtime not installed", info.install)
    from edgekit.errors import EdgekitError
    from edgekit.targets.catalog import load_baseline

    target = load_baseline(info)
    try:
        target.check(next(iter(info.devices)))  # first: describe() may need what check() finds missing
        detail = target.describe()
    except EdgekitError as exc:
        return Check(f"target {info.name}", "unavailable", exc.message, exc.hint or "")
    return Check(f"target {info.name}", "ok", detail)


def as_dicts(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(c) for c in checks]
