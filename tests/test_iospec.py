"""The IO spec: what the --input option, an --io-spec file and a manifest may say, and the shapes and
synthetic inputs made from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import BadInputError
from edgekit.iospec import InputSpec, IOSpec, load_io_spec_file, normalise_image, parse_input_option


def test_input_option_with_ranges_and_dtype() -> None:
    spec = parse_input_option("input_ids:batch,seq=1..128..512:int64")
    assert spec.name == "input_ids" and spec.dtype == "int64" and spec.dims == ["batch", "seq"]
    assert spec.ranges == {"seq": [1, 128, 512]}
    assert parse_input_option("x:batch,seq=1..64").ranges == {"seq": [1, 64, 64]}  # MIN..MAX: opt = max
    assert parse_input_option("input:batch,3,224,224").dims == ["batch", 3, 224, 224]


@pytest.mark.parametrize(("text", "says"), [
    ("input", "is not NAME:DIMS[:DTYPE]"),
    ("input:batch,3:complex64", "unknown dtype 'complex64'"),
    ("input:batch,-3", "bad dimension '-3'"),
    ("input:batch,seq=1..x", "is not MIN..OPT..MAX"),
    ("input:batch,seq=9..4..2", "MIN..OPT..MAX"),
])
def test_bad_input_options_are_one_line_errors(text: str, says: str) -> None:
    with pytest.raises(BadInputError) as info:
        parse_input_option(text)
    assert says in info.value.message and "\n" not in info.value.message


def test_shape_uses_the_batch_then_the_range_opt_then_seq() -> None:
    spec = InputSpec(name="ids", dims=["batch", "seq", 8], ranges={"seq": [1, 32, 64]})
    assert spec.shape(4) == [4, 32, 8]
    assert InputSpec(name="ids", dims=["batch", "seq"]).shape(2, seq=7) == [2, 7]
    assert spec.axis_ranges() == [None, (1, 32, 64), None]


def test_inputs_sharing_a_dim_share_its_range() -> None:
    a = InputSpec(name="ids", dims=["batch", "seq"], ranges={"seq": [1, 16, 32]})
    b = InputSpec(name="mask", dims=["batch", "seq"], ranges={"seq": [1, 8, 32]})
    with pytest.raises(ValueError, match="two ranges"):
        IOSpec(inputs=[a, b])


def test_synthetic_inputs_fit_the_spec() -> None:
    spec = IOSpec(inputs=[InputSpec(name="pixels", dims=["batch", 3, 4, 4]),
                          InputSpec(name="input_ids", dtype="int64", dims=["batch", "seq"]),
                          InputSpec(name="attention_mask", dtype="int64", dims=["batch", "seq"])])
    x = spec.sample_inputs(2)
    assert x["pixels"].shape == (2, 3, 4, 4) and x["pixels"].dtype == np.float32
    assert x["input_ids"].shape == (2, 16) and x["input_ids"].dtype == np.int64 and x["input_ids"].max() < 100
    assert (x["attention_mask"] == 1).all()
    assert np.array_equal(spec.sample_inputs(2)["pixels"], x["pixels"])  # seeded


def test_io_spec_file_errors_are_one_line(tmp_path: Path) -> None:
    good = tmp_path / "io.json"
    good.write_text(json.dumps({"inputs": [{"name": "x", "dims": ["batch", 8]}], "task": "embedding"}))
    assert load_io_spec_file(good).task == "embedding"
    for name, text, says in (("missing.json", None, "does not exist"), ("bad.json", "{", "not a valid IO spec"),
                             ("extra.json", json.dumps({"inputs": [{"name": "x", "dims": [1], "evil": 1}]}), "not a valid IO spec"),
                             ("huge.json", json.dumps({"inputs": [{"name": "x", "dims": [1 << 30]}]}), "not a valid IO spec")):
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(BadInputError) as info:
            load_io_spec_file(path)
        assert says in info.value.message and "\n" not in info.value.message


def test_normalise_image_by_channel() -> None:
    spec = InputSpec(name="x", dims=["batch", 3, 1, 1], mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 1.0])
    x = np.ones((1, 3, 1, 1), np.float32)
    assert normalise_image(x, spec).ravel().tolist() == [1.0, 3.0, 1.0]
    assert normalise_image(x, InputSpec(name="x", dims=["batch", 3, 1, 1])).dtype == np.float32
