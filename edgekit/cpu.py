"""The CPU as a first-class fact: which INT8 kernels it has, and what that means per target.

INT8 convolutions and matrix products on x86 multiply u8 activations by s8 weights. With VNNI
(AVX-512 VNNI, AVX-VNNI) or AMX one instruction sums four such products straight into 32 bits:
exact. Without it (SSE4.1, AVX2, AVX-512 without VNNI: most Intel parts before Ice Lake, AMD Zen 1-3,
Atom/Celeron) kernels use ``vpmaddubsw``, which adds each *pair* of products into a saturating
16-bit sum: |a0*w0 + a1*w1| above 32767 is clipped, so a u8 activation above 127 next to a large
weight comes out wrong. aarch64 kernels widen before they add (``umull``/``sdot``): exact.

What edgekit does about it (README, "CPU kinds"):

- ONNX Runtime: every CPU session sets ``session.x64quantprecision=1``. ONNX Runtime itself checks
  the CPU and, only where u8 x s8 can saturate, runs exact u8 x u8 kernels instead; elsewhere the
  entry changes nothing. It is applied where the model runs, so a bundle decides on the device.
- OpenVINO: the build keeps every u8 activation to 0..127 (the portable graph's own range), so no
  pair sum can reach 32767 with 8-bit weights, and runs layers whose input is signed (which its
  kernels shift to u8 0..255) in float: right on every CPU. Built on a CPU with VNNI it also writes a
  variant with those layers in INT8, which the runtime picks only on a device with VNNI or AMX.

Features come from CPUID as numpy's dispatcher reads it (right under emulation and in VMs, where
``/proc/cpuinfo`` can describe the host), completed by ``/proc/cpuinfo`` for the flags numpy does not
know (AVX-VNNI, AMX) when the two agree. This module imports no inference runtime.
"""

from __future__ import annotations

import platform
import subprocess  # noqa: S404 - sysctl on macOS, fixed arguments
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

