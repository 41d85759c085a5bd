"""Where an ONNX file's weights live when they are not inside it (external data), read without the
onnx package, and the one rule every reader of a handed-over ONNX file applies: external data names
a file inside the model's own folder (relative, no ``..``, no link out), and, for a bundle, one of
the files its manifest lists. Used by ``edgekit import`` (any user ONNX) and by the device runtime
(which has no onnx package)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path, PurePosixPath
from typing import Any

from edgekit.errors import ArtifactError


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, Any]]:
    """Top-level protobuf fields of ``buf``: (field number, bytes for length-delimited, int otherwise)."""
    out: list[tuple[int, Any]] = []
    i = 0
    while i < len(buf):
        value: int | bytes
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i : i + length], i + length
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise IndexError(wire)
        out.append((number, value))
    return out


def locations(path: Path) -> list[str]:
    """External-data file names of an ONNX model's initializers
    (ModelProto.graph=7 -> GraphProto.initializer=5 -> TensorProto.external_data=13 -> key/value)."""
    found = []
    try:
        for num, graph in _fields(path.read_bytes()):
            if num != 7:
                continue
            for gnum, tensor in _fields(graph):
                if gnum != 5:
                    continue
                for tnum, entry in _fields(tensor):
                    if tnum == 13:
                        kv = dict(_fields(entry))
                        if kv.get(1) == b"location":
                            found.append(kv.get(2, b"").decode(errors="replace"))
    except (IndexError, TypeError, UnicodeDecodeError):
        raise ArtifactError(f"{path} is not a valid ONNX file") from None
    return found


def outside(path: Path, allowed: Collection[str] | None = None) -> str | None:
    """The first external-data location of the ONNX file at ``path`` that is not an existing file inside
    its folder (or, given ``allowed``, not one of those names); None when every one is."""
    base = path.parent.resolve()
    for loc in locations(path):
        target = (base / loc).resolve()
        if (not loc or PurePosixPath(loc).is_absolute() or Path(loc).is_absolute() or "\\" in loc
                or base not in target.parents or not target.is_file() or (allowed is not None and loc not in allowed)):
            return loc
    return None
