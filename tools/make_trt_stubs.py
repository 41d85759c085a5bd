#!/usr/bin/env python3
"""Generate ``typings/tensorrt/__init__.pyi`` from the ``tensorrt-stubs`` wheel.

TensorRT cannot be installed without a GPU toolchain, so the TensorRT target is
type-checked against the community ``tensorrt-stubs`` package (pybind11-stubgen
output).  As shipped it does not work with ``mypy --strict``:

* the API lives in ``tensorrt_bindings/tensorrt.pyi``; ``tensorrt/__init__.pyi``
  only re-exports it (and imports ``tensorrt_libs``, which has no stubs), and
  neither package has a ``py.typed`` marker;
* parameters named ``in`` (a keyword) and a non-default parameter after default
  ones are syntax errors;
* the module variable ``bool`` (``trt.bool`` is ``DataType.BOOL``) hides the
  builtin, so every ``-> bool`` annotation means "a DataType value";
* ``capsule`` and ``...`` are used as types, ``= None`` defaults are not
  Optional, ``list``/``tuple``/``dict``/``numpy.ndarray`` are bare generics;
* ``__enter__``/``__exit__``/``__buffer__``/``DataType.itemsize`` are untyped,
  ``Dims`` has no ``__iter__``, and ``nptype``/``volume`` are missing;
* ``self`` is annotated with wrong types, some overloads are duplicates, and a
  few pybind11 overrides contradict their base classes;
* factories that return None on failure (``build_serialized_network``,
  ``deserialize_cuda_engine``, ...) are not Optional, and some types that
  stubgen could not resolve (``OnnxParser.get_error``) are missing.

This script merges the two files into one self-contained stub module and
applies those fixes; the result passes ``mypy --strict`` on its own.  Every
fix checks that it still matches something and the script stops with an error
when one does not, so a new ``tensorrt-stubs`` release is looked at by a
person rather than silently mis-patched.

Usage::

    python tools/make_trt_stubs.py [--out typings] [--from PATH]

``PATH`` is a directory the wheel was installed into (``pip install --no-deps
--target DIR tensorrt-stubs==...``) or the ``.whl`` file itself.  Without
``--from`` the installed distribution is found with ``importlib.metadata``.
Stdlib only; the output is deterministic.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import keyword
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DIST_NAME = "tensorrt-stubs"
BINDINGS_PYI = "tensorrt_bindings/tensorrt.pyi"  # the API (classes, enums)
FRONTEND_PYI = "tensorrt/__init__.pyi"  # the re-export module (__version__)

# Imports the generated stub needs, replacing the original ``import`` block.
HEADER_IMPORTS = """\
import builtins
import types
import typing

import numpy
import numpy.typing
import typing_extensions

