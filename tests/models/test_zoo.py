"""Reference models of the zoo: ResNet-18 at 224, MobileNetV3, a two-input transformer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.artifact import Artifact, ModelSpec
from edgekit.models import ZOO, create

from ..conftest import run_cli


@pytest.mark.parametrize("name", ["small_cnn", "mlp", "mobilenet_v3", "resnet18"])
def test_zoo_image_models_run(name: str) -> None:
    size = 8 if name in ("small_cnn", "mlp") else 224
    channels = 1 if size == 8 else 3
    kwargs = {"num_classes": 10, "in_channels": channels} if size == 8 else {"num_classes": 10}
    if name == "mlp":
        kwargs["in_features"] = 64
    model = create(ModelSpec(source=name, kwargs=kwargs)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, channels, size, size)).shape == (2, 10)


def test_small_cnn_has_a_residual_connection() -> None:
    from edgekit.models.zoo import BasicBlock

    model = create(ModelSpec(source="small_cnn"))
    assert any(isinstance(m, BasicBlock) for m in model.modules())


def test_tiny_transformer_respects_the_mask() -> None:
    model = create(ModelSpec(source="tiny_transformer")).eval()
    ids = torch.randint(0, 1000, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[:, 12:] = 0
    ids2 = ids.clone()
    ids2[:, 12:] = 7  # padding content must not matter
    with torch.no_grad():
        a, b = model(ids, mask), model(ids2, mask)
    assert a.shape == (2, 128)
    torch.testing.assert_close(a, b)
    assert ZOO["tiny_transformer"].io is not None and ZOO["tiny_transformer"].io.input_names == ["input_ids", "attention_mask"]


def test_resnet18_224_cli_build_ort_and_ov(tmp_path: Path) -> None:
    """ResNet-18 at 1x3x224x224 from the CLI: FP32 builds match torch within 1e-4 on both CPU targets."""
    res = run_cli("import", "userzoo:resnet18_calibrated", "--input", "input:batch,3,224,224:float32",
                  "--out", "runs/r18", cwd=tmp_path)
    assert res.code == 0, res.err
    for target in ("ort", "ov"):
        res = run_cli("build", "runs/r18", "--target", target, "--trust-code", "--json", cwd=tmp_path)
        assert res.code == 0, res.err
        parity = json.loads(res.out)["metrics"]["parity"]
        assert parity["max_error"] <= 1e-4 and parity["reference"] == "torch"
    art = Artifact.load(tmp_path / "runs/r18")
    assert art.manifest.metrics["macs"] > 1.5e9  # ResNet-18 is ~1.8 GMACs at 224


def test_tiny_transformer_cli_build(tmp_path: Path) -> None:
    res = run_cli("import", "tiny_transformer", "--out", "runs/tt", cwd=tmp_path)
    assert res.code == 0, res.err
    for target in ("ort", "ov"):
        res = run_cli("build", "runs/tt", "--target", target, "--json", cwd=tmp_path)
        assert res.code == 0, res.err
        assert json.loads(res.out)["metrics"]["parity"]["max_error"] <= 1e-4
    art = Artifact.load(tmp_path / "runs/tt")
    assert art.io.task == "embedding" and np.isfinite(art.manifest.metrics["onnx_parity"]["embedding"])


def test_macs_count_convolution_subclasses() -> None:
    """A user's Conv2d/Linear subclass (EfficientNet's "same"-padding conv) counts like its base:
    Torch-Pruning's counter alone looks modules up by exact type and gave it 0 MACs."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from edgekit.torchutil import count_ops

    class SameConv(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    class Head(nn.Linear):
        pass

    def net(conv: type[nn.Conv2d], head: type[nn.Linear]) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(conv(3, 8, 3, padding=1 if conv is nn.Conv2d else 0), nn.ReLU(), nn.Flatten(), head(8 * 16 * 16, 10))

    class Named(nn.Module):
        def __init__(self, body: nn.Module) -> None:
            super().__init__()
            self.body = body

        def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - the IO spec's input name
            return self.body(input)

    x = {"input": torch.rand(1, 3, 16, 16)}
    plain, sub = count_ops(Named(net(nn.Conv2d, nn.Linear)), x), count_ops(Named(net(SameConv, Head)), x)
    assert plain[0] > 8 * 27 * 16 * 16 and sub == plain
