#!/usr/bin/env bash
# The whole single-machine set-up in one command, on a fresh Debian/Ubuntu
# machine (x86_64, as root: volumes are real mounts): installs what the build
# and `stowage up` need and are missing (a C toolchain, libclang for the
# loop-device bindings, ext4 tools, kubectl, Rust), builds, and runs
# `stowage up` with this script's arguments (see `stowage up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
# xfs_quota: quota volumes where the local root is XFS mounted with prjquota.
command -v xfs_quota >/dev/null || missing+=(xfsprogs)
command -v curl >/dev/null || missing+=(curl ca-certificates)
# libclang for bindgen: any libclang.so the loader or llvm-config can find.
if ! ldconfig -p | grep -q 'libclang[-.0-9]*\.so'; then
  missing+=(libclang-dev)
fi
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if ! command -v kubectl >/dev/null; then
  version=$(curl -fsSL https://dl.k8s.io/release/stable.txt)
  echo "installing: kubectl $version"
  url="https://dl.k8s.io/release/$version/bin/linux/amd64/kubectl"
  curl -fsSLo /tmp/kubectl "$url"
  echo "$(curl -fsSL "$url.sha256")  /tmp/kubectl" | sha256sum --check --quiet
  install -m 0755 /tmp/kubectl /usr/local/bin/kubectl && rm /tmp/kubectl
fi

if ! command -v cargo >/dev/null; then
  if [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    echo "installing: Rust (rustup)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  fi
  export PATH="$HOME/.cargo/bin:$PATH"
fi

cargo build --release --locked -p stowage
exec target/release/stowage up "$@"