_T = typing.TypeVar("_T")
# pybind11 converts tuples and lists to Dims implicitly (see the Dims docstring).
_DimsLike: typing_extensions.TypeAlias = Dims | tuple[int, ...] | list[int]
"""

# Methods the original leaves untyped, with the signature to give them.
# (``@staticmethod`` on __enter__/__exit__ is also wrong: at run time these are
# plain functions assigned onto the classes, so they bind like methods.)
UNTYPED_METHODS = {
    "__enter__": "def __enter__(self) -> typing_extensions.Self:",
    "__exit__": (
        "def __exit__(self, exc_type: type[BaseException] | None, "
        "exc_value: BaseException | None, "
        "traceback: types.TracebackType | None) -> None:"
    ),
    "__buffer__": "def __buffer__(self, flags: int, /) -> memoryview:",
    "__release_buffer__": "def __release_buffer__(self, buffer: memoryview, /) -> None:",
    # 0.5 for INT4/FP4, so not always an int; ``-> float`` accepts both.
    "itemsize": "def itemsize(self) -> builtins.float:",
    # ErrorCode.name: stubgen saw the __str__ overload set here; keep it callable.
    "name": "def name(*args: typing.Any, **kwargs: typing.Any) -> str:",
}
# These carry a wrong @staticmethod, dropped with the untyped def.
STATIC_BY_MISTAKE = {"__enter__", "__exit__"}

# Types stubgen wrote as ``...`` (unresolved at generation time) that the
# TensorRT API reference names; the rest of the ``...`` types become Any.
KNOWN_TYPES = [
    ("ICudaEngine", "hardware_compatibility_level", "HardwareCompatibilityLevel"),
    ("ICudaEngine", "profiling_verbosity", "ProfilingVerbosity"),
    ("IExecutionContext", "nvtx_verbosity", "ProfilingVerbosity"),
    ("IExecutionContext", "get_runtime_config", "IRuntimeConfig"),
    ("IExecutionContext", "engine", "ICudaEngine"),
    ("INetworkDefinition", "builder", "Builder"),
    ("INetworkDefinition", "get_flag", "NetworkDefinitionCreationFlag"),
    ("INetworkDefinition", "error_recorder", "IErrorRecorder"),
    ("ITensor", "location", "TensorLocation"),
    ("IGatherLayer", "mode", "GatherMode"),
    ("ISliceLayer", "mode", "SampleMode"),
    ("IIfConditionalBoundaryLayer", "conditional", "IIfConditional"),
    ("ILoopBoundaryLayer", "loop", "ILoop"),
    ("OnnxParser", "get_error", "ParserError"),
    ("OnnxParser", "get_flag", "OnnxParserFlag"),
    ("OnnxParser", "set_flag", "OnnxParserFlag"),
    ("OnnxParser", "clear_flag", "OnnxParserFlag"),
    ("PluginTensorDesc", "format", "TensorFormat"),
]

# Methods that return None on failure (the C++ API returns nullptr) although
# the stub says otherwise; typed ``X | None`` so callers must check.
NULLABLE_RETURNS = [
    ("Builder", "build_serialized_network"),
    ("Builder", "build_engine_with_config"),
    ("Runtime", "deserialize_cuda_engine"),
    ("ICudaEngine", "create_execution_context"),
    ("IBuilderConfig", "get_timing_cache"),
]

# Upstream declarations mypy rightly rejects but that describe the run-time
# truth (pybind11 overloads/overrides); each gets an ignore comment and must
# match exactly once inside its class.
TARGETED_IGNORES = [
    # C++-plugin and Python-plugin signatures of the same method differ.
    ("IPluginV2DynamicExt", r"def get_workspace_size\(", "override"),
    ("IPluginV2DynamicExt", r"def serialize\(self\) -> bytes:", "override"),
    # deserialize_plugin(name, bytes) exists for C++ and Python plugins.
    (
        "IPluginCreator",
        r"@typing\.overload\n +def deserialize_plugin\(self, name: str, "
        r"serialized_plugin: bytes\) -> IPluginV2DynamicExt:",
        "overload-cannot-match",
    ),
]

# Added to class Dims when absent: Dims behaves like a tuple of ints.
DIMS_METHODS = {
    "__iter__": "    def __iter__(self) -> typing.Iterator[int]:\n        ...",
    "__len__": "    def __len__(self) -> int:\n        ...",
    "__getitem__": "    def __getitem__(self, arg0: int) -> int:\n        ...",
}

# Module-level helpers defined in Python by tensorrt/__init__.py.
FRONTEND_FUNCTIONS = '''
__version__: str = {version!r}

def common_enter(this: _T) -> _T:
    """Deprecated context-manager entry; returns ``this``."""

def common_exit(
    this: object,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    traceback: types.TracebackType | None,
) -> None:
    """Deprecated context-manager exit; does nothing."""

def volume(iterable: typing.Iterable[int]) -> int:
    """Product of the elements (1 for an empty iterable)."""

def nptype(trt_type: DataType) -> type[numpy.generic]:
    """The numpy scalar type for ``trt_type``.

    Raises TypeError when there is none (BF16, FP8, INT4, FP4, E8M0).
    """
'''


class StubFixError(RuntimeError):
    """A fix no longer matches the input: check the new tensorrt-stubs release."""


# --------------------------------------------------------------------------
# Reading the input
# --------------------------------------------------------------------------


def read_sources(source: Path | None) -> tuple[str, str, str]:
    """Return (bindings text, frontend text, description of the source)."""
    if source is None:
        try:
            dist = importlib.metadata.distribution(DIST_NAME)
        except importlib.metadata.PackageNotFoundError:
            sys.exit(
                f"error: {DIST_NAME} is not installed in this interpreter; install it "
                f"with 'pip install --no-deps --target DIR {DIST_NAME}==VERSION' and pass "
                "--from DIR (or the downloaded .whl)"
            )
        texts = {}
        for file in dist.files or []:
            if str(file) in (BINDINGS_PYI, FRONTEND_PYI):
                texts[str(file)] = Path(str(dist.locate_file(file))).read_text(encoding="utf-8")
        where = f"{DIST_NAME} {dist.version}"
    elif source.is_file() and source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            names = set(wheel.namelist())
            texts = {
                n: wheel.read(n).decode("utf-8") for n in (BINDINGS_PYI, FRONTEND_PYI) if n in names
            }
        where = f"{DIST_NAME} {source.name.split('-')[1]}"
    elif source.is_dir():
        texts = {
            n: (source / n).read_text(encoding="utf-8")
            for n in (BINDINGS_PYI, FRONTEND_PYI)
            if (source / n).is_file()
        }
        infos = sorted(source.glob("tensorrt_stubs-*.dist-info"))
        where = (
            f"{DIST_NAME} {infos[0].name.removesuffix('.dist-info').split('-')[1]}"
            if infos
            else f"{DIST_NAME} (unknown version)"
        )
    else:
        sys.exit(f"error: {source} is neither a directory nor a .whl file")
    missing = [n for n in (BINDINGS_PYI, FRONTEND_PYI) if n not in texts]
    if missing:
        raise StubFixError(f"{where}: files not found: {', '.join(missing)}")
    # The wheel ships CRLF line endings; work on (and write) LF only.
    bindings, frontend = (texts[n].replace("\r\n", "\n") for n in (BINDINGS_PYI, FRONTEND_PYI))
    return bindings, frontend, where


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def sub(
    text: str,
    pattern: str,
    repl: str | Callable[[re.Match[str]], str],
    what: str,
    *,
    count: int | None = None,
    flags: int = re.M,
) -> str:
    """re.subn that fails unless it matched (exactly ``count`` times if given)."""
    new, n = re.subn(pattern, repl, text, flags=flags)
    if n == 0 or (count is not None and n != count):
        expected = "at least 1" if count is None else str(count)
        raise StubFixError(f"fix '{what}': expected {expected} match(es) of {pattern!r}, found {n}")
    return new


def map_code(text: str, fix: Callable[[str], str]) -> str:
    """Apply ``fix`` to the code part of every line outside docstrings.

    pybind11-stubgen puts every docstring quote on a line of its own, which is
    checked here; trailing ``# value = <...>`` comments are left untouched.
    """
    out = []
    in_doc = False
    for line in text.split("\n"):
        if line.strip() == '"""':
            in_doc = not in_doc
        elif '"""' in line:
            raise StubFixError(f"unexpected docstring layout: {line.strip()[:80]!r}")
        elif not in_doc:
            code, sep, comment = line.partition("  # ")
            line = fix(code) + sep + comment
        out.append(line)
    if in_doc:
        raise StubFixError("unbalanced docstring quotes")
    return "\n".join(out)


