#!/usr/bin/env bash
# Install the host packages lego needs to build and run its guest images.
#
# Idempotent: run it as root on a fresh Debian 12 machine (or again on an
# already-provisioned one). It is silent when everything is present, runs
# `apt-get update` only if something must be installed, and prints one line
# per package it installs.
#
#   busybox-static   static /bin/busybox, copied into guest-images/out/
#   musl-tools       musl-gcc, for the *.musl guest binaries
#   build-essential  gcc, make, glibc static libs (libc6-dev)
#   iproute2         `ip`, for network namespace tests
#   tmux             a terminal for the `lego top` test
#   fonts-dejavu-core  the font of `lego bench apps`'s plot
#   util-linux       losetup, mkswap, swapon for `lego bench apps`
#   postgresql       Debian's PostgreSQL 15, run in a vNode by tests/realworld.rs
#   libcap2-bin      capsh, run in a vNode by tests/realworld.rs
#   libibverbs-dev rdma-core cmake libnl-3-dev libnl-route-3-dev pkg-config libclang-dev clang
#                    building with `--features rdma` (the RDMA transport): rdma-core's
#                    libibverbs to link, and what ibverbs-sys needs to configure its vendored
#                    rdma-core and generate its bindings (cmake, libnl; libclang and clang's
#                    headers for bindgen)
set -euo pipefail

PACKAGES=(busybox-static musl-tools build-essential iproute2 tmux fonts-dejavu-core util-linux postgresql libcap2-bin
          libibverbs-dev rdma-core cmake libnl-3-dev libnl-route-3-dev pkg-config libclang-dev clang)

is_installed() {
    # dpkg -s succeeds for packages in e.g. "deinstall" state too, so check
    # the status line explicitly.
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! is_installed "$pkg"; then
        missing+=("$pkg")
    fi
done

[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: must run as root to install: ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Run quietly, but show apt's full output if it fails.
quiet() {
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "install-deps.sh: failed: $*" >&2
        exit 1
    fi
}
quiet apt-get update
for pkg in "${missing[@]}"; do
    echo "installing $pkg"
    quiet apt-get install -y --no-install-recommends "$pkg"
done
