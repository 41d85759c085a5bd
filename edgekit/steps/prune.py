"""The ``prune`` step: structural pruning on Torch-Pruning's dependency graph.

Channels, hidden units and whole attention heads are removed, so the model is smaller and faster on
every target. Coupled layers (residual adds, concatenations, depthwise convolutions) are found by
Torch-Pruning's dependency graph, not by us. The result is persisted without pickle: the manifest
keeps Torch-Pruning's pruning history, which a new process replays on a fresh module from its
factory before loading the safetensors weights.
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit import console
from edgekit.errors import ModelError, require
from edgekit.iospec import IOSpec
from edgekit.models.structure import (
    Example,
    attention_modules,
    example_inputs,
    fix_attention,
    forward_fn,
)
from edgekit.recipe import PruneStep
from edgekit.steps import Context, State
from edgekit.torchutil import call, count_ops, first_output


def _head_layer(model: nn.Module, example: Example) -> list[nn.Module]:
    """The layer(s) producing the model's output (the classifier head is never pruned)."""

    with torch.no_grad():
        out_dim = first_output(call(model, example)).shape[-1]
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            last = module
    if last is not None and getattr(last, "out_features", getattr(last, "out_channels", None)) == out_dim:
        return [last]
    return []


def _keep(model: nn.Module, patterns: list[str]) -> list[nn.Module]:
    kept = []
    names = dict(model.named_modules())
    for pattern in patterns:
        hits = [m for n, m in names.items() if n and fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ModelError(f"prune: keep pattern '{pattern}' matches no module",
                             hint=f"module names look like {', '.join(list(names)[1:4])}")
        kept += hits
    return kept


def _importance(kind: str) -> Any:
    import torch_pruning as tp

    return {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
    }[kind]()


def check_runs(model: nn.Module, example: Example) -> None:
    """Run the pruned model once; if a layer breaks, name it (Torch-Pruning could not adapt it).

    A standard layer that fails on its input is usually the victim: the culprit is the custom layer
    that produced that input (e.g. one with a hard-coded channel count), so that one is named.
    """
    stack: list[str] = []
    exited: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def enter(mod: nn.Module, _inputs: Any) -> None:
        stack.append(names.get(mod, "?"))

    def leave(mod: nn.Module, _inputs: Any, _out: Any) -> None:
        if stack:
            exited.append(stack.pop())

    hooks = [m.register_forward_pre_hook(enter) for m in model.modules()]
    hooks += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        with torch.no_grad():
            call(model, example)
    except (RuntimeError, ValueError, IndexError) as exc:
        modules = dict(model.named_modules())
        where = stack[-1] if stack else "?"
        failing = modules.get(where)
        if failing is not None and type(failing).__module__.startswith("torch.nn") and exited:
            producer = next((n for n in reversed(exited) if n and not where.startswith(n + ".")), None)
            if producer is not None and not type(modules[producer]).__module__.startswith("torch.nn"):
                where, failing = producer, modules[producer]
        kind = type(failing).__name__ if failing is not None else "?"
        raise ModelError(
            f"pruning cannot adapt layer '{where}' ({kind}): {str(exc).splitlines()[0][:200]}",
            hint=f"add '{where}' to the prune step's keep: list, or make it read its sizes from its input",
        ) from None
    finally:
        for h in hooks:
            h.remove()


def run(state: State, opts: PruneStep, ctx: Context) -> State:
    require("torch_pruning", "full", "structural pruning")
    from edgekit.evaluate import split_inputs

    if state.module is None or state.spec is None:
        raise ModelError("prune needs a torch module")
    train_x, train_y = split_inputs(ctx.data, "train", state.io)
    example = example_inputs(state.io, train_x)
    base = copy.deepcopy(state.module).eval()
    check_runs(base, example)
    macs0, params0 = count_ops(base, example)
    ratio = float(opts.target_macs_ratio if opts.target_macs_ratio is not None else opts.target_params_ratio or 0.5)
    by_macs = opts.target_macs_ratio is not None
    full = macs0 if by_macs else params0
    what = "MACs" if by_macs else "params"
    goal = full * (1.0 - ratio)
    # multiples of 8 channels suit every backend's kernels, but in a 16-channel layer one step of 8 is half
    # of it: when that overshoots the target, prune again channel by channel
    choices = [opts.round_to] if opts.round_to is not None else [8, 1]
    for n, round_to in enumerate(choices):
        model, history, current = _prune(copy.deepcopy(base), example, state.io, opts, ctx, ratio,
                                         round_to, (train_x, train_y))
        overshoot = current < goal - 0.05 * full
        if overshoot and n + 1 < len(choices):
            console.info(f"  channels in multiples of {round_to} overshoot ({current / full:.1%} of the full {what}, "
                         f"target {1 - ratio:.0%}); pruning again with round_to={choices[n + 1]}")
            continue
        break
    if current > goal * 1.02:
        console.warn(f"prune reached {current / full:.1%} of the full {what}, short of the target "
                     f"{1 - ratio:.0%}: the remaining layers are at max_pruning_ratio or kept")
    elif overshoot:
        console.warn(f"prune overshot: {current / full:.1%} of the full {what} kept (target {1 - ratio:.0%}); "
                     f"channels go in steps of round_to={round_to}, coarse for narrow layers (lower round_to)")
    check_runs(model, example)
    history = [[name, bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in history]
    spec = state.spec.model_copy(update={"pruning": [*(state.spec.pruning or []), *history]})
    macs1, params1 = count_ops(model, example)
    note = {"macs_before": macs0, "macs_after": macs1, "params_before": params0, "params_after": params1,
            "macs_ratio": macs1 / macs0, "params_ratio": params1 / params0}
    console.info(f"  pruned: MACs {macs0:,} -> {macs1:,} ({macs1 / macs0:.1%}), params {params0:,} -> {params1:,}")
    return State(module=model, spec=spec, io=state.io, onnx=None, notes={"prune": note})


def _prune(model: nn.Module, example: Example, io: IOSpec, opts: PruneStep, ctx: Context,
           ratio: float, round_to: int, train: tuple[Any, Any]) -> tuple[nn.Module, list[Any], float]:
    """One pruning pass on ``model`` (changed in place): heads first, then channels in stages, with the
    optional fine-tune between stages. Returns the model, Torch-Pruning's history and what is left of
    the target metric (MACs or params)."""
    import torch_pruning as tp

    attn = attention_modules(model)
    num_heads: dict[nn.Module, int] = {lin: int(getattr(block, info[0])) for block, info in attn.items() for lin in info[1]}
    qkv = list(num_heads)
    ignored = [m for m in _protected(model, example, io) if m not in num_heads] + _keep(model, opts.keep)
    importance = _importance(opts.importance)
    by_macs = opts.target_macs_ratio is not None
    macs0, params0 = count_ops(model, example)
    full, what = (macs0, "MACs") if by_macs else (params0, "params")
    history: list[Any] = []
    if num_heads and opts.heads:
        history += _prune_heads(model, example, importance, num_heads, ignored, min(ratio, opts.max_pruning_ratio))
    pruner = tp.pruner.BasePruner(
        model, example, importance=importance, global_pruning=opts.global_pruning,
        pruning_ratio=opts.max_pruning_ratio, max_pruning_ratio=opts.max_pruning_ratio, iterative_steps=100,
        ignored_layers=ignored + (qkv if opts.heads else []), round_to=round_to,
        num_heads=num_heads if not opts.heads else {}, prune_num_heads=False, prune_head_dims=not opts.heads,
        forward_fn=forward_fn,
    )
    macs_now, params_now = count_ops(model, example)
    current = float(macs_now if by_macs else params_now)
    stages = [full * (1.0 - ratio * (k + 1) / opts.iterative_steps) for k in range(opts.iterative_steps)]
    done = 0
    for k, target in enumerate(stages):
        while current > target and done < 100:
            if opts.importance == "taylor":
                _taylor_grads(model, *train, io)
            pruner.step()
            fix_attention(model)
            done += 1
            try:
                macs, params = count_ops(model, example)
            except (RuntimeError, ValueError, IndexError):
                check_runs(model, example)  # names the layer that broke
                raise
            current = float(macs if by_macs else params)
        console.info(f"  prune stage {k + 1}/{opts.iterative_steps}: {what} {current / full:.1%} of the full model")
        if opts.finetune_epochs_per_step and k + 1 < len(stages):
            from edgekit.torchutil import select_device
            from edgekit.train import finetune

            finetune(model, io, ctx.data, epochs=opts.finetune_epochs_per_step, lr=opts.lr, batch_size=opts.batch_size,
                     device=select_device("auto"), label=f"fine-tune {k + 1}")
    return model, history + list(pruner.pruning_history()), current


def _protected(model: nn.Module, example: Example, io: IOSpec) -> list[nn.Module]:
    """Layers whose output width is the model's output: the classifier head; for an embedding model,
    every layer writing the embedding width (the residual stream), so the embedding keeps its size."""

    if io.task != "embedding":
        return _head_layer(model, example)
    with torch.no_grad():
        width = first_output(call(model, example)).shape[-1]
    return [m for m in model.modules()
            if isinstance(m, nn.Linear | nn.Conv2d) and getattr(m, "out_features", getattr(m, "out_channels", None)) == width]


def _prune_heads(model: nn.Module, example: Example, importance: Any, num_heads: dict[nn.Module, int],
                 ignored: list[nn.Module], ratio: float) -> list[Any]:
    """Remove whole attention heads in one step (at least one head stays in every block).

    Done apart from the width pruning: Torch-Pruning's iterative head schedule removes a head at
    every step once the target ratio is above zero, so heads get one step of their own.
    """
    import torch_pruning as tp

    ratio = min(ratio, 1 - 1 / min(num_heads.values()))
    if ratio <= 0:
        return []
    pruner = tp.pruner.BasePruner(  # a ratio for the q/k/v projections only: nothing else changes here
        model, example, importance=importance, pruning_ratio=0.0, pruning_ratio_dict={m: ratio for m in num_heads},
        iterative_steps=1, ignored_layers=ignored, num_heads=dict(num_heads),
        prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio, forward_fn=forward_fn,
    )
    pruner.step()
    fix_attention(model)
    heads = [int(getattr(b, info[0])) for b, info in attention_modules(model).items()]
    console.info(f"  attention heads per block after pruning: {heads}")
    return list(pruner.pruning_history())


def _taylor_grads(model: nn.Module, x: dict[str, np.ndarray], y: np.ndarray | None, io: IOSpec) -> None:
    """Gradients of the task loss on a batch, which Taylor importance reads."""
    from torch.nn import functional as F  # noqa: N812


    if y is None:
        raise ModelError("taylor importance needs labelled data", hint="use importance: l2")
    idx = np.random.default_rng(0).choice(len(y), size=min(256, len(y)), replace=False)
    model.zero_grad()
    out = first_output(call(model, {k: torch.from_numpy(v[idx]) for k, v in x.items()}))
    F.cross_entropy(out, torch.from_numpy(y[idx])).backward()  # type: ignore[no-untyped-call]
