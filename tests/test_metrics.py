"""Task metrics on numpy outputs: top-1, agreement, cosine, the task's metric and the parity errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.iospec import InputSpec, IOSpec, Task
from edgekit.metrics import agreement, cosine, max_abs_error, max_rel_error, task_metric, top1


def io(task: Task) -> IOSpec:
    return IOSpec(inputs=[InputSpec(name="x", dims=["batch", 4])], task=task)


def test_top1_and_agreement_count_argmax_matches() -> None:
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert top1(logits, np.array([1, 0, 0, 0])) == 0.75
    other = logits.copy()
    other[0] = [0.9, 0.1]
    assert agreement(logits, other) == 0.75 and agreement(logits, logits * 3) == 1.0


def test_cosine_is_per_row_and_scale_free() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert cosine(a, 5 * a) == pytest.approx(1.0)
    assert cosine(a, np.array([[0.0, 1.0], [0.0, 1.0]])) == pytest.approx(0.5)  # rows 0 and 1 -> mean of 0 and 1
    assert cosine(a, -a) == pytest.approx(-1.0)


def test_task_metric_follows_the_task_and_what_is_known() -> None:
    out = np.array([[0.2, 0.8], [0.9, 0.1]])
    assert task_metric(io("classification"), out, np.array([1, 1]), None) == ("top1", 0.5)
    name, value = task_metric(io("regression"), np.array([[1.0], [3.0]]), np.array([2.0, 3.0]), None)
    assert name == "neg_mse" and value == pytest.approx(-0.5)
    assert task_metric(io("embedding"), out, None, out) == ("cosine", pytest.approx(1.0))
    assert task_metric(io("classification"), out, None, None) == ("cosine", None)  # no labels, no reference


def test_parity_errors() -> None:
    b = np.array([0.0, 10.0, -20.0], np.float32)
    a = b + np.array([0.0, 0.5, -1.0], np.float32)
    assert max_abs_error(a, b) == 1.0
    assert max_rel_error(a, b) == pytest.approx(1.0 / 20)  # relative to the output's scale
    assert max_rel_error(np.array([0.3]), np.array([0.1])) == pytest.approx(0.2)  # scale at least 1
    assert max_abs_error(np.zeros(0), np.zeros(0)) == 0.0
