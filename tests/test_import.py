"""edgekit import: factory models and ONNX files become checkpoints that reload identically."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgekit.artifact import Artifact

from .conftest import assert_user_error, env, run_cli

RELOAD_FACTORY = """
import sys, numpy as np
from edgekit.artifact import Artifact
from edgekit.checkpoint import load_module
from edgekit.models import trust_module
from edgekit.torchutil import predict
trust_module("userzoo")
art = Artifact.load(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], predict(load_module(art), {"input": x}))
"""


def test_import_factory_reloads_identically(tmp_path: Path) -> None:
    res = run_cli("import", "userzoo:pretrained_cnn", "--data", "digits", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    art = Artifact.load(tmp_path / out["artifact"])
    assert art.manifest.model is not None and art.manifest.model.source == "userzoo:pretrained_cnn"
    assert "top1" in art.manifest.metrics["test"]
    import userzoo

    from edgekit.data import resolve_source
    from edgekit.torchutil import predict

    x = resolve_source("digits")("test")[0]["input"][:16]
    np.save(tmp_path / "x.npy", x)
    expected = predict(userzoo.pretrained_cnn(), {"input": x})
    subprocess.run([sys.executable, "-c", RELOAD_FACTORY, str(art.path), str(tmp_path / "x.npy"), str(tmp_path / "o.npy")],
                   env=env(), check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), expected)


def test_import_onnx_reloads_identically(tmp_path: Path, digits_ckpt: Artifact) -> None:
    """An ONNX file becomes an ONNX-only root with the same outputs."""
    import onnxruntime as ort

    src = digits_ckpt.path / "model.onnx"
    res = run_cli("import", str(src), "--data", "digits", "--out", "runs/onnx-root", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    art = Artifact.load(tmp_path / "runs/onnx-root")
    assert art.manifest.model is None and art.manifest.onnx == "model.onnx"
    assert art.manifest.metrics["test"]["top1"] == digits_ckpt.manifest.metrics["test"]["top1"]
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    a = ort.InferenceSession(str(src)).run(None, {"input": x})[0]
    b = ort.InferenceSession(str(art.path / "model.onnx")).run(None, {"input": x})[0]
    np.testing.assert_array_equal(a, b)


def test_import_two_input_model(tmp_path: Path) -> None:
    res = run_cli("import", "userzoo:two_input", "--input", "left:batch,6", "--input", "right:batch,4", "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    art = Artifact.load(tmp_path / json.loads(res.out)["artifact"])
    assert art.io.input_names == ["left", "right"]
    assert len(art.io.outputs) == 2


def test_inputs_bind_by_name_not_position(tmp_path: Path) -> None:
    """An IO spec listing attention_mask before input_ids (with an optional token_type_ids between them
    in forward): eager torch, the exported graph and the OpenVINO build all compute
    model(input_ids=..., attention_mask=...)."""
    import onnxruntime as ort
    import torch
    from userzoo import masked_mean

    from edgekit.build import build, load_built
    from edgekit.targets.torch import TorchRuntime
    from edgekit.torchutil import predict
    from edgekit.trust import vouch

    res = run_cli("import", "userzoo:masked_mean", "--input", "attention_mask:batch,8:int64", "--input",
                  "input_ids:batch,8:int64", "--out", "runs/m", cwd=tmp_path)
    assert res.code == 0, res.err
    art = Artifact.load(tmp_path / "runs/m")
    assert art.io.input_names == ["attention_mask", "input_ids"]
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 100, (5, 8)).astype(np.int64)
    mask = (np.arange(8)[None] < rng.integers(1, 9, (5, 1))).astype(np.int64)
    feeds = {"attention_mask": mask, "input_ids": ids}  # in the IO spec's order
    model = masked_mean()
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).numpy()
        swapped = model(torch.from_numpy(mask), None, torch.from_numpy(ids)).numpy()
    assert np.abs(want - swapped).max() > 0.1  # a swap would be visible
    np.testing.assert_allclose(predict(model, feeds), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(TorchRuntime(model, ["output"]).infer(feeds)["output"], want, rtol=1e-5, atol=1e-6)
    onnx_out = ort.InferenceSession(str(art.onnx_path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(onnx_out, want, rtol=1e-5, atol=1e-6)
    vouch("userzoo:masked_mean")  # as `edgekit build runs/m --trust-code` would
    built = build(art, "openvino", "fp32")
    assert built is not None
    ov_out = next(iter(load_built(built).infer(feeds).values()))
    np.testing.assert_allclose(ov_out, want, rtol=1e-4, atol=1e-5)


def test_an_input_forward_does_not_take_is_one_line(tmp_path: Path) -> None:
    res = run_cli("import", "userzoo:masked_mean", "--input", "ids:batch,8:int64", "--input", "mask:batch,8:int64",
                  "--out", "runs/m", cwd=tmp_path)
    assert_user_error(res, "has no parameter 'ids', 'mask'")
    assert not (tmp_path / "runs/m").exists()


def test_onnx_external_data_outside_is_refused(tmp_path: Path, digits_ckpt: Artifact) -> None:
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load(str(digits_ckpt.path / "model.onnx"))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    (tmp_path / "m").mkdir()
    onnx.save(model, str(tmp_path / "m" / "model.onnx"))
    model2 = onnx.load(str(tmp_path / "m" / "model.onnx"), load_external_data=False)
    for t in model2.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../../etc/passwd"
    onnx.save(model2, str(tmp_path / "m" / "evil.onnx"))
    res = run_cli("import", "m/evil.onnx", cwd=tmp_path)
    assert res.code == 2 and "outside the model's folder" in res.err
