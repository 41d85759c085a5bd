"""``edgekit train``: a plain training loop that also runs under torchrun (DDP).

Each epoch rank 0 saves a resumable state in ``runs/NAME.partial/`` (written to a temporary name and
renamed); ``--resume`` continues from it. The best epoch by validation accuracy becomes the artifact,
renamed into place only when the run completes. Shuffling is seeded per epoch, so a resumed run sees
the same batches a straight one would.
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F  # noqa: N812

from edgekit import console, trust
from edgekit.artifact import Artifact, ModelSpec, check_output, sweep_stale, temp_name
from edgekit.checkpoint import write_checkpoint
from edgekit.data import Batch, describe, match_inputs, resolve_source, source_paths
from edgekit.errors import BadInputError, DataError
from edgekit.iospec import InputSpec, IOSpec
from edgekit.models import create, default_io, factory_kwargs, parse_source
from edgekit.torchutil import call, first_output, predict, select_device, to_tensors

STATE = "state.pt"


@dataclass
class TrainConfig:
    model: str = "small_cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: str = "digits"
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    device: str = "auto"
    seed: int = 0
    inputs: list[InputSpec] | None = None


def validate(cfg: TrainConfig) -> None:
    if cfg.epochs < 1:
        raise BadInputError(f"--epochs must be at least 1 (got {cfg.epochs})")
    if cfg.batch_size < 1:
        raise BadInputError(f"--batch-size must be at least 1 (got {cfg.batch_size})")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise BadInputError(f"--lr must be a positive finite number (got {cfg.lr})")
    for name in ("weight_decay", "label_smoothing"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise BadInputError(f"--{name.replace('_', '-')} must be a finite number >= 0 (got {value})")
    if cfg.label_smoothing >= 1:
        raise BadInputError(f"--label-smoothing must be below 1 (got {cfg.label_smoothing})")


def default_out(cfg: TrainConfig) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{cfg.model}-{cfg.data.split(':')[0]}").strip("-")
    return Path("runs") / name


# --------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the torchrun group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(local)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return Dist(rank, world, local)


# --------------------------------------------------------------------------- the loop

LossFn = Callable[[nn.Module, dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor], torch.Tensor]


def task_loss(task: str, label_smoothing: float = 0.0) -> LossFn:
    def loss(model: nn.Module, x: dict[str, torch.Tensor], y: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        out = first_output(call(model, x))
        if y is None:
            raise DataError("training needs labels", hint="give a labelled --data source")
        if task == "regression":
            return F.mse_loss(out.reshape(y.shape), y.float())
        return F.cross_entropy(out, y, label_smoothing=label_smoothing)

    return loss


def evaluate(model: nn.Module, batch: Batch, io: IOSpec, device: torch.device) -> float:
    """Validation score: top-1 for classifiers, negative MSE for regression."""
    inputs, labels = batch
    out = predict(model, inputs, device=device)
    if labels is None:
        return 0.0
    if io.task == "regression":
        return -float(((out.reshape(labels.shape) - labels) ** 2).mean())
    return float((out.argmax(-1) == labels).mean())


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_score: float
    best_epoch: int
    history: list[dict[str, float]]


def fit(
    model: nn.Module,
    train: Batch,
    val: Batch,
    io: IOSpec,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: torch.device,
    loss_fn: LossFn,
    label: str = "train",
    partial: Path | None = None,
    resume: bool = False,
    ddp: Dist | None = None,
    extra_params: list[nn.Parameter] | None = None,
    score_fn: Callable[[nn.Module], float] | None = None,
) -> FitResult:
    """AdamW + one-cycle schedule; keeps the best epoch by validation score."""
    ddp = ddp or Dist()
    model.to(device)
    net: nn.Module = model
    if ddp.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[ddp.local_rank] if device.type == "cuda" else None)
    inputs, labels = train
    n = next(iter(inputs.values())).shape[0]
    local_batch = max(1, batch_size // ddp.world)
    steps = max(1, -(-n // batch_size))
    params = list(model.parameters()) + (extra_params or [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.15)
    start, best = 0, FitResult({k: v.detach().clone() for k, v in model.state_dict().items()}, -np.inf, -1, [])
    if resume and partial is not None and (partial / STATE).is_file():
        state = _load_state(partial)
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise BadInputError(f"cannot resume from {partial / STATE}: it was saved for another model or settings "
                                f"({type(exc).__name__})", hint="resume with the same --model and options, or --overwrite") from None
        start = int(state["epoch"])
        best = FitResult(state["best_state"], float(state["best_score"]), int(state["best_epoch"]), [])
        console.log(f"resuming from {partial} after epoch {start}/{epochs}")
    x_all = to_tensors(inputs, torch.device("cpu"))
    y_all = torch.from_numpy(labels) if labels is not None else None
    with console.progress() as bar:
        task = bar.add_task(label, total=epochs, completed=start, status="")
        for epoch in range(start, epochs):
            net.train()
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
            perm = torch.randperm(n, generator=gen)
            usable = (n // ddp.world) * ddp.world
            perm = perm[:usable][ddp.rank :: ddp.world] if ddp.world > 1 else perm
            total, count = 0.0, 0
            for i in range(0, perm.numel(), local_batch):
                idx = perm[i : i + local_batch]
                xb = {k: v[idx].to(device) for k, v in x_all.items()}
                yb = y_all[idx].to(device) if y_all is not None else None
                loss = loss_fn(net, xb, yb, idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                if sched.last_epoch + 1 < sched.total_steps:
                    sched.step()
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
            if not ddp.main:
                score = 0.0
            elif score_fn is not None:
                score = score_fn(model)
            else:
                score = evaluate(model, val, io, device)
            if score >= best.best_score:  # ties go to the later epoch (one-cycle: annealed further)
                best = FitResult({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, score, epoch + 1, best.history)
            best.history.append({"epoch": epoch + 1, "loss": total / max(count, 1), "val": score})
            bar.update(task, advance=1, status=f"loss {total / max(count, 1):.4f} val {score:.4f}")
            if partial is not None and ddp.main:
                _save_state(partial, model, opt, sched, epoch + 1, best)
                console.log(f"{label}: epoch {epoch + 1}/{epochs} loss {total / max(count, 1):.4f} val {score:.4f}; checkpoint saved to {partial}")
    return best


def _drop_stateless(partial: Path) -> None:
    """Remove a ``.partial`` folder that holds no saved state (a run that failed or was killed before its
    first epoch ended): there is nothing to resume in it, and it would be reported as an interrupted run."""
    if not partial.is_dir() or (partial / STATE).is_file():
        return
    sweep_stale(partial)
    if not any(partial.iterdir()):
        partial.rmdir()


def _load_state(partial: Path) -> dict[str, Any]:
    try:
        state = torch.load(partial / STATE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch says why in many lines and types: one line here
        raise BadInputError(f"cannot resume from {partial / STATE}: the saved state is damaged ({type(exc).__name__})",
                            hint="start again with --overwrite") from None
    keys = {"model", "optimizer", "scheduler", "rng", "epoch", "best_state", "best_score", "best_epoch"}
    if not isinstance(state, dict) or not keys <= set(state):
        raise BadInputError(f"cannot resume from {partial / STATE}: it is not an edgekit training state",
                            hint="start again with --overwrite")
    return state


def _save_state(partial: Path, model: nn.Module, opt: Any, sched: Any, epoch: int, best: FitResult) -> None:
    partial.mkdir(parents=True, exist_ok=True)
    sweep_stale(partial)
    (partial / f".{STATE}.tmp").unlink(missing_ok=True)  # the fixed name earlier versions used: only ever ours
    tmp = partial / temp_name(STATE)
    try:
        _write_state(tmp, model, opt, sched, epoch, best)
        os.replace(tmp, partial / STATE)
    except (OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "the disk is full or a file size limit was hit"
        raise BadInputError(f"cannot save the training state in {partial}: {reason}",
                            hint="free disk space and run again (--resume continues from the last saved epoch, if any)") from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_state(tmp: Path, model: nn.Module, opt: Any, sched: Any, epoch: int, best: FitResult) -> None:
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": epoch,
            "best_state": best.best_state,
            "best_score": best.best_score,
            "best_epoch": best.best_epoch,
        },
        tmp,
    )


# --------------------------------------------------------------------------- the command


def resolve_io(source_io: IOSpec | None, model: str, inputs: list[InputSpec] | None) -> IOSpec:
    """IO spec: the data source's, else the zoo model's, with --input overriding the inputs."""
    io = source_io or default_io(model)
    if inputs:
        io = (io or IOSpec(inputs=inputs)).model_copy(update={"inputs": inputs})
    if io is None:
        raise BadInputError(f"cannot tell the inputs of '{model}'", hint="give --data or --input NAME:DIMS:DTYPE")
    return io


def train(cfg: TrainConfig, out: Path | None = None, *, resume: bool = False, overwrite: bool = False) -> Artifact | None:
    """Train ``cfg.model`` on ``cfg.data`` and write a checkpoint artifact. Returns None on ranks > 0."""
    validate(cfg)
    device = select_device(cfg.device)
    parse_source(cfg.model)
    trust.vouch_named(cfg.model, cfg.data)  # named by the caller: theirs to run
    out = out or default_out(cfg)
    partial = out.with_name(out.name + ".partial")
    reads = source_paths(cfg.data)
    _drop_stateless(partial)
    if resume and not partial.exists():
        if out.exists():
            console.info(f"{out} is already complete; nothing to resume")
            return Artifact.load(out)
        console.info(f"no interrupted run at {partial}; starting fresh")
    if not resume:
        if partial.exists() and not overwrite:  # before "exists": after a killed --overwrite both do
            raise BadInputError(f"an interrupted run exists at {partial}",
                                hint="pass --resume to continue it, or --overwrite to start again")
        check_output(out, overwrite, reads)
    elif out.exists():
        check_output(out, True, reads)  # the resumed run replaces it: refuse now what that would delete
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # the data and the model before any file is written: a bad source leaves nothing behind
    source = resolve_source(cfg.data)
    io = resolve_io(describe(source), cfg.model, cfg.inputs)
    spec = ModelSpec(source=cfg.model, kwargs=factory_kwargs(cfg.model, io, cfg.model_kwargs))
    model = create(spec)
    tr_x, tr_y = source("train")
    va_x, va_y = source("val")
    train_b = (match_inputs(tr_x, io, where=f"data '{cfg.data}'"), tr_y)
    val_b = (match_inputs(va_x, io, where=f"data '{cfg.data}'"), va_y)
    ddp = init_distributed(device)
    if ddp.main:
        if not resume and partial.exists():
            shutil.rmtree(partial)  # --overwrite: the interrupted run is replaced
        try:
            partial.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInputError(f"cannot write to {partial.parent}: {exc.strerror or exc}", hint="choose a writable --out") from None
    console.info(f"training {cfg.model} on {cfg.data} ({len(tr_y) if tr_y is not None else '?'} samples, "
                 f"{cfg.epochs} epochs, {device.type}{f', {ddp.world} ranks' if ddp.world > 1 else ''})")
    try:
        result = fit(
            model, train_b, val_b, io,
            epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
            seed=cfg.seed, device=device, loss_fn=task_loss(io.task, cfg.label_smoothing),
            partial=partial, resume=resume, ddp=ddp,
        )
    except Exception:
        if ddp.main:
            _drop_stateless(partial)  # nothing saved yet: nothing to resume, so no "interrupted run" later
        raise
    if ddp.world > 1:
        dist.barrier()
    if not ddp.main:
        dist.destroy_process_group()
        return None
    model.load_state_dict(result.best_state)
    model.cpu().eval()
    te_x, te_y = source("test")
    test_b = (match_inputs(te_x, io, where=f"data '{cfg.data}'"), te_y)
    test_score = evaluate(model, test_b, io, torch.device("cpu"))
    metric = "top1" if io.task == "classification" else "neg_mse"
    metrics = {
        "task_metric": metric,
        "val": {metric: result.best_score},
        "test": {metric: test_score},
        "best_epoch": result.best_epoch,
        "history": result.history,
    }
    config = {k: (v if k != "inputs" else [i.model_dump() for i in v or []]) for k, v in asdict(cfg).items()}
    config["world_size"] = ddp.world
    art = write_checkpoint(out, copy.deepcopy(model), spec, io, data=cfg.data, metrics=metrics,
                           step="train", config=config, overwrite=overwrite or resume, inputs=reads)
    shutil.rmtree(partial, ignore_errors=True)
    if ddp.world > 1:
        dist.destroy_process_group()
    console.info(f"[green]saved[/green] {out}  test {metric} {test_score:.4f} (best epoch {result.best_epoch})")
    return art


def finetune(model: nn.Module, io: IOSpec, data: str, *, epochs: int, lr: float, batch_size: int,
             device: torch.device, label: str = "fine-tune") -> dict[str, Any]:
    """Train ``model`` in place with the task loss on ``data``'s train split; keeps the best epoch on
    val (the ``finetune`` step, and the prune step between its stages)."""
    from edgekit.evaluate import split_inputs

    train = split_inputs(data, "train", io)
    val = split_inputs(data, "val", io)
    if train[1] is None:
        raise BadInputError(f"fine-tuning needs labelled data; '{data}' has no labels", hint="use a distill step")
    result = fit(model, train, val, io, epochs=epochs, lr=lr, batch_size=batch_size, device=device,
                 loss_fn=task_loss(io.task), label=label, ddp=init_distributed(device))
    model.load_state_dict(result.best_state)
    model.cpu().eval()
    return {"epochs": epochs, "best_epoch": result.best_epoch, "val": result.best_score}
