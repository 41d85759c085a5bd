"""Small torch helpers shared by train, export, steps and the torch target."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.errors import BadInputError


def select_device(name: str = "auto") -> torch.device:
    """auto -> CUDA when present, else CPU; cuda without a GPU is an error, never a silent CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BadInputError(
                f"--device {name} was asked for, but torch sees no CUDA GPU here",
                hint="use --device cpu (or auto), or install a CUDA build of torch on a GPU machine",
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise BadInputError(f"unknown device '{name}'", hint="use auto, cpu or cuda")


def to_tensors(inputs: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in inputs.items()}


def batches(inputs: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    n = next(iter(inputs.values())).shape[0]
    for i in range(0, n, size):
        yield {k: v[i : i + size] for k, v in inputs.items()}


def first_output(out: Any) -> torch.Tensor:
    """A model's main output: the tensor itself, the first of a tuple, or a known field of a dict."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, list | tuple) and out:
        return first_output(out[0])
    if isinstance(out, dict) and out:
        for key in ("logits", "sentence_embedding", "pooler_output", "last_hidden_state"):
            if key in out:
                return first_output(out[key])
        return first_output(next(iter(out.values())))
    raise BadInputError(f"the model returned {type(out).__name__}; expected a tensor")


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, list | tuple):
        return [t for o in out for t in flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in flatten_outputs(o)]
    return []


@torch.no_grad()
def predict(model: nn.Module, inputs: dict[str, np.ndarray], batch_size: int = 256,
            device: torch.device | None = None) -> np.ndarray:
    """Run ``model`` over all samples (keyword inputs in IO order) and return its main output."""
    device = device or torch.device("cpu")
    model.eval()
    outs = []
    for chunk in batches(inputs, batch_size):
        tensors = to_tensors(chunk, device)
        outs.append(first_output(model(*tensors.values())).float().cpu().numpy())
    return np.concatenate(outs)


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: nn.Module, example: dict[str, np.ndarray]) -> int | None:
    """MACs at batch 1, by Torch-Pruning's counter (a maintained one, not ours)."""
    try:
        import torch_pruning as tp
    except ImportError:
        return None
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(v[:1])) for v in example.values())
    was_training = model.training
    model.eval()
    try:
        macs, _ = tp.utils.count_ops_and_params(model, tensors if len(tensors) > 1 else tensors[0])
    finally:
        model.train(was_training)
    return int(macs)
