"""Trust and data safety (issue 13): a handed artifact, recipe or bundle never runs code, deletes files
or reads outside itself, and a command never deletes what it did not create.

Each test is the issue's repro: a marker file proves that code ran, a victim file proves a deletion, a
file-size limit on the process (and a small ``EDGEKIT_MAX_BUNDLE_BYTES``) catches a write that should
never have started. Every run of edgekit here gets an address-space and a file-size limit, so a
regression fails the test instead of filling the memory or the disk of the machine running it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.artifact import Artifact, sha256_file, staging
from edgekit.errors import OutputExistsError
from edgekit.runtime import Bundle

from .conftest import ROOT, TESTS, Result, assert_user_error, env

MEMORY_LIMIT = 4 << 30  # address space of one edgekit process (torch + onnxruntime need ~2 GiB)
FILE_LIMIT = 32 << 20  # largest file one edgekit process may write here (the models are < 1 MB)
MANIFEST = "manifest.json"
MARKER = "PWNED"

EVILMOD = f'''\
"""Stand-in for code an attacker ships next to an artifact: it leaves {MARKER} when imported."""
from pathlib import Path

(Path(__file__).resolve().parent / "{MARKER}").write_text("evilmod was imported\\n")


def load(split):
    from edgekit.data.builtin import digits

    return digits(split)


def net(num_classes=10, **_):
    import torch.nn as nn

    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
'''


# --------------------------------------------------------------------------- helpers


def _limits(file_limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return apply


def edgekit(*args: str, cwd: Path, timeout: float = 300, file_limit: int = FILE_LIMIT,
            env_vars: dict[str, str] | None = None, **extra: str) -> Result:
    """``edgekit ARGS`` in a fresh process, as run_cli does, under memory and file-size limits; a run
    that outlives ``timeout`` fails the test (it would have hung or filled the disk)."""
    try:
        proc = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "edgekit", *args], cwd=cwd, env=env(**(env_vars or {}), **extra), capture_output=True, text=True,
            timeout=timeout, check=False, preexec_fn=_limits(file_limit),  # noqa: PLW1509
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"edgekit {' '.join(args)} did not finish within {timeout:g} s")
    return Result(proc.returncode, proc.stdout, proc.stderr)


def error_line(res: Result) -> str:
    return next(line for line in res.lines if line.startswith("error:"))


def assert_refused(res: Result, *any_of: str) -> None:
    """Exit 2, one error line (plus an optional hint), no traceback; the error line holds one of ``any_of``."""
    assert_user_error(res, "")
    line = error_line(res).lower()
    assert any(n.lower() in line for n in any_of), (any_of, error_line(res))


def assert_untrusted(res: Result, cwd: Path) -> None:
    """The evil module was not imported, and the refusal says how to vouch for it."""
    assert not (cwd / MARKER).exists(), f"the module named in the file was imported:\n{res.err}"
    assert_user_error(res, "code")
    assert "--trust-code" in res.err, res.err


def edit_manifest(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change a manifest by hand, as an attacker or a careless user would: still valid JSON."""
    manifest = json.loads((directory / MANIFEST).read_text())
    change(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))


def entry(path: Path) -> dict[str, Any]:
    """A correct ``files`` entry for ``path``: the checksum an attacker can compute as well as we can."""
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def copy_ckpt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("builds", "bench", "exports", "int8*"))
    return dst


def tree_size(*roots: Path) -> int:
    return sum(p.stat().st_size for r in roots if r.exists() for p in r.rglob("*") if p.is_file())


def write_sums(directory: Path) -> None:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
             for p in sorted(directory.iterdir()) if p.is_file() and p.name != "SHA256SUMS"]
    (directory / "SHA256SUMS").write_text("".join(lines))


