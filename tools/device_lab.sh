#!/usr/bin/env bash
# The device lab's set-up (issue: INT8 right on every CPU): user-mode qemu to run bundles on an
# emulated x86 CPU without AVX-512/VNNI (-cpu Haswell). Idempotent; `make test` calls it. Without
# root or apt the lab's tests skip and say why.
set -uo pipefail
if command -v qemu-x86_64-static >/dev/null 2>&1 || command -v qemu-x86_64 >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "device lab: qemu-user-static not installed and cannot install it here (tests will skip)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-user-static; } >/dev/null 2>&1 \
    || echo "device lab: apt-get install qemu-user-static failed (tests will skip)" >&2
exit 0
