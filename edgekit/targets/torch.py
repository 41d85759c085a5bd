"""PyTorch eager: the FP32 baseline every comparison starts from (CPU, or CUDA where present)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edgekit.errors import MissingExtraError, TargetUnavailableError


class TorchRuntime:
    """Eager inference of a module; on CUDA it synchronises so timings are honest."""

    def __init__(self, module: Any, output_names: list[str], device: str = "cpu", threads: int | None = None,
                 precision: str = "fp32") -> None:
        import torch

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.module = module.to(self.device).eval()
        if precision != "fp32":
            self.module = self.module.to(self.dtype)
        self.output_names = output_names

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from edgekit.torchutil import call, flatten_outputs

        torch = self.torch
        with torch.inference_mode():
            tensors = {}
            for name, v in inputs.items():
                t = torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
                tensors[name] = t.to(self.dtype) if t.is_floating_point() else t
            outs = flatten_outputs(call(self.module, tensors))
            if self.device.type == "cuda":
                torch.cuda.synchronize()
        return {n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs, strict=False)}


class TorchTarget:
    name: ClassVar[str] = "torch"

    def describe(self) -> str:
        import torch

        return f"torch {torch.__version__}; CUDA {'yes' if torch.cuda.is_available() else 'no'}"

    def check(self, device: str) -> None:
        try:
            import torch
        except ImportError:
            raise MissingExtraError("torch", "full", "the torch baseline") from None
        if device == "cuda" and not torch.cuda.is_available():
            raise TargetUnavailableError("torch sees no CUDA GPU here", hint="install a CUDA build of torch on a GPU machine")