def write_bundle_tar(directory: Path, out: Path) -> Path:
    """A bundle archive of ``directory`` laid out as ``edgekit package`` lays one out."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(directory, arcname=directory.name, recursive=False)
        for p in sorted(directory.iterdir()):
            tar.add(p, arcname=f"{directory.name}/{p.name}")
    return out


class _Zeros(io.RawIOBase):
    """``n`` zero bytes, streamed (a 1 GiB member is never held in memory or on disk)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        k = min(len(buf), self.left)
        buf[:k] = bytes(k)
        self.left -= k
        return k


def bundle_with_extra_members(bundle: Path, out: Path, extra: dict[str, int]) -> Path:
    """The real bundle's members plus members of zeros (name -> declared size), gzip level 1."""
    import gzip

    with tarfile.open(bundle) as src, open(out, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as dst:
        members = src.getmembers()
        root = members[0].name
        for m in members:
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        for name, size in extra.items():
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = size
            dst.addfile(info, io.BufferedReader(_Zeros(size), 1 << 20))
    return out


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ckpt(digits_ckpt: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own copy of the digits checkpoint (its ORT build gets cached by ``bundle``)."""
    return copy_ckpt(digits_ckpt.path, tmp_path_factory.mktemp("safety") / "digits")


@pytest.fixture(scope="module")
def bundle(ckpt: Path) -> Path:
    """A real ONNX Runtime bundle of ``ckpt``, packaged once."""
    from edgekit.package import package

    return package(Artifact.load(ckpt), "onnxruntime", out=ckpt.parent / "digits-ort.tar.gz")


@pytest.fixture(scope="module")
def x_npy(ckpt: Path) -> Path:
    from edgekit.data import resolve_source

    x, _ = resolve_source("digits")("test")
    path = ckpt.parent / "x.npy"
    np.save(path, x["input"][:4])
    return path


@pytest.fixture
def copied(tmp_path: Path, ckpt: Path) -> Path:
    return copy_ckpt(ckpt, tmp_path / "ckpt")


@pytest.fixture
def evil(tmp_path: Path) -> dict[str, str]:
    """evilmod.py in the working directory and on PYTHONPATH: importable whatever the search rule, so
    only the trust rule can keep it from running. Returns the environment to run edgekit with."""
    (tmp_path / "evilmod.py").write_text(EVILMOD)
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS), str(ROOT)])}


# --------------------------------------------------------------------------- code runs without --trust-code

COMMANDS = {
    "build": ["build", "ckpt", "--target", "ort"],
    "export": ["export", "ckpt"],
    "compress-dry-run": ["compress", "ckpt", "--recipe", "int8", "--dry-run"],
    "bench-dry-run": ["bench", "ckpt", "--target", "ort", "--dry-run"],
    "package": ["package", "ckpt", "--target", "ort", "--out", "b.tar.gz"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_manifest_data_module_is_not_imported(command: str, tmp_path: Path, copied: Path,
                                              evil: dict[str, str]) -> None:
    edit_manifest(copied, lambda m: m.update(data="evilmod:load"))
    res = edgekit(*COMMANDS[command], cwd=tmp_path, env_vars=evil)
    assert_untrusted(res, tmp_path)
    assert not (tmp_path / "b.tar.gz").exists()


def test_manifest_data_module_runs_with_trust_code(tmp_path: Path, copied: Path, evil: dict[str, str]) -> None:
    """The same artifact with --trust-code: the module is imported (so the refusals above are real)."""
    edit_manifest(copied, lambda m: m.update(data="evilmod:load"))
    res = edgekit(*COMMANDS["build"], "--trust-code", cwd=tmp_path, env_vars=evil)
    assert res.code == 0, res.err
    assert (tmp_path / MARKER).exists()


def test_data_module_the_user_typed_is_imported(tmp_path: Path, copied: Path, evil: dict[str, str]) -> None:
    """A module named in the manifest is imported when the user names the same module in this command."""
    edit_manifest(copied, lambda m: m.update(data="evilmod:load"))
    res = edgekit("bench", "ckpt", "--target", "ort", "--dry-run", "--data", "evilmod:load", cwd=tmp_path, env_vars=evil)
    assert res.code == 0, res.err
    assert (tmp_path / MARKER).exists()


def test_calib_module_the_user_typed_is_imported(tmp_path: Path, copied: Path, evil: dict[str, str]) -> None:
    res = edgekit("compress", "ckpt", "--recipe", "int8", "--calib", "evilmod:load", "--dry-run", cwd=tmp_path, env_vars=evil)
    assert res.code == 0, res.err
    assert (tmp_path / MARKER).exists()


def test_manifest_data_shutil_rmtree_deletes_nothing(tmp_path: Path, copied: Path) -> None:
    """``"data": "shutil:rmtree"`` called as a data source with split 'test' deleted ./test."""
    victim = tmp_path / "test"
    victim.mkdir()
    (victim / "thesis.tex").write_text("three years of work\n")
    edit_manifest(copied, lambda m: m.update(data="shutil:rmtree"))
    res = edgekit(*COMMANDS["build"], cwd=tmp_path)
    assert (victim / "thesis.tex").is_file(), f"./test was deleted:\n{res.err}"
    assert (victim / "thesis.tex").read_text() == "three years of work\n"
    assert_user_error(res, "code")
    assert "--trust-code" in res.err, res.err


def test_manifest_model_source_edgekit_cli_main_is_refused(tmp_path: Path, copied: Path,
                                                           evil: dict[str, str]) -> None:
    """A factory under ``edgekit.`` is not trusted as such: ``edgekit.cli:main`` runs any command (here
    one that imports evilmod and writes ./pwned)."""
    argv = ["import", "evilmod:net", "--input", "input:batch,1,8,8:float32", "--out", "pwned"]
    edit_manifest(copied, lambda m: m["model"].update(source="edgekit.cli:main", kwargs={"argv": argv}))
    res = edgekit(*COMMANDS["build"], cwd=tmp_path, env_vars=evil)
    assert not (tmp_path / "pwned").exists(), res.err
    assert_untrusted(res, tmp_path)


RECIPES = {
    "quantize-calibration": ("steps:\n  - kind: quantize\n    calibration: evilmod:load\n", []),
    "finetune-data": ("steps:\n  - kind: finetune\n    epochs: 1\n    data: evilmod:load\n", ["--dry-run"]),
    "distill-student": ("steps:\n  - kind: distill\n    epochs: 1\n    student: evilmod:net\n", []),
}


@pytest.mark.parametrize("case", list(RECIPES))
def test_recipe_module_is_not_imported(case: str, tmp_path: Path, copied: Path, evil: dict[str, str]) -> None:
    text, flags = RECIPES[case]
    (tmp_path / "evil.yaml").write_text("name: evil\n" + text)
    res = edgekit("compress", "ckpt", "--recipe", "evil.yaml", "--out", "out", *flags, cwd=tmp_path, env_vars=evil)
    assert_untrusted(res, tmp_path)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- data lost through --overwrite and races


def test_compress_out_is_its_own_input(tmp_path: Path, ckpt: Path) -> None:
    x = copy_ckpt(ckpt, tmp_path / "runs" / "digits")
    before = (x / MANIFEST).read_bytes()
    res = edgekit("compress", "runs/digits", "--recipe", "int8", "--out", "runs/digits", "--overwrite", cwd=tmp_path)
    assert_user_error(res, "input")
    art = Artifact.load(x)  # manifest and every file it lists still verify
    assert art.kind == "checkpoint" and (x / MANIFEST).read_bytes() == before


def test_compress_out_is_an_ancestor_of_its_input(tmp_path: Path, ckpt: Path) -> None:
    x = copy_ckpt(ckpt, tmp_path / "runs" / "digits")
    (tmp_path / "runs" / "keep.txt").write_text("not edgekit's\n")
    before = (x / MANIFEST).read_bytes()
    res = edgekit("compress", "runs/digits", "--recipe", "int8", "--out", "runs", "--overwrite", cwd=tmp_path)
    assert (tmp_path / "runs" / "keep.txt").is_file(), f"runs/keep.txt was deleted:\n{res.err}"
    assert (tmp_path / "runs" / "keep.txt").read_text() == "not edgekit's\n"
    assert_refused(res, "input", "would delete")
    assert Artifact.load(x).kind == "checkpoint" and (x / MANIFEST).read_bytes() == before


def _child_artifact(d: Path, ckpt: Path) -> Path:
    copy_ckpt(ckpt, d / "int8")
    return d / "int8" / MANIFEST


def _bench_report(d: Path, ckpt: Path) -> Path:
    report = d / "bench" / "20250101-120000" / "bench.json"
    report.parent.mkdir(parents=True)
    report.write_text('{"rows": []}\n')
    return report


@pytest.mark.parametrize("child", [_child_artifact, _bench_report], ids=["child-artifact", "bench-report"])
def test_train_overwrite_keeps_children(child: Callable[[Path, Path], Path], tmp_path: Path, ckpt: Path) -> None:
    d = copy_ckpt(ckpt, tmp_path / "runs" / "d")
    kept = child(d, ckpt)
    content = kept.read_bytes()
    res = edgekit("train", "--epochs", "1", "--out", "runs/d", "--overwrite", cwd=tmp_path)
    assert kept.is_file() and kept.read_bytes() == content, res.err
    assert_user_error(res, "would delete")
    assert Artifact.load(d).kind == "checkpoint"


OVERWRITE_INTO_USER_DIR = {
    "train": ["train", "--epochs", "1", "--out", "userdir", "--overwrite"],
    "compress": ["compress", "ckpt", "--recipe", "int8", "--out", "userdir", "--overwrite"],
}


@pytest.mark.parametrize("command", list(OVERWRITE_INTO_USER_DIR))
def test_overwrite_never_deletes_a_users_folder(command: str, tmp_path: Path, copied: Path) -> None:
    user = tmp_path / "userdir"
    (user / "photos").mkdir(parents=True)
    (user / "notes.txt").write_text("mine\n")
    (user / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    res = edgekit(*OVERWRITE_INTO_USER_DIR[command], cwd=tmp_path)
    assert (user / "notes.txt").is_file(), f"the user's folder was deleted:\n{res.err}"
    assert (user / "notes.txt").read_text() == "mine\n"
    assert (user / "photos" / "cat.jpg").read_bytes() == b"\xff\xd8 a cat"
    assert sorted(p.name for p in user.rglob("*")) == ["cat.jpg", "notes.txt", "photos"]
    assert_refused(res, "userdir")  # the error names the folder it refuses to replace


def test_staging_race_later_rename_does_not_replace_earlier(tmp_path: Path) -> None:
    """Two writers of one --out without --overwrite: the second to finish fails; nothing is replaced."""
    out = tmp_path / "out"
    with pytest.raises(OutputExistsError), staging(out) as a:
        (a / "who").write_text("A")
        with staging(out) as b:
            (b / "who").write_text("B")
        assert (out / "who").read_text() == "B"
    assert (out / "who").read_text() == "B"


def test_predict_out_does_not_replace_a_file(tmp_path: Path, bundle: Path, x_npy: Path) -> None:
    existing = tmp_path / "existing.npz"
    existing.write_bytes(b"precious, not an npz")
    res = edgekit("predict", str(bundle), str(x_npy), "--out", str(existing), cwd=tmp_path)
    assert existing.read_bytes() == b"precious, not an npz", f"the file was replaced:\n{res.err}"
    assert_user_error(res, "exists")


def test_predict_out_overwrite_replaces(tmp_path: Path, bundle: Path, x_npy: Path) -> None:
    existing = tmp_path / "existing.npz"
    existing.write_bytes(b"old")
    res = edgekit("predict", str(bundle), str(x_npy), "--out", str(existing), "--overwrite", cwd=tmp_path)
    assert res.code == 0, res.err
    with np.load(existing) as got:
        assert got["output"].shape == (4, 10)


def test_concurrent_package_to_one_out(tmp_path: Path, ckpt: Path, bundle: Path) -> None:
    """Both start before either finishes (the build is cached, so both are in the write at once)."""
    out = tmp_path / "same.tar.gz"
    cmd = [sys.executable, "-m", "edgekit", "package", str(ckpt), "--target", "ort", "--out", str(out)]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # noqa: S603
                              text=True, preexec_fn=_limits(FILE_LIMIT))  # noqa: PLW1509
             for _ in range(2)]
    results = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("concurrent package did not finish within 300 s")
        results.append(Result(p.returncode, stdout, stderr))
    assert sorted(r.code for r in results) == [0, 2], [(r.code, r.err) for r in results]
    loser = next(r for r in results if r.code == 2)
    assert_refused(loser, out.name)
    Bundle.open(out)  # a complete, valid bundle ...
    assert out.read_bytes() == bundle.read_bytes()  # ... and exactly the one this checkpoint packages to


# --------------------------------------------------------------------------- reads outside the artifact / bundle


def _onnx_dev_zero(ckpt: Path, tmp: Path) -> None:
    edit_manifest(ckpt, lambda m: m.update(onnx="/dev/zero"))


def _onnx_absolute(ckpt: Path, tmp: Path) -> None:
    other = tmp / "elsewhere" / "evil.onnx"
    other.parent.mkdir()
    shutil.copyfile(ckpt / "model.onnx", other)

    def change(m: dict[str, Any]) -> None:
        m["onnx"] = str(other)
        m["files"][str(other)] = entry(other)  # checksummed, so only the path gives it away

    edit_manifest(ckpt, change)


def _onnx_unlisted(ckpt: Path, tmp: Path) -> None:
    shutil.copyfile(ckpt / "model.onnx", ckpt / "other.onnx")
    edit_manifest(ckpt, lambda m: m.update(onnx="other.onnx"))


def _weights_parent(ckpt: Path, tmp: Path) -> None:
    outside = tmp / "x.safetensors"
    shutil.copyfile(ckpt / "model.safetensors", outside)

    def change(m: dict[str, Any]) -> None:
        m["model"]["weights"] = "../x.safetensors"
        m["files"]["../x.safetensors"] = entry(outside)

    edit_manifest(ckpt, change)


def _files_parent(ckpt: Path, tmp: Path) -> None:
    (tmp / "outside.bin").write_bytes(b"someone else's file")
    edit_manifest(ckpt, lambda m: m["files"].update({"../outside.bin": entry(tmp / "outside.bin")}))


@pytest.mark.parametrize("tamper", [_onnx_dev_zero, _onnx_absolute, _onnx_unlisted, _weights_parent, _files_parent],
                         ids=["onnx-dev-zero", "onnx-absolute", "onnx-not-in-files", "weights-parent-dir",
                              "files-parent-dir"])
def test_manifest_paths_stay_inside_and_checksummed(tamper: Callable[[Path, Path], None], tmp_path: Path,
                                                    copied: Path) -> None:
    tamper(copied, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = edgekit("build", "ckpt", "--target", "ort", cwd=tmp_path, timeout=60)
    assert_user_error(res, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("absolute", [False, True], ids=["dotdot", "absolute"])
def test_manifest_name_cannot_place_a_bundle_outside_dist(absolute: bool, tmp_path: Path, copied: Path) -> None:
    stem = f"edgekit-safety-{uuid.uuid4().hex[:12]}"
    name = f"/tmp/{stem}" if absolute else "../" * 40 + f"tmp/{stem}"
    edit_manifest(copied, lambda m: m.update(name=name))
    def written() -> list[str]:
        return sorted(n for n in os.listdir("/tmp") if stem in n)

    try:
        res = edgekit("package", "ckpt", "--target", "ort", cwd=tmp_path, timeout=60)
        assert written() == [], res.err
        assert_user_error(res, "")
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "dist") == ["ckpt"]
        assert not any(p.is_file() for p in (tmp_path / "dist").rglob("*"))
    finally:
        for n in written():
            shutil.rmtree(Path("/tmp") / n) if (Path("/tmp") / n).is_dir() else (Path("/tmp") / n).unlink()


def _unpack(bundle: Path, dest: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    (root,) = list(dest.iterdir())
    return root


def _retarget(directory: Path, model_file: str, listed: Path | None = None) -> None:
    """Point the bundle's target.model_file elsewhere and re-make SHA256SUMS, as a hand edit would."""
    def change(m: dict[str, Any]) -> None:
        m["target"]["model_file"] = model_file
        if listed is not None:
            m["files"][model_file] = entry(listed)

    edit_manifest(directory, change)
    write_sums(directory)


@pytest.mark.parametrize("command", ["predict", "verify"])
@pytest.mark.parametrize("model_file", ["../outside.onnx", "/dev/zero"], ids=["parent-dir", "dev-zero"])
def test_bundle_model_file_outside_the_archive(command: str, model_file: str, tmp_path: Path, bundle: Path,
                                               x_npy: Path) -> None:
    root = _unpack(bundle, tmp_path / "unpacked")
    _retarget(root, model_file)
    edited = write_bundle_tar(root, tmp_path / "edited.tar.gz")
    args = [str(edited), str(x_npy)] if command == "predict" else [str(edited)]
    assert_user_error(edgekit(command, *args, cwd=tmp_path, timeout=60), "")


@pytest.mark.parametrize("command", ["predict", "verify"])
def test_bundle_directory_model_file_outside(command: str, tmp_path: Path, bundle: Path, x_npy: Path) -> None:
    """An unpacked bundle whose model_file is another model beside it, checksummed in its manifest:
    it used to run (exit 0) with the other model's scores."""
    root = _unpack(bundle, tmp_path / "unpacked")
    outside = root.parent / "outside.onnx"
    shutil.copyfile(root / "model.onnx", outside)
    _retarget(root, "../outside.onnx", listed=outside)
    args = [str(root), str(x_npy)] if command == "predict" else [str(root)]
    assert_user_error(edgekit(command, *args, cwd=tmp_path, timeout=60), "")


# --------------------------------------------------------------------------- resource bombs

LIMIT = "1000000"  # EDGEKIT_MAX_BUNDLE_BYTES: the real bundle (~0.6 MB unpacked) fits, the bombs do not


def _run_limited(tmp_path: Path, archive: Path, x_npy: Path) -> tuple[Result, Path, Path]:
    cache, tmpdir = tmp_path / "cache", tmp_path / "tmpdir"
    cache.mkdir()
    tmpdir.mkdir()
    res = edgekit("predict", str(archive), str(x_npy), cwd=tmp_path, timeout=60, file_limit=16 << 20,
                  EDGEKIT_MAX_BUNDLE_BYTES=LIMIT, XDG_CACHE_HOME=str(cache), TMPDIR=str(tmpdir))
    return res, cache, tmpdir


def test_bundle_within_the_size_limit_runs(tmp_path: Path, bundle: Path, x_npy: Path) -> None:
    """The control: the limit the bomb tests use lets a real bundle through."""
    res, _, _ = _run_limited(tmp_path, bundle, x_npy)
    assert res.code == 0, res.err


@pytest.mark.parametrize("extra", [{"zeros.bin": 1 << 30}, {f"pad{i}.bin": 400_000 for i in range(3)}],
                         ids=["one-1GiB-member", "members-sum-over-limit"])
def test_bundle_bomb_refused_before_extracting(extra: dict[str, int], tmp_path: Path, bundle: Path,
                                               x_npy: Path) -> None:
    bomb = bundle_with_extra_members(bundle, tmp_path / "bomb.tar.gz", extra)
    assert bomb.stat().st_size < 8 << 20
    res, cache, tmpdir = _run_limited(tmp_path, bomb, x_npy)
    assert_refused(res, "too large", "limit")
    assert tree_size(cache, tmpdir) < 10 << 20
