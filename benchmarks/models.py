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
