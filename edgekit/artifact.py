"""Artifact directories: ``manifest.json`` + the files it owns (DESIGN.md §2).

An artifact is written into a temporary sibling directory and renamed into place, so an interrupted
command leaves the old state or a complete artifact. Every file the manifest lists carries a sha256
that is checked on load. Subdirectories the manifest does not list (builds/, bench/, exports/,
child artifacts) are caches and outputs derived from it; a command never changes an artifact's own
files.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekit import __version__
from edgekit.errors import ArtifactError, BadInputError, OutputExistsError
from edgekit.iospec import IOSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"  # a bundle's checksum file, one line per file it holds
REFERENCE_ONNX = "reference.onnx"  # an INT8 artifact's float graph before quantization, node names as in model.onnx
Kind = Literal["checkpoint", "compressed", "built", "bundle"]
CACHE_DIRS = ("builds", "bench", "exports", "explain")
REPORT_FILES = frozenset({"bench.json", "bench.md", "bench.png",  # a bench report directory
                          "explain.json", "explain.md", "explain.png"})  # an explain report
MAX_NAME = 200
MAX_MANIFEST_BYTES = 64 << 20
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # edgekit.targets.catalog's, without importing it
# temporary names: ".<name>.tmp-<pid>-<random>" (and ".old-" for a replaced output): a later command
# removes those whose process is gone (`sweep_stale`)
_TEMP = re.compile(r"^\..*\.(?:tmp|old)-(\d+)-[A-Za-z0-9_]{8}$")


def check_name(name: str, what: str = "name") -> str:
    """A single, plain path component: no separators, no leading dot, no control characters."""
    if (not name or len(name) > MAX_NAME or name.startswith(".") or "/" in name or "\\" in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name)):
        raise ValueError(f"{what} {name!r} is not a plain file name (no '/', no leading '.', at most {MAX_NAME} characters)")
    return name


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class ModelSpec(BaseModel):
    """How to rebuild the torch module: never a pickle, always code + structure + safetensors."""

    model_config = ConfigDict(extra="forbid")
    source: str  # zoo name, "package.module:factory" or "torchvision:<name>"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    pruning: list[Any] | None = None  # Torch-Pruning's history, replayed on the fresh module
    weights: str = "model.safetensors"

    _weights = field_validator("weights")(lambda v: check_name(v, "weights file"))


class Lineage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parent: str | None = None  # path of the parent, relative to this artifact
    parent_sha256: str | None = None  # sha256 of the parent's manifest.json when this was made
    step: str
    config: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)


class TargetRecord(BaseModel):
    """What a built artifact (or bundle) was compiled for and what actually runs."""

    model_config = ConfigDict(extra="forbid")
    name: str
    device: str
    precision_requested: str
    precision: str  # what runs, e.g. "fp32" on an OpenVINO CPU that would default to bf16
    runtime_version: str
    model_file: str
    options: dict[str, Any] = Field(default_factory=dict)
    hardware: dict[str, Any] = Field(default_factory=dict)  # e.g. the GPU a TensorRT engine is for

    _model_file = field_validator("model_file")(lambda v: check_name(v, "model file"))

    @field_validator("precision", "precision_requested")
    @classmethod
    def _precision(cls, v: str) -> str:
        if v not in PRECISIONS:
            raise ValueError(f"unknown precision '{v}' (one of {', '.join(PRECISIONS)})")
        return v


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    kind: Kind
    name: str
    files: dict[str, FileEntry] = Field(default_factory=dict)
    model: ModelSpec | None = None
    onnx: str | None = None  # the artifact's ONNX file (FP32 graph or QDQ INT8 graph)
    quantized: bool = False  # True when `onnx` is a QDQ INT8 graph
    io: IOSpec
    data: str | None = None  # the data source the model was trained / evaluated on
    lineage: Lineage
    metrics: dict[str, Any] = Field(default_factory=dict)
    target: TargetRecord | None = None

    _name = field_validator("name")(lambda v: check_name(v, "artifact name"))

    @field_validator("onnx")
    @classmethod
    def _onnx(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v, "onnx file")

    @field_validator("files")
    @classmethod
    def _files(cls, v: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in v:
            check_name(name, "file")
        return v

    def named_files(self) -> list[str]:
        """Every file this manifest points at (each must be one of ``files``, so it is checksummed)."""
        names = [self.onnx] if self.onnx else []
        if self.model is not None and self.kind in ("checkpoint", "compressed"):
            names.append(self.model.weights)
        if self.target is not None:
            names.append(self.target.model_file)
            extra = self.target.options.get("vnni_model")
            if extra is not None:
                names.append(str(extra))
        return names


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def installed_version(name: str) -> str | None:
    """The installed version of a library, read without importing it: the distribution of that name,
    else whichever distribution provides the module (onnxruntime-gpu and onnxruntime-openvino
    provide ``onnxruntime``, tensorrt-cu12 provides ``tensorrt``); None if there is none."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    for dist in importlib.metadata.packages_distributions().get(name.replace("-", "_"), []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact, read without importing them."""
    out = {"edgekit": __version__}
    for dist in ("torch", "onnx", "onnxruntime", "openvino", "torch-pruning", "onnxslim", "tensorrt"):
        version = installed_version(dist)
        if version is not None:
            out[dist] = version
    return out


