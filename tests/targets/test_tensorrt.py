"""The TensorRT target, as far as a machine without TensorRT or a GPU can check it.

mypy --strict against the patched tensorrt-stubs makes a misspelt TensorRT method or enum fail the
suite; the CLI fails at check() with the install command; the CPU-visible helpers are tested.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.artifact import Artifact
from edgekit.targets.base import Shape
from edgekit.targets.tensorrt import _profile_shapes

from ..conftest import ROOT, assert_user_error, copy_artifact, run_cli

TRT_SOURCE = ROOT / "edgekit" / "targets" / "tensorrt.py"


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)], cwd=ROOT,
                          capture_output=True, text=True, check=False)


def test_tensorrt_target_passes_mypy_strict() -> None:
    res = _mypy(TRT_SOURCE)
    assert res.returncode == 0, res.stdout


@pytest.mark.parametrize(
    ("real", "typo", "message"),
    [
        ("build_serialized_network", "build_serialised_network", "has no attribute"),
        ("trt.BuilderFlag.INT8", "trt.BuilderFlag.INT9", "has no attribute"),
        ("execute_async_v3", "execute_async_v4", "has no attribute"),
        ("cudaMemcpyAsync", "cudaMemcpyAsnc", "has no attribute"),
    ],
)
def test_mypy_catches_a_misspelt_tensorrt_api(tmp_path: Path, real: str, typo: str, message: str) -> None:
    """So the check cannot pass against Any: a misspelling must fail."""
    source = TRT_SOURCE.read_text()
    assert real in source
    bad = tmp_path / "tensorrt_target_typo.py"
    bad.write_text(source.replace(real, typo, 1))
    res = _mypy(bad)
    assert res.returncode != 0 and message in res.stdout, res.stdout


def test_build_tensorrt_here_is_exit_2_with_install_hint(tmp_path: Path, digits_ckpt: Artifact) -> None:
    res = run_cli("build", str(digits_ckpt.path), "--target", "trt", cwd=tmp_path)
    assert_user_error(res, "TensorRT is not installed")
    assert "pip install 'edgekit[tensorrt]'" in res.err


def test_stub_only_tensorrt_package_is_not_mistaken_for_tensorrt(tmp_path: Path, digits_ckpt: Artifact) -> None:
    """tensorrt-stubs installs an importable but empty `tensorrt`: check() must see through it."""
    fake = tmp_path / "site" / "tensorrt"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    res = run_cli("build", str(digits_ckpt.path), "--target", "tensorrt", cwd=tmp_path,
                  PYTHONPATH=f"{tmp_path / 'site'}:{ROOT}")
    assert_user_error(res, "has no runtime")


def test_profile_defaults_cover_dynamic_dims() -> None:
    shape = _profile_shapes("input", (-1, 3, 224, 224), {}, "latency")
    assert shape == Shape((1, 3, 224, 224), (1, 3, 224, 224), (32, 3, 224, 224))
    tokens = _profile_shapes("input_ids", (-1, -1), {}, "throughput")
    assert tokens.min == (1, 1) and tokens.opt == (8, 128) and tokens.max == (32, 512)
    given = Shape((1, 3), (4, 3), (8, 3))
    assert _profile_shapes("x", (-1, 3), {"x": given}, "latency") == given


def test_profile_takes_dynamic_dims_from_the_io_spec(digits_ckpt: Artifact, tmp_path: Path) -> None:
    """A text model's seq range comes from its IO spec (--input input_ids:batch,seq=8..64..256:int64),
    not a fixed 1/128/512 that a 512-token engine would waste or a 1024-token input would overflow."""
    from edgekit.artifact import Artifact as Art
    from edgekit.build import plan
    from edgekit.iospec import IOSpec, parse_input_option

    ids, mask = (parse_input_option(f"{n}:batch,seq=8..64..256:int64") for n in ("input_ids", "attention_mask"))
    assert ids.ranges == {"seq": [8, 64, 256]} and ids.axis_ranges() == [None, (8, 64, 256)]
    io = IOSpec(inputs=[ids, mask])
    assert io.sample_inputs(2)["input_ids"].shape == (2, 64)  # synthetic inputs use opt: inside the profile
    got = _profile_shapes("input_ids", (-1, -1), {}, "latency", 4, ids.axis_ranges())
    assert got == Shape((1, 8), (1, 64), (32, 256))
    batched = parse_input_option("x:batch=1..4..16,seq=8..64..256:int64")  # a ranged batch still covers the bench's
    assert _profile_shapes("x", (-1, -1), {}, "latency", 64, batched.axis_ranges()) == Shape((1, 8), (4, 64), (64, 256))
    # through the build plan: the artifact's IO spec reaches the target's options (and the cache key)
    art_dir = copy_artifact(digits_ckpt.path, tmp_path / "d")
    art = Art.load(art_dir)
    image = parse_input_option("input:batch,1,h=8..8..16,8:float32")
    art.manifest.io.inputs[0] = image
    p = plan(art, "tensorrt", "fp16")
    assert p.opts.ranges == {"input": [None, None, (8, 8, 16), None]}
    assert plan(art, "openvino", "fp32").opts.ranges == {}  # takes any shape: no profile


@pytest.mark.parametrize(("text", "needle"), [
    ("input_ids:batch,seq=1..x:int64", "is not MIN..OPT..MAX"),
    ("input_ids:batch,seq=64..8..256:int64", "1 <= MIN <= OPT <= MAX"),
    ("input_ids:batch,seq=1..2..3..4:int64", "is not MIN..OPT..MAX"),
])
def test_bad_dim_ranges_are_one_line_errors(text: str, needle: str) -> None:
    from edgekit.errors import BadInputError
    from edgekit.iospec import parse_input_option

    with pytest.raises(BadInputError, match=needle):
        parse_input_option(text)


def test_inputs_sharing_a_dim_share_its_range() -> None:
    from pydantic import ValidationError

    from edgekit.iospec import IOSpec, parse_input_option

    with pytest.raises(ValidationError, match="has two ranges"):
        IOSpec(inputs=[parse_input_option("a:batch,seq=1..8..16:int64"), parse_input_option("b:batch,seq=1..8..32:int64")])


def test_profile_covers_the_largest_batch_the_bench_runs(digits_ckpt: Artifact) -> None:
    """edgekit demo benches batch 256: the engine's profile must reach it (it stopped at 32)."""
    from edgekit.build import plan

    assert _profile_shapes("input", (-1, 1, 8, 8), {}, "latency", 256).max == (256, 1, 8, 8)
    assert _profile_shapes("input", (-1, 1, 8, 8), {}, "throughput", 4).max == (32, 1, 8, 8)
    assert plan(digits_ckpt, "tensorrt", "fp16", max_batch=256).opts.max_batch == 256
    assert plan(digits_ckpt, "onnxruntime", "fp32", max_batch=256).opts.max_batch is None  # takes any batch


