"""Model specs: resolve a zoo name, ``package.module:factory`` or ``torchvision:<name>`` to a module.

A manifest records how to rebuild a module (``ModelSpec``), never a pickle. A factory named in a
manifest is code, so it is imported only when it is edgekit's own, was named by the user in this
command, or ``--trust-code`` was given: ``edgekit.trust`` holds that rule (DESIGN.md §2).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import trust
from edgekit.artifact import ModelSpec
from edgekit.errors import ModelError, did_you_mean, require
from edgekit.iospec import InputSpec, IOSpec, OutputSpec

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ZooEntry:
    cls: str  # class name in edgekit.models.zoo (imported lazily: no torch at --help time)
    summary: str
    io: IOSpec | None = None  # fixed IO for models not tied to a data set
    data_kwargs: bool = True  # takes num_classes / in_channels from the data


_IMG224 = IOSpec(inputs=[InputSpec(name="input", dims=["batch", 3, 224, 224], layout="NCHW",
                                   mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
_TOKENS = IOSpec(
    inputs=[InputSpec(name="input_ids", dtype="int64", dims=["batch", "seq"]),
            InputSpec(name="attention_mask", dtype="int64", dims=["batch", "seq"])],
    outputs=[OutputSpec(name="embedding")],
    task="embedding",
)

ZOO: dict[str, ZooEntry] = {
    "small_cnn": ZooEntry("SmallCNN", "small residual CNN for small images (the default)"),
    "mlp": ZooEntry("MLP", "two-hidden-layer MLP on flattened pixels"),
    "resnet18": ZooEntry("ResNet18", "ResNet-18-shaped CNN, 224x224", io=_IMG224),
    "mobilenet_v3": ZooEntry("MobileNetV3", "MobileNetV3-Large-shaped CNN, 224x224", io=_IMG224),
    "tiny_transformer": ZooEntry("TinyTransformer", "BERT-shaped encoder, input_ids + attention_mask",
                                 io=_TOKENS, data_kwargs=False),
}

def trust_all(flag: bool = True) -> None:
    """Kept for scripts: ``edgekit.trust.trust_all``."""
    trust.trust_all(flag)


def trust_module(module: str) -> None:
    """Vouch for ``module`` as if it were named in this command (``edgekit.trust.vouch``)."""
    trust.vouch(module)


def parse_source(source: str) -> tuple[str, str | None]:
    """('zoo'|'torchvision'|'factory', detail) for a model source string, with clear errors."""
    if source.startswith("torchvision:"):
        return "torchvision", source.split(":", 1)[1]
    if ":" in source:
        if not trust.is_ref(source):
            raise ModelError(
                f"'{source}' is not a valid factory path",
                hint="write package.module:function, e.g. mypkg.models:build_net",
            )
        return "factory", source
    if source in ZOO:
        return "zoo", source
    if source.endswith(".onnx"):
        raise ModelError(f"'{source}' is an ONNX file", hint="use `edgekit import model.onnx` for ONNX models")
    raise ModelError(
        f"unknown model '{source}'{did_you_mean(source, ZOO)}",
        hint=f"built-in models: {', '.join(ZOO)}; or give package.module:factory",
    )


def factory_kwargs(source: str, io: IOSpec | None, given: dict[str, Any]) -> dict[str, Any]:
    """The kwargs a model is built with: the user's, plus num_classes/in_channels from the data."""
    kwargs = dict(given)
    kind, _ = parse_source(source)
    if io is None or io.task != "classification" or not io.labels:
        return kwargs
    if kind == "zoo" and not ZOO[source].data_kwargs:
        return kwargs
    accepted: set[str] | None = None
    if kind == "zoo":
        accepted = {"num_classes", "in_channels", "in_features"}
    elif kind == "factory":
        try:
            sig = inspect.signature(trust.load(source, "model factory", ModelError))
            accepted = set(sig.parameters)
        except (TypeError, ValueError):
            accepted = set()
    else:
        accepted = {"num_classes"}
    dims = io.inputs[0].dims
    if "num_classes" in accepted:
        kwargs.setdefault("num_classes", len(io.labels))
    if "in_channels" in accepted and len(dims) == 4 and isinstance(dims[1], int):
        kwargs.setdefault("in_channels", dims[1])
    if source == "mlp" and all(isinstance(d, int) for d in dims[1:]):
        n = 1
        for d in dims[1:]:
            n *= int(d)
        kwargs.setdefault("in_features", n)
    return kwargs


def create(spec: ModelSpec) -> nn.Module:
    """A fresh (untrained) module for ``spec``, before any pruning structure is applied."""
    require("torch", "full", "building torch models")
    from torch import nn

    kind, detail = parse_source(spec.source)
    try:
        if kind == "zoo":
            from edgekit.models import zoo

            model = getattr(zoo, ZOO[spec.source].cls)(**spec.kwargs)
        elif kind == "torchvision":
            if importlib.util.find_spec("torchvision") is None:
                raise ModelError("torchvision is not installed", hint="pip install torchvision (matching your torch)")
            import torchvision

            model = torchvision.models.get_model(str(detail), **spec.kwargs)
        else:
            model = trust.load(spec.source, "model factory", ModelError)(**spec.kwargs)
    except TypeError as exc:
        raise ModelError(f"cannot build '{spec.source}' with {spec.kwargs}: {str(exc).splitlines()[0]}") from None
    except (RuntimeError, MemoryError, ValueError, OverflowError) as exc:  # e.g. a width that cannot be allocated
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot build '{spec.source}' with {spec.kwargs}: {first[:200]}",
                         hint="check the model's keyword arguments (--model-kwargs, or the manifest's model.kwargs)") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"'{spec.source}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def default_io(source: str) -> IOSpec | None:
    kind, _ = parse_source(source)
    return ZOO[source].io if kind == "zoo" else None


def save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_model

    save_model(model, str(path))


def load_weights(model: nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, RuntimeError, OSError) as exc:
        text = str(exc)
        shapes = re.findall(r"size mismatch for ([\w.]+)", text)
        if shapes:
            more = f" and {len(shapes) - 1} more" if len(shapes) > 1 else ""
            raise ModelError(f"weights {path} do not fit the model: tensor shapes differ for {shapes[0]}{more}",
                             hint="the model's kwargs (e.g. width) do not match the ones the weights were saved with") from None
        first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().endswith(":")), type(exc).__name__)
        raise ModelError(f"cannot load weights {path} into the model ({first[:200]})") from None
    if missing or unexpected:
        raise ModelError(
            f"weights {path} do not fit the model: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
        )


def build(spec: ModelSpec, io: IOSpec, weights: Path | None = None) -> nn.Module:
    """Rebuild a module: factory -> pruning structure replayed -> safetensors weights. In eval mode."""
    model = create(spec)
    if spec.pruning:
        from edgekit.models.structure import apply_structure

        apply_structure(model, spec.pruning, io)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()
