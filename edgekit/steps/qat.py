"""The ``qat`` step: quantization-aware fine-tuning for the QDQ graph the next (quantize) step writes.

The step first makes that graph, as the quantize step would: the float graph (the state's, or an
export of its module) through ONNX Runtime's pre-processing, calibration, the portable symmetric
QDQ graph. It then trains the graph itself, run in torch (``steps/qdq_torch.py``): every quantizer
at its own place with its own scale, each INT8 weight a float parameter rounded per channel as ONNX
Runtime rounds it, with straight-through gradients; distilled from the float graph's outputs and/or
on the labels, keeping the epoch whose INT8 model scores best on val. The trained weights go back
into the float graph, and the ranges are kept: the quantize step after it quantizes that graph with
them (no calibration, no bias correction), so the stored QDQ graph computes what was trained. Every
target and bundle works unchanged; the result is an ONNX model (the torch module is not updated).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekit import console
from edgekit.errors import BadInputError, ModelError, require
from edgekit.recipe import QatStep, QuantizeStep
from edgekit.steps import Context, State
from edgekit.steps import qdq_graph as g
from edgekit.steps.ptq import (
    CNN_OPS,
    calibrate,
    calibration_set,
    float_graph,
    quantize_graph,
    range_table,
    select,
)


def _as_quantize(opts: QatStep) -> QuantizeStep:
    return QuantizeStep(kind="quantize", calibration=opts.calibration, samples=opts.samples, min_samples=opts.min_samples,
                        seed=opts.seed,
                        method=opts.method, percentile=opts.percentile, ignore=opts.ignore, profile="portable",
                        smooth_quant=False)


def run(state: State, opts: QatStep, ctx: Context) -> State:
    require("torch", "full", "quantization-aware training")
    require("onnxruntime", "onnxruntime", "quantization-aware training")
    require("onnx", "full", "quantization-aware training")
    import onnx

    from edgekit.evaluate import predict_onnx, split_inputs
    from edgekit.metrics import cosine, top1
    from edgekit.steps.qdq_torch import QdqGraph
    from edgekit.torchutil import call, first_output, predict, select_device
    from edgekit.train import fit, init_distributed

    work = ctx.scratch("qat")
    qopts = _as_quantize(opts)
    pre = work / "pre.onnx"
    g.preprocess(float_graph(state, ctx, work), pre)
    if g.is_transformer(pre):
        raise ModelError("qat trains CNN/MLP graphs; this is a transformer graph",
                         hint="use recipe int8-transformer (post-training, with smoothing)")
    x_cal = calibration_set(qopts, ctx, state.io)
    ranges = calibrate(pre, x_cal, qopts, CNN_OPS, work)
    nodes = [(n.name, n.op_type) for n in g.load(pre).graph.node]
    exclude = select(opts.ignore, nodes) | g.squeeze_excite_nodes(pre)
    qdq = work / "int8.onnx"
    quantize_graph(pre, qdq, ranges, exclude, CNN_OPS, qopts, {}, False)
    fmodel = onnx.load(str(pre))
    model = QdqGraph(onnx.load(str(qdq)), fmodel)
    if not model.trained:
        raise ModelError("qat found no INT8 weight to train in the QDQ graph")

    source = opts.data or ctx.data
    x_tr, y_tr = split_inputs(source, "train", state.io)
    x_va, y_va = split_inputs(source, "val", state.io)
    classify = state.io.task == "classification"
    labelled = y_tr is not None and classify
    if not labelled and not opts.teacher:
        raise BadInputError(f"qat on '{source}' has no labels to train on without the teacher", hint="set teacher: true")
    t_train = torch.from_numpy(predict_onnx(pre, x_tr)) if opts.teacher else None  # the float graph's outputs
    ref_val = predict_onnx(pre, x_va)
    temp = opts.temperature
    alpha = (opts.alpha if labelled else 1.0) if opts.teacher else 0.0

    def loss_fn(net: nn.Module, x: dict[str, torch.Tensor], y: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        s = first_output(call(net, x))
        loss = torch.zeros((), device=s.device)
        if t_train is not None and alpha > 0:
            t = t_train[idx].to(s.device)
            if classify:
                loss = loss + alpha * F.kl_div(F.log_softmax(s / temp, -1), F.softmax(t / temp, -1),
                                               reduction="batchmean") * temp * temp
            else:
                loss = loss + alpha * (F.mse_loss(s, t) + (1 - F.cosine_similarity(s, t, dim=-1)).mean())
        if labelled and alpha < 1.0 and y is not None:
            loss = loss + (1 - alpha) * F.cross_entropy(s, y)
        return loss

    def score_fn(net: nn.Module) -> float:
        out = predict(net, x_va)  # the INT8 graph: the best epoch is the best INT8 model
        return top1(out, y_va) if classify and y_va is not None else cosine(out, ref_val)

    before = score_fn(model)
    device = select_device("auto")
    console.info(f"  qat: {sum(k.startswith('w') for k in model.trained)} INT8 weights trained through the QDQ graph, "
                 f"{opts.method} ranges on {len(next(iter(x_cal.values())))} samples kept; val {before:.4f} before")
    result = fit(model, (x_tr, y_tr), (x_va, y_va), state.io, epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size,
                 device=device, loss_fn=loss_fn, label="qat", ddp=init_distributed(device), score_fn=score_fn)
    model.load_state_dict(result.best_state)
    model.cpu()
    out = work / "qat.onnx"
    model.write_back(fmodel, out)
    note = {"epochs": opts.epochs, "best_epoch": result.best_epoch, "val_int8_before": before,
            "val_int8": result.best_score, "weights": sum(k.startswith("w") for k in model.trained),
            "method": opts.method, "samples": int(len(next(iter(x_cal.values())))), "teacher": opts.teacher}
    return State(module=None, spec=state.spec, io=state.io, onnx=out, ranges=range_table(ranges), notes={"qat": note})