@pytest.mark.parametrize(("precision", "capability", "ok"), [
    ("bf16", "7.5", False), ("bf16", "8.0", True), ("bf16", "8.9", True), ("int8", "6.0", False),
    ("int8", "6.1", True), ("fp16", "5.3", True), ("fp16", "5.2", False), ("fp32", "5.0", True),
])
def test_precisions_need_their_compute_capability(precision: str, capability: str, ok: bool) -> None:
    from edgekit.errors import TargetUnavailableError
    from edgekit.targets.tensorrt import require_compute_capability

    if ok:
        require_compute_capability(precision, capability, "GPU")
    else:
        with pytest.raises(TargetUnavailableError, match=f"no {precision} kernels"):
            require_compute_capability(precision, capability, "GPU")


def test_builder_config_clears_tf32() -> None:
    """Static: TensorRT turns TF32 on by default on Ampere+; builder_config must clear it for every
    precision (mypy --strict checks the names; this checks the call is there and not conditional)."""
    import ast
    import inspect

    from edgekit.targets import tensorrt as target

    fn = ast.parse(inspect.getsource(target.builder_config)).body[0]
    assert isinstance(fn, ast.FunctionDef)
    top_level_calls = [ast.unparse(stmt.value) for stmt in fn.body if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)]
    assert "config.clear_flag(trt.BuilderFlag.TF32)" in top_level_calls
    assert "config = builder_config(builder, opts)" in inspect.getsource(target.TensorRtTarget.build)


@pytest.mark.tensorrt
def test_fp32_engine_runs_without_tf32(digits_ckpt: Artifact) -> None:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("needs an NVIDIA GPU and TensorRT")
    import tensorrt as trt

    from edgekit.build import build
    from edgekit.targets.base import BuildOptions
    from edgekit.targets.tensorrt import builder_config

    config = builder_config(trt.Builder(trt.Logger(trt.Logger.WARNING)), BuildOptions(precision="fp32", device="cuda"))
    assert not config.get_flag(trt.BuilderFlag.TF32)
    built = build(digits_ckpt, "tensorrt", "fp32")  # parity with torch at the FP32 tolerance
    assert built is not None and built.manifest.target is not None
    assert built.manifest.target.options["tf32"] is False


@pytest.mark.tensorrt
def test_bench_at_batch_256_on_tensorrt(digits_ckpt: Artifact, tmp_path: Path) -> None:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("needs an NVIDIA GPU and TensorRT")
    res = run_cli("bench", str(digits_ckpt.path), "--target", "trt", "--batch", "1,256", "--min-time", "0.1",
                  "--processes", "0", "--json", "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert res.code == 0, res.err
    rows = [r for r in json.loads(res.out)["rows"] if r["target"] == "tensorrt"]
    assert {r["batch"] for r in rows if r["status"] == "ok"} == {1, 256}


def test_stub_generator_reproduces_committed_stub(tmp_path: Path) -> None:
    stubs = ROOT / ".venv" / "trt-stubs"
    if not stubs.is_dir():
        pytest.skip("tensorrt-stubs not downloaded (make stubs)")
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_trt_stubs.py"), "--from", str(stubs), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    assert (tmp_path / "tensorrt" / "__init__.pyi").read_bytes() == (ROOT / "typings" / "tensorrt" / "__init__.pyi").read_bytes()


@pytest.mark.tensorrt
def test_engine_for_another_gpu_is_refused(digits_ckpt: Artifact) -> None:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("needs an NVIDIA GPU and TensorRT")
    from edgekit.build import build
    from edgekit.errors import TargetUnavailableError
    from edgekit.targets.tensorrt import TrtRuntime

    built = build(digits_ckpt, "tensorrt", "fp16")
    assert built is not None and built.manifest.target is not None
    record = built.manifest.target.model_copy(update={"hardware": {**built.manifest.target.hardware, "gpu": "Other GPU"}})
    with pytest.raises(TargetUnavailableError, match="built for"):
        TrtRuntime(built.path / record.model_file, record)
