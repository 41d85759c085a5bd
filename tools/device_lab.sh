#!/usr/bin/env bash
# The device lab's set-up (issue: INT8 right on every CPU). Idempotent and cached; `make test` calls it.
#  - user-mode qemu (Debian's qemu-user-static) to run bundles on an emulated x86 CPU without
#    AVX-512/VNNI (-cpu Haswell) and on an emulated aarch64 CPU;
#  - for aarch64: Debian 12's arm64 Python 3.11 extracted into LAB/arm64-root, and the aarch64
#    wheels of edgekit's light runtime with onnxruntime 1.22.0 in LAB/arm64-site (1.32's aarch64
#    wheel crashes under qemu 7.2 with every -cpu model; OpenVINO's CPU plugin needs a sysfs entry
#    user-mode qemu lacks, so it is not installed there).
# Whatever cannot be set up here (no root, no apt, no network) is reported; the tests then skip and say why.
set -uo pipefail
LAB="${1:-.venv/lab}"
PY="${PYTHON:-python3}"
mkdir -p "$LAB"
say() { echo "device lab: $*" >&2; }
export DEBIAN_FRONTEND=noninteractive
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

if ! command -v qemu-x86_64-static >/dev/null 2>&1; then
    if can_apt; then
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-user-static; } >/dev/null 2>&1 \
            || say "apt-get install qemu-user-static failed (the emulated tests will skip)"
    else
        say "qemu-user-static is not installed and cannot be installed here (the emulated tests will skip)"
    fi
fi

ROOT="$LAB/arm64-root"
if [ ! -x "$ROOT/usr/bin/python3.11" ] && command -v qemu-aarch64-static >/dev/null 2>&1 && can_apt; then
    DEBS="$LAB/arm64-debs"
    mkdir -p "$DEBS"
    if dpkg --add-architecture arm64 && apt-get update -qq >/dev/null 2>&1 \
        && (cd "$DEBS" && apt-get download python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 \
            libc6:arm64 libexpat1:arm64 zlib1g:arm64 libffi8:arm64 libssl3:arm64 libstdc++6:arm64 libgcc-s1:arm64 \
            libbz2-1.0:arm64 liblzma5:arm64 libsqlite3-0:arm64 libuuid1:arm64 libncursesw6:arm64 libtinfo6:arm64 \
            libreadline8:arm64 libcrypt1:arm64 libnsl2:arm64 libtirpc3:arm64 >/dev/null 2>&1); then
        rm -rf "$ROOT.tmp" && mkdir -p "$ROOT.tmp"
        for deb in "$DEBS"/*.deb; do dpkg-deb -x "$deb" "$ROOT.tmp"; done
        mv "$ROOT.tmp" "$ROOT"
    else
        say "could not fetch Debian's arm64 Python (the aarch64 tests will skip)"
    fi
fi

SITE="$LAB/arm64-site"
if [ -x "$ROOT/usr/bin/python3.11" ] && [ ! -f "$SITE/.done" ]; then
    rm -rf "$SITE"
    if "$PY" -m pip install -q --disable-pip-version-check --target "$SITE" --only-binary=:all: \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
        --python-version 3.11 --implementation cp \
        numpy==2.4.6 onnxruntime==1.22.0 click==8.5.1 pydantic==2.14.3 pyyaml==6.0.3 rich==15.0.0 pillow==13.0.0 \
        >/dev/null 2>&1; then
        touch "$SITE/.done"
    else
        say "pip could not fetch the aarch64 wheels (the aarch64 tests will skip)"
    fi
fi
exit 0
