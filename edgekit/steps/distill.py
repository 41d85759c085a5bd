"""The ``distill`` and ``finetune`` steps.

distill: the lineage root (the full model) teaches the current model, or another ``student:`` model.
The loss is KL on temperature-softened logits (times T^2) with weight ``alpha`` plus the task loss
with ``1 - alpha``; with unlabelled data (or an embedding model) the teacher's outputs are the only
target. Optional feature distillation matches named intermediate layers through a learned 1x1
projection. Both steps use the training loop of ``edgekit train``, so they run under torchrun too.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from edgekit import console
from edgekit.artifact import ModelSpec
from edgekit.errors import BadInputError, ModelError
from edgekit.recipe import DistillStep, FinetuneStep
from edgekit.steps import Context, State


def _device() -> torch.device:
    from edgekit.torchutil import select_device

    return select_device("auto")


def run_finetune(state: State, opts: FinetuneStep, ctx: Context) -> State:
    if state.module is None:
        raise ModelError("finetune needs a torch module")
    model = copy.deepcopy(state.module)
    from edgekit.train import finetune

    note = finetune(model, state.io, opts.data or ctx.data, epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size,
                    device=_device())
    return State(module=model, spec=state.spec, io=state.io, onnx=None, notes={"finetune": note})


class FeatureTaps:
    """Forward hooks that keep the outputs of named modules, plus 1x1 projections student -> teacher."""

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self.student_out: dict[str, torch.Tensor] = {}
        self.teacher_out: dict[str, torch.Tensor] = {}
        self.projections = nn.ModuleDict()
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        for s_name, t_name in pairs:
            if s_name not in s_mods:
                raise ModelError(f"distill: the student has no module '{s_name}'")
            if t_name not in t_mods:
                raise ModelError(f"distill: the teacher has no module '{t_name}'")
            s_mods[s_name].register_forward_hook(self._keep(self.student_out, s_name))
            t_mods[t_name].register_forward_hook(self._keep(self.teacher_out, t_name))

    @staticmethod
    def _keep(store: dict[str, torch.Tensor], name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            store[name] = out if isinstance(out, torch.Tensor) else out[0]

        return hook

    def build_projections(self) -> None:
        for s_name, t_name in self.pairs:
            s, t = self.student_out[s_name], self.teacher_out[t_name]
            key = s_name.replace(".", "_")
            if s.shape[1] == t.shape[1]:
                self.projections[key] = nn.Identity()
            elif s.dim() == 4:
                self.projections[key] = nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False)
            else:
                self.projections[key] = nn.Linear(s.shape[-1], t.shape[-1], bias=False)

    def loss(self) -> torch.Tensor:
        total = torch.zeros(())
        for s_name, t_name in self.pairs:
            proj = self.projections[s_name.replace(".", "_")]
            total = total + F.mse_loss(proj(self.student_out[s_name]), self.teacher_out[t_name].detach())
        return total


def _student(state: State, opts: DistillStep) -> tuple[nn.Module, ModelSpec]:
    if opts.student:
        from edgekit.models import create, factory_kwargs

        # a recipe is a file: a factory it names is imported only under the trust rule (edgekit.trust)
        spec = ModelSpec(source=opts.student, kwargs=factory_kwargs(opts.student, state.io, opts.student_kwargs))
        return create(spec), spec
    if state.module is None or state.spec is None:
        raise ModelError("distill needs a torch student: the current model is ONNX-only")
    return copy.deepcopy(state.module), state.spec


def run(state: State, opts: DistillStep, ctx: Context) -> State:
    from edgekit.checkpoint import load_module
    from edgekit.evaluate import split_inputs
    from edgekit.metrics import cosine, top1
    from edgekit.torchutil import call, first_output, predict
    from edgekit.train import fit, init_distributed

    if ctx.root.manifest.model is None:
        raise BadInputError("distill needs the full model (lineage root) as a torch module; it is ONNX-only")
    teacher = load_module(ctx.root).eval()
    student, spec = _student(state, opts)
    io = state.io
    source = opts.data or ctx.data
    x_tr, y_tr = split_inputs(source, "train", io)
    x_va, y_va = split_inputs(source, "val", io)
    classify = io.task == "classification"
    labelled = y_tr is not None and classify
    t_train = torch.from_numpy(predict(teacher, x_tr))
    t_val = predict(teacher, x_va)
    temp, alpha = opts.temperature, opts.alpha if labelled else 1.0
    taps = FeatureTaps(student, teacher, [(f.student, f.teacher) for f in opts.features]) if opts.features else None
    if taps is not None:
        with torch.no_grad():
            probe = {k: torch.from_numpy(v[:2]) for k, v in x_tr.items()}
            call(student.eval(), probe)
            call(teacher, probe)
        taps.build_projections()

    def loss_fn(model: nn.Module, x: dict[str, torch.Tensor], y: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        s = first_output(call(model, x))
        t = t_train[idx].to(s.device)
        if classify:
            kd = F.kl_div(F.log_softmax(s / temp, -1), F.softmax(t / temp, -1), reduction="batchmean") * temp * temp
        else:
            kd = F.mse_loss(s, t) + (1 - F.cosine_similarity(s, t, dim=-1)).mean()
        loss = alpha * kd
        if labelled and alpha < 1.0 and y is not None:
            loss = loss + (1 - alpha) * F.cross_entropy(s, y)
        if taps is not None:
            with torch.no_grad():
                teacher(*x.values())
            loss = loss + opts.feature_weight * taps.loss()
        return loss

    def score_fn(model: nn.Module) -> float:
        out = predict(model, x_va)
        if classify and y_va is not None:
            return top1(out, y_va)
        return cosine(out, t_val)

    device = _device()
    teacher.to(device)
    console.info(f"  distilling from {ctx.root.path} ({'labelled' if labelled else 'teacher outputs only'}, T={temp}, alpha={alpha})")
    result = fit(student, (x_tr, y_tr), (x_va, y_va), io, epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size,
                 device=device, loss_fn=loss_fn, label="distill", ddp=init_distributed(device),
                 extra_params=list(taps.projections.parameters()) if taps else None, score_fn=score_fn)
    student.load_state_dict(result.best_state)
    student.cpu().eval()
    teacher.cpu()
    note = {"epochs": opts.epochs, "best_epoch": result.best_epoch, "val_score": result.best_score,
            "labelled": labelled, "teacher": str(ctx.root.path)}
    if classify and y_va is not None:
        note["teacher_val_top1"] = top1(t_val, y_va)
    return State(module=student, spec=spec, io=io, onnx=None, notes={"distill": note})
