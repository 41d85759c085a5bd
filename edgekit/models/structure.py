"""Model structure: what a model's modules are made of, and replaying a recorded pruning structure.

Rebuilding a model (``edgekit.models.build``) replays the pruning history the ``prune`` step
recorded; both read this module, so model building does not depend on a compression step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.errors import ModelError, require
from edgekit.iospec import IOSpec
from edgekit.torchutil import call, first_output

ATTENTION_ATTRS = (
    # (module attr holding the head count, q/k/v linear names, head-size attr, total-size attr)
    ("num_heads", ("query", "key", "value"), "head_dim", None),  # edgekit's zoo
    ("num_attention_heads", ("query", "key", "value"), "attention_head_size", "all_head_size"),  # HF BERT
)


Example = dict[str, torch.Tensor]  # two samples of each input, by name


def example_inputs(io: IOSpec, inputs: dict[str, np.ndarray] | None = None) -> Example:
    arrays = inputs if inputs is not None else io.sample_inputs(2)
    return {k: torch.from_numpy(np.ascontiguousarray(v[:2])) for k, v in arrays.items()}


def forward_fn(model: nn.Module, example: Example) -> Any:
    return first_output(call(model, example))


def attention_modules(model: nn.Module) -> dict[nn.Module, tuple[str, tuple[nn.Linear, ...], str, str | None]]:
    """Self-attention blocks with separate q/k/v projections, keyed by the block."""
    found = {}
    for module in model.modules():
        for heads_attr, names, size_attr, total_attr in ATTENTION_ATTRS:
            if hasattr(module, heads_attr) and all(isinstance(getattr(module, n, None), nn.Linear) for n in names):
                found[module] = (heads_attr, tuple(getattr(module, n) for n in names), size_attr, total_attr)
    return found


def fix_attention(model: nn.Module) -> None:
    """After whole heads are removed, tell each attention block how many heads it has left."""
    for module, (heads_attr, linears, size_attr, total_attr) in attention_modules(model).items():
        head_size = getattr(module, size_attr, None)
        if not head_size:
            continue
        setattr(module, heads_attr, linears[0].out_features // int(head_size))
        if total_attr:
            setattr(module, total_attr, linears[0].out_features)


def apply_structure(model: nn.Module, history: list[Any], io: IOSpec) -> None:
    """Replay a pruning history (what the prune step recorded) on a fresh module from its factory."""
    require("torch_pruning", "full", "rebuilding a pruned model")
    import torch_pruning as tp

    model.eval()
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs(io), forward_fn=forward_fn)
    try:
        dg.load_pruning_history([(name, bool(is_out), list(idxs)) for name, is_out, idxs in history])
    except (KeyError, IndexError, RuntimeError) as exc:
        raise ModelError(f"cannot re-apply the recorded pruning structure: {exc}",
                         hint="the model factory changed since the artifact was made") from None
    fix_attention(model)
