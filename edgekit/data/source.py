"""What a data source is: a function from split name to (inputs by name, labels or None), checked
once per split. The built-in sources (``edgekit.data.builtin``) and the package build on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import DataError

SPLITS = ("train", "val", "test")
Batch = tuple[dict[str, np.ndarray], np.ndarray | None]
SourceFn = Callable[[str], Batch]

@dataclass
class Source:
    """A resolved data source: the spec string it came from and the function behind it."""

    spec: str
    fn: SourceFn
    labels: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    _cache: dict[str, Batch] = field(default_factory=dict, repr=False)

    def __call__(self, split: str) -> Batch:
        if split not in SPLITS:
            raise DataError(f"unknown split '{split}'", hint=f"one of {', '.join(SPLITS)}")
        if split not in self._cache:
            self._cache[split] = validate_batch(self.fn(split), f"{self.spec} [{split}]")
        return self._cache[split]


def validate_batch(batch: object, where: str) -> Batch:
    if not (isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], dict)):
        raise DataError(f"data source {where} must return (dict of arrays, labels or None)")
    inputs, labels = batch
    if not inputs:
        raise DataError(f"data source {where} returned no inputs")
    n = None
    for name, arr in inputs.items():
        if not isinstance(arr, np.ndarray) or arr.ndim < 1:
            raise DataError(f"data source {where}: input '{name}' is not a numpy array with a sample axis")
        if arr.dtype.kind == "O":
            raise DataError(f"data source {where}: input '{name}' has dtype object", hint="use numeric arrays")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise DataError(f"data source {where}: input '{name}' contains NaN or infinite values")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise DataError(f"data source {where}: inputs have different sample counts ({n} vs {arr.shape[0]})")
    if n == 0:
        raise DataError(f"data source {where} is empty")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape[0] != n:
            raise DataError(f"data source {where}: {labels.shape[0]} labels for {n} samples")
    return inputs, labels


def seeded_split(n: int, split: str, fractions: tuple[float, float] = (0.6, 0.2), seed: int = 0) -> np.ndarray:
    """Indices of ``split`` in a fixed seeded train/val/test split of ``n`` samples."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(n * fractions[0]))
    n_val = int(round(n * fractions[1]))
    parts = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
    return np.sort(parts[split])
