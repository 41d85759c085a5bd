"""Factories for the latency sections: edgekit's zoo CNNs with real BatchNorm statistics.

A freshly built network has BatchNorm running statistics of 0 / 1, so a deep net's activations are
tiny or huge and INT8 calibration and parity checks say little. These factories set the statistics
from one forward pass in train mode on random images from the same distribution as the benchmark's
data source (uniform in [0, 1]), seeded, so every process rebuilds the same model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

RESNET18 = "benchmarks.models:resnet18_bn"
MOBILENET = "benchmarks.models:mobilenet_v3_bn"
EFFICIENTNET = "benchmarks.models:efficientnet_b0_bn"
VIT = "benchmarks.models:vit_tiny"


def calibrate_bn(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: the statistics of exactly this batch
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.rand(*shape))
    return model.eval()


def _bn_batch(size: int) -> tuple[int, int, int, int]:
    """8 images at 224x224; more at small sizes, where the last stages see only a few pixels."""
    return (8 if size >= 128 else 64, 3, size, size)


def resnet18_bn(size: int = 224, width: int = 64, num_classes: int = 1000) -> nn.Module:
    """edgekit's zoo ResNet-18 (``width`` channels in the first stage), BatchNorm set at ``size``."""
    from edgekit.models.zoo import ResNet18

    torch.manual_seed(0)
    return calibrate_bn(ResNet18(num_classes=num_classes, width=width), _bn_batch(size))


def mobilenet_v3_bn(size: int = 224, mode: str = "large", num_classes: int = 1000) -> nn.Module:
    """edgekit's zoo MobileNetV3 (large or small), BatchNorm set at ``size``."""
    from edgekit.models.zoo import MobileNetV3

    torch.manual_seed(0)
    return calibrate_bn(MobileNetV3(num_classes=num_classes, mode=mode), _bn_batch(size))


class _MBConv(nn.Module):
    """EfficientNet's block: 1x1 expand, depthwise kxk, squeeze-excite (SiLU, sigmoid gate on a
    quarter of the input's channels), 1x1 project; SiLU throughout."""

    def __init__(self, cin: int, expand: int, k: int, stride: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU()]
        layers += [nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.SiLU()]
        self.pre = nn.Sequential(*layers)
        squeeze = max(1, cin // 4)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, squeeze, 1), nn.SiLU(), nn.Conv2d(squeeze, mid, 1),
                                nn.Sigmoid())
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        out = self.project(h * self.se(h))
        return x + out if self.residual else out  # type: ignore[no-any-return]


# (expansion, kernel, stride, out channels, repeats) per stage, as in EfficientNet-B0's paper
_B0 = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
       (6, 3, 1, 320, 1))


class EfficientNetB0(nn.Module):
    """EfficientNet-B0's architecture (5.3 M parameters, 0.39 GMACs at 224), built in code."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU()]
        cin = 32
        for expand, k, stride, cout, repeats in _B0:
            for i in range(repeats):
                layers.append(_MBConv(cin, expand, k, stride if i == 0 else 1, cout))
                cin = cout
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.SiLU(), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))  # type: ignore[no-any-return]


def efficientnet_b0_bn(size: int = 224, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-B0, BatchNorm set at ``size``."""
    torch.manual_seed(0)
    return calibrate_bn(EfficientNetB0(num_classes), _bn_batch(size))


class _VitBlock(nn.Module):
    """A pre-norm ViT encoder block on edgekit's zoo attention (Linear q/k/v/out, no mask)."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        from edgekit.models.zoo import SelfAttention

        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads)
        self.intermediate, self.output = nn.Linear(dim, mlp), nn.Linear(mlp, dim)
        self.register_buffer("no_mask", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), self.no_mask)
        return x + self.output(torch.nn.functional.gelu(self.intermediate(self.norm2(x))))  # type: ignore[no-any-return]


class VitTiny(nn.Module):
    """ViT-Tiny/16's architecture (dim 192, 12 blocks, 3 heads, MLP 768; 5.7 M parameters), built in code."""

    def __init__(self, size: int = 224, patch: int = 16, dim: int = 192, depth: int = 12, heads: int = 3, mlp: int = 768,
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.positions = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(_VitBlock(dim, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1) + self.positions
        return self.head(self.norm(self.blocks(tokens))[:, 0])  # type: ignore[no-any-return]


def vit_tiny(size: int = 224, num_classes: int = 1000) -> nn.Module:
    """ViT-Tiny/16 with seeded random weights (no BatchNorm: LayerNorm keeps activations in scale)."""
    torch.manual_seed(0)
    return VitTiny(size=size, num_classes=num_classes).eval()


def write_images(path: Path, size: int, train: int = 300, val: int = 16, test: int = 16, seed: int = 0) -> Path:
    """An npz data source of random RGB images (uint8, which edgekit scales to [0, 1]) with a
    split array: ``train`` for calibration, ``val`` for the quantize step's check, ``test`` for
    parity and timing inputs."""
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    n = train + val + test
    x = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    split = np.repeat(np.array([0, 1, 2], dtype=np.int64), [train, val, test])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, x=x, split=split)
    tmp.replace(path)
    return path