# flags that decide which INT8 kernels run (Linux /proc/cpuinfo spelling)
X86_FLAGS = ("sse4_1", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")
ARM_FLAGS = ("asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")
VNNI_KINDS = ("x86-amx", "x86-avx512-vnni", "x86-avx-vnni")  # u8 x s8 summed straight into 32 bits

KIND_MEANING = {
    "x86-amx": "AMX tiles: exact INT8 kernels",
    "x86-avx512-vnni": "AVX-512 VNNI: exact INT8 kernels (u8 x s8 summed into 32 bits)",
    "x86-avx-vnni": "AVX-VNNI: exact INT8 kernels (u8 x s8 summed into 32 bits)",
    "x86-avx512": "AVX-512 without VNNI: u8 x s8 pair sums saturate at 16 bits",
    "x86-avx2": "AVX2 without VNNI: u8 x s8 pair sums saturate at 16 bits",
    "x86-sse4": "SSE4.1 only: u8 x s8 pair sums saturate at 16 bits; slow INT8",
    "x86": "x86 without SSE4.1: INT8 runs on reference kernels",
    "aarch64-i8mm": "Armv8.6 I8MM: exact INT8 matrix kernels",
    "aarch64-dotprod": "Armv8.2 dot product: exact INT8 kernels",
    "aarch64": "Armv8 NEON: exact (widening) INT8 kernels",
    "unknown": "unknown CPU: INT8 correctness is checked by edgekit verify",
}

# what each target does on a CPU whose u8 x s8 pair sums saturate, and elsewhere
TARGET_NOTES = {
    "onnxruntime": ("session.x64quantprecision=1: exact u8 x u8 kernels in place of the saturating u8 x s8 ones",
                    "fused u8 x s8 integer kernels (exact here)"),
    "openvino": ("model.xml: u8 activations kept to 0..127, layers with a signed input in float (both exact): "
                 "no pair sum can saturate",
                 "model-vnni.xml (every layer INT8) where the build was made on a CPU like this one, else model.xml"),
    "tensorrt": ("not a CPU target", "not a CPU target"),
}


@dataclass(frozen=True)
class CpuInfo:
    arch: str
    model: str
    flags: tuple[str, ...] = field(default_factory=tuple)  # the INT8-relevant ones only
    kind: str = "unknown"

    @property
    def u8s8_saturates(self) -> bool:
        """Whether x86 u8 x s8 integer kernels here add product pairs into saturating 16 bits."""
        return self.kind in ("x86-avx512", "x86-avx2", "x86-sse4")

    @property
    def has_vnni(self) -> bool:
        """x86 with VNNI or AMX: INT8 kernels that need no care about pair sums."""
        return self.kind in VNNI_KINDS

    @property
    def meaning(self) -> str:
        return KIND_MEANING.get(self.kind, KIND_MEANING["unknown"])

    def targets(self) -> dict[str, str]:
        return {name: notes[0 if self.u8s8_saturates else 1] for name, notes in TARGET_NOTES.items()}

    def record(self) -> dict[str, Any]:
        """What manifests, bench rows and verification records store."""
        out = asdict(self)
        out["flags"] = list(self.flags)
        out["u8s8_saturates"] = self.u8s8_saturates
        return out

    def line(self) -> str:
        flags = " ".join(self.flags) or "none"
        return f"{self.kind} ({self.model or self.arch}; {flags})"


def classify(arch: str, flags: set[str]) -> str:
    a = arch.lower()
    if a in ("x86_64", "amd64", "i686", "i386", "x86"):
        if "amx_int8" in flags:
            return "x86-amx"
        if "avx512_vnni" in flags:
            return "x86-avx512-vnni"
        if "avx_vnni" in flags:
            return "x86-avx-vnni"
        if "avx512bw" in flags or "avx512f" in flags:
            return "x86-avx512"
        if "avx2" in flags:
            return "x86-avx2"
        return "x86-sse4" if "sse4_1" in flags else "x86"
    if a in ("aarch64", "arm64"):
        if "i8mm" in flags:
            return "aarch64-i8mm"
        return "aarch64-dotprod" if "asimddp" in flags else "aarch64"
    return "unknown"


def parse_cpuinfo(text: str, arch: str) -> CpuInfo:
    """CpuInfo from the text of ``/proc/cpuinfo`` (first processor)."""
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
    known = X86_FLAGS + ARM_FLAGS
    return CpuInfo(arch=arch, model=model, flags=tuple(f for f in known if f in flags), kind=classify(arch, flags))


def _macos(arch: str) -> CpuInfo:
    def sysctl(name: str) -> str:
        try:
            return subprocess.run(["/usr/sbin/sysctl", "-n", name], capture_output=True, text=True,  # noqa: S603
                                  timeout=5, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    model = sysctl("machdep.cpu.brand_string")
    if arch in ("arm64", "aarch64"):
        flags = {"asimd"} | {f for f, key in (("asimddp", "hw.optional.arm.FEAT_DotProd"), ("i8mm", "hw.optional.arm.FEAT_I8MM"),
                                               ("bf16", "hw.optional.arm.FEAT_BF16")) if sysctl(key) == "1"}
    else:
        text = " ".join(sysctl(k) for k in ("machdep.cpu.features", "machdep.cpu.leaf7_features")).lower()
        flags = {f.replace(".", "_") for f in text.split()}
        flags |= {"avx512_vnni"} if "avx512vnni" in flags else set()
        flags |= {"sse4_1"} if "sse4_1" in flags or "sse4.1" in text else set()
    known = X86_FLAGS + ARM_FLAGS
    return CpuInfo(arch="aarch64" if arch == "arm64" else arch, model=model, flags=tuple(f for f in known if f in flags),
                   kind=classify(arch, flags))


# numpy's CPUID names -> /proc/cpuinfo spelling
NUMPY_FLAGS = {"SSE41": "sse4_1", "AVX2": "avx2", "AVX512F": "avx512f", "AVX512BW": "avx512bw",
               "AVX512VNNI": "avx512_vnni", "AVX512BF16": "avx512_bf16", "ASIMD": "asimd", "ASIMDDP": "asimddp",
               "SVE": "sve"}


def cpuid_flags() -> set[str] | None:
    """The features numpy's dispatcher found by CPUID (or HWCAP on Arm); None if unavailable."""
    import importlib

    features: dict[str, bool] | None = None
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, numpy 1
        try:
            features = getattr(importlib.import_module(module), "__cpu_features__", None)
        except ImportError:
            continue
        if features is not None:
            break
    if features is None:
        return None
    return {ours for theirs, ours in NUMPY_FLAGS.items() if features.get(theirs)}


def combine(proc: CpuInfo, cpuid: set[str] | None) -> CpuInfo:
    """CPUID decides what numpy can see; /proc/cpuinfo adds AVX-VNNI / AMX only where it agrees."""
    if cpuid is None:
        return proc
    shared = [f for f in NUMPY_FLAGS.values() if f in X86_FLAGS + ARM_FLAGS]
    agrees = all((f in proc.flags) == (f in cpuid) for f in shared if f in ("avx2", "avx512f", "avx512_vnni", "asimddp"))
    flags = set(cpuid) | ({f for f in proc.flags if f not in shared} if agrees else set())
    # disagreeing, /proc/cpuinfo describes another CPU (the host of an emulator): its name is not this one's
    return CpuInfo(arch=proc.arch, model=proc.model if agrees else "",
                   flags=tuple(f for f in X86_FLAGS + ARM_FLAGS if f in flags), kind=classify(proc.arch, flags))


@lru_cache(maxsize=1)
def detect() -> CpuInfo:
    """This machine's CPU, read once per process."""
    arch = platform.machine().lower() or "unknown"
    proc = CpuInfo(arch=arch, model=platform.processor(), flags=(), kind="unknown")
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            proc = parse_cpuinfo(cpuinfo.read_text(errors="replace"), arch)
        except OSError:
            pass
    elif platform.system() == "Darwin":
        proc = _macos(arch)
    return combine(proc, cpuid_flags())
