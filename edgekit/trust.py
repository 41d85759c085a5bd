"""Code named as ``package.module:attr``: the one loader for it, and the rule for what it imports.

A name the user typed in this command (``--model``, ``--data``, ``--calib``, or an argument of the
Python API) is the user's own choice: its module is imported, and only for such a module is the
working directory searched (as ``python -m`` would). A name read from a file edgekit was handed (an
artifact or bundle manifest, a recipe) is code from whoever wrote that file: it is imported only when
it is one of edgekit's fixed entry points (``ENTRY_POINTS``), its module was typed in this command,
or ``--trust-code`` was given. Anything else is exit 2 before any import (DESIGN.md §2).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from edgekit.errors import BadInputError, UntrustedCodeError, did_you_mean

REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")

# The only edgekit functions a manifest or recipe may name without --trust-code: data sources and
# model classes with the documented signatures. Not "anything under edgekit." (edgekit.cli:main
# would run any command).
ENTRY_POINTS = frozenset({
    "edgekit.data.builtin:digits",
    "edgekit.models.zoo:SmallCNN",
    "edgekit.models.zoo:MLP",
    "edgekit.models.zoo:ResNet18",
    "edgekit.models.zoo:MobileNetV3",
    "edgekit.models.zoo:TinyTransformer",
})

_state: dict[str, Any] = {"all": False, "modules": set()}


def is_ref(text: str) -> bool:
    """True for a ``package.module:attr`` string (the shape of code, not of a path or a zoo name)."""
    return bool(REF.match(text))


def trust_all(flag: bool = True) -> None:
    """``--trust-code``: import code named in the files of this command too."""
    _state["all"] = flag


def vouch(ref: str) -> None:
    """The user named ``ref`` (``package.module:attr`` or a module) in this command."""
    if ":" in ref and not is_ref(ref):
        return
    _state["modules"].add(ref.split(":")[0])


def vouch_named(*names: str | None) -> None:
    """Vouch for those of ``names`` (model or data source strings a caller passed) that are code."""
    for name in names:
        if name and is_ref(name):
            vouch(name)


def state() -> dict[str, Any]:
    """What this process trusts, as JSON (``bench`` hands it to its timing processes)."""
    return {"all": bool(_state["all"]), "modules": sorted(_state["modules"])}


def restore(saved: dict[str, Any]) -> None:
    _state["all"] = bool(saved.get("all"))
    _state["modules"] = set(saved.get("modules", ()))


def is_trusted(ref: str) -> bool:
    return ref in ENTRY_POINTS or bool(_state["all"]) or ref.split(":")[0] in _state["modules"]


def check(ref: str, what: str) -> None:
    """Exit 2 unless ``ref`` may be imported (see the module docstring)."""
    if not is_trusted(ref):
        raise UntrustedCodeError(
            f"the {what} '{ref}' is code named in a file, not in this command; edgekit will not import it unasked",
            hint="pass --trust-code if you trust where the artifact or recipe came from",
        )


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        typed = module in _state["modules"]
        if not typed or exc.name != module.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)  # the `edgekit` script does not put the working directory on the path
        return importlib.import_module(module)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load(ref: str, what: str, error: type[BadInputError] = BadInputError) -> Callable[..., Any]:
    """The callable ``ref`` names, after the trust check; ``error`` is raised for an unusable name."""
    if not is_ref(ref):
        raise error(f"'{ref}' is not a valid {what} path", hint="write package.module:function, e.g. mypkg.models:build_net")
    check(ref, what)
    module, attr = ref.split(":")
    try:
        mod = _import(module)
    except ImportError as exc:
        raise error(
            f"cannot import module '{module}' for the {what} '{ref}': {_first_line(exc)}",
            hint="run edgekit from the directory that holds it, set PYTHONPATH, or pip install its package",
        ) from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing: say so in one line
        raise error(f"importing module '{module}' for the {what} '{ref}' failed: {type(exc).__name__}: {_first_line(exc)}",
                    hint="run the module with python to see the full error") from None
    fn = getattr(mod, attr, None)
    if fn is None or not callable(fn):
        raise error(f"module '{module}' has no callable '{attr}'{did_you_mean(attr, dir(mod))}")
    return fn  # type: ignore[no-any-return]
