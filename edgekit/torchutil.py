"""Small torch helpers shared by train, export, steps and the torch target."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.errors import BadInputError, ModelError


def _forward_parameters(model: Any) -> list[inspect.Parameter]:
    """forward's parameters; through wrappers (DistributedDataParallel, ...) that only pass *args/**kwargs on."""
    for module in (model, getattr(model, "module", None)):
        if module is None:
            break
        try:
            params = list(inspect.signature(module.forward).parameters.values())
        except (TypeError, ValueError, AttributeError):
            continue
        if any(p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            return params
    return []


def call_args(model: Any, inputs: Mapping[str, Any]) -> Any:
    """What to call ``model`` with: its one input; several inputs by name as forward's parameters, in
    forward's order (a dict); a tuple in IO order only for a ``forward(*inputs)``. An IO spec that lists
    ``attention_mask`` before ``input_ids`` binds each to its own parameter, never by position."""
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    params = _forward_parameters(model)
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not params or (not named and any(p.kind == p.VAR_POSITIONAL for p in params)):
        return tuple(inputs.values())
    unknown = [n for n in inputs if n not in named]
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params):
        raise ModelError(f"the model's forward takes ({', '.join(named)}); it has no parameter "
                         f"{', '.join(repr(n) for n in unknown)} named in the IO spec",
                         hint="name each input as the forward parameter it feeds (--input NAME:DIMS:DTYPE)")
    order = sorted(inputs, key=lambda n: named.index(n) if n in named else len(named))
    return {n: inputs[n] for n in order}


def call(model: Any, inputs: Mapping[str, Any]) -> Any:
    """``model`` applied to named inputs, bound as :func:`call_args` says."""
    args = call_args(model, inputs)
    if isinstance(args, dict):
        return model(**args)
    return model(*args) if isinstance(args, tuple) else model(args)


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
    """Run ``model`` over all samples (inputs bound by name) and return its main output."""
    device = device or torch.device("cpu")
    model.eval()
    outs = []
    for chunk in batches(inputs, batch_size):
        tensors = to_tensors(chunk, device)
        outs.append(first_output(call(model, tensors)).float().cpu().numpy())
    return np.concatenate(outs)


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: nn.Module, example: dict[str, np.ndarray]) -> int | None:
    """MACs at batch 1, by Torch-Pruning's counter (a maintained one, not ours)."""
    import importlib.util

    if importlib.util.find_spec("torch_pruning") is None:
        return None
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v[:1])) for k, v in example.items()}
    was_training = model.training
    model.eval()
    try:
        macs, _ = count_ops(model, tensors)
    finally:
        model.train(was_training)
    return macs


def count_ops(model: nn.Module, example: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(MACs, params) of one forward on ``example`` by Torch-Pruning's counter, inputs bound by name;
    its notes (it prints "No positional inputs found" for keyword calls) never reach our stdout."""
    import contextlib
    import io

    from torch_pruning.utils import op_counter

    # its counter looks modules up by exact type: a user's Conv2d subclass (EfficientNet's "same"
    # padding conv, say) would count 0 MACs; its own extension table maps each to its base's hook
    # (the table is read and cleared by every call)
    op_counter.CUSTOM_MODULES_MAPPING = {
        type(m): op_counter.MODULES_MAPPING[base] for m in model.modules() if type(m) not in op_counter.MODULES_MAPPING
        for base in [next((b for b in type(m).__mro__[1:] if b in op_counter.MODULES_MAPPING), None)] if base is not None}
    with contextlib.redirect_stdout(io.StringIO()):
        macs, params = op_counter.count_ops_and_params(model, call_args(model, example))
    return int(macs), int(params)
