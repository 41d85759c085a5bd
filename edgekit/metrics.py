"""Task metrics on numpy outputs (no torch): top-1, agreement, cosine similarity."""

from __future__ import annotations

import numpy as np

from edgekit.iospec import IOSpec


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(-1) == labels).mean())


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """How often two classifiers pick the same class."""
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of matching rows."""
    a2 = a.reshape(a.shape[0], -1).astype(np.float64)
    b2 = b.reshape(b.shape[0], -1).astype(np.float64)
    num = (a2 * b2).sum(1)
    den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1) + 1e-12
    return float((num / den).mean())


def task_metric(io: IOSpec, outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None) -> tuple[str, float | None]:
    """(metric name, value): top-1 for classifiers with labels; else cosine to the full model's output."""
    if io.task == "classification" and labels is not None:
        return "top1", top1(outputs, labels)
    if io.task == "regression" and labels is not None:
        return "neg_mse", -float(((outputs.reshape(labels.shape) - labels) ** 2).mean())
    if reference is not None:
        return "cosine", cosine(outputs, reference)
    return "cosine", None


def max_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| (float64; 0 for empty arrays)."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def max_rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the output's scale (max |b|, at least 1)."""
    scale = max(float(np.abs(b).max()) if b.size else 1.0, 1.0)
    return max_abs_error(a, b) / scale