class Artifact:
    """A loaded, verified artifact directory."""

    def __init__(self, path: Path, manifest: Manifest, manifest_sha256: str) -> None:
        self.path = path
        self.manifest = manifest
        self.sha256 = manifest_sha256

    def __repr__(self) -> str:
        return f"Artifact({self.path}, kind={self.manifest.kind})"

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def io(self) -> IOSpec:
        return self.manifest.io

    def file(self, name: str) -> Path:
        if name not in self.manifest.files:
            raise ArtifactError(f"artifact {self.path} has no file '{name}'")
        return self.path / name

    @property
    def onnx_path(self) -> Path | None:
        return self.path / self.manifest.onnx if self.manifest.onnx else None

    @property
    def recipe_name(self) -> str | None:
        """The recipe that made this artifact (``compress:<recipe>``), None for a full model."""
        step = self.manifest.lineage.step
        return step.split(":", 1)[1] if step.startswith("compress:") else None

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Artifact:
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.is_file():
            hint = "give a directory made by edgekit train/import/compress/build"
            if path.exists():
                raise ArtifactError(f"{path} is not an edgekit artifact (no {MANIFEST})", hint=hint)
            raise ArtifactError(f"artifact {path} does not exist", hint=hint)
        if mpath.stat().st_size > MAX_MANIFEST_BYTES or not mpath.is_file():
            raise ArtifactError(f"{mpath} is not a manifest (larger than {MAX_MANIFEST_BYTES >> 20} MiB)",
                                hint="the artifact is damaged; re-create it")
        raw = mpath.read_bytes()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise ArtifactError(f"{mpath} is not valid JSON", hint="the artifact is damaged; re-create it") from None
        version = data.get("schema_version") if isinstance(data, dict) else None
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise ArtifactError(
                f"{mpath} has schema version {version}, newer than this edgekit reads ({SCHEMA_VERSION})",
                hint="upgrade edgekit: pip install -U edgekit",
            )
        try:
            manifest = Manifest.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise ArtifactError(f"{mpath} is not a valid manifest: {where}: {err['msg']}") from None
        for name in manifest.named_files():
            if name not in manifest.files:
                raise ArtifactError(f"{mpath} names the file '{name}', which is not one of its checksummed files",
                                    hint="the manifest was edited; re-create the artifact")
        art = cls(path, manifest, hashlib.sha256(raw).hexdigest())
        if verify:
            art.verify()
        return art

    def verify(self) -> None:
        for name, entry in self.manifest.files.items():
            fpath = self.path / name
            if fpath.is_symlink():
                raise ArtifactError(f"{fpath} is a symbolic link", hint="an artifact holds its own files; copy them in")
            if not fpath.is_file():
                raise ArtifactError(f"{fpath} is missing", hint="the artifact is incomplete; re-create it")
            if fpath.stat().st_size != entry.size or sha256_file(fpath) != entry.sha256:
                raise ArtifactError(
                    f"checksum mismatch for {fpath}: the file was changed after edgekit wrote it",
                    hint="re-create the artifact, or restore the original file",
                )

    def parent(self) -> Artifact | None:
        lin = self.manifest.lineage
        if lin.parent is None:
            return None
        ppath = (self.path / lin.parent).resolve()
        parent = Artifact.load(ppath)
        if lin.parent_sha256 and parent.sha256 != lin.parent_sha256:
            raise ArtifactError(
                f"the parent of {self.path} ({ppath}) changed after this artifact was made",
                hint="re-run the command that made this artifact",
            )
        return parent

    def root(self) -> Artifact:
        """The lineage root: the full model every comparison starts from."""
        node = self
        seen = {node.path.resolve()}
        while (p := node.parent()) is not None:
            if p.path.resolve() in seen:
                raise ArtifactError(f"lineage of {self.path} has a cycle")
            seen.add(p.path.resolve())
            node = p
        return node

    def chain_paths(self) -> list[Path]:
        """The directories of this artifact and its ancestors (self first): what a command on it reads."""
        chain = [self]
        while (p := chain[-1].parent()) is not None:
            chain.append(p)
        return [a.path for a in chain]


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's
        return True
    return True


