"""Errors that know how to show themselves.

Library code raises these; only ``edgekit.cli`` turns them into output and exit codes. Each carries a
one-line message and, where we can give one, a hint saying what to do next::

    EdgekitError                       exit 1  internal or unexpected
    ├── BadInputError                  exit 2  the user asked for something we cannot do
    │   ├── ArtifactError                      missing, tampered or too-new artifact
    │   ├── UntrustedCodeError                 a manifest names code the user did not vouch for
    │   ├── OutputExistsError                  --out exists and --overwrite was not given
    │   ├── RecipeError                        unknown step, misspelt key, bad value
    │   ├── DataError                          missing / corrupt data, wrong shapes, NaN
    │   ├── ModelError                         unknown model name, bad factory path
    │   ├── MissingExtraError                  an optional dependency is not installed
    │   └── TargetUnavailableError             the target cannot run on this machine
    ├── BudgetError                    exit 3  accuracy budget missed (best artifact kept)
    └── ParityError                    exit 4  a build's outputs do not match its reference
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgekitError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class BadInputError(EdgekitError):
    exit_code = 2


class ArtifactError(BadInputError):
    pass


class UntrustedCodeError(BadInputError):
    pass


class OutputExistsError(BadInputError):
    pass


class RecipeError(BadInputError):
    pass


class DataError(BadInputError):
    pass


class ModelError(BadInputError):
    pass


class MissingExtraError(BadInputError):
    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"the Python package '{package}' is not installed{what}",
            hint=f"pip install 'edgekit[{extra}]'",
        )
        self.package = package
        self.extra = extra


class TargetUnavailableError(BadInputError):
    pass


class BudgetError(EdgekitError):
    exit_code = 3


class ParityError(EdgekitError):
    exit_code = 4


class QdqRuleError(EdgekitError):
    """edgekit made a QDQ graph that breaks TensorRT's placement rules: a bug of ours, exit 1."""


class CudaError(EdgekitError):
    """A CUDA or TensorRT runtime call failed on the device (out of memory, a driver fault)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close choice exists, else ''. Never picks for the user."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def require(module: str, extra: str, purpose: str = "") -> None:
    """Raise MissingExtraError unless ``module`` can be imported (without importing it)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(module, extra, purpose)