def split_params(params: str) -> list[str]:
    """Split a parameter list on top-level commas."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(params):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(params[start:i].strip())
            start = i + 1
    if params[start:].strip():
        parts.append(params[start:].strip())
    return parts


DEF_LINE = re.compile(r"^(?P<head>\s*def \w+\()(?P<params>.*)(?P<tail>\)(?: -> .*)?:)$", re.M)


def map_def_params(text: str, fix: Callable[[list[str]], list[str]]) -> tuple[str, int]:
    """Apply ``fix`` to the parameters of every ``def`` outside docstrings; count changes."""
    changed = 0

    def one(code: str) -> str:
        nonlocal changed
        m = DEF_LINE.match(code)
        if m is None:
            return code
        params = split_params(m["params"])
        new = fix(params)
        if new == params:
            return code
        changed += 1
        return m["head"] + ", ".join(new) + m["tail"]

    return map_code(text, one), changed


def class_span(text: str, name: str, indent: int = 0) -> tuple[int, int]:
    """Character span of class ``name`` (at ``indent`` spaces), found by indentation."""
    m = re.search(rf"^ {{{indent}}}class {name}\b[^\n]*:$", text, flags=re.M)
    if m is None:
        raise StubFixError(f"class not found: {name}")
    end = re.compile(rf"^ {{0,{indent}}}\S", flags=re.M).search(text, m.end() + 1)
    return m.start(), end.start() if end else len(text)


def sub_in_class(
    text: str,
    name: str,
    pattern: str,
    repl: str | Callable[[re.Match[str]], str],
    what: str,
    count: int | None = 1,
) -> str:
    """``sub`` restricted to one top-level class (exactly ``count`` matches; None: any)."""
    start, end = class_span(text, name)
    return text[:start] + sub(text[start:end], pattern, repl, what, count=count) + text[end:]


# --------------------------------------------------------------------------
# The fixes, in order
# --------------------------------------------------------------------------


def fix_header(text: str) -> str:
    text = sub(text, r"^import numpy\nimport typing\n", HEADER_IMPORTS, "imports", count=1)
    # Without __all__ every public name of the stub is exported; the upstream
    # list would otherwise have to be kept in step with the added helpers.
    return sub(text, r"^__all__ = \[.*\]\n", "", "drop __all__", count=1)


def fix_keyword_params(params: list[str]) -> list[str]:
    """``in: list[X]`` -> ``in_: list[X]`` (pybind names that are keywords)."""
    out = []
    for p in params:
        name, sep, rest = p.partition(":")
        out.append(f"{name}_{sep}{rest}" if sep and keyword.iskeyword(name) else p)
    return out


def fix_defaults(params: list[str]) -> list[str]:
    """Make ``x: T = None`` Optional; drop defaults that precede a required parameter."""
    out = []
    for p in params:
        m = re.fullmatch(r"(\w+): (.+) = None", p)
        if m and "None" not in m[2] and m[2] != "typing.Any":
            p = f"{m[1]}: {m[2]} | None = None"
        out.append(p)
    # pybind11 allows add_scale_nd(..., power=None, channel_axis); Python does not.
    last_required = max(
        (i for i, p in enumerate(out) if "=" not in p and not p.startswith("*") and p != "/"),
        default=-1,
    )
    return [p.split(" = ")[0] if i < last_required else p for i, p in enumerate(out)]


def fix_annotation(ann: str) -> str:
    """Type fixes inside one annotation."""
    if ann == "...":  # a type stubgen could not name
        return "typing.Any"
    ann = re.sub(r"(?<![\w.])bool\b", "builtins.bool", ann)
    ann = re.sub(r"(?<![\w.])capsule\b", "typing.Any", ann)
    ann = re.sub(r"\bnumpy\.ndarray\b(?!\[)", "numpy.typing.NDArray[typing.Any]", ann)
    ann = re.sub(r"\btyping\.(Iterable|Iterator)\b(?!\[)", r"typing.\1[typing.Any]", ann)
    ann = re.sub(r"\btyping\.Callable\b(?!\[)", "typing.Callable[..., typing.Any]", ann)
    ann = re.sub(r"(?<![\w.])list\b(?!\[)", "list[typing.Any]", ann)
    ann = re.sub(r"(?<![\w.])dict\b(?!\[)", "dict[typing.Any, typing.Any]", ann)
    return re.sub(r"(?<![\w.])tuple\b(?!\[)", "tuple[typing.Any, ...]", ann)


def fix_param(param: str) -> str:
    name, sep, rest = param.partition(": ")
    if not sep:
        return param
    if name == "self":
        # stubgen writes the C++ class (or the wrapped list type) here; it is
        # often wrong for the Python class, and mypy infers self anyway.
        return name
    ann, eq, default = rest.partition(" = ")
    # pybind11 converts str to FallbackString implicitly (PluginField(name="x")).
    ann = re.sub(r"^FallbackString$", "FallbackString | str", ann)
    return f"{name}: {fix_annotation(ann)}{eq}{default}"


ATTR_LINE = re.compile(r"^(?P<head>\s*\w+: )(?P<ann>.+)$")


def fix_code_line(code: str) -> str:
    """Fix the annotations of one ``def`` or attribute line (outside docstrings)."""
    if m := DEF_LINE.match(code):
        params = ", ".join(fix_param(p) for p in split_params(m["params"]))
        head, arrow, ret = m["tail"].removesuffix(":").partition(" -> ")
        return m["head"] + params + head + arrow + (fix_annotation(ret) if arrow else "") + ":"
    if m := ATTR_LINE.match(code):
        return m["head"] + fix_annotation(m["ann"])
    return code


def fix_dims_params(params: list[str]) -> list[str]:
    """Parameters typed ``Dims`` also take tuples/lists of ints."""
    return [re.sub(r"^(\w+): Dims$", r"\1: _DimsLike", p) for p in params]


def fix_untyped_methods(text: str) -> str:
    for name, signature in UNTYPED_METHODS.items():
        # The untyped def (no "->"), with its bogus @staticmethod if any.
        static = r"(?:@staticmethod\n\1)?" if name in STATIC_BY_MISTAKE else ""
        pattern = rf"^( *){static}def {re.escape(name)}\([^)]*\):$"
        text = sub(text, pattern, r"\g<1>" + signature, f"type {name}")
    return text


def fix_known_types(text: str) -> str:
    """Name the ``...`` types listed in KNOWN_TYPES (one per member line)."""
    for cls, member, type_ in KNOWN_TYPES:
        pattern = rf"^( +(?:def {member}\(|{member}: ).*?)\.\.\.(?=[,)]|:$|$)"
        text = sub_in_class(text, cls, pattern, rf"\g<1>{type_}", f"type of {cls}.{member}")
    return text


def fix_nullable_returns(text: str) -> str:
    for cls, method in NULLABLE_RETURNS:
        pattern = rf"^( +def {method}\(.*\) -> )(\w+):$"
        text = sub_in_class(
            text, cls, pattern, r"\1\2 | None:", f"{cls}.{method} may return None", count=None
        )
    return text


def fix_unhashable(text: str) -> str:
    """``__hash__ = None`` is how typeshed marks unhashable classes, with an ignore."""
    return sub(
        text,
        r"^(\s+__hash__: typing\.ClassVar\[None\]) = None$",
        r"\1  # type: ignore[assignment]",
        "__hash__ None",
    )


def fix_duplicate_overloads(text: str) -> str:
    """Two identical overloads (e.g. ``__repr__`` for ``handle`` and the enum) become one def."""
    pattern = (
        r"^( +)@typing\.overload\n(\1def (\w+)\(.*\n\1    \.\.\.\n)"  # overload 1
        r"\1@typing\.overload\n\2"  # the same again
        r"(?!\1@typing\.overload\n\1def \3\()"  # and no third one
    )
    return sub(text, pattern, r"\2", "duplicate overloads")


def fix_static_properties(text: str) -> str:
    """``@property def MAX_DESC_LENGTH() -> int`` (no self) is a class constant."""
    pattern = r"^( +)@property\n\1def (\w+)\(\) -> (.+):\n\1    \.\.\.$"
    return sub(text, pattern, r"\1\2: typing.ClassVar[\3]", "self-less properties")


def add_ignore(line: str, code: str) -> str:
    return f"{line}  # type: ignore[{code}]"


def fix_narrow_comparisons(text: str) -> str:
    """``__eq__(self, arg0: list[int])``: pybind11 compares only with its own types.

    mypy wants ``object``; keep the real type and ignore [override] on the first
    def of each method in a class (on its first ``@overload`` if overloaded).
    """
    lines = text.split("\n")
    seen: set[tuple[int, str]] = set()
    owner = 0
    for i, line in enumerate(lines):
        if line.startswith("class "):
            owner = i
        m = re.match(r" +def (__eq__|__ne__)\(self, \w+: (.+)\) -> builtins\.bool:$", line)
        if m and m[2] not in ("typing.Any", "object") and (owner, m[1]) not in seen:
            seen.add((owner, m[1]))
            target = i - 1 if lines[i - 1].strip() == "@typing.overload" else i
            lines[target] = add_ignore(lines[target], "override")
    if not seen:
        raise StubFixError("fix 'narrow __eq__/__ne__': nothing matched")
    return "\n".join(lines)


def fix_layer_type_attrs(text: str) -> str:
    """IActivationLayer.type is an ActivationType, shadowing ILayer.type (LayerType)."""
    out, n = [], 0
    for block in re.split(r"(?m)^(?=class )", text):
        if re.match(r"class \w+\(ILayer\):", block):
            block, k = re.subn(
                r"(?m)^(    type: (?!LayerType$)\w+)$",
                lambda m: add_ignore(m[1], "assignment"),
                block,
            )
            n += k
        out.append(block)
    if n == 0:
        raise StubFixError("fix 'layer type attributes': nothing matched")
    return "".join(out)


def fix_targeted(text: str) -> str:
    for name, pattern, code in TARGETED_IGNORES:
        text = sub_in_class(
            text,
            name,
            rf"^( +{pattern}.*)$",
            add_ignore(r"\g<1>", code),
            f"ignore[{code}] in {name}",
        )
    return text


def fix_dims_class(text: str) -> str:
    start, end = class_span(text, "Dims")
    body = text[start:end]
    missing = [code for name, code in DIMS_METHODS.items() if f"def {name}(" not in body]
    if not missing:
        return text
    return text[:end].rstrip("\n") + "\n" + "\n".join(missing) + "\n" + text[end:]


def fix_logger_severity(text: str) -> str:
    """At run time ``Logger.Severity is ILogger.Severity``; the copy confuses mypy."""
    start, end = class_span(text, "Logger")
    logger = text[start:end]
    s_start, s_end = class_span(logger, "Severity", indent=4)
    logger = (
        logger[:s_start]
        + "    Severity: typing_extensions.TypeAlias = ILogger.Severity\n"
        + logger[s_end:]
    )
    return text[:start] + logger + text[end:]


def frontend_version(frontend: str) -> str:
    m = re.search(r"^__version__: str = '([\d.]+)'$", frontend, flags=re.M)
    if m is None:
        raise StubFixError(f"__version__ not found in {FRONTEND_PYI}")
    return m[1]


def check_annotations(text: str) -> None:
    """The result must parse and every function must be fully annotated."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise StubFixError(f"result does not parse: line {exc.lineno}: {exc.text!r}") from exc
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            unannotated = [
                a.arg
                for a in args[1 if args and args[0].arg in ("self", "cls") else 0 :]
                if a.annotation is None
            ]
            if node.returns is None or unannotated:
                bad.append(f"line {node.lineno}: {node.name}")
    if bad:
        raise StubFixError("untyped functions left: " + ", ".join(bad))


