"""Structural pruning on Torch-Pruning's dependency graph: coupling, persistence, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.artifact import Artifact, ModelSpec
from edgekit.errors import ModelError
from edgekit.models import create, factory_kwargs, trust_module
from edgekit.recipe import PruneStep
from edgekit.steps import Context, State
from edgekit.steps.prune import run

from ..conftest import env, run_cli


def _state(source: str, io) -> State:
    spec = ModelSpec(source=source, kwargs=factory_kwargs(source, io, {}))
    trust_module("userzoo")
    return State(module=create(spec).eval(), spec=spec, io=io, onnx=None)


def _ctx(digits_ckpt: Artifact, tmp_path: Path) -> Context:
    return Context(parent=digits_ckpt, root=digits_ckpt, data="digits", workdir=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["small_cnn", "userzoo:concat_grouped", "mobilenet_v3"])
def test_prune_halves_macs_and_model_still_runs(source: str, digits_ckpt: Artifact, tmp_path: Path) -> None:
    """Residual adds (small_cnn, MobileNetV3), concatenation, grouped and depthwise convolutions."""
    io = digits_ckpt.io
    if source == "mobilenet_v3":
        pytest.importorskip("torch_pruning")
    state = _state(source, io)
    new = run(state, PruneStep(kind="prune", target_macs_ratio=0.5, iterative_steps=2), _ctx(digits_ckpt, tmp_path))
    note = new.notes["prune"]
    assert note["macs_after"] <= 0.55 * note["macs_before"]
    assert note["params_after"] < note["params_before"]
    out = new.module(torch.rand(3, 1, 8, 8))
    assert out.shape == (3, 10)
    # the classifier head keeps its outputs
    assert new.spec is not None and new.spec.pruning


@pytest.mark.slow
def test_pruned_model_rebuilds_in_a_fresh_process(digits_ckpt: Artifact, tmp_path: Path) -> None:
    res = run_cli("compress", str(digits_ckpt.path), "--recipe", "prune50", "--out", str(tmp_path / "p"), "--json",
                  cwd=tmp_path)
    assert res.code == 0, res.err
    art = Artifact.load(tmp_path / "p")
    assert art.manifest.model is not None and art.manifest.model.pruning
    assert art.manifest.metrics["macs"] <= 0.5 * digits_ckpt.manifest.metrics["macs"]
    code = (
        "import sys, numpy as np\n"
        "from edgekit.artifact import Artifact\nfrom edgekit.checkpoint import load_module\n"
        "from edgekit.data import resolve_source\nfrom edgekit.torchutil import predict\n"
        "art = Artifact.load(sys.argv[1])\nx = resolve_source('digits')('test')[0]\n"
        "np.save(sys.argv[2], predict(load_module(art), x))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(art.path), str(tmp_path / "o.npy")], env=env(), check=True)
    import onnxruntime as ort

    from edgekit.data import resolve_source

    x = resolve_source("digits")("test")[0]["input"]
    onnx_out = ort.InferenceSession(str(art.path / "model.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), onnx_out, rtol=1e-4, atol=1e-4)
    report = art.manifest.metrics["report"]
    assert [r["step"] for r in report] == ["input", "prune", "finetune"]
    assert all("params" in r and "macs" in r and "top1" in r for r in report)


def test_unsupported_layer_is_named(digits_ckpt: Artifact, tmp_path: Path) -> None:
    state = _state("userzoo:rigid", digits_ckpt.io)
    with pytest.raises(ModelError, match="'rigid' \\(Rigid\\)"):
        run(state, PruneStep(kind="prune", target_macs_ratio=0.5, iterative_steps=1), _ctx(digits_ckpt, tmp_path))


def test_keep_pattern_must_match(digits_ckpt: Artifact, tmp_path: Path) -> None:
    state = _state("small_cnn", digits_ckpt.io)
    with pytest.raises(ModelError, match="matches no module"):
        run(state, PruneStep(kind="prune", keep=["nothing.*"]), _ctx(digits_ckpt, tmp_path))


def test_prune_on_onnx_only_root_is_exit_2(tmp_path: Path, digits_ckpt: Artifact) -> None:
    res = run_cli("import", str(digits_ckpt.path / "model.onnx"), "--data", "digits", "--out", "runs/o", cwd=tmp_path)
    assert res.code == 0, res.err
    for recipe in ("prune50", "distill"):
        res = run_cli("compress", "runs/o", "--recipe", recipe, cwd=tmp_path)
        assert res.code == 2 and "needs a torch module" in res.err, res.err


@pytest.mark.parametrize(("importance", "global_pruning"), [("l1", False), ("taylor", False), ("bn_scale", True), ("l2", True)])
def test_importance_and_global_options(importance: str, global_pruning: bool, digits_ckpt: Artifact, tmp_path: Path) -> None:
    from edgekit.checkpoint import load_module

    state = State(module=load_module(digits_ckpt), spec=digits_ckpt.manifest.model, io=digits_ckpt.io, onnx=None)
    new = run(state, PruneStep(kind="prune", target_macs_ratio=0.4, importance=importance, global_pruning=global_pruning,
                               iterative_steps=1, round_to=8), _ctx(digits_ckpt, tmp_path))
    assert new.notes["prune"]["macs_ratio"] <= 0.62
    channels = [m.out_channels for m in new.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c % 8 == 0 for c in channels), channels  # round_to 8


@pytest.mark.slow
def test_unset_round_to_hits_the_target_where_multiples_of_8_overshoot(digits_ckpt: Artifact, tmp_path: Path) -> None:
    from edgekit.checkpoint import load_module

    state = State(module=load_module(digits_ckpt), spec=digits_ckpt.manifest.model, io=digits_ckpt.io, onnx=None)
    ratios = {}
    for round_to in (8, None):
        new = run(state, PruneStep(kind="prune", target_macs_ratio=0.5, round_to=round_to), _ctx(digits_ckpt, tmp_path))
        ratios[round_to] = new.notes["prune"]["macs_ratio"]
    assert ratios[8] < 0.45, ratios  # the digits CNN's 16-channel layers lose 8 at a time
    assert 0.45 <= ratios[None] <= 0.5, ratios


def test_params_target_and_keep(digits_ckpt: Artifact, tmp_path: Path) -> None:
    from edgekit.checkpoint import load_module

    state = State(module=load_module(digits_ckpt), spec=digits_ckpt.manifest.model, io=digits_ckpt.io, onnx=None)
    new = run(state, PruneStep(kind="prune", target_params_ratio=0.3, keep=["stem.*"], iterative_steps=1),
              _ctx(digits_ckpt, tmp_path))
    assert new.notes["prune"]["params_ratio"] <= 0.72
    assert new.module.stem[0].out_channels == state.module.stem[0].out_channels


def test_transformer_heads_are_pruned_whole(tmp_path: Path) -> None:
    from edgekit.importer import import_model
    from edgekit.models.structure import attention_modules

    root = import_model("tiny_transformer", data="userzoo:tokens", out=tmp_path / "tt")
    from edgekit.checkpoint import load_module

    state = State(module=load_module(root), spec=root.manifest.model, io=root.io, onnx=None)
    ctx = Context(parent=root, root=root, data="userzoo:tokens", workdir=tmp_path)
    new = run(state, PruneStep(kind="prune", target_params_ratio=0.3, iterative_steps=1), ctx)
    blocks = attention_modules(new.module)
    assert blocks and all(1 <= b.num_heads < 4 for b in blocks)
    for b in blocks:
        assert b.query.out_features == b.num_heads * b.head_dim
    assert new.module.layers[0].intermediate.out_features < 512  # FFN width pruned too
    ids = torch.randint(0, 1000, (2, 16))
    mask = torch.ones_like(ids)
    assert new.module(ids, mask).shape == (2, 128)  # the embedding keeps its width
    from edgekit.models import build

    rebuilt = build(new.spec, root.io)  # replays the recorded history on a fresh module
    rebuilt.load_state_dict(new.module.state_dict())
    torch.testing.assert_close(rebuilt(ids, mask), new.module(ids, mask))
