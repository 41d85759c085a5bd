"""A stand-in for a user's own package: factories and a data source named as package.module:attr."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TwoInput(nn.Module):
    """Two named inputs, two outputs: a model the IO spec has to describe by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.a(left) + self.b(right))
        return self.head(h), h


def pretrained_cnn(num_classes: int = 10) -> nn.Module:
    """Builds a model and 'loads pretrained weights' (seeded, so every process gets the same ones)."""
    from edgekit.models.zoo import SmallCNN

    torch.manual_seed(1234)
    model = SmallCNN(num_classes=num_classes, in_channels=1, width=8)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def two_input() -> nn.Module:
    torch.manual_seed(7)
    return TwoInput().eval()


class MaskedMean(nn.Module):
    """HF-shaped: an optional parameter sits between input_ids and attention_mask, and swapped ids and
    mask (both small integers) would run without any error."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(100, 4)
        self.types = nn.Embedding(2, 4)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.tokens(input_ids)
        if token_type_ids is not None:
            h = h + self.types(token_type_ids)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        m = mask.to(h.dtype).unsqueeze(-1)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


def masked_mean() -> nn.Module:
    torch.manual_seed(3)
    return MaskedMean().eval()


def not_a_module() -> int:
    return 3


def blobs(split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A data source: 3 Gaussian blobs in 6-d, seeded per split."""
    rng = np.random.default_rng({"train": 0, "val": 1, "test": 2}[split])
    y = rng.integers(0, 3, size=300)
    x = rng.normal(size=(300, 6)).astype(np.float32) + np.eye(3, 6, dtype=np.float32)[y] * 3
    return {"input": x}, y


def calibrate_bn(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Set BatchNorm statistics from a forward pass on random data, so activations have a real
    scale (with default statistics a deep BN net's outputs are near zero and parity says little)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.rand(*shape) * 2 - 1)
    return model.eval()


def resnet18_calibrated(num_classes: int = 1000) -> nn.Module:
    from edgekit.models.zoo import ResNet18

    torch.manual_seed(0)
    return calibrate_bn(ResNet18(num_classes=num_classes), (8, 3, 224, 224))


class ConcatGroupedNet(nn.Module):
    """Concatenation of two branches, a grouped conv (groups=2) and a depthwise conv."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.left = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=2), nn.BatchNorm2d(32), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU(),
                                   nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.merge = nn.Sequential(nn.Conv2d(64, 64, 1), nn.BatchNorm2d(64), nn.ReLU())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.merge(torch.cat([self.left(x), self.right(x)], dim=1))
        return self.fc(x.mean((2, 3)))


class Rigid(nn.Module):
    """A layer with a hard-coded channel count: structural pruning cannot adapt it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 32, -1).mean(-1)


class RigidNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.rigid = Rigid()
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rigid(self.conv2(self.conv(x))))


def concat_grouped(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return ConcatGroupedNet(num_classes, in_channels)


def rigid(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return RigidNet(num_classes, in_channels)


def tokens(split: str) -> tuple[dict[str, np.ndarray], None]:
    """Unlabelled token batches for the tiny transformer: ids with a padded tail (mask 0)."""
    rng = np.random.default_rng({"train": 10, "val": 11, "test": 12}[split])
    n, t = 200, 32
    ids = rng.integers(1, 1000, size=(n, t)).astype(np.int64)
    lengths = rng.integers(8, t + 1, size=n)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}, None


class Noisy(nn.Module):
    """Adds fresh noise on every call: its ONNX export cannot match torch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + torch.rand_like(self.fc(x))


def noisy() -> nn.Module:
    return Noisy()


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand (reads the signed sum of the last block), depthwise 3x3, linear 1x1."""

    def __init__(self, channels: int, expand: int = 4) -> None:
        super().__init__()
        hidden = channels * expand
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def mbnet(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> nn.Module:
    """A small depthwise-separable CNN with linear bottlenecks (where INT8 kernels can saturate)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU6(),
        InvertedResidual(width), InvertedResidual(width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
    )
