"""The IO spec: what goes into a model and what comes out (DESIGN.md §2).

Data sources return model-ready arrays. ``mean``/``std`` describe how an image scaled to [0, 1]
becomes the model input, so ``edgekit predict photo.png`` can do the same on a device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekit.errors import BadInputError

Dim = int | str  # an int, or a symbolic name such as "batch" or "seq"
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "int8", "bool")
Task = Literal["classification", "embedding", "regression"]


MAX_DIM = 1 << 20  # no real input axis is longer; a larger fixed dim in a manifest is damage, not a model


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=200)
    dtype: str = "float32"
    dims: list[Dim] = Field(max_length=8)
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: str | None = None  # e.g. "NCHW" for images; predict resizes image files to it
    # a named dim's [min, opt, max]: TensorRT's optimization profile, and the size synthetic inputs use (opt)
    ranges: dict[str, list[int]] | None = None

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"unknown dtype '{v}' (one of {', '.join(DTYPES)})")
        return v

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: list[Dim]) -> list[Dim]:
        for d in v:
            if isinstance(d, int) and not 1 <= d <= MAX_DIM:
                raise ValueError(f"dimension {d} is out of range (1..{MAX_DIM}, or a name such as 'batch')")
            if isinstance(d, str) and not d.isidentifier():
                raise ValueError(f"dimension name '{d}' is not a plain name")
        return v

    @field_validator("std")
    @classmethod
    def _std(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(s <= 0 for s in v):
            raise ValueError("std values must be positive")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> InputSpec:
        for name, r in (self.ranges or {}).items():
            if name not in self.dims:
                raise ValueError(f"range for '{name}', which is not a named dim of input '{self.name}'")
            if len(r) != 3 or not 1 <= r[0] <= r[1] <= r[2] <= MAX_DIM:
                raise ValueError(f"range of '{name}' must be MIN..OPT..MAX with 1 <= MIN <= OPT <= MAX <= {MAX_DIM}")
        return self

    def axis_ranges(self) -> list[tuple[int, int, int] | None]:
        """Per axis: the (min, opt, max) the spec gives for it, else None."""
        ranges = self.ranges or {}
        return [(r[0], r[1], r[2]) if isinstance(d, str) and (r := ranges.get(d)) else None for d in self.dims]

    def shape(self, batch: int, seq: int = 16) -> list[int]:
        """Concrete shape for a batch size; other symbolic dims get their range's opt, else ``seq``."""
        out = []
        for i, (d, r) in enumerate(zip(self.dims, self.axis_ranges(), strict=True)):
            if isinstance(d, int):
                out.append(d)
            elif i == 0 or d == "batch":
                out.append(batch)
            else:
                out.append(r[1] if r else seq)
        return out


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class IOSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[InputSpec] = Field(min_length=1)
    outputs: list[OutputSpec] = Field(default_factory=lambda: [OutputSpec(name="output")])
    task: Task = "classification"
    labels: list[str] | None = None

    @model_validator(mode="after")
    def _same_ranges(self) -> IOSpec:
        seen: dict[str, list[int]] = {}
        for spec in self.inputs:
            for name, r in (spec.ranges or {}).items():
                if seen.setdefault(name, r) != r:
                    raise ValueError(f"dim '{name}' has two ranges ({seen[name]} and {r}); inputs that share it share one")
        return self

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def sample_inputs(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Synthetic inputs that fit the spec (for models shipped without data)."""
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            shape = spec.shape(batch)
            if spec.dtype.startswith("float"):
                out[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif spec.dtype == "bool":
                out[spec.name] = np.ones(shape, dtype=bool)
            elif "mask" in spec.name:
                out[spec.name] = np.ones(shape, dtype=spec.dtype)
            else:
                out[spec.name] = rng.integers(0, 100, size=shape).astype(spec.dtype)
        return out


def _range(text: str, option: str) -> list[int]:
    parts = text.split("..")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise BadInputError(f"--input '{option}': range '{text}' is not MIN..OPT..MAX or MIN..MAX",
                            hint="for example --input input_ids:batch,seq=1..128..512:int64")
    values = [int(p) for p in parts]
    return values if len(values) == 3 else [values[0], values[1], values[1]]


def parse_input_option(text: str) -> InputSpec:
    """``NAME:DIMS:DTYPE`` such as ``input:batch,3,224,224:float32`` or ``input_ids:batch,seq:int64``;
    a named dim may carry its range, ``seq=1..128..512`` (min..opt..max; ``1..512`` means opt = max)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise BadInputError(
            f"--input '{text}' is not NAME:DIMS[:DTYPE]",
            hint="for example --input input:batch,3,224,224:float32",
        )
    name, dims_text = parts[0], parts[1]
    dtype = parts[2] if len(parts) == 3 else "float32"
    if dtype not in DTYPES:
        raise BadInputError(f"--input '{text}': unknown dtype '{dtype}'", hint=f"one of {', '.join(DTYPES)}")
    dims: list[Dim] = []
    ranges: dict[str, list[int]] = {}
    for d in dims_text.split(","):
        d = d.strip()
        if "=" in d:
            d, span = (t.strip() for t in d.split("=", 1))
            if d.isidentifier():
                ranges[d] = _range(span, text)
        if d.isdigit() and int(d) > 0:
            dims.append(int(d))
        elif d.isidentifier():
            dims.append(d)
        else:
            raise BadInputError(f"--input '{text}': bad dimension '{d}'", hint="dims are positive ints or names like batch, seq")
    try:
        return InputSpec(name=name, dims=dims, dtype=dtype, ranges=ranges or None)
    except ValidationError as exc:
        raise BadInputError(f"--input '{text}': {exc.errors()[0]['msg'].removeprefix('Value error, ')}",
                            hint="for example --input input:batch,3,224,224:float32") from None


def load_io_spec_file(path: str | Path) -> IOSpec:
    try:
        return IOSpec.model_validate(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise BadInputError(f"--io-spec file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read --io-spec file '{path}' ({type(exc).__name__})", hint="give a JSON text file") from None
    except RecursionError:
        raise BadInputError(f"--io-spec file '{path}' nests too deeply to be an IO spec") from None
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"--io-spec file '{path}' is not a valid IO spec: {first}") from None


def normalise_image(x: np.ndarray, spec: InputSpec) -> np.ndarray:
    """[0, 1]-scaled NCHW floats -> model input, by the spec's mean/std (one per channel)."""
    if spec.mean is None and spec.std is None:
        return x.astype(np.float32)
    channels = x.shape[1] if x.ndim == 4 else 1
    mean = np.asarray(spec.mean or [0.0], dtype=np.float32)
    std = np.asarray(spec.std or [1.0], dtype=np.float32)
    shape = (1, channels, 1, 1) if x.ndim == 4 else (1,)
    mean = np.broadcast_to(mean, (channels,)).reshape(shape) if mean.size in (1, channels) else mean
    std = np.broadcast_to(std, (channels,)).reshape(shape) if std.size in (1, channels) else std
    return ((x - mean) / std).astype(np.float32)
