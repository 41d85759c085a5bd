"""Recipe steps: one ``Step`` protocol and an explicit registry (no magic).

A step takes the current model state (a torch module and/or an ONNX graph, with how to rebuild the
module) and returns the next one. Steps never write outside ``ctx.workdir``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgekit.artifact import Artifact, ModelSpec
from edgekit.iospec import IOSpec

if TYPE_CHECKING:
    from torch import nn

    from edgekit.recipe import StepOptions


@dataclass
class State:
    module: nn.Module | None  # None for an ONNX-only lineage
    spec: ModelSpec | None
    io: IOSpec
    onnx: Path | None  # the current graph: FP32 export, or the QDQ graph after quantize
    quantized: bool = False
    reference: Path | None = None  # after quantize: the float graph it quantized (same node names), for explain
    ranges: dict[str, tuple[float, float]] | None = None  # after qat: the activation ranges it trained with, kept
    notes: dict[str, Any] = field(default_factory=dict)  # what a step wants in the manifest metrics


@dataclass
class Context:
    parent: Artifact  # the artifact the recipe runs on
    root: Artifact  # the lineage root: the full model, the teacher, the baseline
    data: str  # the data source of the lineage root
    workdir: Path  # where steps may write (the staging directory)
    step_index: int = 0

    def scratch(self, name: str) -> Path:
        path = self.workdir / ".work" / f"{self.step_index:02d}-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path


class Step(Protocol):
    def __call__(self, state: State, opts: StepOptions, ctx: Context) -> State: ...


def _lazy(module: str, attr: str = "run") -> Step:
    def call(state: State, opts: StepOptions, ctx: Context) -> State:
        import importlib

        fn: Callable[[State, StepOptions, Context], State] = getattr(importlib.import_module(module), attr)
        return fn(state, opts, ctx)

    return call


@dataclass(frozen=True)
class StepKind:
    """One recipe step kind: its options model (parsed by the recipe), its implementation (imported
    when it runs), and whether it needs the torch module (an ONNX-only model cannot run it)."""

    options: type[StepOptions]
    run: Step
    needs_module: bool


def _kinds() -> dict[str, StepKind]:
    from edgekit.recipe import DistillStep, FinetuneStep, PruneStep, QatStep, QuantizeStep

    return {
        "prune": StepKind(PruneStep, _lazy("edgekit.steps.prune"), needs_module=True),
        "finetune": StepKind(FinetuneStep, _lazy("edgekit.steps.distill", "run_finetune"), needs_module=True),
        "distill": StepKind(DistillStep, _lazy("edgekit.steps.distill"), needs_module=True),
        # qat trains the ONNX graph itself: torch installed, no module needed
        "qat": StepKind(QatStep, _lazy("edgekit.steps.qat"), needs_module=False),
        "quantize": StepKind(QuantizeStep, _lazy("edgekit.steps.quantize"), needs_module=False),
    }


KINDS = _kinds()
STEPS: dict[str, Step] = {kind: k.run for kind, k in KINDS.items()}
NEEDS_TORCH = {kind for kind, k in KINDS.items() if k.needs_module}