def generate(bindings: str, frontend: str, where: str) -> str:
    text = fix_header(bindings)
    text, n = map_def_params(text, fix_keyword_params)
    if n == 0:
        raise StubFixError("fix 'keyword params': no parameter named after a keyword")
    text, n = map_def_params(text, fix_defaults)
    if n == 0:
        raise StubFixError("fix 'defaults': no '= None' default or misordered parameter")
    text, n = map_def_params(text, fix_dims_params)
    if n == 0:
        raise StubFixError("fix 'Dims params': no parameter typed Dims")
    if not re.search(r"^bool: DataType  # ", text, flags=re.M):
        raise StubFixError("module variable 'bool: DataType' not found")
    text = fix_known_types(text)
    text = fix_nullable_returns(text)
    text = map_code(text, fix_code_line)
    text = fix_untyped_methods(text)
    text = fix_unhashable(text)
    text = fix_duplicate_overloads(text)
    text = fix_static_properties(text)
    text = fix_narrow_comparisons(text)
    text = fix_layer_type_attrs(text)
    text = fix_targeted(text)
    text = fix_dims_class(text)
    text = fix_logger_severity(text)
    text = text.rstrip("\n") + "\n" + FRONTEND_FUNCTIONS.format(version=frontend_version(frontend))
    digest = hashlib.sha256(bindings.encode()).hexdigest()[:16]
    banner = (
        f"# Generated by tools/make_trt_stubs.py from {where}\n"
        f"# ({BINDINGS_PYI}, LF-normalised sha256 {digest}).\n"
        "# Do not edit: change the script and run it again.\n"
    )
    text = banner + text
    check_annotations(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "typings",
        help="stub root to write tensorrt/__init__.pyi into (default: typings/ of the repo)",
    )
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="directory tensorrt-stubs was installed into, or its .whl",
    )
    args = parser.parse_args(argv)
    try:
        bindings, frontend, where = read_sources(args.source)
        text = generate(bindings, frontend, where)
    except StubFixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    target = args.out / "tensorrt" / "__init__.pyi"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {target} ({text.count(chr(10))} lines) from {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