def temp_name(name: str) -> str:
    """A temporary sibling name for ``name`` that `sweep_stale` can tell is ours and whose owner it can check."""
    return f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def sweep_stale(directory: Path) -> None:
    """Remove temporary files and directories that edgekit processes left in ``directory`` when they were
    killed (their process id is gone). Nothing else is touched."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _inside(path: Path, other: Path) -> bool:
    return path == other or path in other.parents


def _would_delete(out: Path) -> list[str]:
    """What replacing the directory ``out`` would delete that is neither the artifact (or bench report)
    it holds nor that artifact's build/export caches."""
    if not out.is_dir() or out.is_symlink():
        return [f"{out} (not a directory edgekit wrote)"]
    owned: set[str] = set(REPORT_FILES)
    if (out / MANIFEST).is_file():
        try:
            owned |= {MANIFEST, *json.loads((out / MANIFEST).read_text()).get("files", {})}
        except (OSError, ValueError, AttributeError, TypeError):
            owned = set(REPORT_FILES)
    lost = []
    for entry in sorted(out.iterdir()):
        if entry.is_file() and not entry.is_symlink() and entry.name in owned:
            continue
        if entry.name in ("builds", "exports") and entry.is_dir() and MANIFEST in owned:
            continue  # caches keyed by the replaced manifest: they describe nothing once it is gone
        if _TEMP.match(entry.name):
            continue
        if (entry / MANIFEST).is_file():
            lost.append(f"{entry} (an artifact)")
        elif entry.name == "bench" and entry.is_dir():
            lost.append(f"{entry} (bench reports)")
        else:
            lost.append(str(entry))
    return lost


def check_output(out: Path, overwrite: bool, inputs: Iterable[Path] = (), *, directory: bool = True) -> None:
    """Exit 2 for an existing --out unless --overwrite, for an --out that is or holds one of the
    command's ``inputs``, for an --overwrite that would delete what the command did not make, and for
    unwritable parents."""
    try:
        check_name(out.name if directory or out.name.startswith("..") else out.name.lstrip("."), "--out")
    except ValueError as exc:
        raise BadInputError(str(exc), hint="end --out with a plain directory or file name") from None
    target = out.resolve()
    for given in inputs:
        if _inside(target, Path(given).resolve()):
            raise BadInputError(f"--out {out} is or contains the input {given}",
                                hint="write the output somewhere else: replacing it would delete the input")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"output {out} already exists", hint="choose another --out or pass --overwrite")
        if directory:
            lost = _would_delete(out)
            if lost:
                more = f" and {len(lost) - 2} more" if len(lost) > 2 else ""
                raise OutputExistsError(
                    f"--overwrite would delete {', '.join(lost[:2])}{more}, which this command did not make",
                    hint="move them away, or choose another --out",
                )
        elif out.is_dir():
            raise OutputExistsError(f"output {out} is a directory", hint="give a file name for --out")
    parent = target.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise BadInputError(f"cannot write to {parent}: {probe} is not a directory", hint="choose a writable --out")
    if not os.access(probe, os.W_OK):
        raise BadInputError(f"cannot write to {parent}: permission denied", hint="choose a writable --out")


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory`` (flock on its descriptor) around a check-and-rename."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the rename still refuses a non-empty target
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def publish(tmp: Path, out: Path, overwrite: bool, *, directory: bool = True) -> None:
    """Rename the finished ``tmp`` to ``out``, checking again under a lock that ``out`` did not appear
    (another command) meanwhile: a second writer fails instead of silently replacing the first."""
    with _locked(out.parent):
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise OutputExistsError(f"output {out} was written by another command while this one ran",
                                        hint="choose another --out, or pass --overwrite to replace it")
            check_output(out, overwrite, directory=directory)
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)


