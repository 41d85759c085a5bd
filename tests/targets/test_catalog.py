"""The target catalog on its own: names and aliases, precision and device checks, what each entry
says it needs (the pip extra, the modules) agreeing with pyproject and the code it names."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import tomllib

from edgekit.errors import BadInputError
from edgekit.targets.catalog import (
    ALIASES,
    CATALOG,
    PRECISIONS,
    check_precision,
    load_target,
    resolve,
)

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())


def test_names_and_aliases_resolve_case_and_space_insensitively() -> None:
    assert resolve(" TRT ").name == "tensorrt" and resolve("ov").name == "openvino" and resolve("onnx").name == "onnxruntime"
    assert len(ALIASES) == sum(1 + len(i.aliases) for i in CATALOG.values())  # no alias names two targets


def test_an_unknown_target_gets_a_did_you_mean() -> None:
    with pytest.raises(BadInputError) as info:
        resolve("openvnio")
    assert "did you mean 'openvino'" in info.value.message and "targets: torch" in (info.value.hint or "")


def test_precision_and_device_checks() -> None:
    ov = CATALOG["openvino"]
    assert check_precision(ov, "int8") == "cpu"  # the first device is the default
    assert check_precision(ov, "fp16", "GPU") == "gpu"
    for precision, device, says in (("fp16", None, "cannot run fp16 on cpu"), ("int4", None, "unknown precision 'int4'"),
                                    ("int8", "tpu", "has no device 'tpu'")):
        with pytest.raises(BadInputError, match=says):
            check_precision(ov, precision, device)
    assert CATALOG["tensorrt"].precisions == ("fp32", "fp16", "bf16", "int8")


@pytest.mark.parametrize("name", list(CATALOG))
def test_each_entry_agrees_with_pyproject_and_its_code(name: str) -> None:
    info = CATALOG[name]
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert info.extra in extras, f"{name}: pip extra '{info.extra}' is not in pyproject"
    wanted = {m.replace("-", "_").split(">")[0].split("<")[0].split("=")[0].strip().lower() for m in extras[info.extra]}
    assert any(m in wanted or m == "torch" for m in info.modules), f"{name}: no module it needs is in its extra"
    assert set(info.devices) and all(p in PRECISIONS for ps in info.devices.values() for p in ps)
    module, cls = info.implementation.split(":")
    assert importlib.util.find_spec(module) is not None and cls.endswith("Target")
    assert info.compiles == (name != "torch")  # the one named exception: the eager baseline builds nothing
    assert set(info.build_options) <= {"shape", "hint", "placement"}


def test_the_baseline_is_not_a_build_target() -> None:
    with pytest.raises(BadInputError, match="eager baseline"):
        load_target(CATALOG["torch"])