def _make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot write to {out.parent}: {exc.strerror or exc}", hint="choose a writable --out") from None
    sweep_stale(out.parent)


@contextmanager
def staging(out: Path, overwrite: bool = False, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """A temporary directory beside ``out``; renamed to ``out`` when the block completes.

    An exception (or a kill) leaves ``out`` as it was: the temporary directory is removed, or, after
    a kill, left under a temporary name that the next command writing there removes.
    """
    check_output(out, overwrite, inputs)
    _make_parent(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise BadInputError(f"cannot write to {out.parent}: {exc.strerror or exc}", hint="choose a writable --out") from None
    try:
        yield tmp
        publish(tmp, out, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staging_file(out: Path, overwrite: bool = False, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """``staging`` for a single output file (a bundle archive, predict's .npz)."""
    check_output(out, overwrite, inputs, directory=False)
    _make_parent(out)
    tmp = out.with_name(temp_name(out.name))
    try:
        yield tmp
        publish(tmp, out, overwrite, directory=False)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(temp_name(path.name))
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def finalize(directory: Path, manifest: Manifest, owned: list[str] | None = None) -> Manifest:
    """Hash the artifact's own files into the manifest and write ``manifest.json``.

    ``owned`` lists the files the artifact owns (default: every regular file at the top level).
    """
    names = owned if owned is not None else sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST)
    files = {}
    for name in sorted(names):
        fpath = directory / name
        files[name] = FileEntry(sha256=sha256_file(fpath), size=fpath.stat().st_size)
    manifest = manifest.model_copy(update={"files": files})
    write_json_atomic(directory / MANIFEST, manifest.model_dump(mode="json", exclude_none=True))
    return manifest


def _candidates(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in CACHE_DIRS and not d.endswith(".partial")]
        if MANIFEST in filenames:
            yield Path(dirpath)


def find_latest(kinds: tuple[str, ...], root: Path = Path("runs")) -> Path:
    """The newest artifact of one of ``kinds`` under ``root`` (by manifest time)."""
    best: tuple[float, Path] | None = None
    if root.is_dir():
        for cand in _candidates(root):
            try:
                kind = json.loads((cand / MANIFEST).read_text()).get("kind")
            except (OSError, json.JSONDecodeError, AttributeError):
                continue
            if kind in kinds:
                mtime = (cand / MANIFEST).stat().st_mtime
                if best is None or mtime > best[0]:
                    best = (mtime, cand)
    if best is None:
        raise BadInputError(
            f"no {' or '.join(kinds)} artifact found under ./{root}",
            hint="run `edgekit train` first, or name the artifact",
        )
    return best[1]


def resolve_artifact(arg: str | None, kinds: tuple[str, ...], announce: Any = None) -> Artifact:
    """The artifact named on the command line, or the newest fitting one under ./runs."""
    if arg is None:
        path = find_latest(kinds)
        if announce is not None:
            announce(f"using {path} (newest {'/'.join(kinds)} under ./runs)")
    else:
        path = Path(arg)
    art = Artifact.load(path)
    if art.kind not in kinds:
        raise ArtifactError(f"{path} is a {art.kind} artifact; this command takes {' or '.join(kinds)}")
    return art


def cache_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def relative_parent(child: Path, parent: Path) -> str:
    """``Lineage.parent``: the parent artifact's path relative to the child's directory."""
    import os

    return os.path.relpath(parent.resolve(), child.resolve())
